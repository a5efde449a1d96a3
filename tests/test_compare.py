"""The pure comparison (tasks/compare.py): the "Comparison semantics", case by case."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest

from models.enums import Ledger
from models.keys import WITHIN_PAIR, DiscrepancyKey
from tasks.compare import (
    Finding,
    Formula,
    Kind,
    LineItem,
    PairComparison,
    Scope,
    Tolerance,
    Window,
    compare_pair,
    fetch_range,
)
from tests.builders import comparison, days, item, window

ALL_FORMULAS = [Formula.SUM, Formula.COUNT, Formula.LAST]
NOVEMBER = ("2026-11-01", "2026-12-01")
AFTER_NOVEMBER = "2026-12-02"


# ---------------------------------------------------------------------------- builders


def d(text: str) -> date:
    return date.fromisoformat(text)


def compare(
    daily: dict[date, Decimal],
    items: list[LineItem],
    *,
    span: tuple[str, str] = NOVEMBER,
    today: str = AFTER_NOVEMBER,
    formula: Formula = Formula.SUM,
    tolerance: Tolerance | None = None,
    active_from: str | None = None,
    active_to: str | None = None,
) -> PairComparison:
    """The shared `comparison` builder, over November and judged after it unless told."""
    return comparison(
        daily,
        *items,
        window=span,
        today=today,
        formula=formula,
        tolerance=tolerance or Tolerance(),
        active_from=active_from,
        active_to=active_to,
    )


def summary(result: PairComparison) -> list[tuple[str, str, str, str, str, str | None]]:
    """Each finding as (kind, start, end, id, other id, stripe quantity) in plain text."""
    return [
        (
            f.kind.value,
            f.period_start.isoformat(),
            f.period_end.isoformat(),
            f.line_item_id,
            f.other_line_item_id,
            str(f.stripe_quantity),
        )
        for f in result.findings
    ]


def only(result: PairComparison) -> Finding:
    assert len(result.findings) == 1, result.findings
    return result.findings[0]


# Usage on three November days, and what each formula makes of it.
THREE_DAYS = days({"2026-11-01": "5", "2026-11-10": "7", "2026-11-20": "3"})
THREE_DAYS_QUANTITY = {Formula.SUM: "15", Formula.COUNT: "15", Formula.LAST: "3"}


# ------------------------------------------------------------------- value validation


@pytest.mark.parametrize(
    ("start", "end"), [("2026-11-02", "2026-11-02"), ("2026-11-03", "2026-11-02")]
)
def test_window_must_not_be_empty_or_reversed(start: str, end: str) -> None:
    with pytest.raises(ValueError, match="empty or reversed"):
        window(start, end)


def test_window_refuses_datetimes() -> None:
    with pytest.raises(TypeError, match=r"datetime\.date"):
        Window(datetime(2026, 11, 1), datetime(2026, 11, 2))


@pytest.mark.parametrize(
    ("start", "end"), [("2026-11-02", "2026-11-02"), ("2026-11-03", "2026-11-02")]
)
def test_line_item_period_must_not_be_empty_or_reversed(start: str, end: str) -> None:
    with pytest.raises(ValueError, match="empty or reversed"):
        item("li_1", start, end, "1")


@pytest.mark.parametrize(
    ("quantity", "error"),
    [(1.5, TypeError), (Decimal("NaN"), ValueError), (Decimal("Infinity"), ValueError)],
)
def test_line_item_quantity_must_be_a_finite_decimal(
    quantity: object, error: type[Exception]
) -> None:
    with pytest.raises(error):
        LineItem("li_1", d("2026-11-01"), d("2026-11-02"), quantity)  # type: ignore[arg-type]


@pytest.mark.parametrize("tolerance", [{"abs_tol": Decimal("-0.1")}, {"rel_tol": Decimal("-0.01")}])
def test_tolerance_must_not_be_negative(tolerance: dict[str, Decimal]) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        Tolerance(**tolerance)


def test_stripe_values_must_be_finite_decimals() -> None:
    with pytest.raises(ValueError, match="finite"):
        compare({d("2026-11-01"): Decimal("NaN")}, [])


def test_duplicate_line_item_ids_are_a_caller_error() -> None:
    items = [item("li_1", *NOVEMBER, "1"), item("li_1", "2026-12-01", "2027-01-01", "1")]
    with pytest.raises(ValueError, match="appears twice"):
        compare({}, items)


def test_pair_bounds_must_not_be_empty_or_reversed() -> None:
    with pytest.raises(ValueError, match="empty or reversed"):
        compare({}, [], active_from="2026-11-05", active_to="2026-11-05")


# ------------------------------------------------------------------------ tolerance


@pytest.mark.parametrize(
    ("abs_tol", "rel_tol", "a", "b", "equal"),
    [
        ("0.01", "0", "100", "100.01", True),  # exactly abs_tol apart
        ("0.01", "0", "100", "100.0100001", False),  # just beyond
        ("0.01", "0", "100", "99.99", True),  # below, on the boundary
        ("0.01", "0", "100", "99.9899999", False),  # below, just beyond
        ("0", "0.01", "100", "101", True),  # 1 <= 0.01 * max(100, 101) = 1.01
        ("0", "0.01", "100", "98.99", False),  # 1.01 > 0.01 * max(100, 98.99) = 1
        ("0", "0.01", "100", "99", True),  # 1 <= 1: the larger of the two scales it
        ("0", "0.01", "-100", "-101", True),  # magnitudes, whatever the sign
        ("0", "0", "7", "7", True),  # zero tolerance still equals equal numbers
        ("0", "0", "7", "7.0000000000000000000000000000001", False),
    ],
)
def test_tolerance_equal_on_both_sides_of_the_boundary(
    abs_tol: str, rel_tol: str, a: str, b: str, equal: bool
) -> None:
    tolerance = Tolerance(abs_tol=Decimal(abs_tol), rel_tol=Decimal(rel_tol))
    assert tolerance.equal(Decimal(a), Decimal(b)) is equal
    assert tolerance.equal(Decimal(b), Decimal(a)) is equal


def test_default_tolerance_is_one_millionth_absolute() -> None:
    assert Tolerance() == Tolerance(abs_tol=Decimal("0.000001"), rel_tol=Decimal(0))


# ------------------------------------------------------------- compared line items


@pytest.mark.parametrize("formula", ALL_FORMULAS)
def test_line_item_matching_stripe_is_matched(formula: Formula) -> None:
    result = compare(
        THREE_DAYS, [item("li_1", *NOVEMBER, THREE_DAYS_QUANTITY[formula])], formula=formula
    )
    assert result.findings == ()
    assert (result.compared, result.matched, result.pending) == (1, 1, 0)


@pytest.mark.parametrize("formula", ALL_FORMULAS)
def test_quantity_mismatch_with_each_formula(formula: Formula) -> None:
    result = compare(THREE_DAYS, [item("li_1", *NOVEMBER, "10")], formula=formula)
    finding = only(result)
    stripe = Decimal(THREE_DAYS_QUANTITY[formula])
    assert finding.kind is Kind.QUANTITY_MISMATCH
    assert (finding.period_start, finding.period_end) == (d("2026-11-01"), d("2026-12-01"))
    assert (finding.line_item_id, finding.other_line_item_id) == ("li_1", "")
    assert finding.stripe_quantity == stripe
    assert finding.internal_quantity == Decimal(10)
    assert finding.difference == stripe - 10
    assert (result.compared, result.matched) == (1, 0)


@pytest.mark.parametrize("formula", ALL_FORMULAS)
def test_missing_in_stripe_when_no_bucket_with_each_formula(formula: Formula) -> None:
    result = compare(days({"2026-12-01": "9"}), [item("li_1", *NOVEMBER, "100")], formula=formula)
    finding = only(result)
    assert finding.kind is Kind.MISSING_IN_STRIPE
    assert finding.stripe_quantity == 0
    assert finding.internal_quantity == 100
    assert finding.difference == -100


@pytest.mark.parametrize(
    ("formula", "daily"),
    [
        (Formula.SUM, {"2026-11-03": "4", "2026-11-04": "-4"}),  # buckets adding up to 0
        (Formula.SUM, {"2026-11-03": "0.000"}),
        (Formula.LAST, {"2026-11-03": "4", "2026-11-04": "0"}),  # the latest value is 0
    ],
)
def test_missing_in_stripe_when_buckets_add_up_to_exactly_zero(
    formula: Formula, daily: dict[str, str]
) -> None:
    finding = only(compare(days(daily), [item("li_1", *NOVEMBER, "100")], formula=formula))
    assert finding.kind is Kind.MISSING_IN_STRIPE
    assert finding.stripe_quantity == 0


def test_usage_below_tolerance_but_not_zero_is_a_mismatch_not_missing() -> None:
    finding = only(compare(days({"2026-11-03": "0.0000001"}), [item("li_1", *NOVEMBER, "100")]))
    assert finding.kind is Kind.QUANTITY_MISMATCH
    assert finding.stripe_quantity == Decimal("0.0000001")


@pytest.mark.parametrize(("billed", "found"), [("0.000001", False), ("0.0000011", True)])
def test_missing_in_stripe_needs_a_bill_beyond_tolerance(billed: str, found: bool) -> None:
    result = compare({}, [item("li_1", *NOVEMBER, billed)])
    assert summary(result) == (
        [("missing_in_stripe", "2026-11-01", "2026-12-01", "li_1", "", "0")] if found else []
    )


def test_line_item_billing_zero_with_usage_is_a_mismatch() -> None:
    finding = only(compare(days({"2026-11-03": "5"}), [item("li_1", *NOVEMBER, "0")]))
    assert finding.kind is Kind.QUANTITY_MISMATCH
    quantities = (finding.stripe_quantity, finding.internal_quantity, finding.difference)
    assert quantities == (Decimal(5), Decimal(0), Decimal(5))


def test_line_item_billing_zero_without_usage_is_matched() -> None:
    result = compare({}, [item("li_1", *NOVEMBER, "0")])
    assert result.findings == ()
    assert result.matched == 1


@pytest.mark.parametrize(
    ("billed", "found"),
    [("100.01", False), ("100.0100001", True), ("99.99", False), ("99.9899999", True)],
)
def test_absolute_tolerance_decides_a_mismatch(billed: str, found: bool) -> None:
    tolerance = Tolerance(abs_tol=Decimal("0.01"))
    result = compare(
        days({"2026-11-03": "100"}), [item("li_1", *NOVEMBER, billed)], tolerance=tolerance
    )
    assert [f.kind for f in result.findings] == ([Kind.QUANTITY_MISMATCH] if found else [])


@pytest.mark.parametrize(
    ("billed", "found"), [("101", False), ("101.0102", True), ("99", False), ("98.99", True)]
)
def test_relative_tolerance_decides_a_mismatch(billed: str, found: bool) -> None:
    tolerance = Tolerance(abs_tol=Decimal(0), rel_tol=Decimal("0.01"))
    result = compare(
        days({"2026-11-03": "100"}), [item("li_1", *NOVEMBER, billed)], tolerance=tolerance
    )
    assert [f.kind for f in result.findings] == ([Kind.QUANTITY_MISMATCH] if found else [])


def test_last_takes_the_latest_day_that_has_a_value() -> None:
    daily = days({"2026-11-03": "9", "2026-11-20": "4", "2026-12-01": "50", "2026-10-31": "70"})
    result = compare(daily, [item("li_1", *NOVEMBER, "9")], formula=Formula.LAST)
    assert only(result).stripe_quantity == 4


def test_sum_adds_only_the_days_inside_the_period() -> None:
    daily = days({"2026-10-31": "1000", "2026-11-01": "2", "2026-11-30": "3", "2026-12-01": "1000"})
    result = compare(daily, [item("li_1", *NOVEMBER, "5")])
    assert result.findings == ()


def test_item_reaching_outside_the_window_is_compared_whole() -> None:
    daily = days({"2026-11-02": "10", "2026-11-12": "1", "2026-11-25": "20"})
    result = compare(daily, [item("li_1", *NOVEMBER, "1")], span=("2026-11-12", "2026-11-13"))
    finding = only(result)
    assert (finding.kind, finding.stripe_quantity) == (Kind.QUANTITY_MISMATCH, Decimal(31))


@pytest.mark.parametrize(
    "period", [("2026-10-01", "2026-11-10"), ("2026-11-11", "2026-12-01")], ids=["before", "after"]
)
def test_items_not_overlapping_the_window_are_ignored(period: tuple[str, str]) -> None:
    """Periods are end-exclusive: ending on the window's start is not overlapping it."""
    result = compare({}, [item("li_1", *period, "100")], span=("2026-11-10", "2026-11-11"))
    assert result.findings == ()
    assert (result.compared, result.matched, result.pending) == (0, 0, 0)
    assert result.scope.considered_line_item_ids == frozenset()


