"""The `stripe` ledger: Stripe's own finalized invoices against Stripe's own meter, per pair.

Stripe never revises a metered line once finalized while its meter keeps moving, so the two
drift; pure (no I/O, no clock), so every usage figure and the run's start come as arguments.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, localcontext
from enum import StrEnum
from operator import attrgetter
from typing import Any, Protocol

from models.canonical import EXACT, canonical_decimal
from models.enums import DiscrepancyKind, Formula, LikelyCause
from models.money import currency_exponent
from tasks.compare import DEFAULT_TOLERANCE, Tolerance, Window
from tasks.value import Price, UnsupportedPrice, Valued, price_from_stripe, value_discrepancy

__all__ = [
    "FINALIZATION_GRACE",
    "STRIPE_LEDGER",
    "InvoiceFacts",
    "LineFacts",
    "LineState",
    "MeteredPrice",
    "StripeFinding",
    "StripeLineItem",
    "StripePairComparison",
    "SubscribedItem",
    "compare_line",
    "compare_stripe_pair",
    "exact_usage",
    "group_line_items",
    "likely_cause",
    "line_state",
    "metered_price",
    "overlapping_line_items",
    "period_usage",
    "touched_days",
    "unbilled_range",
    "unbilled_usage",
]

#: The ledger these findings belong to (`Ledger.STRIPE` once the enum lands).
STRIPE_LEDGER = "stripe"
#: Stripe creates and finalizes a period's invoice up to this long after the period ends.
FINALIZATION_GRACE = timedelta(hours=72)
#: Subscriptions whose current period Stripe will not invoice.
_NOT_BILLING = frozenset({"canceled", "incomplete_expired", "paused"})

_DAY = timedelta(days=1)
_SECONDS_PER_DAY = 86_400
_ZERO = Decimal(0)


class LineState(StrEnum):
    """What an invoice's status makes of its lines."""

    PENDING = "pending"  # draft: covers its days, not compared
    FINALIZED = "finalized"  # open, paid, uncollectible: compared
    WITHDRAWN = "withdrawn"  # void: neither


_STATES = {
    "draft": LineState.PENDING,
    "open": LineState.FINALIZED,
    "paid": LineState.FINALIZED,
    "uncollectible": LineState.FINALIZED,
    "void": LineState.WITHDRAWN,
}


def line_state(invoice_status: str) -> LineState:
    """The state of the lines of an invoice in `invoice_status` (an unknown status raises)."""
    try:
        return _STATES[invoice_status]
    except KeyError:
        raise ValueError(f"Invoice status {invoice_status!r} is not one Stripe has.") from None


# --- grouping -------------------------------------------------------------------------------


