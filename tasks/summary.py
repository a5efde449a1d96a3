"""A run's summary, built once: read the run's rows (`read_run`), aggregate them without I/O
(`summarize`), and hand the one `RunSummary` to every renderer (`tasks/report.py`: markdown,
JSON, the terminal; the alert's totals come from the same `Money` and `currency_totals`).

Money is never added across currencies: every total is per currency.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, Generic, TypeVar

from sqlmodel import Session, col, select

from models.discrepancies import rows_in_customer_order
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


def largest_key(row: Discrepancy) -> tuple[Decimal, Decimal, tuple[str, ...]]:
    """By |amount at stake| (not valued last), then |difference|, then identity (not id)."""
    return (-_size(row.amount_at_stake), -_size(row.difference), _identity(row))


def largest_first(rows: Iterable[Discrepancy]) -> list[Discrepancy]:
    """By |amount at stake| (not valued last), then |difference|, then identity (not id)."""
    return sorted(rows, key=largest_key)


T = TypeVar("T")


@dataclass
class Smallest(Generic[T]):
    """The `k` smallest items by `key` of a stream, holding at most `4 k` at a time."""

    k: int
    key: Callable[[T], Any]
    _items: list[T] = field(default_factory=list)

    def add(self, item: T) -> None:
        self._items.append(item)
        if len(self._items) > 4 * self.k:
            self._items = sorted(self._items, key=self.key)[: self.k]

    def result(self) -> list[T]:
        return sorted(self._items, key=self.key)[: self.k]


def _split(amount: Decimal) -> tuple[Decimal, Decimal]:
    return (amount, Decimal(0)) if amount > 0 else (Decimal(0), amount)


@dataclass
class Money:
    """Per key (a currency, or a currency and a meter): not-billed and over-billed sums and
    how many valued rows; not valued rows are left out. Never added across currencies."""

    sums: dict[Any, list[Decimal]] = field(
        default_factory=lambda: defaultdict(lambda: [Decimal(0), Decimal(0)])
    )
    counts: dict[Any, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, key: Any, amount: Decimal) -> None:
        positive, negative = _split(amount)
        self.sums[key][0] += positive
        self.sums[key][1] += negative
        self.counts[key] += 1


def currency_totals(money: Money) -> tuple[CurrencyTotal, ...]:
    return tuple(
        CurrencyTotal(currency=c, not_billed=s[0], over_billed=s[1], count=money.counts[c])
        for c, s in sorted(money.sums.items())
    )


def _customer_rank(total: CustomerTotal) -> tuple[Decimal, tuple[str, str]]:
    return (-(total.not_billed - total.over_billed), (total.customer, total.currency))


class _Customers:
    """The customers with the most money at stake, from rows that come a customer at a
    time: a customer's totals are final when the next customer's rows begin."""

    def __init__(self) -> None:
        self._top: Smallest[CustomerTotal] = Smallest(TOP_CUSTOMERS, _customer_rank)
        self._customer: str | None = None
        self._money = Money()

    def add(self, row: Discrepancy) -> None:
        if row.stripe_customer_id != self._customer:
            self._flush()
            self._customer = row.stripe_customer_id
        if row.amount_at_stake is not None and row.currency is not None:
            self._money.add(row.currency, row.amount_at_stake)

    def _flush(self) -> None:
        if self._customer is not None:
            for currency, (positive, negative) in self._money.sums.items():
                self._top.add(
                    CustomerTotal(
                        customer=self._customer,
                        currency=currency,
                        not_billed=positive,
                        over_billed=negative,
                        count=self._money.counts[currency],
                    )
                )
        self._money = Money()

    def result(self) -> tuple[CustomerTotal, ...]:
        self._flush()
        self._customer = None
        return tuple(self._top.result())


@dataclass
class _Tally:
    """What a summary (or one ledger's part of it) counts of its rows, in one pass."""

    at_stake: int = 0
    not_valued: int = 0
    money: Money = field(default_factory=Money)
    top: Smallest[Discrepancy] = field(default_factory=lambda: Smallest(TOP, largest_key))
    not_subscribed: set[tuple[str, str]] = field(default_factory=set)

    def add(self, row: Discrepancy) -> None:
        self.at_stake += 1
        if row.amount_at_stake is None or row.currency is None:
            self.not_valued += 1
        else:
            self.money.add(row.currency, row.amount_at_stake)
        self.top.add(row)
        if row.likely_cause == LikelyCause.NOT_SUBSCRIBED:
            self.not_subscribed.add((row.stripe_customer_id, row.meter_id))


@dataclass
class _RunTally:
    """The whole run's tallies: overall, per ledger, per customer, per meter, per cause."""

    overall: _Tally = field(default_factory=_Tally)
    ledgers: dict[str, _Tally] = field(default_factory=lambda: defaultdict(_Tally))
    customers: _Customers = field(default_factory=_Customers)
    meters: Money = field(default_factory=Money)
    causes: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, row: Discrepancy) -> None:
        self.overall.add(row)
        self.ledgers[row.ledger.value].add(row)
        self.customers.add(row)
        if row.amount_at_stake is not None and row.currency is not None:
            self.meters.add((row.currency, row.meter_id), row.amount_at_stake)
        self.causes[row.likely_cause or NO_CAUSE] += 1