# --------------------------------------------------------------------------- pending


def test_item_ending_after_today_is_pending_not_compared() -> None:
    result = compare(
        days({"2026-11-03": "5"}),
        [item("li_1", *NOVEMBER, "100")],
        span=("2026-11-01", "2026-11-20"),
        today="2026-11-30",
    )
    assert result.findings == ()
    assert (result.compared, result.matched, result.pending) == (0, 0, 1)
    assert result.scope.compared_line_item_ids == frozenset()
    assert result.scope.considered_line_item_ids == {"li_1"}


def test_item_ending_today_is_compared() -> None:
    result = compare(
        days({"2026-11-03": "5"}), [item("li_1", *NOVEMBER, "100")], today="2026-12-01"
    )
    assert only(result).kind is Kind.QUANTITY_MISMATCH
    assert (result.compared, result.matched, result.pending) == (1, 0, 0)


def test_counts_of_compared_matched_and_pending() -> None:
    items = [
        item("ok", "2026-11-01", "2026-11-05", "5"),
        item("off", "2026-11-05", "2026-11-10", "1"),
        item("open", "2026-11-10", "2026-12-10", "1"),
        item("elsewhere", "2026-10-01", "2026-10-10", "1"),
    ]
    daily = days({"2026-11-02": "5", "2026-11-06": "2"})
    result = compare(daily, items, today="2026-12-01")
    assert (result.compared, result.matched, result.pending) == (2, 1, 1)
    assert result.scope == Scope(
        window=window(*NOVEMBER),
        compared_line_item_ids=frozenset({"ok", "off"}),
        considered_line_item_ids=frozenset({"ok", "off", "open"}),
        unbilled_days=(d("2026-11-01"), d("2026-12-01")),
    )


