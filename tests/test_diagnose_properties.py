"""Properties of the pure diagnosis (tasks/diagnose.py), checked with hypothesis.

Each case is a world of hourly usage around a short period; the ledger bills either a
random quantity or one that a cause would produce. The expected cause is worked out the
slow, obvious way (whole shifted periods summed hour by hour, every rule tried in
order) and must be what ``diagnose`` says.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, localcontext
from functools import cached_property

from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from models.enums import LikelyCause
from tasks.compare import Finding, Formula, LineItem, Tolerance, Window, compare_pair
from tasks.diagnose import UNIT_FACTORS, diagnose, hourly_spans, needs_hourly

START = date(2026, 11, 10)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
EXACT = Tolerance(abs_tol=Decimal(0))
PROPERTY = settings(max_examples=100, deadline=None, database=None)


def midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


@dataclass(frozen=True)
class World:
    """Hourly usage from the day before the period to the day after it, inclusive."""

    days: int
    usage: tuple[int, ...]  # one value an hour from START - 1 day 00:00 UTC
    first_known: dict[date, Decimal | None]

    @property
    def end(self) -> date:
        return START + self.days * DAY

    @property
    def today(self) -> date:
        return self.end + 2 * DAY

    @property
    def now(self) -> datetime:
        return midnight(self.today) + 10 * HOUR

    @cached_property
    def hours(self) -> dict[datetime, Decimal]:
        """Stripe's hourly buckets (an hour with no usage has none)."""
        first = midnight(START - DAY)
        return {first + n * HOUR: Decimal(v) for n, v in enumerate(self.usage) if v}

    def between(self, start: datetime, end: datetime) -> Decimal:
        first = midnight(START - DAY)
        lo, hi = (start - first) // HOUR, (end - first) // HOUR
        return Decimal(sum(self.usage[lo:hi]))

    def day(self, day: date) -> Decimal:
        return self.between(midnight(day), midnight(day + DAY))

    @cached_property
    def daily(self) -> dict[date, Decimal]:
        """Stripe's daily buckets (a day with no usage has none)."""
        span = range(-1, self.days + 1)
        values = {START + n * DAY: self.day(START + n * DAY) for n in span}
        return {day: value for day, value in values.items() if value}

    @property
    def stripe(self) -> Decimal:
        return self.shifted(0)

    def shifted(self, shift: int) -> Decimal:
        return self.between(midnight(START) + shift * HOUR, midnight(self.end) + shift * HOUR)


@st.composite
def worlds(draw: st.DrawFn) -> World:
    days = draw(st.integers(min_value=2, max_value=4))
    size = (days + 2) * 24
    usage = draw(st.lists(st.sampled_from([0, 0, 0, 1, 2, 5, 7]), min_size=size, max_size=size))
    history = draw(
        st.dictionaries(
            st.integers(min_value=0, max_value=days - 1).map(lambda n: START + n * DAY),
            st.none() | st.integers(min_value=0, max_value=200).map(Decimal),
            max_size=days,
        )
    )
    return World(days=days, usage=tuple(usage), first_known=history)


def first_fetched(world: World) -> Decimal:
    total = Decimal(0)
    for n in range(world.days):
        day = START + n * DAY
        was = world.first_known[day] if day in world.first_known else world.day(day)
        total += was or Decimal(0)
    return total


def ledger_candidates(world: World) -> list[Decimal]:
    """Quantities a cause would bill, and a few that none would."""
    s, end = world.stripe, world.end
    return [
        *[first_fetched(world)] * 8,  # one quantity against dozens: give it a fair chance
        s - world.day(START),
        s - world.day(end - DAY),
        s + world.day(START - DAY),
        s + world.day(end),
        2 * s,
        s / 2,
        *(world.shifted(h) for h in range(-14, 15) if h),
        *(f * s for f in UNIT_FACTORS),
        *(s / f for f in UNIT_FACTORS),
        s + 1,
        Decimal(0),
        Decimal(3),
    ]


def expected(world: World, billed: Decimal) -> tuple[LikelyCause | None, bool]:
    """The first rule that fits, the obvious way (and exactly), and whether rule 3 had to
    be tried."""
    with localcontext(prec=1000):
        return _expected(world, billed)


def _expected(world: World, billed: Decimal) -> tuple[LikelyCause | None, bool]:
    s = world.stripe
    first = first_fetched(world)
    if first == billed and first != s:
        return LikelyCause.LATE_USAGE, False
    end = world.end
    slips = [
        s - world.day(START),
        s - world.day(end - DAY),
        s + world.day(START - DAY),
        s + world.day(end),
    ]
    if billed in slips and billed != s:
        return LikelyCause.PERIOD_OFF_BY_ONE, False
    if any(world.shifted(h) == billed for h in range(-14, 15) if h):
        return LikelyCause.TIMEZONE_SHIFT, True
    if s and billed and (s == 2 * billed or billed == 2 * s):
        return LikelyCause.DUPLICATED_USAGE, True
    if s and billed and any(s == f * billed or billed == f * s for f in UNIT_FACTORS):
        return LikelyCause.UNIT_SCALE, True
    return None, True


def the_finding(world: World, billed: Decimal) -> Finding | None:
    item = LineItem(id="li", period_start=START, period_end=world.end, quantity=billed)
    result = compare_pair(
        daily=world.daily,
        line_items=[item],
        window=Window(START, world.end),
        today=world.today,
        formula=Formula.SUM,
        tolerance=EXACT,
    )
    return result.findings[0] if result.findings else None


def fetched(world: World) -> Mapping[datetime, Decimal]:
    spans = hourly_spans(START, world.end, now=world.now)
    return {at: v for at, v in world.hours.items() if any(a <= at < b for a, b in spans)}


@PROPERTY
@given(world=worlds(), data=st.data())
def test_the_cause_is_the_first_rule_that_fits(world: World, data: st.DataObject) -> None:
    billed = data.draw(st.sampled_from(ledger_candidates(world)), label="billed")
    finding = the_finding(world, billed)
    assume(finding is not None)
    assert finding is not None
    cause, hourly_needed = expected(world, billed)
    event(f"cause: {cause}")
    asks = needs_hourly(
        finding=finding,
        formula=Formula.SUM,
        daily=world.daily,
        first_known=world.first_known,
        tolerance=EXACT,
        today=world.today,
        diagnose_hourly=True,
    )
    assert asks is hourly_needed
    diagnosis = diagnose(
        finding=finding,
        formula=Formula.SUM,
        daily=world.daily,
        first_known=world.first_known,
        hourly=fetched(world) if asks else None,
        tolerance=EXACT,
        today=world.today,
        now=world.now,
        diagnose_hourly=True,
    )
    assert diagnosis.cause is cause
    assert (diagnosis.detail is None) is (cause is None)
