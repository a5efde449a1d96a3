"""The comparison of one (customer, meter) pair: Stripe's daily usage against the ledger.

Pure: no I/O, no Prefect, no clock, no database (its enums, key and number form come
from the pure `models.enums`, `models.keys` and `models.canonical`). Everything it needs
is an argument, so the same inputs always give the same findings, in the same order. The
rules are docs/architecture.md's "Comparison semantics"; where that is silent the rule is
written on the function that applies it.

Quantities are ``Decimal`` throughout and every sum or difference is computed in a local
context wide enough to be exact (``EXACT``); a computation that would have to round
raises instead of returning an approximate answer.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import (
    Decimal,
    Inexact,
    localcontext,
)
from operator import attrgetter

from models.canonical import EXACT, EXACT_DIGITS, canonical_decimal
from models.enums import DiscrepancyKind, Formula, Ledger
from models.keys import WITHIN_PAIR, DiscrepancyKey

__all__ = [
    "DEFAULT_TOLERANCE",
    "Finding",
    "Formula",
    "Kind",
    "LineItem",
    "PairComparison",
    "Scope",
    "Tolerance",
    "Window",
    "compare_pair",
    "fetch_range",
]


_ZERO = Decimal(0)
_DAY = timedelta(days=1)


# The enums are the tables' own, so a finding's kind is the stored kind.
Kind = DiscrepancyKind


def _require_day(value: object, name: str) -> None:
    # datetime is a subclass of date, and comparing the two raises; refuse it up front.
    if not isinstance(value, date) or isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime.date (a UTC day), got {type(value).__name__}.")


def _require_decimal(value: object, name: str) -> Decimal:
    if not isinstance(value, Decimal):
        raise TypeError(f"{name} must be a Decimal, got {type(value).__name__}.")
    if not value.is_finite():
        raise ValueError(f"{name} must be a finite number, got {value}.")
    return value


@dataclass(frozen=True, slots=True)
class Window:
    """The UTC days ``[start, end)`` a run covers; ``end`` is exclusive."""

    start: date
    end: date

    def __post_init__(self) -> None:
        _require_day(self.start, "window start")
        _require_day(self.end, "window end")
        if self.start >= self.end:
            raise ValueError(
                f"The window {self.start}..{self.end} is empty or reversed: "
                "its start must come before its (exclusive) end."
            )


@dataclass(frozen=True, slots=True)
class Tolerance:
    """Two quantities are equal when ``|a-b| <= abs_tol`` or ``<= rel_tol * max(|a|, |b|)``."""

    abs_tol: Decimal = Decimal("0.000001")
    rel_tol: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        for name in ("abs_tol", "rel_tol"):
            if _require_decimal(getattr(self, name), name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}.")

    def equal(self, a: Decimal, b: Decimal) -> bool:
        """Whether ``a`` and ``b`` are equal within this tolerance (computed exactly)."""
        with localcontext(EXACT):
            return _equal(self, a, b)


DEFAULT_TOLERANCE = Tolerance()


def _equal(tolerance: Tolerance, a: Decimal, b: Decimal) -> bool:
    """``Tolerance.equal`` without entering a context: the caller is inside ``EXACT``."""
    difference = abs(a - b)
    if difference <= tolerance.abs_tol:
        return True
    rel_tol = tolerance.rel_tol
    return bool(rel_tol) and difference <= rel_tol * max(abs(a), abs(b))


@dataclass(frozen=True, slots=True)
class LineItem:
    """A ledger line item of the pair: it bills ``quantity`` for ``[period_start, period_end)``."""

    id: str
    period_start: date
    period_end: date
    quantity: Decimal

    def __post_init__(self) -> None:
        _require_day(self.period_start, f"line item {self.id!r} period start")
        _require_day(self.period_end, f"line item {self.id!r} period end")
        if self.period_start >= self.period_end:
            raise ValueError(
                f"Line item {self.id!r} has an empty or reversed period "
                f"{self.period_start}..{self.period_end} (the end is exclusive)."
            )
        _require_decimal(self.quantity, f"line item {self.id!r} quantity")


@dataclass(frozen=True, slots=True)
class Finding:
    """One discrepancy the comparison found (what the recorder upserts, not a row)."""

    kind: Kind
    period_start: date
    period_end: date
    line_item_id: str
    other_line_item_id: str
    stripe_quantity: Decimal
    internal_quantity: Decimal | None
    difference: Decimal | None
    detail: str

    @property
    def identity(self) -> tuple[Kind, date, date, str, str]:
        """The discrepancy's identity within its pair: the stored key's fields after the pair."""
        identity: tuple[Kind, date, date, str, str] = _WITHIN_PAIR(self)
        return identity

    def key(self, *, customer: str, meter: str, ledger: Ledger = Ledger.INTERNAL) -> DiscrepancyKey:
        """The identity of the discrepancy this finding is, as the table's unique key."""
        return DiscrepancyKey(customer, meter, *self.identity, ledger)