# -------------------------------------------------------------------- unbilled usage


@pytest.mark.parametrize("formula", ALL_FORMULAS)
def test_unbilled_usage_one_finding_per_uncovered_day(formula: Formula) -> None:
    daily = days({"2026-11-03": "5", "2026-11-04": "7", "2026-11-20": "1"})
    result = compare(daily, [item("li_1", "2026-11-15", "2026-12-01", "1")], formula=formula)
    assert summary(result) == [
        ("unbilled_usage", "2026-11-03", "2026-11-04", "", "", "5"),
        ("unbilled_usage", "2026-11-04", "2026-11-05", "", "", "7"),
    ]
    first = result.findings[0]
    assert (first.internal_quantity, first.difference) == (Decimal(0), Decimal(5))


def test_unbilled_usage_only_inside_the_window() -> None:
    daily = days({"2026-11-09": "1", "2026-11-10": "2", "2026-11-12": "3", "2026-11-13": "4"})
    result = compare(daily, [], span=("2026-11-10", "2026-11-13"))
    assert [f.period_start for f in result.findings] == [d("2026-11-10"), d("2026-11-12")]


def test_unbilled_usage_not_on_days_a_pending_item_covers() -> None:
    result = compare(
        days({"2026-11-03": "5", "2026-11-20": "6"}),
        [item("li_1", "2026-11-15", "2026-12-15", "1")],
        today="2026-12-01",
    )
    assert summary(result) == [("unbilled_usage", "2026-11-03", "2026-11-04", "", "", "5")]


