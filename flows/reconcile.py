"""The reconciliation flow: nightly and manual runs are this one flow with other parameters."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context
from prefect.futures import PrefectFuture, as_completed
from prefect.logging import get_run_logger
from sqlmodel import Session, select

from flows.history import wait_for_history
from flows.runners import pairs_per_task_for, task_runner_for
from meter_recon import progress
from meter_recon.settings import TaskRunnerKind, get_settings
from meter_recon.stripe.prefect_limit import ensure_limit, plan_for
from meter_recon.windows import check_window, nightly_window, utc_today
from models.engine import get_engine, session_scope
from models.pairs import list_pairs
from models.runs import (
    discrepancy_counts,
    fail_stale_runs,
    finish_run,
    heartbeat,
    pair_counts,
    start_run,
)
from models.tables import Formula, Meter, PairResult, PairStatus, RunStatus, Trigger
from models.types import utcnow
from models.upsert import insert_for
from tasks.alert import alert_finance
from tasks.fetch import fetch_meters
from tasks.pairs import PairRef, PairsFailed, RunContext, describe_error, reconcile_pairs
from tasks.record import PairStats, record_pair_failure
from tasks.report import publish_report

HEARTBEAT_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What a run did; the CLI prints it and chooses its exit code from `status`."""

    run_id: int
    status: str
    window_start: date
    window_end: date
    pairs_total: int
    pairs_ok: int
    pairs_failed: int
    compared: int
    matched: int
    pending: int
    new: int
    reopened: int
    resolved: int
    alerted: int
    requests: int
    task_runs_recorded: int


@task(name="refresh-meters", retries=2, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE)
def refresh_meters() -> dict[str, str]:
    """Cache Stripe's meter configuration; the formula decides how days add up."""
    settings = get_settings()
    meters = fetch_meters(settings)
    rows = [
        {
            "id": m.id,
            "display_name": m.display_name,
            "event_name": m.event_name,
            "formula": Formula(m.formula),
            "status": m.status,
            "refreshed_at": utcnow(),
        }
        for m in meters
    ]
    with session_scope(get_engine(settings.database_url)) as session:
        if rows:
            statement = insert_for(session, Meter.__table__).values(rows)  # type: ignore[attr-defined]
            session.execute(
                statement.on_conflict_do_update(
                    index_elements=["id"],
                    set_={k: statement.excluded[k] for k in rows[0] if k != "id"},
                )
            )
    return {m.id: m.formula for m in meters}


def _cached_formulas() -> dict[str, str]:
    with Session(get_engine(get_settings().database_url)) as session:
        return {m.id: m.formula.value for m in session.exec(select(Meter)).all()}


class _Heartbeat:
    """Keeps `heartbeat_at` fresh so a later run can tell this one from a killed one."""

    def __init__(self, run_id: int) -> None:
        self._run_id = run_id
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, name="meter-recon-heartbeat", daemon=True
        )

    def _beat(self) -> None:
        settings = get_settings()
        engine = get_engine(settings.database_url)
        interval = min(HEARTBEAT_SECONDS, settings.stale_after_seconds / 4)
        while not self._stop.wait(interval):
            try:
                with session_scope(engine) as session:
                    heartbeat(session=session, run_id=self._run_id)
            except Exception:  # noqa: S112  a missed beat is retried at the next one
                continue

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def resolve_window(
    *, start: date | None, end: date | None, lookback_days: int | None, today: date
) -> tuple[date, date]:
    if start is None and end is None:
        return nightly_window(
            today=today, lookback_days=lookback_days or get_settings().lookback_days
        )
    if start is None or end is None:
        raise ValueError("Give both start and end, or neither for the nightly window.")
    return check_window(start=start, end=end, today=today)


def _batches(pairs: list[PairRef], size: int) -> list[list[PairRef]]:
    return [pairs[i : i + size] for i in range(0, len(pairs), size)]