# The fields of a finding that are its identity, named by the key (so the two cannot drift).
_WITHIN_PAIR = attrgetter(*WITHIN_PAIR)


@dataclass(frozen=True, slots=True)
class Scope:
    """What the comparison re-evaluated, so the recorder can resolve what no longer holds.

    A stored discrepancy of the pair is re-evaluated (and resolved if not among the
    findings) when: its kind is ``quantity_mismatch`` or ``missing_in_stripe`` and its
    line item is in ``compared_line_item_ids``; its kind is ``overlapping_line_items``
    and both its ids are in ``considered_line_item_ids``; its kind is ``unbilled_usage``
    and its day lies in ``unbilled_days`` (``[start, end)``, empty when start == end).
    Only the discrepancies of ``ledger`` are re-evaluated. A line item of
    ``withdrawn_line_item_ids`` is no longer in its ledger: every discrepancy naming it
    (its own, or an overlap) no longer holds.
    """

    window: Window
    compared_line_item_ids: frozenset[str]
    considered_line_item_ids: frozenset[str]
    unbilled_days: tuple[date, date]
    ledger: Ledger = Ledger.INTERNAL
    withdrawn_line_item_ids: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class PairComparison:
    """The findings of one pair (sorted by identity) and the counts of the run record."""

    findings: tuple[Finding, ...]
    compared: int
    matched: int
    pending: int
    scope: Scope


def _overlaps(item: LineItem, window: Window) -> bool:
    return item.period_start < window.end and item.period_end > window.start


def fetch_range(
    *, window: Window, line_items: Iterable[LineItem], today: date
) -> tuple[date, date] | None:
    """The days ``[start, end)`` to ask Stripe for, or ``None`` when there is none.

    The union of the window and the periods of the line items that overlap it, each
    period widened by one day on both sides (the diagnosis reads the neighbouring days),
    never past today 00:00 UTC (the last complete day is yesterday). The comparison reads
    only the days it judges, so the extra days change no finding.
    """
    _require_day(today, "today")
    start, end = window.start, window.end
    for item in line_items:
        if _overlaps(item, window):
            start = min(start, item.period_start - _DAY)
            end = max(end, item.period_end + _DAY)
    end = min(end, today)
    return (start, end) if start < end else None


class _Usage:
    """Stripe's per-day values, sorted, with prefix sums: any period in O(log days)."""

    __slots__ = ("days", "formula", "prefix", "values")

    def __init__(self, daily: Mapping[date, Decimal], formula: Formula) -> None:
        for day, value in daily.items():
            if type(day) is not date:  # the fast path; subclasses get the full check
                _require_day(day, "a day of Stripe usage")
            if type(value) is not Decimal or not value.is_finite():
                _require_decimal(value, f"Stripe's value for {day}")
        self.formula = formula
        self.days: list[date] = sorted(daily)
        self.values: list[Decimal] = [daily[day] for day in self.days]
        self.prefix: list[Decimal] = [_ZERO]
        if formula is not Formula.LAST:  # `last` never adds days up
            running = _ZERO
            for value in self.values:
                running += value
                self.prefix.append(running)

    def span(self, start: date, end: date) -> tuple[int, int]:
        """Indexes ``[lo, hi)`` of the days with a value in ``[start, end)``."""
        lo = bisect_left(self.days, start)
        return lo, bisect_left(self.days, end, lo)

    def quantity(self, lo: int, hi: int) -> Decimal:
        """Stripe's quantity over the days ``[lo, hi)`` found by ``span``."""
        if hi == lo:
            return _ZERO
        if self.formula is Formula.LAST:
            return self.values[hi - 1]
        return self.prefix[hi] - self.prefix[lo]

    def basis(self, lo: int, hi: int) -> str:
        """How ``quantity(lo, hi)`` came about, for a finding's detail."""
        count = hi - lo
        plural = "" if count == 1 else "s"
        if self.formula is Formula.LAST:
            return f"its last value, reported on {self.days[hi - 1]}"
        if self.formula is Formula.COUNT:
            return f"events counted on {count} day{plural}"
        return f"sum of {count} daily value{plural}"