@pytest.mark.parametrize("value", ["0", "0.000001", "-0.000001"])
def test_zero_or_sub_tolerance_usage_is_not_unbilled(value: str) -> None:
    assert compare(days({"2026-11-03": value}), []).findings == ()


def test_negative_usage_is_unbilled_too() -> None:
    finding = only(compare(days({"2026-11-03": "-2"}), []))
    assert finding.kind is Kind.UNBILLED_USAGE
    assert (finding.stripe_quantity, finding.difference) == (Decimal(-2), Decimal(-2))


@pytest.mark.parametrize(
    ("active_from", "active_to", "flagged", "unbilled_days"),
    [
        (None, None, ["2026-11-01", "2026-11-10", "2026-11-30"], ("2026-11-01", "2026-12-01")),
        ("2026-11-10", None, ["2026-11-10", "2026-11-30"], ("2026-11-10", "2026-12-01")),
        (None, "2026-11-10", ["2026-11-01"], ("2026-11-01", "2026-11-10")),
        ("2026-11-02", "2026-11-30", ["2026-11-10"], ("2026-11-02", "2026-11-30")),
        ("2026-10-01", "2027-01-01", ["2026-11-01", "2026-11-10", "2026-11-30"], NOVEMBER),
        ("2026-12-05", None, [], ("2026-12-01", "2026-12-01")),  # starts after the window
        (None, "2026-10-05", [], ("2026-11-01", "2026-11-01")),  # ends before it
    ],
)
def test_hand_tracked_bounds_limit_unbilled_days(
    active_from: str | None,
    active_to: str | None,
    flagged: list[str],
    unbilled_days: tuple[str, str],
) -> None:
    """``active_from`` is inclusive and ``active_to`` exclusive, like every period."""
    daily = days({"2026-11-01": "1", "2026-11-10": "1", "2026-11-30": "1"})
    result = compare(daily, [], active_from=active_from, active_to=active_to)
    assert [f.period_start.isoformat() for f in result.findings] == flagged
    assert result.scope.unbilled_days == (d(unbilled_days[0]), d(unbilled_days[1]))


