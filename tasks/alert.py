"""Tell finance what is new: one message per run, each discrepancy alerted once."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from prefect.settings import PREFECT_UI_URL
from sqlmodel import Session, col

from integrations.stripe.redaction import redact
from models.discrepancies import rows_in_customer_order
from models.engine import get_engine, session_scope
from models.enums import Ledger
from models.money import format_money
from models.runs import failed_pairs, get_run, invoice_sync_error, ledger_sync_error
from models.tables import Discrepancy, DiscrepancyStatus, PairResult, ReconciliationRun
from models.types import canonical_decimal, utcnow
from tasks.last_completed import gap_line
from tasks.report import compact_period
from tasks.run_config import RunConfig
from tasks.summary import (
    LEDGER_PARTS,
    CurrencyTotal,
    Money,
    Smallest,
    currency_totals,
    largest_first,
    largest_key,
)

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


@dataclass
class _Money:
    """The money of some rows per ledger and currency, and which ledgers they came from."""

    by_ledger: dict[str, Money] = field(default_factory=dict)
    ledgers: set[str] = field(default_factory=set)

    def add(self, row: Discrepancy) -> None:
        self.ledgers.add(row.ledger.value)
        if row.amount_at_stake is not None and row.currency is not None:
            money = self.by_ledger.setdefault(row.ledger.value, Money())
            money.add(row.currency, row.amount_at_stake)

    def text(self) -> str:
        """Per currency, from the summary's own aggregation; each ledger apart, named, once
        Stripe's invoices are among the rows (never added together)."""
        if Ledger.STRIPE.value not in self.ledgers:
            return self._ledger_text(Ledger.INTERNAL.value)
        parts = []
        for ledger, (title, _positive, _negative) in LEDGER_PARTS.items():
            money = self._ledger_text(ledger)
            if money:
                parts.append(f"{title[0].lower()}{title[1:]}: {money}")
        return "; ".join(parts)

    def _ledger_text(self, ledger: str) -> str:
        totals = currency_totals(self.by_ledger.get(ledger) or Money())
        return "; ".join(t for t in (_currency_text(total, ledger) for total in totals) if t)


@dataclass(frozen=True, slots=True)
class _CustomerLines:
    """One customer's part of the body: ranked by its largest row, its lines largest first."""

    largest: tuple[object, ...]
    header: str
    lines: tuple[str, ...]


class _Body:
    """The body's customers, from rows that come a customer at a time: only the customers
    whose lines can be shown are kept, each with at most `MAX_LINES` lines."""

    def __init__(self) -> None:
        self._top: Smallest[_CustomerLines] = Smallest(MAX_LINES, lambda c: c.largest)
        self._rows: list[Discrepancy] = []

    def add(self, row: Discrepancy) -> None:
        if self._rows and self._rows[0].stripe_customer_id != row.stripe_customer_id:
            self._flush()
        self._rows.append(row)

    def _flush(self) -> None:
        if not self._rows:
            return
        rows, money = largest_first(self._rows), _Money()
        for row in rows:
            money.add(row)
        amounts = money.text()
        customer = rows[0].stripe_customer_id
        self._top.add(
            _CustomerLines(
                largest=largest_key(rows[0]),
                header=f"{customer}{f' ({amounts})' if amounts else ''}:",
                lines=tuple(_line(row) for row in rows[:MAX_LINES]),
            )
        )
        self._rows = []

    def lines(self, pending: int) -> list[str]:
        """Customers in the order of their largest row (largest amount first), at most
        `MAX_LINES` discrepancy lines in all, then how many more there are."""
        self._flush()
        lines: list[str] = []
        shown = 0
        for customer in self._top.result():
            if shown >= MAX_LINES:
                break
            lines.append(customer.header)
            for line in customer.lines[: MAX_LINES - shown]:
                lines.append(line)
                shown += 1
        if pending > shown:
            lines.append(f"... and {pending - shown} more: meter-recon discrepancies --status open")
        return lines


@dataclass
class _Pending:
    """What the alert says of the rows waiting to be alerted, read in one pass."""

    ids: list[int] = field(default_factory=list)
    reopened: int = 0
    money: _Money = field(default_factory=_Money)
    body: _Body = field(default_factory=_Body)

    @classmethod
    def of(cls, rows: Iterable[Discrepancy]) -> _Pending:
        pending = cls()
        for row in rows:
            if row.id is not None:
                pending.ids.append(row.id)
            pending.reopened += row.reopened_at is not None
            pending.money.add(row)
            pending.body.add(row)
        return pending


def build_alert(
    *,
    run: ReconciliationRun,
    pending: Iterable[Discrepancy],
    failed: list[PairResult],
    ui_url: str | None = None,
) -> Alert | None:
    """The run's message, or None when there is nothing new to say.

    `pending` comes a customer's rows together (as `pending_alert` reads them) and is read
    once. RE-OPENED comes from `reopened_at`, so a row whose first alert was not delivered
    is still NEW the next time.
    """
    waiting = _Pending.of(pending)
    gap = gap_line(run.counts)  # a missed nightly is told on its own too
    sync_error = invoice_sync_error(run)
    ledger_error = ledger_sync_error(run)
    if (
        not waiting.ids
        and not failed
        and not run.discovery_error
        and not sync_error
        and not ledger_error
        and gap is None
    ):
        return None
    reopened = waiting.reopened
    parts = [f"{len(waiting.ids) - reopened} new", f"{reopened} re-opened discrepancies"]
    if failed:
        parts.append(f"{len(failed)} pair(s) failed")
    if run.discovery_error:
        parts.append("discovery failed")
    if sync_error:
        parts.append("invoice sync failed")
    if ledger_error:
        parts.append("ledger sync failed")
    title = f"meter-recon run {run.id} ({run.window_start}..{run.window_end}): " + ", ".join(parts)
    amounts = waiting.money.text()
    if amounts:
        title += f"; {amounts}"
    lines = ([gap, ""] if gap else []) + waiting.body.lines(len(waiting.ids))
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
    return Alert(title=redact(title), body=body, discrepancy_ids=tuple(waiting.ids))


PENDING_PAGE = 2000  # rows `pending_alert` reads at a time


def pending_alert(*, session: Session, run_id: int, ui_url: str | None = None) -> Alert | None:
    """What is open, not alerted yet and not settling any more, for run `run_id`'s message;
    read a page at a time, a customer's rows together (a run of any size holds a page)."""
    run = get_run(session=session, run_id=run_id)
    failed = failed_pairs(session=session, run_id=run_id)
    return build_alert(run=run, pending=_pending_rows(session, run), failed=failed, ui_url=ui_url)


def _pending_rows(session: Session, run: ReconciliationRun) -> Iterator[Discrepancy]:
    return rows_in_customer_order(
        session=session,
        where=[
            Discrepancy.status == DiscrepancyStatus.OPEN,  # type: ignore[list-item]
            col(Discrepancy.alerted_at).is_(None),
            sa.or_(
                col(Discrepancy.settles_at).is_(None),
                col(Discrepancy.settles_at) <= run.started_at,
            ),
        ],
        page_size=PENDING_PAGE,
    )


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