def _canonical(value: Decimal) -> Decimal:
    """The same number in its one text form, so a finding reads the same whichever days were
    fetched (a prefix-sum difference carries the scale of the whole history)."""
    return Decimal(canonical_decimal(value))


def _days(start: date, end: date) -> str:
    """``[start, end)`` as finance reads it: first and last day, both inclusive."""
    last = end - _DAY
    return str(start) if last == start else f"{start}..{last}"


def _item_finding(item: LineItem, usage: _Usage, lo: int, hi: int, stripe: Decimal) -> Finding:
    billed = canonical_decimal(item.quantity)
    period = _days(item.period_start, item.period_end)
    if stripe:
        kind = Kind.QUANTITY_MISMATCH
        said = f"Stripe metered {canonical_decimal(stripe)} for {period} ({usage.basis(lo, hi)})"
    else:
        kind = Kind.MISSING_IN_STRIPE
        stripe = _ZERO
        said = (
            f"Stripe metered 0 for {period} ({usage.basis(lo, hi)})"
            if hi > lo
            else f"Stripe has no usage for {period}"
        )
    return Finding(
        kind=kind,
        period_start=item.period_start,
        period_end=item.period_end,
        line_item_id=item.id,
        other_line_item_id="",
        stripe_quantity=_canonical(stripe),
        internal_quantity=_canonical(item.quantity),
        difference=_canonical(stripe - item.quantity),
        detail=f"{said}; line item {item.id} billed {billed}.",
    )


def _unbilled_finding(day: date, value: Decimal) -> Finding:
    return Finding(
        kind=Kind.UNBILLED_USAGE,
        period_start=day,
        period_end=day + _DAY,
        line_item_id="",
        other_line_item_id="",
        stripe_quantity=_canonical(value),
        internal_quantity=_ZERO,
        difference=_canonical(value),
        detail=f"Stripe metered {canonical_decimal(value)} on {day}, a day no line item bills.",
    )


def _overlap_finding(a: LineItem, b: LineItem, usage: _Usage, today: date) -> Finding:
    greater, smaller = (a, b) if a.id > b.id else (b, a)
    start = max(a.period_start, b.period_start)
    end = min(a.period_end, b.period_end)
    shared = f"Line items {greater.id} and {smaller.id} both bill {_days(start, end)}"
    if start >= today:
        stripe = _ZERO
        detail = f"{shared}, days that have not ended yet."
    else:
        metered_end = min(end, today)
        lo, hi = usage.span(start, metered_end)
        stripe = usage.quantity(lo, hi)
        so_far = "" if metered_end == end else f" up to {metered_end - _DAY}"
        basis = f" ({usage.basis(lo, hi)})" if hi > lo else ""
        detail = (
            f"{shared}; Stripe metered {canonical_decimal(stripe)} on those days{so_far}{basis}."
        )
    return Finding(
        kind=Kind.OVERLAPPING_LINE_ITEMS,
        period_start=start,
        period_end=end,
        line_item_id=greater.id,
        other_line_item_id=smaller.id,
        stripe_quantity=_canonical(stripe),
        internal_quantity=None,
        difference=None,
        detail=detail,
    )


def _unbilled_days(
    window: Window, today: date, active_from: date | None, active_to: date | None
) -> tuple[date, date]:
    """The window clipped to the pair's hand-tracked bounds and to the days before today."""
    start = window.start if active_from is None else max(window.start, active_from)
    end = min(window.end, today) if active_to is None else min(window.end, today, active_to)
    start = min(start, window.end)
    return (start, max(start, end))