def test_hand_tracked_bounds_do_not_limit_compared_items() -> None:
    result = compare({}, [item("li_1", *NOVEMBER, "3")], active_from="2026-11-20")
    assert only(result).kind is Kind.MISSING_IN_STRIPE


def test_unbilled_days_stop_before_today() -> None:
    daily = days({"2026-11-03": "1", "2026-11-05": "1"})
    result = compare(daily, [], span=NOVEMBER, today="2026-11-05")
    assert [f.period_start for f in result.findings] == [d("2026-11-03")]
    assert result.scope.unbilled_days == (d("2026-11-01"), d("2026-11-05"))


# ----------------------------------------------------------------- overlapping items


@pytest.mark.parametrize(
    ("a", "b", "shared"),
    [
        (("2026-11-01", "2026-11-20"), ("2026-11-10", "2026-12-01"), ("2026-11-10", "2026-11-20")),
        (("2026-11-01", "2026-12-01"), ("2026-11-10", "2026-11-15"), ("2026-11-10", "2026-11-15")),
        (NOVEMBER, NOVEMBER, NOVEMBER),
        (("2026-11-01", "2026-11-11"), ("2026-11-10", "2026-11-20"), ("2026-11-10", "2026-11-11")),
    ],
    ids=["partial", "nested", "identical", "one-day"],
)
def test_overlap_period_is_the_intersection(
    a: tuple[str, str], b: tuple[str, str], shared: tuple[str, str]
) -> None:
    result = compare({}, [item("li_a", *a, "0"), item("li_b", *b, "0")])
    finding = only(result)
    assert finding.kind is Kind.OVERLAPPING_LINE_ITEMS
    assert (finding.period_start, finding.period_end) == (d(shared[0]), d(shared[1]))
    assert (finding.internal_quantity, finding.difference) == (None, None)


def test_adjacent_periods_do_not_overlap() -> None:
    items = [
        item("li_a", "2026-11-01", "2026-11-15", "0"),
        item("li_b", "2026-11-15", "2026-12-01", "0"),
    ]
    assert compare({}, items).findings == ()


def test_overlap_names_the_greater_id_first_in_string_order() -> None:
    finding = only(compare({}, [item("li_9", *NOVEMBER, "0"), item("li_10", *NOVEMBER, "0")]))
    assert (finding.line_item_id, finding.other_line_item_id) == ("li_9", "li_10")


def test_three_way_overlap_is_three_findings() -> None:
    items = [
        item("a", "2026-11-01", "2026-11-20", "0"),
        item("b", "2026-11-05", "2026-11-25", "0"),
        item("c", "2026-11-10", "2026-12-01", "0"),
    ]
    assert [f[1:5] for f in summary(compare({}, items))] == [
        ("2026-11-05", "2026-11-20", "b", "a"),
        ("2026-11-10", "2026-11-20", "c", "a"),
        ("2026-11-10", "2026-11-25", "c", "b"),
    ]


def test_overlap_reaching_outside_the_window_keeps_the_whole_intersection() -> None:
    items = [item("a", "2026-10-01", "2026-11-11", "0"), item("b", "2026-10-15", "2026-11-30", "0")]
    finding = only(compare({}, items, span=("2026-11-10", "2026-11-12")))
    assert (finding.period_start, finding.period_end) == (d("2026-10-15"), d("2026-11-11"))


def test_overlap_with_an_item_outside_the_window_is_not_considered() -> None:
    items = [item("a", "2026-10-01", "2026-11-11", "0"), item("b", "2026-10-15", "2026-11-01", "0")]
    result = compare({}, items, span=("2026-11-10", "2026-11-12"))
    assert result.findings == ()
    assert result.scope.considered_line_item_ids == {"a"}