def _meter_amounts(meters: Money) -> tuple[MeterAmount, ...]:
    return tuple(
        MeterAmount(meter=k[1], currency=k[0], not_billed=s[0], over_billed=s[1])
        for k, s in sorted(meters.sums.items())
    )


def _causes(causes: dict[str, int]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(causes.items(), key=lambda item: (-item[1], item[0])))


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


def _ledger_part(ledger: str, tally: _Tally, counts: dict[str, int]) -> LedgerPart:
    title, positive, negative = LEDGER_PARTS[ledger]
    return LedgerPart(
        ledger=ledger,
        title=title,
        positive=positive,
        negative=negative,
        compared=counts["compared"],
        matched=counts["matched"],
        pending=counts["pending"],
        at_stake=tally.at_stake,
        totals=currency_totals(tally.money),
        not_valued=tally.not_valued,
        top=tuple(_top_row(r) for r in tally.top.result()),
        not_subscribed=tuple(sorted(tally.not_subscribed)) if ledger == Ledger.STRIPE else (),
    )


def _ledger_parts(run: ReconciliationRun, tallies: dict[str, _Tally]) -> tuple[LedgerPart, ...]:
    """A part per ledger the run compared (a run of before two ledgers: the internal one),
    and per ledger it has rows of."""
    counts: dict[str, Any] = run.counts
    compared = set(counts.get("ledgers", [Ledger.INTERNAL.value]))
    compared |= {ledger for ledger, tally in tallies.items() if tally.at_stake}
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
        _ledger_part(ledger, tallies.get(ledger) or _Tally(), numbers[ledger])
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
    """What a summary is built from: the run, its rows not resolved (a customer's rows
    together, as `read_run` streams them), its failed pairs."""

    run: ReconciliationRun
    rows: Iterable[Discrepancy]
    failed: list[PairResult]


ROWS_PAGE = 2000  # rows `read_run` reads at a time


def read_run(*, session: Session, run_id: int | None = None) -> RunRows:
    """The rows of run `run_id` (the latest when None): what it found that is not resolved,
    streamed a page at a time in customer order while `session` is open (a summary of a run
    of any size holds one page of rows)."""
    run_id = _latest_run_id(session) if run_id is None else run_id
    try:
        run = get_run(session=session, run_id=run_id)
    except LookupError as missing:
        raise UnknownRun(f"There is no run with id {run_id}.") from missing
    return RunRows(
        run=run,
        rows=_rows_of_run(session, run_id),
        failed=failed_pairs(session=session, run_id=run_id),
    )


def _rows_of_run(session: Session, run_id: int) -> Iterator[Discrepancy]:
    return rows_in_customer_order(
        session=session,
        where=[
            col(Discrepancy.first_seen_run) <= run_id,
            col(Discrepancy.last_seen_run) >= run_id,
            Discrepancy.status != DiscrepancyStatus.RESOLVED,  # type: ignore[list-item]
        ],
        page_size=ROWS_PAGE,
    )


def summarize(source: RunRows) -> RunSummary:
    """The summary of a run's rows, without I/O, in one pass over them: every renderer reads
    this one value."""
    run = source.run
    assert run.id is not None
    tally = _RunTally()
    for row in source.rows:
        tally.add(row)
    failed = sorted(source.failed, key=lambda r: (r.stripe_customer_id, r.meter_id))
    counts: dict[str, Any] = run.counts
    overall = tally.overall
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
        at_stake=overall.at_stake,
        totals=currency_totals(overall.money),
        not_valued=overall.not_valued,
        top=tuple(_top_row(r) for r in overall.top.result()),
        customers=tally.customers.result(),
        causes=_causes(tally.causes),
        meters=_meter_amounts(tally.meters),
        failed=tuple(
            FailedPair(customer=p.stripe_customer_id, meter=p.meter_id, error=p.error or "")
            for p in failed
        ),
        last_completed=gap_line(counts),
        invoice_sync=_invoice_sync(counts),
        invoice_sync_error=invoice_sync_error(run),
        ledgers=_ledger_parts(run, tally.ledgers),
        internal_ledger_empty=bool(counts.get("internal_ledger_empty")),
    )


def build_summary(*, session: Session, run_id: int | None = None) -> RunSummary:
    """The summary of run `run_id` (the latest when None), read once and aggregated."""
    return summarize(read_run(session=session, run_id=run_id))