@flow(
    name="meter-recon",
    task_runner=task_runner_for(get_settings()),
    log_prints=False,
    validate_parameters=True,
)
def reconcile_meters(
    start: date | None = None,
    end: date | None = None,
    customers: list[str] | None = None,
    meters: list[str] | None = None,
    lookback_days: int | None = None,
    trigger: Trigger = Trigger.SCHEDULED,
) -> RunSummary:
    """Reconcile Stripe's metered usage with the ledger over UTC days [start, end).

    Without start and end: the last `lookback_days` complete days (the nightly window).
    """
    logger = get_run_logger()
    settings = get_settings()
    today = utc_today()
    window_start, window_end = resolve_window(
        start=start, end=end, lookback_days=lookback_days, today=today
    )
    engine = get_engine(settings.database_url)
    flow_run = get_run_context().flow_run  # type: ignore[union-attr]
    parameters: dict[str, Any] = {
        "start": window_start.isoformat(),
        "end": window_end.isoformat(),
        "customers": customers or [],
        "meters": meters or [],
        "lookback_days": lookback_days,
        "max_workers": settings.max_workers,
        "task_runner": settings.task_runner.value,
    }
    with session_scope(engine) as session:
        stale = fail_stale_runs(
            session=session, stale_after=timedelta(seconds=settings.stale_after_seconds)
        )
        run = start_run(
            session=session,
            window_start=window_start,
            window_end=window_end,
            trigger=trigger,
            parameters=parameters,
            flow_run_id=str(flow_run.id) if flow_run else None,
        )
    run_id = run.id
    assert run_id is not None
    if stale:
        logger.warning("marked stale run(s) %s as failed", ", ".join(map(str, stale)))
    logger.info("run %d: window %s..%s (%s)", run_id, window_start, window_end, trigger.value)
    try:
        with _Heartbeat(run_id):
            return _run(
                run_id=run_id,
                parameters=parameters,
                window=(window_start, window_end),
                today=today,
                customers=customers or [],
                meters=meters or [],
                flow_run_id=flow_run.id if flow_run else None,
            )
    except BaseException as error:
        with session_scope(engine) as session:
            finish_run(
                session=session,
                run_id=run_id,
                status=RunStatus.FAILED,
                values={},
                error=describe_error(error),
            )
        raise


