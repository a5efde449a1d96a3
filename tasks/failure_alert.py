"""The one sentence finance gets when a run as a whole fails or crashes (pure: the flow's
state hooks gather the facts and deliver it through `tasks.alert.deliver`)."""

from __future__ import annotations

from datetime import date

from sqlalchemy.engine import make_url

from integrations.stripe.redaction import redact
from tasks.alert import Alert


def without_database_password(text: str, database_url: str) -> str:
    """`text` with the database URL shown without its password, and the password nowhere."""
    try:
        url = make_url(database_url)
    except Exception:  # an unparsable URL: hide it whole
        return text.replace(database_url, "[DATABASE URL]") if database_url else text
    if not url.password:
        return text
    text = text.replace(database_url, url.render_as_string(hide_password=True))
    return redact(text, str(url.password))


def failure_alert(
    *,
    ended: str,
    run_id: int | None,
    flow_run_name: str,
    flow_run_id: str,
    window: tuple[date, date] | None,
    reason: str | None,
    database_url: str,
    ui_url: str | None = None,
) -> Alert:
    """`ended` is what happened ("failed", "crashed"); `run_id` is ours when one was started,
    else the flow run names the run."""
    who = (
        f"meter-recon run {run_id}"
        if run_id is not None
        else f"meter-recon flow run {flow_run_name} ({flow_run_id})"
    )
    over = f" over {window[0]}..{window[1]} (UTC days, end exclusive)" if window else ""
    why = " ".join((reason or "no reason given").split()).rstrip(".")
    link = (
        f"; flow run: {ui_url.rstrip('/')}/runs/flow-run/{flow_run_id}"
        if ui_url and flow_run_id
        else ""
    )
    sentence = f"{who}{over} {ended}: {why}{link}."
    title = f"{who} {ended}"
    return Alert(
        title=redact(without_database_password(title, database_url)),
        body=redact(without_database_password(sentence, database_url)),
        discrepancy_ids=(),
    )