@pytest.mark.parametrize(
    ("formula", "stripe"), [(Formula.SUM, "5"), (Formula.COUNT, "5"), (Formula.LAST, "3")]
)
def test_overlap_stripe_quantity_is_over_the_shared_days_with_each_formula(
    formula: Formula, stripe: str
) -> None:
    daily = days({"2026-11-05": "100", "2026-11-12": "2", "2026-11-14": "3", "2026-11-20": "100"})
    items = [item("a", "2026-11-01", "2026-11-15", "0"), item("b", "2026-11-10", "2026-11-20", "0")]
    overlaps = [
        f
        for f in compare(daily, items, formula=formula).findings
        if f.kind == "overlapping_line_items"
    ]
    assert [str(f.stripe_quantity) for f in overlaps] == [stripe]


def test_overlap_of_pending_items_counts_stripe_only_before_today() -> None:
    daily = days({"2026-11-12": "2", "2026-11-19": "4", "2026-11-25": "100"})
    items = [item("a", "2026-11-01", "2026-12-01", "0"), item("b", "2026-11-10", "2026-12-15", "0")]
    result = compare(daily, items, span=("2026-11-01", "2026-11-20"), today="2026-11-20")
    finding = only(result)
    assert (finding.period_start, finding.period_end) == (d("2026-11-10"), d("2026-12-01"))
    assert finding.stripe_quantity == 6
    assert result.pending == 2


def test_overlap_entirely_after_today_has_stripe_quantity_zero() -> None:
    items = [item("a", "2026-11-01", "2026-12-20", "0"), item("b", "2026-12-10", "2027-01-10", "0")]
    result = compare(
        days({"2026-11-03": "1"}), items, span=("2026-11-01", "2026-12-31"), today="2026-11-05"
    )
    finding = only(result)
    assert (finding.kind, finding.stripe_quantity) == (Kind.OVERLAPPING_LINE_ITEMS, Decimal(0))
    assert (finding.period_start, finding.period_end) == (d("2026-12-10"), d("2026-12-20"))


def test_overlapping_items_are_each_compared_too() -> None:
    daily = days({"2026-11-03": "5"})
    items = [item("a", *NOVEMBER, "5"), item("b", "2026-11-01", "2026-11-10", "5")]
    result = compare(daily, items)
    assert [f.kind for f in result.findings] == [Kind.OVERLAPPING_LINE_ITEMS]
    assert result.matched == 2


# ------------------------------------------------------------------------ exactness


def test_a_tenth_added_over_3000_days_is_exact() -> None:
    start = d("2020-01-01")
    daily = {start + timedelta(days=n): Decimal("0.1") for n in range(3000)}
    end = start + timedelta(days=3000)
    exact = Tolerance(abs_tol=Decimal(0))
    ledger = [LineItem("li_1", start, end, Decimal("300.0000000001"))]
    result = compare_pair(
        daily=daily,
        line_items=ledger,
        window=Window(start, end),
        today=end,
        formula=Formula.SUM,
        tolerance=exact,
    )
    finding = only(result)
    assert finding.stripe_quantity == Decimal(300)
    assert finding.difference == Decimal("-0.0000000001")


def test_big_and_tiny_values_do_not_round() -> None:
    """The default 28-digit context would make 10**30 + 0.000001 equal to 10**30."""
    daily = days({"2026-11-03": "1E+30", "2026-11-04": "0.000001"})
    exact = Tolerance(abs_tol=Decimal(0))
    finding = only(compare(daily, [item("li_1", *NOVEMBER, "1E+30")], tolerance=exact))
    assert finding.difference == Decimal("0.000001")
    assert finding.stripe_quantity == Decimal("1000000000000000000000000000000.000001")


def test_quantities_too_wide_to_compare_exactly_raise() -> None:
    daily = days({"2026-11-03": "1E+80", "2026-11-04": "1E-80"})
    with pytest.raises(ValueError, match="significant digits"):
        compare(daily, [item("li_1", *NOVEMBER, "1")])


@pytest.mark.parametrize(
    ("billed", "text"),
    [("1E+150", "1" + "0" * 150), ("100.00", "100"), ("2.5000", "2.5"), ("1.20E-7", "0.00000012")],
)
def test_finding_quantities_have_no_exponent_and_no_trailing_zeros(billed: str, text: str) -> None:
    exact = Tolerance(abs_tol=Decimal(0))
    quantity = only(
        compare({}, [item("li_1", *NOVEMBER, billed)], tolerance=exact)
    ).internal_quantity
    assert quantity is not None
    assert format(quantity, "f") == text
    assert quantity.as_tuple() == Decimal(text).as_tuple()


