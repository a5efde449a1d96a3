"""Tell finance what is new: one message per run, each discrepancy alerted once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from sqlmodel import Session, col, select

from meter_recon.settings import get_settings
from meter_recon.stripe.redaction import redact
from models.engine import get_engine, session_scope
from models.runs import failed_pairs, get_run
from models.tables import Discrepancy, DiscrepancyStatus, PairResult, ReconciliationRun
from models.types import canonical_decimal, utcnow

MAX_LINES = 50


@dataclass(frozen=True, slots=True)
class Alert:
    title: str
    body: str
    discrepancy_ids: tuple[int, ...]


class AlertNotDelivered(RuntimeError):
    pass


def _line(row: Discrepancy, reopened: bool) -> str:
    label = "RE-OPENED" if reopened else "NEW"
    numbers = f"Stripe {canonical_decimal(row.stripe_quantity)}"
    if row.internal_quantity is not None:
        numbers += f", ledger {canonical_decimal(row.internal_quantity)}"
    if row.difference is not None:
        numbers += f", difference {canonical_decimal(row.difference)}"
    items = ", ".join(i for i in (row.line_item_id, row.other_line_item_id) if i)
    return (
        f"- {label} {row.kind.value} #{row.id}: {row.stripe_customer_id} / {row.meter_id}, "
        f"{row.period_start}..{row.period_end} (end exclusive){f' [{items}]' if items else ''}: "
        f"{numbers}"
    )


def build_alert(
    *, run: ReconciliationRun, pending: list[Discrepancy], failed: list[PairResult]
) -> Alert | None:
    """The run's message, or None when there is nothing new to say."""
    if not pending and not failed:
        return None
    reopened = {row.id for row in pending if row.first_seen_run != row.last_seen_run}
    new_count = len(pending) - len(reopened)
    parts = [f"{new_count} new", f"{len(reopened)} re-opened discrepancies"]
    if failed:
        parts.append(f"{len(failed)} pair(s) failed")
    title = f"meter-recon run {run.id} ({run.window_start}..{run.window_end}): " + ", ".join(parts)
    lines = [_line(row, row.id in reopened) for row in pending[:MAX_LINES]]
    if len(pending) > MAX_LINES:
        lines.append(
            f"... and {len(pending) - MAX_LINES} more: meter-recon discrepancies --status open"
        )
    if failed:
        lines.append("")
        lines.append("Pairs not reconciled (their discrepancies were left as they were):")
        lines += [
            f"- {p.stripe_customer_id} / {p.meter_id}: {p.error or 'unknown error'}"
            for p in failed[:MAX_LINES]
        ]
    body = redact("\n".join(lines))
    ids = tuple(row.id for row in pending if row.id is not None)
    return Alert(title=redact(title), body=body, discrepancy_ids=ids)


def pending_alert(*, session: Session, run_id: int) -> Alert | None:
    run = get_run(session=session, run_id=run_id)
    pending = list(
        session.exec(
            select(Discrepancy)
            .where(
                Discrepancy.status == DiscrepancyStatus.OPEN,
                col(Discrepancy.alerted_at).is_(None),
                # Settling: not alerted before `settles_at`; the first run after it alerts it.
                sa.or_(
                    col(Discrepancy.settles_at).is_(None),
                    col(Discrepancy.settles_at) <= run.started_at,
                ),
            )
            .order_by(col(Discrepancy.id))
        ).all()
    )
    failed = failed_pairs(session=session, run_id=run_id)
    return build_alert(run=run, pending=pending, failed=failed)


def deliver(alert: Alert, urls: list[str]) -> None:
    """Send through Apprise; raise when any target did not take it."""
    import apprise

    notifier = apprise.Apprise()
    for url in urls:
        if not notifier.add(url):
            raise AlertNotDelivered("an alert URL in METER_RECON_ALERT_URLS is not valid")
    if not notifier.notify(title=alert.title, body=alert.body):
        raise AlertNotDelivered("the alert target did not accept the message")


def mark_alerted(*, session: Session, ids: tuple[int, ...], at: datetime) -> None:
    """Set `alerted_at` only on rows still waiting (a re-open in between keeps its alert)."""
    table = Discrepancy.__table__  # type: ignore[attr-defined]
    for start in range(0, len(ids), 1000):
        session.execute(
            sa.update(table)
            .where(table.c.id.in_(ids[start : start + 1000]), table.c.alerted_at.is_(None))
            .values(alerted_at=at)
        )


@task(name="alert-finance", retries=2, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE)
def alert_finance(run_id: int) -> int:
    """Alert what is new or re-opened and not yet alerted; returns how many were alerted."""
    logger = get_run_logger()
    settings = get_settings()
    engine = get_engine(settings.database_url)
    with Session(engine) as session:
        alert = pending_alert(session=session, run_id=run_id)
    if alert is None:
        logger.info("nothing new to alert")
        return 0
    if not settings.alert_urls:
        logger.warning(
            "no METER_RECON_ALERT_URLS set: %d discrepancies wait to be alerted",
            len(alert.discrepancy_ids),
        )
        return 0
    deliver(alert, settings.alert_urls)
    with session_scope(engine) as session:
        mark_alerted(session=session, ids=alert.discrepancy_ids, at=utcnow())
    logger.info("alerted finance: %s", alert.title)
    return len(alert.discrepancy_ids)
