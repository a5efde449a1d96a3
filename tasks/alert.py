"""Tell finance what is new: one message per run, each discrepancy alerted once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from prefect.settings import PREFECT_UI_URL
from sqlmodel import Session, col, select

from integrations.stripe.redaction import redact
from models.engine import get_engine, session_scope
from models.enums import Ledger
from models.money import format_money
from models.runs import failed_pairs, get_run, invoice_sync_error, ledger_sync_error
from models.tables import Discrepancy, DiscrepancyStatus, PairResult, ReconciliationRun
from models.types import canonical_decimal, utcnow
from tasks.last_completed import gap_line
from tasks.report import compact_period
from tasks.run_config import RunConfig
from tasks.summary import LEDGER_PARTS, CurrencyTotal, largest_first, summarize_money

MAX_LINES = 50


@dataclass(frozen=True, slots=True)
class Alert:
    title: str
    body: str
    discrepancy_ids: tuple[int, ...]


class AlertNotDelivered(RuntimeError):
    pass


def _is_stripe(row: Discrepancy) -> bool:
    return row.ledger is Ledger.STRIPE


def _numbers(row: Discrepancy) -> str:
    numbers = f"Stripe {canonical_decimal(row.stripe_quantity)}"
    if row.internal_quantity is not None:
        billed = "invoiced" if _is_stripe(row) else "ledger"
        numbers += f", {billed} {canonical_decimal(row.internal_quantity)}"
    if row.difference is not None:
        numbers += f", difference {canonical_decimal(row.difference)}"
    return numbers


def _amount(row: Discrepancy) -> str:
    if row.amount_at_stake is None or row.currency is None:
        return "not valued"
    amount = format_money(row.amount_at_stake, row.currency)
    _title, positive, negative = LEDGER_PARTS[row.ledger.value]
    if row.amount_at_stake > 0:
        return f"{amount} {positive}"
    return f"{amount} {negative}" if row.amount_at_stake < 0 else amount


def _line(row: Discrepancy) -> str:
    label = "RE-OPENED" if row.reopened_at is not None else "NEW"
    if _is_stripe(row):
        label += " (against Stripe's invoices)"
    items = ", ".join(i for i in (row.line_item_id, row.other_line_item_id) if i)
    cause = f"likely {row.likely_cause}" if row.likely_cause else "cause unknown"
    if row.cause_detail:
        cause += f" ({row.cause_detail})"
    return (
        f"- {label} {row.kind.value} #{row.id}: {row.stripe_customer_id} / {row.meter_id}, "
        f"{compact_period(row.period_start, row.period_end)} (end exclusive)"
        f"{f' [{items}]' if items else ''}: {_numbers(row)}; {_amount(row)}; {cause}"
    )


def _currency_text(total: CurrencyTotal, ledger: str = Ledger.INTERNAL.value) -> str:
    """`20.50 usd not billed / -3.25 usd over-billed`: a side without money is left out."""
    _title, positive, negative = LEDGER_PARTS[ledger]
    amounts = []
    if total.not_billed:
        amounts.append(f"{format_money(total.not_billed, total.currency)} {positive}")
    if total.over_billed:
        amounts.append(f"{format_money(total.over_billed, total.currency)} {negative}")
    return " / ".join(amounts)


def _ledger_money(rows: list[Discrepancy], ledger: str) -> str:
    totals = summarize_money(rows)
    return "; ".join(t for t in (_currency_text(total, ledger) for total in totals) if t)


def _per_currency(rows: list[Discrepancy]) -> str:
    """The rows' money per currency, from the summary's own aggregation (`summarize_money`);
    each ledger apart, named, once Stripe's invoices are among them (never added together)."""
    if not any(_is_stripe(row) for row in rows):
        return _ledger_money(rows, Ledger.INTERNAL.value)
    parts = []
    for ledger, (title, _positive, _negative) in LEDGER_PARTS.items():
        money = _ledger_money([r for r in rows if r.ledger.value == ledger], ledger)
        if money:
            parts.append(f"{title[0].lower()}{title[1:]}: {money}")
    return "; ".join(parts)


def _by_customer(rows: list[Discrepancy]) -> list[tuple[str, list[Discrepancy]]]:
    """Customers in the order of their largest row (largest amount first), rows likewise."""
    groups: dict[str, list[Discrepancy]] = {}
    for row in largest_first(rows):
        groups.setdefault(row.stripe_customer_id, []).append(row)
    return list(groups.items())