def test_finding_quantities_read_the_same_whatever_the_history_scale() -> None:
    """A prefix-sum difference would carry the scale of another day (120.000)."""
    daily = days({"2026-10-01": "0.001", "2026-11-03": "120"})
    finding = only(compare(daily, [item("li_1", *NOVEMBER, "100.00")]))
    assert (
        str(finding.stripe_quantity),
        str(finding.internal_quantity),
        str(finding.difference),
    ) == (
        "120",
        "100",
        "20",
    )


# -------------------------------------------------------------- findings and detail


def test_findings_are_sorted_by_identity() -> None:
    daily = days({"2026-11-28": "1", "2026-11-02": "1"})
    items = [
        item("z", "2026-11-10", "2026-11-20", "5"),
        item("y", "2026-11-15", "2026-11-25", "0"),
        item("x", "2026-11-05", "2026-11-08", "7"),
    ]
    result = compare(daily, items)
    assert [f.identity for f in result.findings] == sorted(f.identity for f in result.findings)
    assert [f.kind for f in result.findings] == [
        Kind.MISSING_IN_STRIPE,
        Kind.MISSING_IN_STRIPE,
        Kind.OVERLAPPING_LINE_ITEMS,
        Kind.UNBILLED_USAGE,
        Kind.UNBILLED_USAGE,
    ]


def test_identity_is_kind_period_and_ids() -> None:
    finding = only(compare({}, [item("li_1", *NOVEMBER, "3")]))
    assert finding.identity == (
        Kind.MISSING_IN_STRIPE,
        d("2026-11-01"),
        d("2026-12-01"),
        "li_1",
        "",
    )
    assert hash(finding.identity) == hash(finding.identity)


def test_a_findings_key_is_its_pair_then_its_identity() -> None:
    finding = only(compare({}, [item("li_1", *NOVEMBER, "3")]))
    key = finding.key(customer="cus_A", meter="mtr_api")
    assert key == DiscrepancyKey(
        stripe_customer_id="cus_A",
        meter_id="mtr_api",
        kind=Kind.MISSING_IN_STRIPE,
        period_start=d("2026-11-01"),
        period_end=d("2026-12-01"),
        line_item_id="li_1",
        other_line_item_id="",
    )
    assert key.ledger is Ledger.INTERNAL
    assert key[2:-1] == finding.identity


def test_a_findings_identity_is_the_fields_the_key_names() -> None:
    finding = only(compare({}, [item("li_1", *NOVEMBER, "3")]))
    assert DiscrepancyKey._fields[2:-1] == WITHIN_PAIR
    assert tuple(getattr(finding, name) for name in WITHIN_PAIR) == finding.identity


@pytest.mark.parametrize(
    ("formula", "daily", "items", "detail"),
    [
        (
            Formula.SUM,
            {"2026-11-01": "100", "2026-11-30": "20"},
            [item("li_1", *NOVEMBER, "100.0")],
            "Stripe metered 120 for 2026-11-01..2026-11-30 (sum of 2 daily values); "
            "line item li_1 billed 100.",
        ),
        (
            Formula.COUNT,
            {"2026-11-07": "3"},
            [item("li_1", *NOVEMBER, "4")],
            "Stripe metered 3 for 2026-11-01..2026-11-30 (events counted on 1 day); "
            "line item li_1 billed 4.",
        ),
        (
            Formula.LAST,
            {"2026-11-07": "3", "2026-11-08": "2.50"},
            [item("li_1", *NOVEMBER, "4")],
            "Stripe metered 2.5 for 2026-11-01..2026-11-30 (its last value, reported on "
            "2026-11-08); line item li_1 billed 4.",
        ),
        (
            Formula.SUM,
            {},
            [item("li_1", *NOVEMBER, "4")],
            "Stripe has no usage for 2026-11-01..2026-11-30; line item li_1 billed 4.",
        ),
        (
            Formula.SUM,
            {"2026-11-05": "0"},
            [item("li_1", *NOVEMBER, "4")],
            "Stripe metered 0 for 2026-11-01..2026-11-30 (sum of 1 daily value); "
            "line item li_1 billed 4.",
        ),
        (
            Formula.SUM,
            {"2026-11-05": "1.5"},
            [],
            "Stripe metered 1.5 on 2026-11-05, a day no line item bills.",
        ),
        (
            Formula.SUM,
            {"2026-11-12": "2"},
            [
                item("a", "2026-11-01", "2026-11-15", "2"),
                item("b", "2026-11-10", "2026-11-20", "2"),
            ],
            "Line items b and a both bill 2026-11-10..2026-11-14; Stripe metered 2 on those "
            "days (sum of 1 daily value).",
        ),
    ],
    ids=["sum", "count", "last", "missing", "missing-zero-bucket", "unbilled", "overlap"],
)
def test_detail_is_one_sentence_for_finance(
    formula: Formula, daily: dict[str, str], items: list[LineItem], detail: str
) -> None:
    findings = compare(days(daily), items, formula=formula).findings
    assert [f.detail for f in findings] == [detail]