def _run(
    *,
    run_id: int,
    parameters: dict[str, Any],
    window: tuple[date, date],
    today: date,
    customers: list[str],
    meters: list[str],
    flow_run_id: Any,
) -> RunSummary:
    logger = get_run_logger()
    settings = get_settings()
    engine = get_engine(settings.database_url)
    task_runs = 0
    if settings.task_runner is TaskRunnerKind.DASK:
        # Worker processes share Stripe's rate limit through a Prefect GCL: create it (or
        # bring it to this run's rate) before any task asks Stripe for anything.
        plan = plan_for(settings.max_requests_per_second)
        ensure_limit(plan)
        logger.info("Stripe rate limit shared through Prefect: %s", plan)

    task_runs += 1
    refreshed = refresh_meters(return_state=True)
    if refreshed.is_completed():
        formulas: dict[str, str] = refreshed.result()
    else:
        formulas = _cached_formulas()
        if not formulas:
            refreshed.result()  # raises: no meters from Stripe and none cached
        logger.warning("could not refresh meters from Stripe; using the cached configuration")

    with Session(engine) as session:
        tracked = list_pairs(session=session, customers=customers, meters=meters)
        pairs = [
            PairRef(
                customer=p.stripe_customer_id,
                meter=p.meter_id,
                formula=formulas.get(p.meter_id, ""),
                active_from=p.active_from,
                active_to=p.active_to,
            )
            for p in tracked
        ]
    context = RunContext(
        run_id=run_id,
        window_start=window[0],
        window_end=window[1],
        today=today,
        abs_tol=str(settings.abs_tol),
        rel_tol=str(settings.rel_tol),
    )
    unknown = [p for p in pairs if not p.formula]
    failures: list[tuple[PairRef, str]] = [
        (pair, f"meter {pair.meter} is not a meter of this Stripe account") for pair in unknown
    ]
    runnable = [p for p in pairs if p.formula]
    pairs_per_task = pairs_per_task_for(settings, len(runnable))
    batches = _batches(runnable, pairs_per_task)
    logger.info(
        "reconciling %d pair(s) in %d task(s) on %s",
        len(runnable),
        len(batches),
        settings.task_runner.value,
    )
    futures: dict[PrefectFuture[dict[str, int]], list[PairRef]] = {
        reconcile_pairs.submit(context, batch): batch for batch in batches
    }
    task_runs += len(futures)
    done_pairs = len(unknown)
    progress.report(done_pairs, len(pairs))
    for future in as_completed(list(futures)):
        batch = futures[future]
        errors = _failure_texts(future)
        if errors:
            failures += [(pair, errors.get(pair) or errors[None]) for pair in batch]
        done_pairs += len(batch)
        progress.report(done_pairs, len(pairs))

    if failures:
        task_runs += 1
        record_failed_pairs(context, failures)

    with session_scope(engine) as session:
        totals = pair_counts(session=session, run_id=run_id)
        kinds = discrepancy_counts(session=session, run_id=run_id)
        failed = totals["pairs_failed"]
        status = RunStatus.COMPLETED_WITH_ERRORS if failed else RunStatus.COMPLETED
        finish_run(
            session=session,
            run_id=run_id,
            status=status,
            values={
                "pairs_total": len(pairs),
                "pairs_ok": totals["pairs_recorded"] - failed,
                "pairs_failed": failed,
                "line_items_compared": totals["compared"],
                "line_items_matched": totals["matched"],
                "line_items_pending": totals["pending"],
                "discrepancies_new": totals["new"],
                "discrepancies_reopened": totals["reopened"],
                "discrepancies_resolved": totals["resolved"],
                "counts": {**kinds, "requests": totals["requests"]},
                "parameters": {**parameters, "pairs_per_task": pairs_per_task},
            },
        )

    task_runs += 1
    publish_report(run_id)
    task_runs += 1
    alert_state = alert_finance(run_id, return_state=True)
    alerted = alert_state.result() if alert_state.is_completed() else 0
    if not alert_state.is_completed():
        logger.error("alert not delivered; the next run will send it again")

    recorded = (
        wait_for_history(flow_run_id, expected=task_runs, timeout=60 + len(futures) / 50)
        if flow_run_id
        else 0
    )
    summary = RunSummary(
        run_id=run_id,
        status=status.value,
        window_start=window[0],
        window_end=window[1],
        pairs_total=len(pairs),
        pairs_ok=totals["pairs_recorded"] - failed,
        pairs_failed=failed,
        compared=totals["compared"],
        matched=totals["matched"],
        pending=totals["pending"],
        new=totals["new"],
        reopened=totals["reopened"],
        resolved=totals["resolved"],
        alerted=int(alerted),
        requests=totals["requests"],
        task_runs_recorded=recorded,
    )
    logger.info(
        "run %d %s: %d of %d pairs reconciled, %d failed; %d new, %d re-opened, %d resolved",
        run_id,
        status.value,
        summary.pairs_ok,
        summary.pairs_total,
        summary.pairs_failed,
        summary.new,
        summary.reopened,
        summary.resolved,
    )
    return summary


def _failure_texts(future: PrefectFuture[Any]) -> dict[PairRef | None, str]:
    """Empty when the task succeeded; else each pair's own error, or the task's (key None)."""
    try:
        future.result(raise_on_failure=True)
        return {}
    except PairsFailed as error:
        texts: dict[PairRef | None, str] = {None: describe_error(error)}
        for pair, text in error.failures.items():
            texts[pair] = text
        return texts
    except BaseException as error:
        return {None: describe_error(error)}


@task(
    name="record-failed-pairs",
    retries=3,
    retry_delay_seconds=[1, 5, 15],
    cache_policy=NO_CACHE,
)
def record_failed_pairs(context: RunContext, failures: list[tuple[PairRef, str]]) -> int:
    """Pairs not recorded OK in this run become `fetch_failed`; nothing else of theirs changes."""
    logger = get_run_logger()
    engine = get_engine(get_settings().database_url)
    with Session(engine) as session:
        ok = set(
            session.exec(
                select(PairResult.stripe_customer_id, PairResult.meter_id).where(
                    PairResult.run_id == context.run_id, PairResult.status == PairStatus.OK
                )
            ).all()
        )
    recorded = 0
    for pair, error in failures:
        if (pair.customer, pair.meter) in ok:
            continue
        record_pair_failure(
            engine=engine,
            run_id=context.run_id,
            customer=pair.customer,
            meter=pair.meter,
            error=error,
            stats=PairStats(requests=0, duration_ms=0),
        )
        logger.warning("pair %s not reconciled: %s", pair.label, error)
        recorded += 1
    return recorded
