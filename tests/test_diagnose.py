"""The pure diagnosis (tasks/diagnose.py): docs/comparison.md's "Likely causes: the exact
rules", rule by rule.

Findings come from the real comparison (``compare_pair``) over the usage each test
writes, so every case is a discrepancy the comparison would actually record.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from models.enums import LikelyCause
from tasks.compare import Finding, Formula, Kind, LineItem, Tolerance, Window, compare_pair
from tasks.diagnose import (
    NO_CAUSE,
    UNIT_FACTORS,
    Diagnosis,
    HourlyFailed,
    WrongMeterCandidate,
    diagnose,
    hourly_spans,
    needs_hourly,
    wrong_meter,
)

REPO = Path(__file__).resolve().parent.parent
TODAY = date(2026, 12, 2)
NOW = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)
NOV_1, DEC_1 = date(2026, 11, 1), date(2026, 12, 1)
TOLERANCE = Tolerance()
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


# ---------------------------------------------------------------------------- builders


def d(text: str) -> date:
    return date.fromisoformat(text)


def days(values: Mapping[str, str]) -> dict[date, Decimal]:
    return {d(day): Decimal(value) for day, value in values.items()}


def every_day(start: date, end: date, value: str) -> dict[date, Decimal]:
    """The same value on each day of ``[start, end)``."""
    return {start + n * DAY: Decimal(value) for n in range((end - start).days)}


def line_item_finding(
    daily: Mapping[date, Decimal],
    billed: str,
    *,
    start: date = NOV_1,
    end: date = DEC_1,
    formula: Formula = Formula.SUM,
    tolerance: Tolerance = TOLERANCE,
) -> Finding:
    """The comparison's finding for one line item ``li_nov`` billing ``billed``."""
    item = LineItem(id="li_nov", period_start=start, period_end=end, quantity=Decimal(billed))
    result = compare_pair(
        daily=daily,
        line_items=[item],
        window=Window(start, end),
        today=TODAY,
        formula=formula,
        tolerance=tolerance,
    )
    [finding] = result.findings
    return finding


def unbilled_finding(day: date, value: str) -> Finding:
    result = compare_pair(
        daily={day: Decimal(value)},
        line_items=[],
        window=Window(day, day + DAY),
        today=TODAY,
        formula=Formula.SUM,
    )
    [finding] = result.findings
    assert finding.kind is Kind.UNBILLED_USAGE
    return finding


def run(
    finding: Finding,
    daily: Mapping[date, Decimal],
    *,
    first_known: Mapping[date, Decimal | None] | None = None,
    hourly: Mapping[datetime, Decimal] | HourlyFailed | None = None,
    formula: Formula = Formula.SUM,
    tolerance: Tolerance = TOLERANCE,
    now: datetime = NOW,
    diagnose_hourly: bool = True,
) -> Diagnosis:
    return diagnose(
        finding=finding,
        formula=formula,
        daily=daily,
        first_known=first_known or {},
        hourly=hourly,
        tolerance=tolerance,
        today=TODAY,
        now=now,
        diagnose_hourly=diagnose_hourly,
    )


def wants_hourly(
    finding: Finding,
    daily: Mapping[date, Decimal],
    *,
    first_known: Mapping[date, Decimal | None] | None = None,
    formula: Formula = Formula.SUM,
    diagnose_hourly: bool = True,
) -> bool:
    return needs_hourly(
        finding=finding,
        formula=formula,
        daily=daily,
        first_known=first_known or {},
        tolerance=TOLERANCE,
        today=TODAY,
        diagnose_hourly=diagnose_hourly,
    )


def midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def hourly_usage(
    start: datetime, end: datetime, rate: Callable[[datetime], Decimal]
) -> dict[datetime, Decimal]:
    """Usage in every hour of ``[start, end)``: what really happened, hour by hour."""
    hours, at = {}, start
    while at < end:
        hours[at] = rate(at)
        at += HOUR
    return hours


def by_utc_day(hours: Mapping[datetime, Decimal]) -> dict[date, Decimal]:
    """What Stripe's daily buckets say about that usage."""
    daily: dict[date, Decimal] = {}
    for at, value in hours.items():
        daily[at.date()] = daily.get(at.date(), Decimal(0)) + value
    return daily


def between(hours: Mapping[datetime, Decimal], start: datetime, end: datetime) -> Decimal:
    return sum((v for at, v in hours.items() if start <= at < end), Decimal(0))


def fetched(
    hours: Mapping[datetime, Decimal], spans: list[tuple[datetime, datetime]]
) -> dict[datetime, Decimal]:
    """The hourly buckets Stripe returns for those spans."""
    return {at: v for at, v in hours.items() if any(a <= at < b for a, b in spans)}