def compare_pair(
    *,
    daily: Mapping[date, Decimal],
    line_items: Iterable[LineItem],
    window: Window,
    today: date,
    formula: Formula,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    active_from: date | None = None,
    active_to: date | None = None,
) -> PairComparison:
    """Compare one pair's Stripe usage (``daily``: day -> aggregated value) with its ledger.

    Rules beyond the "Comparison semantics" of docs/architecture.md:

    - ``line_items`` may hold items outside the window: they are ignored; two items with
      the same id are a caller error (``ValueError``).
    - A day present in ``daily`` "has a value" even when that value is 0 (it matters for
      ``last`` meters only).
    - Whether a day's usage is non-zero (``unbilled_usage``) is judged with the same
      tolerance as every other comparison, so sub-tolerance noise is not flagged.
    - Days on or after ``today`` are never judged for ``unbilled_usage`` (they are not
      complete), even if the window reaches past today.
    - ``active_from`` is inclusive and ``active_to`` exclusive; they bound
      ``unbilled_usage`` days only.
    """
    formula = Formula(formula)
    _require_day(today, "today")
    if active_from is not None:
        _require_day(active_from, "active_from")
    if active_to is not None:
        _require_day(active_to, "active_to")
    if active_from is not None and active_to is not None and active_from >= active_to:
        raise ValueError(
            f"The pair's bounds {active_from}..{active_to} are empty or reversed: "
            "active_from must come before the (exclusive) active_to."
        )
    try:
        with localcontext(EXACT):
            return _compare(
                daily=daily,
                line_items=line_items,
                window=window,
                today=today,
                formula=formula,
                tolerance=tolerance,
                active_from=active_from,
                active_to=active_to,
            )
    except Inexact as exc:
        raise ValueError(
            f"The pair's quantities need more than {EXACT_DIGITS} significant digits "
            "to be compared exactly."
        ) from exc


def _compare(
    *,
    daily: Mapping[date, Decimal],
    line_items: Iterable[LineItem],
    window: Window,
    today: date,
    formula: Formula,
    tolerance: Tolerance,
    active_from: date | None,
    active_to: date | None,
) -> PairComparison:
    usage = _Usage(daily, formula)
    days, values, prefix = usage.days, usage.values, usage.prefix
    is_last = formula is Formula.LAST
    abs_tol = tolerance.abs_tol  # the common case of `_equal`, inlined in the hot loops
    w_start, w_end = window.start, window.end

    seen: set[str] = set()
    considered: list[LineItem] = []
    for item in line_items:
        if item.id in seen:
            raise ValueError(f"Line item id {item.id!r} appears twice; ledger ids are unique.")
        seen.add(item.id)
        if item.period_start < w_end and item.period_end > w_start:
            considered.append(item)

    findings: list[Finding] = []
    compared_ids: list[str] = []
    matched = pending = 0
    for item in considered:
        if item.period_end > today:
            pending += 1
            continue
        compared_ids.append(item.id)
        lo = bisect_left(days, item.period_start)
        hi = bisect_left(days, item.period_end, lo)
        if hi == lo:
            stripe = _ZERO
        elif is_last:
            stripe = values[hi - 1]
        else:
            stripe = prefix[hi] - prefix[lo]
        # Equal within tolerance is a match. Otherwise the kind depends on S alone:
        # S exactly 0 ("no usage") makes it missing_in_stripe, any other S a mismatch.
        gap = stripe - item.quantity
        if -abs_tol <= gap <= abs_tol or _equal(tolerance, stripe, item.quantity):
            matched += 1
        else:
            findings.append(_item_finding(item, usage, lo, hi, stripe))

    # One pass in start order: the merged coverage (for unbilled days) and the overlaps
    # (a sweep line whose active set is a heap by end: O(n log n + overlaps)).
    ordered = sorted(considered, key=attrgetter("period_start"))
    cover_starts: list[date] = []
    cover_ends: list[date] = []
    active: list[tuple[date, int]] = []
    for index, item in enumerate(ordered):
        start, end = item.period_start, item.period_end
        if cover_ends and start <= cover_ends[-1]:
            if end > cover_ends[-1]:
                cover_ends[-1] = end
        else:
            cover_starts.append(start)
            cover_ends.append(end)
        while active and active[0][0] <= start:
            heapq.heappop(active)
        for _, other in active:
            findings.append(_overlap_finding(ordered[other], item, usage, today))
        heapq.heappush(active, (end, index))

    unbilled_start, unbilled_end = _unbilled_days(window, today, active_from, active_to)
    lo, hi = usage.span(unbilled_start, unbilled_end)
    for day, value in zip(days[lo:hi], values[lo:hi], strict=True):
        if -abs_tol <= value <= abs_tol or _equal(tolerance, value, _ZERO):
            continue
        cover = bisect_right(cover_starts, day) - 1
        if cover < 0 or cover_ends[cover] <= day:
            findings.append(_unbilled_finding(day, value))

    findings.sort(key=attrgetter("identity"))
    return PairComparison(
        findings=tuple(findings),
        compared=len(compared_ids),
        matched=matched,
        pending=pending,
        scope=Scope(
            window=window,
            compared_line_item_ids=frozenset(compared_ids),
            considered_line_item_ids=frozenset(item.id for item in considered),
            unbilled_days=(unbilled_start, unbilled_end),
        ),
    )