def _body_lines(pending: list[Discrepancy]) -> list[str]:
    lines: list[str] = []
    shown = 0
    for customer, rows in _by_customer(pending):
        if shown >= MAX_LINES:
            break
        amounts = _per_currency(rows)
        lines.append(f"{customer}{f' ({amounts})' if amounts else ''}:")
        for row in rows[: MAX_LINES - shown]:
            lines.append(_line(row))
            shown += 1
    if len(pending) > shown:
        lines.append(
            f"... and {len(pending) - shown} more: meter-recon discrepancies --status open"
        )
    return lines


def build_alert(
    *,
    run: ReconciliationRun,
    pending: list[Discrepancy],
    failed: list[PairResult],
    ui_url: str | None = None,
) -> Alert | None:
    """The run's message, or None when there is nothing new to say.

    RE-OPENED comes from `reopened_at`, so a row whose first alert was not delivered is
    still NEW the next time.
    """
    gap = gap_line(run.counts)  # a missed nightly is told on its own too
    sync_error = invoice_sync_error(run)
    ledger_error = ledger_sync_error(run)
    if (
        not pending
        and not failed
        and not run.discovery_error
        and not sync_error
        and not ledger_error
        and gap is None
    ):
        return None
    reopened = sum(1 for row in pending if row.reopened_at is not None)
    parts = [f"{len(pending) - reopened} new", f"{reopened} re-opened discrepancies"]
    if failed:
        parts.append(f"{len(failed)} pair(s) failed")
    if run.discovery_error:
        parts.append("discovery failed")
    if sync_error:
        parts.append("invoice sync failed")
    if ledger_error:
        parts.append("ledger sync failed")
    title = f"meter-recon run {run.id} ({run.window_start}..{run.window_end}): " + ", ".join(parts)
    amounts = _per_currency(pending)
    if amounts:
        title += f"; {amounts}"
    lines = ([gap, ""] if gap else []) + _body_lines(pending)
    if failed:
        lines.append("")
        lines.append("Pairs not reconciled (their discrepancies were left as they were):")
        lines += [
            f"- {p.stripe_customer_id} / {p.meter_id}: {p.error or 'unknown error'}"
            for p in failed[:MAX_LINES]
        ]
    if run.discovery_error:
        lines += [
            "",
            "Discovery of the pairs Stripe bills failed; the run used the pairs and prices "
            f"already cached: {run.discovery_error}",
        ]
    if sync_error:
        lines += [
            "",
            "Reading Stripe's invoices failed; the stripe ledger was compared with the line "
            f"items already read: {sync_error}",
        ]
    if ledger_error:
        lines += ["", f"The ledger sync failed; the run used the ledger as it was: {ledger_error}"]
    if ui_url and run.flow_run_id:
        lines += ["", f"Flow run: {ui_url.rstrip('/')}/runs/flow-run/{run.flow_run_id}"]
    body = redact("\n".join(lines))
    ids = tuple(row.id for row in pending if row.id is not None)
    return Alert(title=redact(title), body=body, discrepancy_ids=ids)


def pending_alert(*, session: Session, run_id: int, ui_url: str | None = None) -> Alert | None:
    """What is open, not alerted yet and not settling any more, for run `run_id`'s message."""
    run = get_run(session=session, run_id=run_id)
    pending = list(
        session.exec(
            select(Discrepancy)
            .where(
                Discrepancy.status == DiscrepancyStatus.OPEN,
                col(Discrepancy.alerted_at).is_(None),
                sa.or_(
                    col(Discrepancy.settles_at).is_(None),
                    col(Discrepancy.settles_at) <= run.started_at,
                ),
            )
            .order_by(col(Discrepancy.id))
        ).all()
    )
    failed = failed_pairs(session=session, run_id=run_id)
    return build_alert(run=run, pending=pending, failed=failed, ui_url=ui_url)


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
def alert_finance(run_id: int, config: RunConfig) -> int:
    """Alert what is new or re-opened and not yet alerted; returns how many were alerted."""
    logger = get_run_logger()
    engine = get_engine(config.database)
    with Session(engine) as session:
        alert = pending_alert(session=session, run_id=run_id, ui_url=PREFECT_UI_URL.value())
    if alert is None:
        logger.info("nothing new to alert")
        return 0
    if not config.alert_urls:
        logger.warning(
            "no METER_RECON_ALERT_URLS set: %d discrepancies wait to be alerted",
            len(alert.discrepancy_ids),
        )
        return 0
    deliver(alert, config.alert_targets)
    with session_scope(engine) as session:
        mark_alerted(session=session, ids=alert.discrepancy_ids, at=utcnow())
    logger.info("alerted finance: %s", alert.title)
    return len(alert.discrepancy_ids)