def day_of_year_rate(at: datetime) -> Decimal:
    """Usage that grows through the year, so moving a boundary by any hour changes a sum."""
    return Decimal(at.timetuple().tm_yday) + Decimal(at.hour) / 100


# The usage of October 31 to December 1 inclusive, hour by hour, and as daily buckets.
HOURS = hourly_usage(midnight(d("2026-10-31")), midnight(d("2026-12-02")), day_of_year_rate)
DAILY = by_utc_day(HOURS)


def ledger_in_days_shifted_by(shift: int) -> Decimal:
    """November's usage as a ledger that cuts days ``shift`` hours after midnight UTC counts it."""
    moved = shift * HOUR
    return between(HOURS, midnight(NOV_1) + moved, midnight(DEC_1) + moved)


def shift_finding(shift: int) -> Finding:
    return line_item_finding(DAILY, str(ledger_in_days_shifted_by(shift)))


# ----------------------------------------------------------------------------- purity


def test_the_module_imports_no_database_http_or_prefect() -> None:
    code = (
        "import sys, tasks.diagnose\n"
        "banned = ('sqlalchemy', 'sqlmodel', 'httpx', 'prefect')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in banned}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


def test_the_module_reads_no_clock() -> None:
    tree = ast.parse((REPO / "tasks" / "diagnose.py").read_text())
    calls = {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    }
    assert not calls & {"now", "today", "utcnow", "time", "monotonic", "perf_counter"}
    assert "time" not in {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }


# ----------------------------------------------------------------- nothing to diagnose


def test_overlapping_line_items_get_no_cause() -> None:
    items = [
        LineItem(id="li_a", period_start=NOV_1, period_end=DEC_1, quantity=Decimal(30)),
        LineItem(id="li_b", period_start=d("2026-11-15"), period_end=DEC_1, quantity=Decimal(16)),
    ]
    result = compare_pair(
        daily=every_day(NOV_1, DEC_1, "1"),
        line_items=items,
        window=Window(NOV_1, DEC_1),
        today=TODAY,
        formula=Formula.SUM,
    )
    [overlap] = result.findings
    assert overlap.kind is Kind.OVERLAPPING_LINE_ITEMS
    assert run(overlap, every_day(NOV_1, DEC_1, "1")) == NO_CAUSE


@pytest.mark.parametrize(
    ("daily", "billed", "kind"),
    [
        ({}, "5", Kind.MISSING_IN_STRIPE),  # S = 0: 0 = 2 x 5 fails, 5 = 2 x 0 fails
        (days({"2026-11-10": "5"}), "0", Kind.QUANTITY_MISMATCH),  # I = 0: the same
        (days({"2026-11-10": "7"}), "5", Kind.QUANTITY_MISMATCH),  # no rule's numbers
        # neighbouring days that add up to nothing the ledger billed
        (
            days({"2026-11-10": "7", "2026-10-31": "1", "2026-12-01": "3"}),
            "5",
            Kind.QUANTITY_MISMATCH,
        ),
    ],
)
def test_no_cause_is_claimed_where_none_fits(
    daily: dict[date, Decimal], billed: str, kind: Kind
) -> None:
    finding = line_item_finding(daily, billed)
    assert finding.kind is kind
    assert run(finding, daily, hourly={}, first_known={NOV_1: None}) == NO_CAUSE


def test_an_unbilled_day_without_history_has_no_cause() -> None:
    day = d("2026-11-10")
    assert run(unbilled_finding(day, "40"), {day: Decimal(40)}) == NO_CAUSE


def test_no_cause_has_neither_cause_nor_detail() -> None:
    assert (NO_CAUSE.cause, NO_CAUSE.detail) == (None, None)


def test_a_cause_needs_its_evidence() -> None:
    with pytest.raises(ValueError, match="needs a detail"):
        Diagnosis(cause=LikelyCause.UNIT_SCALE, detail="")


# ------------------------------------------------------------------- 1. late_usage


def test_late_usage_when_the_period_first_fetched_matched_the_ledger() -> None:
    daily = every_day(NOV_1, DEC_1, "10")  # 300 now
    first_known = {d("2026-11-29"): Decimal(4), d("2026-11-30"): None}  # 288 back then
    finding = line_item_finding(daily, "284")
    diagnosis = run(finding, daily, first_known=first_known)
    assert diagnosis == Diagnosis(
        cause=LikelyCause.LATE_USAGE,
        detail=(
            "Stripe's usage for 2026-11-01..2026-11-30 was 284 when first fetched, what line "
            "item li_nov billed, and is 300 now (it changed on 2026-11-29 and 2026-11-30): "
            "the usage arrived after the ledger was computed."
        ),
    )


def test_a_day_never_fetched_before_counts_at_todays_value() -> None:
    daily = every_day(NOV_1, DEC_1, "10")
    # Only November 30 has history; every other day counts at today's 10.
    finding = line_item_finding(daily, "290")
    assert run(finding, daily, first_known={d("2026-11-30"): None}).cause is (
        LikelyCause.LATE_USAGE
    )
    assert run(finding, daily, first_known={}).cause is not LikelyCause.LATE_USAGE


def test_a_day_first_fetched_without_a_bucket_counts_as_zero_for_count_meters() -> None:
    daily = every_day(NOV_1, DEC_1, "2")
    finding = line_item_finding(daily, "58", formula=Formula.COUNT)
    diagnosis = run(finding, daily, formula=Formula.COUNT, first_known={NOV_1: None})
    assert diagnosis.cause is LikelyCause.LATE_USAGE


def test_late_usage_for_a_last_meter_takes_the_latest_day_known_back_then() -> None:
    daily = days({"2026-11-20": "7", "2026-11-30": "9"})  # S = 9 now
    # November 30 was first fetched without a bucket: back then the last value was 7.
    finding = line_item_finding(daily, "7", formula=Formula.LAST)
    diagnosis = run(finding, daily, formula=Formula.LAST, first_known={d("2026-11-30"): None})
    assert diagnosis.cause is LikelyCause.LATE_USAGE
    assert "was 7 when first fetched" in (diagnosis.detail or "")
    assert "is 9 now (it changed on 2026-11-30)" in (diagnosis.detail or "")


def test_usage_taken_back_since_the_first_fetch_is_late_usage_too() -> None:
    daily = every_day(NOV_1, d("2026-11-30"), "10")  # November 30's 10 was adjusted away
    finding = line_item_finding(daily, "300")
    diagnosis = run(finding, daily, first_known={d("2026-11-30"): Decimal(10)})
    assert diagnosis == Diagnosis(
        cause=LikelyCause.LATE_USAGE,
        detail=(
            "Stripe's usage for 2026-11-01..2026-11-30 was 300 when first fetched, what line "
            "item li_nov billed, and is 290 now (it changed on 2026-11-30): usage was taken "
            "back (an adjustment) after the ledger was computed."
        ),
    )


def test_a_naive_now_is_refused() -> None:
    daily = every_day(NOV_1, DEC_1, "10")
    with pytest.raises(TypeError, match="timezone-aware"):
        run(line_item_finding(daily, "150"), daily, now=datetime(2026, 12, 2, 9))


def test_an_unbilled_day_that_was_zero_when_first_fetched_is_late_usage() -> None:
    day = d("2026-11-10")
    diagnosis = run(unbilled_finding(day, "40"), {day: Decimal(40)}, first_known={day: None})
    assert diagnosis == Diagnosis(
        cause=LikelyCause.LATE_USAGE,
        detail=(
            "Stripe's usage on 2026-11-10 was 0 when first fetched and is 40 now "
            "(it changed on 2026-11-10): the usage arrived after the ledger was computed."
        ),
    )


def test_an_unbilled_day_first_fetched_with_its_usage_is_not_late() -> None:
    day = d("2026-11-10")
    first = {day: Decimal(40)}
    assert run(unbilled_finding(day, "40"), {day: Decimal(40)}, first_known=first) == NO_CAUSE


def test_first_fetched_values_are_compared_within_the_tolerance() -> None:
    daily = every_day(NOV_1, DEC_1, "10")
    finding = line_item_finding(daily, "290.0000004")
    diagnosis = run(finding, daily, first_known={d("2026-11-30"): Decimal(0)})
    assert diagnosis.cause is LikelyCause.LATE_USAGE


def test_the_changed_days_are_listed_up_to_three() -> None:
    daily = every_day(NOV_1, DEC_1, "10")
    first_known = dict.fromkeys(every_day(d("2026-11-26"), DEC_1, "0"), None)
    diagnosis = run(line_item_finding(daily, "250"), daily, first_known=first_known)
    assert "(it changed on 2026-11-26, 2026-11-27, 2026-11-28 and 2 more days)" in (
        diagnosis.detail or ""
    )


# ------------------------------------------------------------- 2. period_off_by_one


NOVEMBER = every_day(NOV_1, DEC_1, "10") | days(
    {"2026-11-01": "3", "2026-11-30": "5", "2026-10-31": "7", "2026-12-01": "11"}
)  # S = 28 x 10 + 3 + 5 = 288


@pytest.mark.parametrize(
    ("billed", "evidence"),
    [
        (
            "285",
            "without its first day, 2026-11-01 (Stripe has 3 that day and 288 over the period):"
            " likely a period that starts a day late.",
        ),
        (
            "283",
            "without its last day, 2026-11-30 (Stripe has 5 that day and 288 over the period):"
            " likely a missed last day.",
        ),
        (
            "295",
            "with the day before, 2026-10-31, added (Stripe has 7 that day and 288 over the"
            " period): likely a period that starts a day early.",
        ),
        (
            "299",
            "with the day after, 2026-12-01, added (Stripe has 11 that day and 288 over the"
            " period): likely an inclusive end.",
        ),
    ],
)
def test_period_off_by_one_names_the_day_and_the_slip(billed: str, evidence: str) -> None:
    diagnosis = run(line_item_finding(NOVEMBER, billed), NOVEMBER)
    assert diagnosis == Diagnosis(
        cause=LikelyCause.PERIOD_OFF_BY_ONE,
        detail=(
            f"Line item li_nov billed {billed}, which is Stripe's usage for "
            f"2026-11-01..2026-11-30 {evidence}"
        ),
    )


def test_period_off_by_one_tries_the_first_day_before_the_last() -> None:
    daily = NOVEMBER | days({"2026-11-30": "3"})  # first and last day both 3: S = 286
    diagnosis = run(line_item_finding(daily, "283"), daily)
    assert "without its first day, 2026-11-01" in (diagnosis.detail or "")


def test_a_missing_in_stripe_period_can_be_off_by_one() -> None:
    daily = days({"2026-12-01": "40"})  # nothing in November, 40 the day after
    finding = line_item_finding(daily, "40")
    assert finding.kind is Kind.MISSING_IN_STRIPE
    assert run(finding, daily).cause is LikelyCause.PERIOD_OFF_BY_ONE


def test_the_day_after_is_no_usage_when_it_is_today() -> None:
    daily = every_day(d("2026-11-02"), TODAY, "10") | {TODAY: Decimal(5)}
    finding = line_item_finding(daily, "305", start=d("2026-11-02"), end=TODAY)
    assert run(finding, daily, hourly={}) == NO_CAUSE


def test_a_one_day_line_item_is_never_off_by_one() -> None:
    daily = days({"2026-11-10": "10", "2026-11-11": "5"})
    finding = line_item_finding(daily, "15", start=d("2026-11-10"), end=d("2026-11-11"))
    assert run(finding, daily) == NO_CAUSE
    assert not wants_hourly(finding, daily)


def test_off_by_one_is_exact_beyond_the_default_decimal_precision() -> None:
    big, small = "123456789012345678901234567890", "0.000000000000000000001"
    daily = days({"2026-11-01": big, "2026-11-02": small})
    exact = Tolerance(abs_tol=Decimal(0))
    finding = line_item_finding(daily, big, start=NOV_1, end=d("2026-11-03"), tolerance=exact)
    assert run(finding, daily, tolerance=exact, hourly={}).cause is (LikelyCause.PERIOD_OFF_BY_ONE)


def test_a_computation_that_would_have_to_round_raises() -> None:
    # S + D[start-1] = 1E+80 + 2E-30 needs 111 digits. (The comparison, which adds up
    # every day it is given, refuses such a pair first; the finding is built by hand.)
    daily = days({"2026-11-01": "1E-30", "2026-11-02": "1E-30", "2026-10-31": "1E+80"})
    finding = Finding(
        kind=Kind.QUANTITY_MISMATCH,
        period_start=NOV_1,
        period_end=d("2026-11-03"),
        line_item_id="li_nov",
        other_line_item_id="",
        stripe_quantity=Decimal("2E-30"),
        internal_quantity=Decimal(5),
        difference=Decimal("-4.999999999999999999999999999998"),
        detail="",
    )
    with pytest.raises(ValueError, match="more than 100 significant digits"):
        run(finding, daily, hourly={})


# --------------------------------------------------------------- 3. timezone_shift


def test_hourly_spans_are_the_28_hours_around_each_boundary() -> None:
    assert hourly_spans(NOV_1, DEC_1, now=NOW) == [
        (datetime(2026, 10, 31, 10, tzinfo=UTC), datetime(2026, 11, 1, 14, tzinfo=UTC)),
        (datetime(2026, 11, 30, 10, tzinfo=UTC), datetime(2026, 12, 1, 14, tzinfo=UTC)),
    ]


def test_hourly_spans_stop_at_the_current_hour() -> None:
    spans = hourly_spans(d("2026-11-20"), TODAY, now=NOW)
    assert spans[1] == (datetime(2026, 12, 1, 10, tzinfo=UTC), datetime(2026, 12, 2, 9, tzinfo=UTC))


def test_hourly_spans_drop_a_span_that_has_not_begun() -> None:
    now = datetime(2026, 11, 30, 3, 15, tzinfo=UTC)  # before December 1 minus 14 hours
    assert hourly_spans(NOV_1, DEC_1, now=now) == [
        (datetime(2026, 10, 31, 10, tzinfo=UTC), datetime(2026, 11, 1, 14, tzinfo=UTC))
    ]


def test_hourly_spans_refuse_a_naive_now() -> None:
    with pytest.raises(TypeError, match="timezone-aware"):
        hourly_spans(NOV_1, DEC_1, now=datetime(2026, 12, 2, 9))


@pytest.mark.parametrize("shift", [5, -3, 1, -1, 14, -14])
def test_a_ledger_in_shifted_days_is_a_timezone_shift(shift: int) -> None:
    finding = shift_finding(shift)
    assert wants_hourly(finding, DAILY)
    hourly = fetched(HOURS, hourly_spans(NOV_1, DEC_1, now=NOW))
    diagnosis = run(finding, DAILY, hourly=hourly)
    assert diagnosis.cause is LikelyCause.TIMEZONE_SHIFT
    offset = f"UTC{'-' if shift > 0 else '+'}{abs(shift):02d}:00"
    assert f"(a {offset} day boundary)" in (diagnosis.detail or "")


def test_the_timezone_detail_gives_the_hours_and_the_utc_quantity() -> None:
    finding = shift_finding(5)
    hourly = fetched(HOURS, hourly_spans(NOV_1, DEC_1, now=NOW))
    billed, utc = finding.internal_quantity, finding.stripe_quantity
    assert (billed, utc) == (Decimal("230272.8"), Decimal("230122.8"))
    assert run(finding, DAILY, hourly=hourly).detail == (
        f"Line item li_nov billed {billed}, which is Stripe's usage over days that start at "
        "05:00 UTC (a UTC-05:00 day boundary), 2026-11-01 05:00 to 2026-12-01 05:00 UTC; "
        f"in UTC days Stripe has {utc}."
    )


def test_a_negative_shift_starts_the_days_the_evening_before() -> None:
    hourly = fetched(HOURS, hourly_spans(NOV_1, DEC_1, now=NOW))
    detail = run(shift_finding(-3), DAILY, hourly=hourly).detail or ""
    assert "days that start at 21:00 UTC (a UTC+03:00 day boundary)" in detail
    assert "2026-10-31 21:00 to 2026-11-30 21:00 UTC" in detail


def flat_november() -> tuple[dict[date, Decimal], Finding]:
    """November at 240 a day (S = 7200), billed 10 short: the hours must explain the 10."""
    daily = every_day(NOV_1, DEC_1, "240")
    return daily, line_item_finding(daily, "7190")


def test_the_smallest_shift_wins_whatever_its_sign() -> None:
    # -2 loses November 30 22:00 (10); +3 loses November 1 02:00 (10); +-1 and +2 lose 0.
    hours = {midnight(DEC_1) - 2 * HOUR: Decimal(10), midnight(NOV_1) + 2 * HOUR: Decimal(10)}
    daily, finding = flat_november()
    detail = run(finding, daily, hourly=hours).detail or ""
    assert "days that start at 22:00 UTC (a UTC+02:00 day boundary)" in detail


def test_a_positive_shift_wins_a_tie() -> None:
    # +2 loses November 1 01:00 (10), -2 loses November 30 22:00 (10): both fit.
    hours = {midnight(NOV_1) + HOUR: Decimal(10), midnight(DEC_1) - 2 * HOUR: Decimal(10)}
    daily, finding = flat_november()
    detail = run(finding, daily, hourly=hours).detail or ""
    assert "days that start at 02:00 UTC (a UTC-02:00 day boundary)" in detail


def test_hours_at_or_after_the_current_hour_have_no_usage() -> None:
    # A period ending today: +5 would gain today's 00:00-05:00, which has not ended yet
    # at 03:30 for the hours from 03:00 on.
    start = d("2026-11-20")
    daily = every_day(start, TODAY, "240")
    hours = {midnight(TODAY) + k * HOUR: Decimal(10) for k in range(5)}
    finding = line_item_finding(daily, str(12 * 240 + 50), start=start, end=TODAY)
    early = datetime(2026, 12, 2, 3, 30, tzinfo=UTC)
    later = datetime(2026, 12, 2, 9, 30, tzinfo=UTC)
    assert run(finding, daily, hourly=hours, now=later).cause is LikelyCause.TIMEZONE_SHIFT
    assert run(finding, daily, hourly=hours, now=early) == NO_CAUSE


def test_hourly_buckets_must_start_on_the_hour() -> None:
    daily, finding = flat_november()
    with pytest.raises(ValueError, match="on the hour"):
        run(finding, daily, hourly={midnight(NOV_1) + timedelta(minutes=30): Decimal(1)})


def test_no_shift_fits_when_the_boundary_hours_do_not_explain_it() -> None:
    hourly = fetched(HOURS, hourly_spans(NOV_1, DEC_1, now=NOW))
    finding = line_item_finding(DAILY, str(ledger_in_days_shifted_by(5) + Decimal("0.5")))
    assert run(finding, DAILY, hourly=hourly) == NO_CAUSE


def test_a_failed_hourly_fetch_leaves_the_cause_null_and_says_so() -> None:
    diagnosis = run(shift_finding(5), DAILY, hourly=HourlyFailed())
    assert diagnosis == Diagnosis(
        cause=None,
        detail=(
            "Stripe's hourly usage around 2026-11-01 and 2026-12-01 could not be fetched, "
            "so a shifted day boundary could not be checked; no other cause fits."
        ),
    )


def test_a_failed_hourly_fetch_still_tries_the_later_rules() -> None:
    daily = every_day(NOV_1, DEC_1, "10")
    diagnosis = run(line_item_finding(daily, "150"), daily, hourly=HourlyFailed())
    assert diagnosis.cause is LikelyCause.DUPLICATED_USAGE


def test_diagnose_off_makes_no_hourly_request_and_skips_the_shift() -> None:
    finding = shift_finding(5)
    assert not wants_hourly(finding, DAILY, diagnose_hourly=False)
    assert run(finding, DAILY, hourly=None, diagnose_hourly=False) == NO_CAUSE


def test_diagnose_off_still_finds_the_causes_that_need_no_request() -> None:
    daily = every_day(NOV_1, DEC_1, "10")
    assert run(line_item_finding(daily, "150"), daily, diagnose_hourly=False).cause is (
        LikelyCause.DUPLICATED_USAGE
    )
    assert run(line_item_finding(daily, "290"), daily, diagnose_hourly=False).cause is (
        LikelyCause.PERIOD_OFF_BY_ONE
    )


def test_hourly_usage_is_required_when_the_shift_rule_needs_it() -> None:
    finding = shift_finding(5)
    with pytest.raises(ValueError, match="needs Stripe's hourly usage"):
        run(finding, DAILY, hourly=None)


def test_no_hourly_request_when_an_earlier_rule_fits() -> None:
    daily = every_day(NOV_1, DEC_1, "10")
    assert not wants_hourly(line_item_finding(daily, "290"), daily)  # off by one
    first_known = {d("2026-11-30"): None}
    late = line_item_finding(daily, "290")
    assert not wants_hourly(late, daily, first_known=first_known)


def test_no_hourly_request_for_an_unbilled_day_or_a_last_meter() -> None:
    day = d("2026-11-10")
    assert not wants_hourly(unbilled_finding(day, "40"), {day: Decimal(40)})
    daily = days({"2026-11-30": "9"})
    finding = line_item_finding(daily, "4", formula=Formula.LAST)
    assert not wants_hourly(finding, daily, formula=Formula.LAST)


def test_an_unmatched_sum_line_item_needs_the_hourly_usage() -> None:
    daily = every_day(NOV_1, DEC_1, "10")
    assert wants_hourly(line_item_finding(daily, "277"), daily)


# -------------------------------------------------------- 4-5. duplicated, unit_scale


def test_stripe_counting_twice_is_duplicated_usage() -> None:
    daily = every_day(NOV_1, DEC_1, "10")
    assert run(line_item_finding(daily, "150"), daily, hourly={}) == Diagnosis(
        cause=LikelyCause.DUPLICATED_USAGE,
        detail=(
            "Stripe's 300 is twice the 150 line item li_nov billed: Stripe likely counted the "
            "usage twice (duplicate events, or a retry that minted new identifiers)."
        ),
    )


def test_the_ledger_billing_twice_is_duplicated_usage() -> None:
    daily = every_day(NOV_1, DEC_1, "10")
    assert run(line_item_finding(daily, "600"), daily, hourly={}) == Diagnosis(
        cause=LikelyCause.DUPLICATED_USAGE,
        detail=(
            "Line item li_nov billed 600, twice Stripe's 300: the ledger likely billed the "
            "usage twice."
        ),
    )


@pytest.mark.parametrize("factor", UNIT_FACTORS)
def test_stripe_in_a_smaller_unit_is_unit_scale(factor: int) -> None:
    daily = {d("2026-11-10"): Decimal(3 * factor)}
    diagnosis = run(line_item_finding(daily, "3"), daily, hourly={})
    assert diagnosis.cause is LikelyCause.UNIT_SCALE
    assert f"Stripe's {3 * factor} is {factor} times the 3 line item" in (diagnosis.detail or "")


@pytest.mark.parametrize("factor", UNIT_FACTORS)
def test_the_ledger_in_a_smaller_unit_is_unit_scale(factor: int) -> None:
    daily = every_day(NOV_1, DEC_1, "10")
    diagnosis = run(line_item_finding(daily, str(300 * factor)), daily, hourly={})
    assert diagnosis.cause is LikelyCause.UNIT_SCALE
    assert f"billed {300 * factor}, {factor} times Stripe's 300: " in (diagnosis.detail or "")


def test_the_unit_scale_detail_says_what_the_factor_means() -> None:
    daily = every_day(NOV_1, DEC_1, "120")  # 3600 seconds, billed as 1 hour
    assert run(line_item_finding(daily, "1"), daily, hourly={}).detail == (
        "Stripe's 3600 is 3600 times the 1 line item li_nov billed: the two likely count in "
        "different units (seconds and hours)."
    )


def test_the_smallest_fitting_factor_wins() -> None:
    loose = Tolerance(rel_tol=Decimal("0.05"))  # 1012 is 1000 x 1 and 1024 x 1 within 5%
    daily = days({"2026-11-10": "1012"})
    finding = line_item_finding(daily, "1", tolerance=loose)
    diagnosis = run(finding, daily, tolerance=loose, hourly={})
    assert "is 1000 times" in (diagnosis.detail or "")


def test_duplicated_usage_comes_before_unit_scale() -> None:
    loose = Tolerance(rel_tol=Decimal("0.7"))  # 6 is both 2 x 1 and 10 x 1 within 70%
    daily = days({"2026-11-10": "6"})
    finding = line_item_finding(daily, "1", tolerance=loose)
    assert run(finding, daily, tolerance=loose, hourly={}).cause is (LikelyCause.DUPLICATED_USAGE)


def test_a_multiple_of_a_quantity_within_tolerance_of_zero_explains_nothing() -> None:
    # 0.0000016 is 2 x 0.0000005 within 1e-6, but 0.0000005 is itself 0 within 1e-6.
    daily = days({"2026-11-10": "0.0000016"})
    finding = line_item_finding(daily, "0.0000005")
    assert run(finding, daily, hourly={}) == NO_CAUSE


# ------------------------------------------------------------- the order of the rules


def test_late_usage_comes_before_duplicated_usage() -> None:
    daily = every_day(NOV_1, DEC_1, "10")  # 300 now, twice the 150 billed
    first_known = dict.fromkeys(every_day(d("2026-11-16"), DEC_1, "0"), None)  # 150 then
    diagnosis = run(line_item_finding(daily, "150"), daily, first_known=first_known)
    assert diagnosis.cause is LikelyCause.LATE_USAGE


def test_period_off_by_one_comes_before_duplicated_usage() -> None:
    daily = days({"2026-11-01": "5", "2026-11-02": "5"})  # S = 10 = 2 x 5 = S - D[start]
    finding = line_item_finding(daily, "5", end=d("2026-11-03"))
    assert run(finding, daily).cause is LikelyCause.PERIOD_OFF_BY_ONE


def test_timezone_shift_comes_before_duplicated_usage() -> None:
    # November 1-5: S = 300, twice the 150 billed; November 1's first 3 hours hold 150.
    end = d("2026-11-06")
    daily = every_day(d("2026-11-02"), end, "25") | {NOV_1: Decimal(200)}
    hours = {midnight(NOV_1) + k * HOUR: Decimal(50) for k in range(4)}
    finding = line_item_finding(daily, "150", end=end)
    diagnosis = run(finding, daily, hourly=hours)
    assert diagnosis.cause is LikelyCause.TIMEZONE_SHIFT
    assert "days that start at 03:00 UTC" in (diagnosis.detail or "")


def test_late_usage_comes_before_period_off_by_one() -> None:
    daily = every_day(NOV_1, DEC_1, "10")  # 290 = S - D[start], and 290 as first fetched
    first_known = {d("2026-11-30"): None}
    assert run(line_item_finding(daily, "290"), daily, first_known=first_known).cause is (
        LikelyCause.LATE_USAGE
    )


# ------------------------------------------------------------------- last meters


LAST_DAILY = days({"2026-10-31": "2", "2026-11-01": "3", "2026-11-30": "8", "2026-12-01": "9"})


@pytest.mark.parametrize(
    ("billed", "first_known", "cause"),
    [
        ("5", {d("2026-11-30"): Decimal(5)}, LikelyCause.LATE_USAGE),
        ("4", {}, LikelyCause.DUPLICATED_USAGE),
        ("0.008", {}, LikelyCause.UNIT_SCALE),
    ],
)
def test_a_last_meter_can_have_causes_1_4_and_5(
    billed: str, first_known: dict[date, Decimal | None], cause: LikelyCause
) -> None:
    finding = line_item_finding(LAST_DAILY, billed, formula=Formula.LAST)
    diagnosis = run(finding, LAST_DAILY, formula=Formula.LAST, first_known=first_known)
    assert diagnosis.cause is cause


@pytest.mark.parametrize("billed", ["5", "10", "17", "8.5", "10.5"])
def test_a_last_meter_is_never_off_by_one_or_shifted(billed: str) -> None:
    # S = 8. Rule 2's arithmetic would give 5 (8 - D[start]), 10 (8 + D[start-1]) and 17
    # (8 + D[end]); rule 3's would give 10 for h = +2 with the hours below, and 10.5 none.
    finding = line_item_finding(LAST_DAILY, billed, formula=Formula.LAST)
    assert not wants_hourly(finding, LAST_DAILY, formula=Formula.LAST)
    hours = {midnight(DEC_1) + k * HOUR: Decimal(1) for k in range(14)}
    diagnosis = run(finding, LAST_DAILY, formula=Formula.LAST, hourly=hours)
    assert diagnosis == NO_CAUSE


# ----------------------------------------------------------- unbilled_usage days


def test_an_unbilled_day_is_never_off_by_one() -> None:
    day = d("2026-11-10")
    daily = {day: Decimal(40), day - DAY: Decimal(40), day + DAY: Decimal(40)}
    assert run(unbilled_finding(day, "40"), daily) == NO_CAUSE


# ---------------------------------------------------------------- 6. wrong_meter


def candidate(
    key: str,
    meter: str,
    difference: str,
    *,
    customer: str = "cus_1",
    start: date = NOV_1,
    end: date = DEC_1,
) -> WrongMeterCandidate[str]:
    return WrongMeterCandidate(
        key=key,
        customer=customer,
        meter=meter,
        period_start=start,
        period_end=end,
        difference=Decimal(difference),
    )


def test_opposite_differences_on_two_meters_are_a_wrong_meter_both_ways() -> None:
    found = wrong_meter(
        candidates=[candidate("a", "api_calls", "250"), candidate("b", "api_requests", "-250")],
        tolerance=TOLERANCE,
    )
    assert found == {
        "a": Diagnosis(
            cause=LikelyCause.WRONG_METER,
            detail=(
                "Meter api_requests has the opposite difference over 2026-11-01..2026-11-30 "
                "(-250 there, 250 here): the usage was likely reported to (or billed on) the "
                "other meter."
            ),
        ),
        "b": Diagnosis(
            cause=LikelyCause.WRONG_METER,
            detail=(
                "Meter api_calls has the opposite difference over 2026-11-01..2026-11-30 "
                "(250 there, -250 here): the usage was likely reported to (or billed on) the "
                "other meter."
            ),
        ),
    }


def test_a_wrong_meter_names_every_meter_that_fits() -> None:
    found = wrong_meter(
        candidates=[
            candidate("a", "api_calls", "250"),
            candidate("b", "api_requests", "-250"),
            candidate("c", "batch_calls", "-250"),
        ],
        tolerance=TOLERANCE,
    )
    assert found["a"].detail == (
        "Meters api_requests (-250) and batch_calls (-250) each have the opposite difference "
        "over 2026-11-01..2026-11-30 (250 here): the usage was likely reported to (or billed "
        "on) another meter."
    )
    assert "Meter api_calls has" in (found["b"].detail or "")
    assert "Meter api_calls has" in (found["c"].detail or "")


def test_opposite_differences_are_compared_within_the_tolerance() -> None:
    found = wrong_meter(
        candidates=[candidate("a", "m1", "250"), candidate("b", "m2", "-250.0000004")],
        tolerance=TOLERANCE,
    )
    assert set(found) == {"a", "b"}


@pytest.mark.parametrize(
    "other",
    [
        candidate("b", "api_calls", "-250"),  # the same meter
        candidate("b", "m2", "-250", customer="cus_2"),  # another customer
        candidate("b", "m2", "-250", end=d("2026-11-30")),  # another period
        candidate("b", "m2", "250"),  # the same sign
        candidate("b", "m2", "-249"),  # not the same size
    ],
)
def test_no_wrong_meter_without_another_meter_of_the_same_customer_and_period(
    other: WrongMeterCandidate[str],
) -> None:
    found = wrong_meter(candidates=[candidate("a", "api_calls", "250"), other], tolerance=TOLERANCE)
    assert found == {}


def test_zero_differences_are_no_wrong_meter() -> None:
    found = wrong_meter(
        candidates=[candidate("a", "m1", "0"), candidate("b", "m2", "0")], tolerance=TOLERANCE
    )
    assert found == {}


def test_a_wrong_meter_over_an_unbilled_day_names_the_day() -> None:
    day = d("2026-11-10")
    found = wrong_meter(
        candidates=[
            candidate("a", "m1", "40", start=day, end=day + DAY),
            candidate("b", "m2", "-40", start=day, end=day + DAY),
        ],
        tolerance=TOLERANCE,
    )
    assert "over 2026-11-10 (" in (found["a"].detail or "")


def test_a_wrong_meter_candidate_key_is_unique() -> None:
    with pytest.raises(ValueError, match="appears twice"):
        wrong_meter(
            candidates=[candidate("a", "m1", "1"), candidate("a", "m2", "-1")],
            tolerance=TOLERANCE,
        )
