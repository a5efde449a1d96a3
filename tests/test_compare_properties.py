"""Properties of the pure comparison (tasks/compare.py), checked with hypothesis."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from datetime import date, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.compare import (
    Formula,
    Kind,
    LineItem,
    PairComparison,
    Tolerance,
    Window,
    compare_pair,
)

BASE = date(2026, 1, 1)
HISTORY = 40  # days of usage a case draws from
EXACT = Tolerance(abs_tol=Decimal(0))

# Modest example counts: the whole file runs in a few seconds; database=None leaves no
# .hypothesis directory in the tree.
PROPERTY = settings(max_examples=100, deadline=None, database=None)


def day(n: int) -> date:
    return BASE + timedelta(days=n)


def daily_value(formula: Formula) -> st.SearchStrategy[Decimal]:
    """What one day of a meter can hold: counts are whole, sums may be signed."""
    if formula is Formula.COUNT:
        return st.integers(min_value=1, max_value=50).map(Decimal)
    low = -1000 if formula is Formula.SUM else 0
    return st.decimals(min_value=low, max_value=1000, places=3, allow_nan=False)


def stripe_quantity(
    daily: dict[date, Decimal], start: date, end: date, formula: Formula
) -> Decimal:
    """An independent, day-by-day reading of the comparison rule, the oracle for the properties."""
    inside = sorted(day for day in daily if start <= day < end)
    if not inside:
        return Decimal(0)
    if formula is Formula.LAST:
        return daily[inside[-1]]
    return sum((daily[day] for day in inside), Decimal(0))


@st.composite
def periods(draw: st.DrawFn, *, limit: int) -> tuple[int, int]:
    start = draw(st.integers(min_value=-5, max_value=limit - 1))
    return start, draw(st.integers(min_value=start + 1, max_value=limit + 5))


@dataclass(frozen=True)
class Case:
    """Every argument of ``compare_pair`` but the line items and the daily values."""

    window: Window
    today: date
    formula: Formula
    tolerance: Tolerance
    active_from: date | None
    active_to: date | None

    def compare(self, daily: dict[date, Decimal], items: list[LineItem]) -> PairComparison:
        return compare_pair(
            daily=daily,
            line_items=items,
            window=self.window,
            today=self.today,
            formula=self.formula,
            tolerance=self.tolerance,
            active_from=self.active_from,
            active_to=self.active_to,
        )


@st.composite
def arbitrary_pairs(draw: st.DrawFn) -> tuple[Case, dict[date, Decimal], list[LineItem]]:
    """Anything goes: overlapping items, items outside the window, pending items, bounds."""
    formula = draw(st.sampled_from(Formula))
    keys = draw(st.sets(st.integers(min_value=-5, max_value=HISTORY + 5), max_size=HISTORY))
    daily = {day(k): draw(daily_value(formula)) for k in sorted(keys)}
    spans = draw(st.lists(periods(limit=HISTORY), max_size=12))
    items = [
        LineItem(f"li_{n}", day(start), day(end), draw(daily_value(Formula.SUM)))
        for n, (start, end) in enumerate(spans)
    ]
    window_start, window_end = draw(periods(limit=HISTORY))
    bounds = draw(st.one_of(st.none(), periods(limit=HISTORY)))
    case = Case(
        window=Window(day(window_start), day(window_end)),
        today=day(draw(st.integers(min_value=window_start, max_value=HISTORY + 10))),
        formula=formula,
        tolerance=draw(st.sampled_from([Tolerance(), EXACT, Tolerance(rel_tol=Decimal("0.05"))])),
        active_from=day(bounds[0]) if bounds else None,
        active_to=day(bounds[1]) if bounds else None,
    )
    return case, daily, items


@st.composite
def matching_ledgers(
    draw: st.DrawFn,
) -> tuple[Formula, dict[date, Decimal], list[LineItem]]:
    """Non-overlapping periods tiling part of the history, billed exactly what Stripe metered
    (usage only on billed days, so nothing is unbilled either)."""
    formula = draw(st.sampled_from(Formula))
    cuts = draw(st.sets(st.integers(min_value=1, max_value=HISTORY - 1), max_size=10))
    bounds = [0, *sorted(cuts), HISTORY]
    segments = list(itertools.pairwise(bounds))
    billed = draw(st.lists(st.booleans(), min_size=len(segments), max_size=len(segments)))
    billed[draw(st.integers(min_value=0, max_value=len(segments) - 1))] = True
    daily: dict[date, Decimal] = {}
    for (start, end), is_billed in zip(segments, billed, strict=True):
        if is_billed:
            for n in draw(st.sets(st.integers(min_value=start, max_value=end - 1))):
                daily[day(n)] = draw(daily_value(formula))
    items = [
        LineItem(
            f"li_{n}", day(start), day(end), stripe_quantity(daily, day(start), day(end), formula)
        )
        for n, ((start, end), is_billed) in enumerate(zip(segments, billed, strict=True))
        if is_billed
    ]
    return formula, daily, items


@PROPERTY
@given(pair=arbitrary_pairs(), data=st.data())
def test_order_of_line_items_and_of_daily_values_changes_nothing(
    pair: tuple[Case, dict[date, Decimal], list[LineItem]], data: st.DataObject
) -> None:
    case, daily, items = pair
    expected = case.compare(daily, items)
    shuffled_items = data.draw(st.permutations(items))
    shuffled_daily = dict(data.draw(st.permutations(list(daily.items()))))
    assert case.compare(shuffled_daily, shuffled_items) == expected


@PROPERTY
@given(ledger=matching_ledgers(), window=periods(limit=HISTORY), today=st.integers(1, HISTORY + 5))
def test_ledger_built_to_match_stripe_has_no_discrepancy(
    ledger: tuple[Formula, dict[date, Decimal], list[LineItem]],
    window: tuple[int, int],
    today: int,
) -> None:
    formula, daily, items = ledger
    result = compare_pair(
        daily=daily,
        line_items=items,
        window=Window(day(window[0]), day(window[1])),
        today=day(today),
        formula=formula,
        tolerance=EXACT,
    )
    assert result.findings == ()
    assert result.matched == result.compared
    assert result.compared + result.pending == len(result.scope.considered_line_item_ids)


@PROPERTY
@given(
    ledger=matching_ledgers(),
    tolerance=st.builds(
        Tolerance,
        abs_tol=st.sampled_from([Decimal(0), Decimal("0.000001"), Decimal("0.5")]),
        rel_tol=st.sampled_from([Decimal(0), Decimal("0.001"), Decimal("0.1")]),
    ),
    step=st.sampled_from([Decimal("0.001"), Decimal(1), Decimal(1000)]),
    negative=st.booleans(),
    data=st.data(),
)
def test_shifting_one_quantity_beyond_tolerance_yields_exactly_that_finding(
    ledger: tuple[Formula, dict[date, Decimal], list[LineItem]],
    tolerance: Tolerance,
    step: Decimal,
    negative: bool,
    data: st.DataObject,
) -> None:
    formula, daily, items = ledger
    index = data.draw(st.integers(min_value=0, max_value=len(items) - 1))
    target = items[index]
    stripe = target.quantity
    # Beyond abs_tol, and beyond rel_tol x max(|S|, |S + delta|) since rel_tol <= 0.1.
    delta = tolerance.abs_tol + 2 * tolerance.rel_tol * abs(stripe) + step
    delta = -delta if negative else delta
    assert not tolerance.equal(stripe, stripe + delta)
    items[index] = replace(target, quantity=stripe + delta)

    result = compare_pair(
        daily=daily,
        line_items=items,
        window=Window(day(0), day(HISTORY)),
        today=day(HISTORY),
        formula=formula,
        tolerance=tolerance,
    )

    assert len(result.findings) == 1
    finding = result.findings[0]
    assert finding.line_item_id == target.id
    assert finding.kind is (Kind.QUANTITY_MISMATCH if stripe else Kind.MISSING_IN_STRIPE)
    assert finding.stripe_quantity == stripe
    assert finding.difference == -delta
    assert (result.compared, result.matched) == (len(items), len(items) - 1)
