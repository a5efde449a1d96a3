"""The reconciliation flow's state hooks: a run that fails or crashes as a whole tells finance.

A hook is an entry point of its own: Prefect hands it only (flow, flow_run, state), so it
reads the settings itself. It never raises: its error would only hide the run's own.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from prefect import Flow
from prefect.client.schemas.objects import FlowRun, State
from prefect.logging.loggers import flow_run_logger
from prefect.settings import PREFECT_UI_URL
from sqlmodel import Session

from flows.windows import nightly_window, utc_today
from integrations.settings import Settings, get_settings
from integrations.stripe.redaction import redact
from models.engine import get_engine, read_only
from models.runs import run_of_flow_run
from tasks.alert import deliver
from tasks.failure_alert import failure_alert, without_database_password


def _as_date(value: object) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _window_of(parameters: dict[str, Any], settings: Settings) -> tuple[date, date] | None:
    """The window the flow run was asked for, when its run record cannot say."""
    start, end = parameters.get("start"), parameters.get("end")
    if start and end:
        return _as_date(start), _as_date(end)
    if start or end:
        return None
    lookback = parameters.get("lookback_days") or settings.lookback_days
    return nightly_window(today=utc_today(), lookback_days=int(lookback))


def _our_run(
    settings: Settings, flow_run_id: str
) -> tuple[int | None, tuple[date, date] | None, str | None]:
    """Our run id, window and error for the flow run (all None when the database cannot say)."""
    with Session(read_only(get_engine(settings.database_url))) as session:
        run = run_of_flow_run(session=session, flow_run_id=flow_run_id)
        if run is None:
            return None, None, None
        return run.id, (run.window_start, run.window_end), run.error


def alert_run_ended(flow: Flow[..., Any], flow_run: FlowRun, state: State[Any]) -> None:
    """Send the one-sentence alert of a failed or crashed run; log whatever goes wrong."""
    logger = flow_run_logger(flow_run, flow)
    ended = "crashed" if state.is_crashed() else "failed"
    database_url = ""
    try:
        settings = get_settings()
        database_url = settings.database_url
        if not settings.alert_urls:
            logger.warning("no METER_RECON_ALERT_URLS set: the %s run is not alerted", ended)
            return
        try:
            run_id, window, error = _our_run(settings, str(flow_run.id))
        except Exception as unreadable:
            logger.warning(
                "the run record could not be read; the alert names the flow run: %s",
                redact(without_database_password(str(unreadable), database_url)),
            )
            run_id, window, error = None, None, None
        alert = failure_alert(
            ended=ended,
            run_id=run_id,
            flow_run_name=flow_run.name,
            flow_run_id=str(flow_run.id),
            window=window or _window_of(dict(flow_run.parameters), settings),
            reason=state.message or error,
            database_url=database_url,
            ui_url=PREFECT_UI_URL.value(),
        )
        deliver(alert, settings.alert_urls)
        logger.info("alerted finance: %s", alert.title)
    except Exception as failure:
        logger.error(
            "could not alert finance that the run %s: %s",
            ended,
            redact(without_database_password(f"{type(failure).__name__}: {failure}", database_url)),
        )