def test_formula_may_be_given_as_its_value() -> None:
    """``models.Formula`` has the same values; the comparison accepts either."""
    result = compare(THREE_DAYS, [item("li_1", *NOVEMBER, "3")], formula="last")  # type: ignore[arg-type]
    assert result.findings == ()


# ------------------------------------------------------------------------- scale


def test_hundred_thousand_daily_items_in_one_call() -> None:
    """Correctness at scale; how fast is bench/'s business, never asserted here."""
    start = d("2000-01-01")
    count = 100_000
    daily = {start + timedelta(days=n): Decimal(n % 7) for n in range(count)}
    ledger = [
        LineItem(
            f"li_{n}", start + timedelta(days=n), start + timedelta(days=n + 1), Decimal(n % 7)
        )
        for n in range(count)
    ]
    ledger[500] = LineItem("li_500", ledger[500].period_start, ledger[500].period_end, Decimal(99))
    end = start + timedelta(days=count)
    result = compare_pair(
        daily=daily, line_items=ledger, window=Window(start, end), today=end, formula=Formula.SUM
    )
    assert [f.line_item_id for f in result.findings] == ["li_500"]
    assert (result.compared, result.matched) == (count, count - 1)


# ----------------------------------------------------------------------- fetch_range


@pytest.mark.parametrize(
    ("periods", "today", "expected"),
    [
        ([], "2026-12-02", NOVEMBER),
        ([("2026-10-15", "2026-11-10")], "2026-12-02", ("2026-10-14", "2026-12-01")),
        ([("2026-11-20", "2026-11-30")], "2026-12-02", NOVEMBER),
        ([("2026-11-20", "2026-12-01")], "2026-12-02", ("2026-11-01", "2026-12-02")),
        ([("2026-11-01", "2026-11-10")], "2026-12-02", ("2026-10-31", "2026-12-01")),
        (
            [("2026-10-15", "2026-11-10"), ("2026-11-25", "2026-12-31")],
            "2027-02-01",
            ("2026-10-14", "2027-01-01"),
        ),
        ([("2026-11-25", "2026-12-31")], "2026-12-10", ("2026-11-01", "2026-12-10")),
        ([("2026-11-20", "2026-12-01")], "2026-12-01", NOVEMBER),
        ([("2026-09-01", "2026-11-01"), ("2026-12-01", "2027-01-01")], "2027-02-01", NOVEMBER),
        ([], "2026-11-15", ("2026-11-01", "2026-11-15")),
        ([], "2026-11-01", None),
        ([], "2026-10-01", None),
    ],
    ids=[
        "window-only",
        "item-starts-earlier-widened-by-a-day",
        "item-inside-its-widened-days-too",
        "item-ending-with-the-window-adds-the-day-after",
        "item-starting-with-the-window-adds-the-day-before",
        "union-of-both-sides-widened",
        "capped-at-today",
        "the-day-after-is-never-past-today",
        "adjacent-items-ignored",
        "window-past-today",
        "window-starts-today",
        "window-after-today",
    ],
)
def test_fetch_range(
    periods: list[tuple[str, str]], today: str, expected: tuple[str, str] | None
) -> None:
    items = [item(f"li_{n}", *period, "1") for n, period in enumerate(periods)]
    got = fetch_range(window=window(*NOVEMBER), line_items=items, today=d(today))
    assert got == (None if expected is None else (d(expected[0]), d(expected[1])))


def test_the_widened_days_change_no_finding() -> None:
    """Usage on the days just outside a period and the window is fetched, never judged."""
    li = item("li_1", "2026-11-01", "2026-11-04", "6")
    inside = days({"2026-11-01": "1", "2026-11-02": "2", "2026-11-03": "3"})
    neighbours = days({"2026-10-31": "50", "2026-11-04": "70"})
    assert fetch_range(
        window=window("2026-11-01", "2026-11-04"), line_items=[li], today=d("2026-11-06")
    ) == (
        d("2026-10-31"),
        d("2026-11-05"),
    )

    alone = comparison(inside, li, today="2026-11-06")
    widened = comparison({**inside, **neighbours}, li, today="2026-11-06")

    assert widened == alone
    assert widened.findings == ()