class InvoiceFacts(Protocol):
    """What grouping reads of an invoice (`integrations.stripe.Invoice` has it)."""

    @property
    def id(self) -> str: ...
    @property
    def customer(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def currency(self) -> str: ...
    @property
    def finalized_at(self) -> int | None: ...


class LineFacts(Protocol):
    """What grouping reads of an invoice line (`integrations.stripe.InvoiceLine` has it)."""

    @property
    def id(self) -> str: ...
    @property
    def subscription_item(self) -> str | None: ...
    @property
    def price_id(self) -> str | None: ...
    @property
    def period_start(self) -> int: ...
    @property
    def period_end(self) -> int: ...
    @property
    def quantity(self) -> Decimal: ...
    @property
    def amount(self) -> int: ...


@dataclass(frozen=True, slots=True)
class MeteredPrice:
    """The meter a price bills, and the price itself (`None`: not understood, not valued)."""

    meter: str
    price: Price | None


def metered_price(obj: Mapping[str, Any]) -> MeteredPrice | None:
    """The meter and `Price` of a Stripe price object; `None` when it bills no meter."""
    recurring = obj.get("recurring")
    meter = recurring.get("meter") if isinstance(recurring, Mapping) else None
    if not isinstance(meter, str) or not meter:
        return None
    try:
        price: Price | None = price_from_stripe(obj)
    except UnsupportedPrice:
        price = None
    return MeteredPrice(meter=meter, price=price)


@dataclass(frozen=True, slots=True)
class StripeLineItem:
    """One line item of the `stripe` ledger: the metered lines of one invoice, subscription
    item and period. `*_at` are the exact (end-exclusive) bounds, `period_*` the UTC days
    they touch; `amount` is in the currency's major unit."""

    id: str
    invoice_id: str
    customer: str
    meter: str
    subscription_item: str | None
    price_id: str
    period_start_at: datetime
    period_end_at: datetime
    period_start: date
    period_end: date
    quantity: Decimal
    currency: str
    amount: Decimal
    invoice_status: str
    finalized_at: datetime | None

    @property
    def state(self) -> LineState:
        return line_state(self.invoice_status)


def _utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def touched_days(start_at: int, end_at: int) -> tuple[date, date]:
    """The UTC days `[first, end)` that `[start_at, end_at)` touches (at least one day): a
    period ending exactly at 00:00 UTC ends that day."""
    first = _utc(start_at).date()
    end = _utc(end_at).date() + (_DAY if end_at % _SECONDS_PER_DAY else timedelta(0))
    return first, max(end, first + _DAY)


def _group_key(line: LineFacts) -> tuple[str, int, int]:
    # A line without a subscription item is a line item of its own.
    return (line.subscription_item or f"line:{line.id}", line.period_start, line.period_end)


def group_line_items(
    invoice: InvoiceFacts, lines: Iterable[LineFacts], prices: Mapping[str, MeteredPrice]
) -> list[StripeLineItem]:
    """The invoice's metered line items, sorted by id: lines whose price is in `prices`,
    grouped by subscription item and exact period (one per tier becomes one item).

    `prices` maps each metered price id to its meter; other lines are skipped. A group
    takes the price and meter of its smallest line id.
    """
    groups: dict[tuple[str, int, int], list[LineFacts]] = {}
    for line in lines:
        if line.price_id is not None and line.price_id in prices:
            groups.setdefault(_group_key(line), []).append(line)
    items = [_line_item(invoice, group, prices) for group in groups.values()]
    return sorted(items, key=attrgetter("id"))


def _line_item(
    invoice: InvoiceFacts, group: list[LineFacts], prices: Mapping[str, MeteredPrice]
) -> StripeLineItem:
    first = min(group, key=attrgetter("id"))
    assert first.price_id is not None  # grouped lines all have a metered price
    start_day, end_day = touched_days(first.period_start, first.period_end)
    with localcontext(EXACT):
        quantity = sum((line.quantity for line in group), _ZERO)
        minor = sum(line.amount for line in group)
        amount = Decimal(minor).scaleb(-currency_exponent(invoice.currency))
    return StripeLineItem(
        id=first.id,
        invoice_id=invoice.id,
        customer=invoice.customer,
        meter=prices[first.price_id].meter,
        subscription_item=first.subscription_item,
        price_id=first.price_id,
        period_start_at=_utc(first.period_start),
        period_end_at=_utc(first.period_end),
        period_start=start_day,
        period_end=end_day,
        quantity=quantity,
        currency=invoice.currency,
        amount=amount,
        invoice_status=invoice.status,
        finalized_at=None if invoice.finalized_at is None else _utc(invoice.finalized_at),
    )


# --- Stripe's usage of a period ---------------------------------------------------------------


def period_usage(
    daily: Mapping[date, Decimal], formula: Formula, start: date, end: date
) -> Decimal:
    """Stripe's quantity over the days `[start, end)`: `sum`/`count` add the days, `last`
    takes the latest day with a value; no day with a value is 0."""
    days = sorted(day for day in daily if start <= day < end)
    if not days:
        return _ZERO
    if Formula(formula) is Formula.LAST:
        return daily[days[-1]]
    with localcontext(EXACT):
        return sum((daily[day] for day in days), _ZERO)


def _on_day_boundaries(item: StripeLineItem) -> bool:
    return all(
        moment.timestamp() % _SECONDS_PER_DAY == 0
        for moment in (item.period_start_at, item.period_end_at)
    )


def exact_usage(
    item: StripeLineItem, daily: Mapping[date, Decimal], formula: Formula
) -> Decimal | None:
    """`S` of the item from the pair's daily buckets when both ends are 00:00 UTC; `None`
    when it needs `StripeClient.usage_total` over `[period_start_at, period_end_at)`."""
    if not _on_day_boundaries(item):
        return None
    return period_usage(daily, formula, item.period_start, item.period_end)


# --- findings ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StripeFinding:
    """One discrepancy of the `stripe` ledger (what the recorder upserts, not a row)."""

    kind: DiscrepancyKind
    period_start: date
    period_end: date
    line_item_id: str
    other_line_item_id: str
    stripe_quantity: Decimal
    internal_quantity: Decimal | None
    difference: Decimal | None
    detail: str
    likely_cause: LikelyCause | None
    cause_detail: str | None
    valued: Valued
    ledger: str = STRIPE_LEDGER

    @property
    def identity(self) -> tuple[DiscrepancyKind, date, date, str, str]:
        """The identity within its pair and ledger, in `DiscrepancyKey`'s order."""
        return (
            self.kind,
            self.period_start,
            self.period_end,
            self.line_item_id,
            self.other_line_item_id,
        )


def _num(value: Decimal) -> str:
    return canonical_decimal(value)


def _canonical(value: Decimal) -> Decimal:
    return Decimal(canonical_decimal(value))


def _days(start: date, end: date) -> str:
    last = end - _DAY
    return str(start) if last == start else f"{start}..{last}"


def _moment(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _span(item: StripeLineItem) -> str:
    if _on_day_boundaries(item):
        return _days(item.period_start, item.period_end)
    return f"{_moment(item.period_start_at)}..{_moment(item.period_end_at)}"


def _minute_note(item: StripeLineItem) -> str:
    """Stripe sums whole minutes: say so when the period does not start on one."""
    start = item.period_start_at
    if start.second == 0 and start.microsecond == 0:
        return ""
    return (
        f" Stripe's usage is counted from {start.strftime('%H:%M')}, the start of the minute "
        f"the period starts in ({_moment(start)}): Stripe sums whole minutes."
    )


def _finalized_on(item: StripeLineItem) -> str:
    when = item.finalized_at
    return "" if when is None else f" on {when.date()}"


# --- one finalized line ------------------------------------------------------------------------


def _transformed_match(
    price: Price | None, stripe: Decimal, billed: Decimal, tolerance: Tolerance
) -> bool:
    """Whether `billed` is Stripe's quantity transformed (ceil or floor of S / divide_by)."""
    if price is None or price.divide_by is None:
        return False
    with localcontext(EXACT):
        whole, rest = divmod(stripe, Decimal(price.divide_by))  # truncates toward zero
        floor = whole - 1 if rest < 0 else whole
        ceil = whole + 1 if rest > 0 else whole
    return tolerance.equal(floor, billed) or tolerance.equal(ceil, billed)


def likely_cause(
    item: StripeLineItem, stripe_quantity: Decimal, formula: Formula
) -> tuple[LikelyCause | None, str | None]:
    """Why Stripe's meter and its own invoice differ: usage after finalization (`sum`,
    `count`), or none for `last` meters."""
    if Formula(formula) is Formula.LAST:
        return None, None
    with localcontext(EXACT):
        gap = stripe_quantity - item.quantity
    if gap > 0:
        return LikelyCause.LATE_USAGE, (
            f"{_num(gap)} units were recorded for this period after invoice {item.invoice_id} "
            f"was finalized{_finalized_on(item)}: Stripe will not invoice them."
        )
    return LikelyCause.CANCELLED_USAGE, (
        f"Stripe's meter now counts {_num(-gap)} fewer than invoice {item.invoice_id} billed: "
        "usage cancelled or adjusted after finalization."
    )


def _line_detail(item: StripeLineItem, stripe: Decimal, formula: Formula) -> str:
    said = (
        f"Stripe's meter counts {_num(stripe)} for {_span(item)}; invoice {item.invoice_id} "
        f"(line item {item.id}) billed {_num(item.quantity)}"
    )
    if Formula(formula) is Formula.LAST:
        said += f" when it was finalized{_finalized_on(item)}: the value changed after finalization"
    return f"{said}.{_minute_note(item)}"


def compare_line(
    item: StripeLineItem,
    *,
    stripe_quantity: Decimal,
    formula: Formula,
    price: Price | None,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
) -> StripeFinding | None:
    """A finalized line item against `stripe_quantity` (`S` over exactly its period):
    `None` when they match (within tolerance, or transformed), else its finding."""
    if item.state is not LineState.FINALIZED:
        raise ValueError(f"Line item {item.id} is {item.state}, not finalized: not compared.")
    stripe, billed = stripe_quantity, item.quantity
    if tolerance.equal(stripe, billed) or _transformed_match(price, stripe, billed, tolerance):
        return None
    kind = DiscrepancyKind.QUANTITY_MISMATCH if stripe else DiscrepancyKind.MISSING_IN_STRIPE
    cause, cause_detail = likely_cause(item, stripe, formula)
    with localcontext(EXACT):
        difference = stripe - billed
    return StripeFinding(
        kind=kind,
        period_start=item.period_start,
        period_end=item.period_end,
        line_item_id=item.id,
        other_line_item_id="",
        stripe_quantity=_canonical(stripe),
        internal_quantity=_canonical(billed),
        difference=_canonical(difference),
        detail=_line_detail(item, stripe, formula),
        likely_cause=cause,
        cause_detail=cause_detail,
        valued=value_discrepancy(
            kind=kind,
            stripe_quantity=stripe,
            internal_quantity=billed,
            price=price,
            ledger_price=None,
        ),
    )


# --- overlaps --------------------------------------------------------------------------------


def _overlap(
    greater: StripeLineItem,
    smaller: StripeLineItem,
    *,
    daily: Mapping[date, Decimal],
    formula: Formula,
    today: date,
    price: Price | None,
) -> StripeFinding:
    start_at = max(greater.period_start_at, smaller.period_start_at)
    end_at = min(greater.period_end_at, smaller.period_end_at)
    start, end = touched_days(int(start_at.timestamp()), int(end_at.timestamp()))
    metered_end = min(end, today)
    stripe = period_usage(daily, formula, start, metered_end) if start < metered_end else _ZERO
    so_far = "" if metered_end >= end else f" up to {metered_end - _DAY}"
    detail = (
        f"Invoice lines {greater.id} ({greater.invoice_id}) and {smaller.id} "
        f"({smaller.invoice_id}) both bill {_moment(start_at)}..{_moment(end_at)}; Stripe "
        f"metered {_num(stripe)} on {_days(start, end)}{so_far}."
    )
    kind = DiscrepancyKind.OVERLAPPING_LINE_ITEMS
    return StripeFinding(
        kind=kind,
        period_start=start,
        period_end=end,
        line_item_id=greater.id,
        other_line_item_id=smaller.id,
        stripe_quantity=_canonical(stripe),
        internal_quantity=None,
        difference=None,
        detail=detail,
        likely_cause=None,
        cause_detail=None,
        valued=value_discrepancy(
            kind=kind,
            stripe_quantity=stripe,
            internal_quantity=None,
            price=price,
            ledger_price=None,
        ),
    )


def overlapping_line_items(
    items: Iterable[StripeLineItem],
    *,
    daily: Mapping[date, Decimal],
    formula: Formula,
    today: date,
    prices: Mapping[str, Price | None],
) -> list[StripeFinding]:
    """One finding per two finalized line items whose periods share time (double billing),
    valued at the price of the greater id's line (`prices`: price id -> price)."""
    ordered = sorted(
        (item for item in items if item.state is LineState.FINALIZED),
        key=attrgetter("period_start_at", "id"),
    )
    findings = []
    for index, first in enumerate(ordered):
        for second in ordered[index + 1 :]:
            if second.period_start_at >= first.period_end_at:
                break
            greater, smaller = (first, second) if first.id > second.id else (second, first)
            findings.append(
                _overlap(
                    greater,
                    smaller,
                    daily=daily,
                    formula=formula,
                    today=today,
                    price=prices.get(greater.price_id),
                )
            )
    return findings


# --- unbilled days ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubscribedItem:
    """One of the pair's subscription items (any status): its subscription's status and its
    current period (Unix seconds, `None` when unknown)."""

    subscription_status: str
    current_period_start: int | None
    current_period_end: int | None

    def still_to_invoice(self, day: date) -> bool:
        """Whether part of `day` lies in a current period Stripe will still invoice."""
        start, end = self.current_period_start, self.current_period_end
        if self.subscription_status in _NOT_BILLING or start is None or end is None:
            return False
        day_start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
        return start < day_start + _SECONDS_PER_DAY and end > day_start


def unbilled_range(window: Window, run_started: datetime) -> tuple[date, date]:
    """The window's days that ended at least `FINALIZATION_GRACE` before the run started."""
    if run_started.tzinfo is None:
        raise ValueError("run_started must be a timezone-aware UTC datetime.")
    cutoff = (run_started.astimezone(UTC) - FINALIZATION_GRACE).date()
    end = max(window.start, min(window.end, cutoff))
    return window.start, end


def _unbilled_finding(
    day: date, value: Decimal, *, customer: str, meter: str, subscribed: bool, price: Price | None
) -> StripeFinding:
    kind = DiscrepancyKind.UNBILLED_USAGE
    cause = None if subscribed else LikelyCause.NOT_SUBSCRIBED
    cause_detail = (
        None
        if subscribed
        else f"no subscription of {customer} bills meter {meter}: Stripe will never invoice "
        "this usage."
    )
    return StripeFinding(
        kind=kind,
        period_start=day,
        period_end=day + _DAY,
        line_item_id="",
        other_line_item_id="",
        stripe_quantity=_canonical(value),
        internal_quantity=_ZERO,
        difference=_canonical(value),
        detail=(
            f"Stripe metered {_num(value)} on {day}, a day no invoice of Stripe bills and no "
            "current subscription period will."
        ),
        likely_cause=cause,
        cause_detail=cause_detail,
        valued=value_discrepancy(
            kind=kind,
            stripe_quantity=value,
            internal_quantity=_ZERO,
            price=price,
            ledger_price=None,
        ),
    )


def unbilled_usage(
    *,
    daily: Mapping[date, Decimal],
    window: Window,
    items: Iterable[StripeLineItem],
    subscription_items: Iterable[SubscribedItem],
    run_started: datetime,
    customer: str,
    meter: str,
    price: Price | None,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
) -> list[StripeFinding]:
    """The window's days with Stripe usage that Stripe has not invoiced and will not: no
    line item (finalized or draft) touches them, no current period still to be invoiced
    does, and they ended `FINALIZATION_GRACE` before the run. Valued at the pair's price."""
    covering = [item for item in items if item.state is not LineState.WITHDRAWN]
    subscribed = list(subscription_items)
    start, end = unbilled_range(window, run_started)
    findings = []
    for day in sorted(daily):
        value = daily[day]
        if not start <= day < end or tolerance.equal(value, _ZERO):
            continue
        if any(item.period_start <= day < item.period_end for item in covering):
            continue
        if any(entry.still_to_invoice(day) for entry in subscribed):
            continue
        findings.append(
            _unbilled_finding(
                day, value, customer=customer, meter=meter, subscribed=bool(subscribed), price=price
            )
        )
    return findings


# --- one pair --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StripePairComparison:
    """The `stripe` ledger's findings of one pair (sorted by identity), its counts, and what
    it re-evaluated (so the recorder resolves what no longer holds)."""

    findings: tuple[StripeFinding, ...]
    compared: int
    matched: int
    pending: int
    compared_line_item_ids: frozenset[str]
    considered_line_item_ids: frozenset[str]
    unbilled_days: tuple[date, date]


def compare_stripe_pair(
    *,
    items: Iterable[StripeLineItem],
    stripe_usage: Mapping[str, Decimal],
    daily: Mapping[date, Decimal],
    window: Window,
    today: date,
    run_started: datetime,
    formula: Formula,
    prices: Mapping[str, Price | None],
    pair_price: Price | None,
    subscription_items: Iterable[SubscribedItem],
    customer: str,
    meter: str,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
) -> StripePairComparison:
    """Compare one pair's `stripe` ledger with its usage.

    `items` are the pair's line items (any state); those not withdrawn that touch the window
    are considered. A finalized one whose period ended by `today` is compared with
    `stripe_usage[item.id]` (its `S`: `exact_usage`, else `usage_total`); the others are
    pending. `prices` maps each line's price id to its price.
    """
    considered = [
        item
        for item in items
        if item.state is not LineState.WITHDRAWN
        and item.period_start < window.end
        and item.period_end > window.start
    ]
    compared = [
        item
        for item in considered
        if item.state is LineState.FINALIZED and item.period_end <= today
    ]
    findings: list[StripeFinding] = []
    for item in compared:
        if item.id not in stripe_usage:
            raise ValueError(f"No Stripe usage was given for line item {item.id}.")
        finding = compare_line(
            item,
            stripe_quantity=stripe_usage[item.id],
            formula=formula,
            price=prices.get(item.price_id),
            tolerance=tolerance,
        )
        if finding is not None:
            findings.append(finding)
    matched = len(compared) - len(findings)
    findings += overlapping_line_items(
        considered, daily=daily, formula=formula, today=today, prices=prices
    )
    findings += unbilled_usage(
        daily=daily,
        window=window,
        items=considered,
        subscription_items=subscription_items,
        run_started=run_started,
        customer=customer,
        meter=meter,
        price=pair_price,
        tolerance=tolerance,
    )
    findings.sort(key=attrgetter("identity"))
    return StripePairComparison(
        findings=tuple(findings),
        compared=len(compared),
        matched=matched,
        pending=len(considered) - len(compared),
        compared_line_item_ids=frozenset(item.id for item in compared),
        considered_line_item_ids=frozenset(item.id for item in considered),
        unbilled_days=unbilled_range(window, run_started),
    )
