"""A run's summary, built once: read the run's rows (`read_run`), aggregate them without I/O
(`summarize`), and hand the one `RunSummary` to every renderer (`tasks/report.py`: markdown,
JSON, the terminal; the alert's totals come from `summarize_money` too).

Money is never added across currencies: every total is per currency.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from sqlmodel import Session, col, select

from models.enums import Ledger, LikelyCause
from models.errors import UserError
from models.runs import failed_pairs, get_run, invoice_sync_error, ledger_sync_error
from models.tables import (
    DISCREPANCY_IDENTITY,
    Discrepancy,
    DiscrepancyStatus,
    PairResult,
    ReconciliationRun,
)
from tasks.last_completed import gap_line

TOP = 10
TOP_CUSTOMERS = 10
NO_CAUSE = "none found"
#: What a run says, once, when it leaves the internal ledger out.
INTERNAL_LEDGER_EMPTY = (
    "the internal ledger holds no line item: compared against Stripe's invoices only"
)
#: Each ledger's part, in the order shown: its title and the words for each sign of money.
LEDGER_PARTS = {
    Ledger.INTERNAL.value: ("Against your ledger", "not billed", "over-billed"),
    Ledger.STRIPE.value: (
        "Against Stripe's invoices",
        "metered but not invoiced",
        "invoiced beyond what the meter now counts",
    ),
}


class UnknownRun(UserError, LookupError):
    """A run id that names no run: one sentence for the user."""


@dataclass(frozen=True, slots=True)
class CurrencyTotal:
    """Per currency: the sum of positive amounts (not billed) and of negative ones."""

    currency: str
    not_billed: Decimal
    over_billed: Decimal
    count: int


@dataclass(frozen=True, slots=True)
class CustomerTotal:
    customer: str
    currency: str
    not_billed: Decimal
    over_billed: Decimal
    count: int


@dataclass(frozen=True, slots=True)
class MeterAmount:
    meter: str
    currency: str
    not_billed: Decimal
    over_billed: Decimal


@dataclass(frozen=True, slots=True)
class TopRow:
    id: int
    customer: str
    meter: str
    period_start: date
    period_end: date
    kind: str
    stripe_quantity: Decimal
    internal_quantity: Decimal | None
    difference: Decimal | None
    amount_at_stake: Decimal | None
    currency: str | None
    likely_cause: str | None
    status: str
    ledger: str = Ledger.INTERNAL.value


@dataclass(frozen=True, slots=True)
class LedgerPart:
    """One ledger's part of the summary: what it compared, its money per currency (positive:
    metered, not billed; negative: billed beyond the meter), its top lines, and (the `stripe`
    ledger) the pairs no subscription bills."""

    ledger: str
    title: str
    positive: str  # what a positive amount means in this ledger
    negative: str
    compared: int
    matched: int
    pending: int
    at_stake: int
    totals: tuple[CurrencyTotal, ...]
    not_valued: int
    top: tuple[TopRow, ...]
    not_subscribed: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class FailedPair:
    customer: str
    meter: str
    error: str


@dataclass(frozen=True, slots=True)
class InvoiceSyncCounts:
    """What the run's sync of Stripe's invoices read: invoices, metered line items (added,
    changed, newly withdrawn), what was skipped as malformed, and its Stripe requests."""

    invoices: int
    line_items: int
    added: int
    changed: int
    withdrawn: int
    malformed: int
    requests: int


def _invoice_sync(counts: dict[str, Any]) -> InvoiceSyncCounts | None:
    found = counts.get("invoice_sync")
    if not found or found.get("failed"):
        return None
    return InvoiceSyncCounts(
        **{name: int(found.get(name, 0)) for name in InvoiceSyncCounts.__dataclass_fields__}
    )


@dataclass(frozen=True, slots=True)
class RunSummary:
    """Everything the summary shows, gathered in one read of the database."""

    run_id: int
    status: str
    trigger: str
    window_start: date
    window_end: date
    flow_run_id: str | None
    error: str | None
    discovery_error: str | None
    pairs_total: int
    pairs_ok: int
    pairs_failed: int
    line_items_compared: int
    line_items_matched: int
    line_items_pending: int
    discrepancies_new: int
    discrepancies_reopened: int
    discrepancies_resolved: int
    discrepancies_settling: int
    requests: int
    open_by_kind: dict[str, int]
    at_stake: int
    totals: tuple[CurrencyTotal, ...]
    not_valued: int
    top: tuple[TopRow, ...]
    customers: tuple[CustomerTotal, ...]
    causes: tuple[tuple[str, int], ...]
    meters: tuple[MeterAmount, ...]
    failed: tuple[FailedPair, ...]
    last_completed: str | None = None  # how long since a run completed, when over two days
    invoice_sync: InvoiceSyncCounts | None = None  # None: not run, or failed
    invoice_sync_error: str | None = None
    ledgers: tuple[LedgerPart, ...] = ()  # each ledger's own part, in `LEDGER_PARTS` order
    internal_ledger_empty: bool = False  # the run left the internal ledger out: it was empty
    ledger_sync_error: str | None = None  # why the ledger query could not be applied


def _size(value: Decimal | None) -> Decimal:
    return abs(value) if value is not None else Decimal(-1)


def _identity(row: Discrepancy) -> tuple[str, ...]:
    return tuple(str(getattr(row, name)) for name in DISCREPANCY_IDENTITY)


def largest_first(rows: list[Discrepancy]) -> list[Discrepancy]:
    """By |amount at stake| (not valued last), then |difference|, then identity (not id)."""
    return sorted(
        rows, key=lambda r: (-_size(r.amount_at_stake), -_size(r.difference), _identity(r))
    )


def _split(amount: Decimal) -> tuple[Decimal, Decimal]:
    return (amount, Decimal(0)) if amount > 0 else (Decimal(0), amount)


def summarize_money(rows: list[Discrepancy]) -> tuple[CurrencyTotal, ...]:
    """Per currency (sorted), the not-billed and over-billed sums; not valued rows left out."""
    sums: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        if row.amount_at_stake is None or row.currency is None:
            continue
        positive, negative = _split(row.amount_at_stake)
        sums[row.currency][0] += positive
        sums[row.currency][1] += negative
        counts[row.currency] += 1
    return tuple(
        CurrencyTotal(currency=c, not_billed=s[0], over_billed=s[1], count=counts[c])
        for c, s in sorted(sums.items())
    )


def _by_customer(rows: list[Discrepancy]) -> tuple[CustomerTotal, ...]:
    sums: dict[tuple[str, str], list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for row in rows:
        if row.amount_at_stake is None or row.currency is None:
            continue
        key = (row.stripe_customer_id, row.currency)
        positive, negative = _split(row.amount_at_stake)
        sums[key][0] += positive
        sums[key][1] += negative
        counts[key] += 1
    ranked = sorted(sums.items(), key=lambda item: (-(item[1][0] - item[1][1]), item[0]))
    return tuple(
        CustomerTotal(
            customer=k[0], currency=k[1], not_billed=s[0], over_billed=s[1], count=counts[k]
        )
        for k, s in ranked[:TOP_CUSTOMERS]
    )


def _by_meter(rows: list[Discrepancy]) -> tuple[MeterAmount, ...]:
    sums: dict[tuple[str, str], list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for row in rows:
        if row.amount_at_stake is None or row.currency is None:
            continue
        positive, negative = _split(row.amount_at_stake)
        sums[(row.currency, row.meter_id)][0] += positive
        sums[(row.currency, row.meter_id)][1] += negative
    return tuple(
        MeterAmount(meter=k[1], currency=k[0], not_billed=s[0], over_billed=s[1])
        for k, s in sorted(sums.items())
    )


def _causes(rows: list[Discrepancy]) -> tuple[tuple[str, int], ...]:
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        counts[row.likely_cause or NO_CAUSE] += 1
    return tuple(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _top_row(row: Discrepancy) -> TopRow:
    assert row.id is not None
    return TopRow(
        id=row.id,
        customer=row.stripe_customer_id,
        meter=row.meter_id,
        period_start=row.period_start,
        period_end=row.period_end,
        kind=row.kind.value,
        stripe_quantity=row.stripe_quantity,
        internal_quantity=row.internal_quantity,
        difference=row.difference,
        amount_at_stake=row.amount_at_stake,
        currency=row.currency,
        likely_cause=row.likely_cause,
        status=row.status.value,
        ledger=row.ledger.value,
    )


def _not_subscribed(rows: list[Discrepancy]) -> tuple[tuple[str, str], ...]:
    """The (customer, meter) pairs with usage no subscription bills, sorted."""
    return tuple(
        sorted(
            {
                (r.stripe_customer_id, r.meter_id)
                for r in rows
                if r.likely_cause == LikelyCause.NOT_SUBSCRIBED
            }
        )
    )


def _ledger_part(ledger: str, rows: list[Discrepancy], counts: dict[str, int]) -> LedgerPart:
    title, positive, negative = LEDGER_PARTS[ledger]
    return LedgerPart(
        ledger=ledger,
        title=title,
        positive=positive,
        negative=negative,
        compared=counts["compared"],
        matched=counts["matched"],
        pending=counts["pending"],
        at_stake=len(rows),
        totals=summarize_money(rows),
        not_valued=sum(1 for r in rows if r.amount_at_stake is None or r.currency is None),
        top=tuple(_top_row(r) for r in largest_first(rows)[:TOP]),
        not_subscribed=_not_subscribed(rows) if ledger == Ledger.STRIPE else (),
    )


def _ledger_parts(run: ReconciliationRun, rows: list[Discrepancy]) -> tuple[LedgerPart, ...]:
    """A part per ledger the run compared (a run of before two ledgers: the internal one),
    and per ledger it has rows of."""
    counts: dict[str, Any] = run.counts
    compared = set(counts.get("ledgers", [Ledger.INTERNAL.value]))
    compared |= {r.ledger.value for r in rows}
    stripe = counts.get("stripe") or {}
    numbers = {
        Ledger.INTERNAL.value: {
            "compared": run.line_items_compared,
            "matched": run.line_items_matched,
            "pending": run.line_items_pending,
        },
        Ledger.STRIPE.value: {
            name: int(stripe.get(name, 0)) for name in ("compared", "matched", "pending")
        },
    }
    return tuple(
        _ledger_part(ledger, [r for r in rows if r.ledger.value == ledger], numbers[ledger])
        for ledger in LEDGER_PARTS
        if ledger in compared
    )


def _latest_run_id(session: Session) -> int:
    latest = session.exec(
        select(ReconciliationRun.id).order_by(col(ReconciliationRun.id).desc()).limit(1)
    ).first()
    if latest is None:
        raise UnknownRun("There is no run yet; start one with `meter-recon run` or `nightly`.")
    return latest


@dataclass(frozen=True, slots=True)
class RunRows:
    """What a summary is built from: the run, its rows not resolved, its failed pairs."""

    run: ReconciliationRun
    rows: list[Discrepancy]
    failed: list[PairResult]


def read_run(*, session: Session, run_id: int | None = None) -> RunRows:
    """The rows of run `run_id` (the latest when None): what it found that is not resolved."""
    run_id = _latest_run_id(session) if run_id is None else run_id
    try:
        run = get_run(session=session, run_id=run_id)
    except LookupError as missing:
        raise UnknownRun(f"There is no run with id {run_id}.") from missing
    rows = list(
        session.exec(
            select(Discrepancy).where(
                col(Discrepancy.first_seen_run) <= run_id,
                col(Discrepancy.last_seen_run) >= run_id,
                Discrepancy.status != DiscrepancyStatus.RESOLVED,
            )
        ).all()
    )
    return RunRows(run=run, rows=rows, failed=failed_pairs(session=session, run_id=run_id))


def summarize(source: RunRows) -> RunSummary:
    """The summary of a run's rows, without I/O: every renderer reads this one value."""
    run, rows = source.run, source.rows
    assert run.id is not None
    failed = sorted(source.failed, key=lambda r: (r.stripe_customer_id, r.meter_id))
    counts: dict[str, Any] = run.counts
    return RunSummary(
        run_id=run.id,
        status=run.status.value,
        trigger=run.trigger.value,
        window_start=run.window_start,
        window_end=run.window_end,
        flow_run_id=run.flow_run_id,
        error=run.error,
        discovery_error=run.discovery_error,
        ledger_sync_error=ledger_sync_error(run),
        pairs_total=run.pairs_total,
        pairs_ok=run.pairs_ok,
        pairs_failed=run.pairs_failed,
        line_items_compared=run.line_items_compared,
        line_items_matched=run.line_items_matched,
        line_items_pending=run.line_items_pending,
        discrepancies_new=run.discrepancies_new,
        discrepancies_reopened=run.discrepancies_reopened,
        discrepancies_resolved=run.discrepancies_resolved,
        discrepancies_settling=run.discrepancies_settling,
        requests=int(counts.get("requests", 0)),
        open_by_kind=dict(sorted(counts.get("by_kind", {}).items())),
        at_stake=len(rows),
        totals=summarize_money(rows),
        not_valued=sum(1 for r in rows if r.amount_at_stake is None or r.currency is None),
        top=tuple(_top_row(r) for r in largest_first(rows)[:TOP]),
        customers=_by_customer(rows),
        causes=_causes(rows),
        meters=_by_meter(rows),
        failed=tuple(
            FailedPair(customer=p.stripe_customer_id, meter=p.meter_id, error=p.error or "")
            for p in failed
        ),
        last_completed=gap_line(counts),
        invoice_sync=_invoice_sync(counts),
        invoice_sync_error=invoice_sync_error(run),
        ledgers=_ledger_parts(run, rows),
        internal_ledger_empty=bool(counts.get("internal_ledger_empty")),
    )


def build_summary(*, session: Session, run_id: int | None = None) -> RunSummary:
    """The summary of run `run_id` (the latest when None), read once and aggregated."""
    return summarize(read_run(session=session, run_id=run_id))
