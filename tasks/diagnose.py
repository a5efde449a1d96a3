"""Why Stripe and the ledger most likely differ: the likely cause of one discrepancy.

Pure: no I/O, no Prefect, no clock, no database. ``today`` and ``now`` are arguments, and
so is every number the rules look at, so the same inputs always give the same cause.
The rules are docs/comparison.md's "Likely causes: the exact rules", tried in order; the
first that fits wins:

1. ``late_usage``: Stripe's quantity as first fetched equals the ledger's, and it is
   ``S`` now.
2. ``period_off_by_one`` (``sum``/``count``): the ledger equals Stripe's usage with the
   period's first or last day left out, or the day before or after added.
3. ``timezone_shift`` (``sum``/``count``): the ledger equals Stripe's usage over the
   period moved by ``h`` whole hours, ``h`` in -14..14 (smallest ``|h|``, positive first).
4. ``duplicated_usage``: one side is twice the other.
5. ``unit_scale``: one side is ``f`` times the other, ``f`` in ``UNIT_FACTORS``.
6. ``wrong_meter``: decided across pairs, after the fan-out (``wrong_meter``).

Rules 2 and 3 apply to line items only (``quantity_mismatch``, ``missing_in_stripe``)
whose period has at least two days; an ``unbilled_usage`` day can only be ``late_usage``
or ``wrong_meter``; ``overlapping_line_items`` gets no cause. Equality is the run's
``Tolerance``. Days on or after ``today`` and hours at or after the current hour have no
usage (they are never fetched), whatever the mappings hold.

How a pair's task uses it, per finding:

1. ``needs_hourly(...)`` says whether rule 3 has to be tried (rules 1-2 do not fit, the
   finding is a ``sum``/``count`` line item of two days or more, and hourly diagnosis is
   on). If so, fetch Stripe's hourly buckets (``value_grouping_window=hour``) over each
   span of ``hourly_spans(...)`` (at most two requests) into one mapping
   ``bucket start (UTC) -> aggregated_value``, or ``HourlyFailed()`` if a fetch failed.
2. ``diagnose(...)`` gives the finding's ``Diagnosis``: store ``cause`` as the
   discrepancy's ``likely_cause`` and ``detail`` as its ``cause_detail``. ``NO_CAUSE``
   (both null) when nothing fits; a failed hourly fetch with no later rule fitting is a
   ``Diagnosis`` with a null cause and a detail that says so.

After the fan-out, ``wrong_meter(...)`` takes the run's rows still without a cause (a
row whose hourly fetch failed included) and gives the ``Diagnosis`` of every row that
another meter's row explains; the other rows keep what ``diagnose`` gave them.

Numbers in details are written as the comparison writes them (no exponent, no trailing
zeros) and computed in its exact context: a computation that would round raises.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, Inexact, localcontext
from typing import Generic, TypeVar

from models.canonical import EXACT, EXACT_DIGITS
from models.canonical import canonical_decimal as _text
from models.enums import LikelyCause
from tasks.compare import Finding, Formula, Kind, Tolerance

__all__ = [
    "NO_CAUSE",
    "UNIT_FACTORS",
    "Diagnosis",
    "HourlyFailed",
    "LikelyCause",
    "WrongMeterCandidate",
    "diagnose",
    "hourly_spans",
    "needs_hourly",
    "wrong_meter",
]

#: The unit-scale factors, in the order they are tried (the numerically smallest first).
UNIT_FACTORS: tuple[int, ...] = (
    10,
    60,
    100,
    1000,
    1024,
    3600,
    10**6,
    1024**2,
    10**9,
    1024**3,
)

#: What each factor most often means, for the detail.
_FACTOR_HINTS: dict[int, str] = {
    10: "a decimal point one place off",
    60: "seconds and minutes, or minutes and hours",
    100: "hundredths, such as cents, and whole units",
    1000: "a metric prefix apart, such as milli- and base units, or bytes and kilobytes",
    1024: "bytes and KiB, or KiB and MiB",
    3600: "seconds and hours",
    10**6: "two metric prefixes apart, such as bytes and megabytes",
    1024**2: "bytes and MiB",
    10**9: "three metric prefixes apart, such as bytes and gigabytes",
    1024**3: "bytes and GiB",
}

#: How far (in whole hours) a shifted day boundary may lie from midnight UTC.
MAX_SHIFT_HOURS = 14

_ZERO = Decimal(0)
_DAY = timedelta(days=1)
_HOUR = timedelta(hours=1)
_LINE_ITEM_KINDS = frozenset({Kind.QUANTITY_MISMATCH, Kind.MISSING_IN_STRIPE})
_DIAGNOSED_KINDS = _LINE_ITEM_KINDS | {Kind.UNBILLED_USAGE}
_SHIFTABLE = frozenset({Formula.SUM, Formula.COUNT})

K = TypeVar("K", bound=Hashable)
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """A discrepancy's ``likely_cause`` and ``cause_detail``, as stored.

    A cause always comes with its evidence; a detail without a cause says why the cause
    is unknown (the hourly usage could not be fetched).
    """

    cause: LikelyCause | None
    detail: str | None

    def __post_init__(self) -> None:
        if self.cause is not None and not self.detail:
            raise ValueError(f"A likely cause ({self.cause}) needs a detail with its evidence.")


#: Neither a cause nor a detail: nothing fits.
NO_CAUSE = Diagnosis(cause=None, detail=None)


@dataclass(frozen=True, slots=True)
class HourlyFailed:
    """Stripe's hourly usage for the finding could not be fetched (after retries)."""


@dataclass(frozen=True, slots=True)
class WrongMeterCandidate(Generic[K]):
    """A discrepancy of the run still without a cause, for ``wrong_meter``.

    ``key`` is the caller's handle on the row (an id, or the discrepancy's identity);
    ``meter`` is how the detail names the meter.
    """

    key: K
    customer: str
    meter: str
    period_start: date
    period_end: date
    difference: Decimal


# ------------------------------------------------------------------------ what applies


def _require_aware(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise TypeError(f"{name} must be a timezone-aware datetime, got {value!r}.")
    return value.astimezone(UTC)


def _current_hour(now: datetime) -> datetime:
    """The start of the hour ``now`` is in: it and every later hour have no usage yet."""
    return _require_aware(now, "now").replace(minute=0, second=0, microsecond=0)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def _diagnosable(finding: Finding) -> bool:
    """Whether the finding's kind gets a cause at all (overlaps never do)."""
    if finding.kind not in _DIAGNOSED_KINDS:
        return False
    if finding.internal_quantity is None:
        raise ValueError(f"A {finding.kind} finding must have an internal quantity.")
    return True


def _period_rules_apply(finding: Finding, formula: Formula) -> bool:
    """Rules 2 and 3: a ``sum``/``count`` line item whose period has two days or more."""
    return (
        Formula(formula) in _SHIFTABLE
        and finding.kind in _LINE_ITEM_KINDS
        and (finding.period_end - finding.period_start).days >= 2
    )


def hourly_spans(
    period_start: date, period_end: date, *, now: datetime
) -> list[tuple[datetime, datetime]]:
    """The hours ``[from, to)`` to fetch in hourly buckets for rule 3, one span a boundary.

    ``[start - 14 h, start + 14 h)`` and ``[end - 14 h, end + 14 h)``, each clipped to the
    current hour (never asked for hours that have not ended); empty spans are dropped.
    """
    reach = MAX_SHIFT_HOURS * _HOUR
    current = _current_hour(now)
    spans = []
    for boundary in (_midnight(period_start), _midnight(period_end)):
        start, end = boundary - reach, min(boundary + reach, current)
        if start < end:
            spans.append((start, end))
    return spans


# ------------------------------------------------------------------------- the numbers


@dataclass(frozen=True, slots=True)
class _Case:
    """One finding with the numbers every rule reads: ``S``, ``I`` and the tolerance."""

    finding: Finding
    formula: Formula
    tolerance: Tolerance
    today: date

    @property
    def stripe(self) -> Decimal:
        return self.finding.stripe_quantity

    @property
    def internal(self) -> Decimal:
        assert self.finding.internal_quantity is not None  # checked by _diagnosable
        return self.finding.internal_quantity

    @property
    def start(self) -> date:
        return self.finding.period_start

    @property
    def end(self) -> date:
        return self.finding.period_end

    @property
    def period(self) -> str:
        """The period as finance reads it: first and last day, both inclusive."""
        last = self.end - _DAY
        return str(self.start) if last == self.start else f"{self.start}..{last}"

    @property
    def billed(self) -> str:
        """Who billed ``I``: the line item (an unbilled day has none)."""
        item = self.finding.line_item_id
        return f"line item {item}" if item else "the ledger"

    def equal(self, a: Decimal, b: Decimal) -> bool:
        return self.tolerance.equal(a, b)

    def nonzero(self, value: Decimal) -> bool:
        return not self.tolerance.equal(value, _ZERO)


def _day_value(daily: Mapping[date, Decimal], day: date, today: date) -> Decimal | None:
    """Stripe's value for a day now, or ``None`` when it has no bucket (or is not over)."""
    if day >= today:
        return None
    return daily.get(day)


def _days_of(case: _Case) -> Iterator[date]:
    """The days of the period that are over (every day of a compared line item)."""
    day = case.start
    while day < case.end and day < case.today:
        yield day
        day += _DAY


def _capital(text: str) -> str:
    """The sentence's first letter in upper case, the rest (ids) untouched."""
    return text[:1].upper() + text[1:]


def _listed(days: Sequence[date]) -> str:
    """A few days by name, the rest counted: ``2026-11-29 and 2026-11-30``."""
    shown = [str(day) for day in days[:3]]
    rest = len(days) - len(shown)
    if rest:
        return f"{', '.join(shown)} and {rest} more day{'' if rest == 1 else 's'}"
    if len(shown) == 1:
        return shown[0]
    return f"{', '.join(shown[:-1])} and {shown[-1]}"


# --------------------------------------------------------------------- 1. late_usage


def _late_usage(
    case: _Case, daily: Mapping[date, Decimal], first_known: Mapping[date, Decimal | None]
) -> Diagnosis | None:
    """Rule 1: the period as first fetched matched the ledger; usage arrived later.

    Each day counts at its earliest known value (``None``: first fetched without a
    bucket; absent: never fetched before, so at today's value). The quantity must also
    differ from ``S`` now, or nothing arrived late.
    """
    earliest: dict[date, Decimal | None] = {}
    changed: list[date] = []
    for day in _days_of(case):
        now_value = _day_value(daily, day, case.today)
        was = first_known.get(day, now_value)  # a stored None is kept: no bucket then
        earliest[day] = was
        if _as_counted(was, case.formula) != _as_counted(now_value, case.formula):
            changed.append(day)
    first = _aggregate(earliest, case.formula)
    if not case.equal(first, case.internal) or case.equal(first, case.stripe):
        return None
    if case.finding.kind is Kind.UNBILLED_USAGE:
        said = (
            f"Stripe's usage on {case.start} was {_text(first)} when first fetched "
            f"and is {_text(case.stripe)} now"
        )
    else:
        said = (
            f"Stripe's usage for {case.period} was {_text(first)} when first fetched, "
            f"what {case.billed} billed, and is {_text(case.stripe)} now"
        )
    moved = f" (it changed on {_listed(changed)})" if changed else ""
    return Diagnosis(
        cause=LikelyCause.LATE_USAGE,
        detail=f"{said}{moved}: {_what_moved(first, case.stripe)} after the ledger was computed.",
    )


def _what_moved(first: Decimal, stripe: Decimal) -> str:
    """Usage that grew arrived late; usage that shrank was taken back (an adjustment)."""
    return "the usage arrived" if stripe > first else "usage was taken back (an adjustment)"


def _as_counted(value: Decimal | None, formula: Formula) -> Decimal | None:
    """A day's value as its formula counts it: no bucket is 0 for ``sum``/``count``."""
    if value is None and formula is not Formula.LAST:
        return _ZERO
    return value


def _aggregate(values: Mapping[date, Decimal | None], formula: Formula) -> Decimal:
    """A period's quantity from its days' values, as the comparison aggregates them."""
    if formula is Formula.LAST:
        for day in sorted(values, reverse=True):
            value = values[day]
            if value is not None:
                return value
        return _ZERO
    return sum((value for value in values.values() if value is not None), _ZERO)


# -------------------------------------------------------------- 2. period_off_by_one


def _period_off_by_one(case: _Case, daily: Mapping[date, Decimal]) -> Diagnosis | None:
    """Rule 2: the ledger's period is Stripe's with one day too few or too many.

    Tried in order: the first day left out, the last day left out, the day before
    added, the day after added. A day with no usage cannot explain a difference.
    """
    first, last = case.start, case.end - _DAY
    before, after = case.start - _DAY, case.end
    slips = (
        (first, -1, f"without its first day, {first}", "a period that starts a day late"),
        (last, -1, f"without its last day, {last}", "a missed last day"),
        (before, 1, f"with the day before, {before}, added", "a period that starts a day early"),
        (after, 1, f"with the day after, {after}, added", "an inclusive end"),
    )
    for day, sign, how, slip in slips:
        value = _day_value(daily, day, case.today)
        if value is None or not case.nonzero(value):
            continue
        if case.equal(case.stripe + sign * value, case.internal):
            return Diagnosis(
                cause=LikelyCause.PERIOD_OFF_BY_ONE,
                detail=(
                    f"{_capital(case.billed)} billed {_text(case.internal)}, which is Stripe's "
                    f"usage for {case.period} {how} (Stripe has {_text(value)} that day and "
                    f"{_text(case.stripe)} over the period): likely {slip}."
                ),
            )
    return None


# ----------------------------------------------------------------- 3. timezone_shift


def _hours(hourly: Mapping[datetime, Decimal], now: datetime) -> dict[datetime, Decimal]:
    """The hourly buckets by UTC start, without the hours that have not ended yet."""
    current = _current_hour(now)
    hours: dict[datetime, Decimal] = {}
    for start, value in hourly.items():
        at = _require_aware(start, "an hourly bucket's start")
        if at.minute or at.second or at.microsecond:
            raise ValueError(f"An hourly bucket must start on the hour, got {at.isoformat()}.")
        if at < current:
            hours[at] = value
    return hours


def _shifts() -> Iterator[int]:
    """``h`` in the order rule 3 tries it: smallest ``|h|`` first, positive before negative."""
    for size in range(1, MAX_SHIFT_HOURS + 1):
        yield size
        yield -size


def _shifted_quantity(case: _Case, hours: Mapping[datetime, Decimal], shift: int) -> Decimal:
    """Stripe's usage over ``[start + h, end + h)``: ``S`` with the boundary hours moved."""
    start, end = _midnight(case.start), _midnight(case.end)
    if shift > 0:  # lose the first h hours, gain the h hours after the end
        moved = range(shift)
        lost = sum((hours.get(start + k * _HOUR, _ZERO) for k in moved), _ZERO)
        gained = sum((hours.get(end + k * _HOUR, _ZERO) for k in moved), _ZERO)
    else:  # gain the |h| hours before the start, lose the last |h| hours
        moved = range(1, -shift + 1)
        gained = sum((hours.get(start - k * _HOUR, _ZERO) for k in moved), _ZERO)
        lost = sum((hours.get(end - k * _HOUR, _ZERO) for k in moved), _ZERO)
    return case.stripe - lost + gained


def _utc_offset(shift: int) -> str:
    """The UTC offset whose midnight is ``shift`` hours after UTC's: +5 is UTC-05:00."""
    return f"UTC{'-' if shift > 0 else '+'}{abs(shift):02d}:00"


def _timezone_shift(
    case: _Case, hourly: Mapping[datetime, Decimal], now: datetime
) -> Diagnosis | None:
    """Rule 3: the ledger's days start ``h`` hours off midnight UTC."""
    hours = _hours(hourly, now)
    for shift in _shifts():
        if not case.equal(_shifted_quantity(case, hours, shift), case.internal):
            continue
        moved = shift * _HOUR
        start, end = _midnight(case.start) + moved, _midnight(case.end) + moved
        return Diagnosis(
            cause=LikelyCause.TIMEZONE_SHIFT,
            detail=(
                f"{_capital(case.billed)} billed {_text(case.internal)}, which is Stripe's "
                f"usage over days that start at {start:%H:%M} UTC (a {_utc_offset(shift)} day "
                f"boundary), {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC; in UTC days "
                f"Stripe has {_text(case.stripe)}."
            ),
        )
    return None


def _hourly_failed(case: _Case) -> Diagnosis:
    return Diagnosis(
        cause=None,
        detail=(
            f"Stripe's hourly usage around {case.start} and {case.end} could not be "
            "fetched, so a shifted day boundary could not be checked; no other cause fits."
        ),
    )


# ------------------------------------------------------- 4-5. duplicated, unit_scale


def _multiple(case: _Case, factor: int) -> tuple[bool, bool]:
    """Whether ``S = f x I`` and whether ``I = f x S`` (never when either side is zero:
    a multiple of nothing explains nothing)."""
    stripe, internal = case.stripe, case.internal
    if not (case.nonzero(stripe) and case.nonzero(internal)):
        return False, False
    return case.equal(stripe, factor * internal), case.equal(internal, factor * stripe)


def _duplicated_usage(case: _Case) -> Diagnosis | None:
    """Rule 4: one side counted the usage twice."""
    stripe_twice, ledger_twice = _multiple(case, 2)
    stripe, internal = _text(case.stripe), _text(case.internal)
    if stripe_twice:
        detail = (
            f"Stripe's {stripe} is twice the {internal} {case.billed} billed: Stripe likely "
            "counted the usage twice (duplicate events, or a retry that minted new identifiers)."
        )
    elif ledger_twice:
        detail = (
            f"{_capital(case.billed)} billed {internal}, twice Stripe's {stripe}: "
            "the ledger likely billed the usage twice."
        )
    else:
        return None
    return Diagnosis(cause=LikelyCause.DUPLICATED_USAGE, detail=detail)


def _unit_scale(case: _Case) -> Diagnosis | None:
    """Rule 5: the two sides count in units a known factor apart (smallest factor first)."""
    stripe, internal = _text(case.stripe), _text(case.internal)
    for factor in UNIT_FACTORS:
        stripe_scaled, ledger_scaled = _multiple(case, factor)
        hint = _FACTOR_HINTS[factor]
        if stripe_scaled:
            said = f"Stripe's {stripe} is {factor} times the {internal} {case.billed} billed"
        elif ledger_scaled:
            said = f"{_capital(case.billed)} billed {internal}, {factor} times Stripe's {stripe}"
        else:
            continue
        return Diagnosis(
            cause=LikelyCause.UNIT_SCALE,
            detail=f"{said}: the two likely count in different units ({hint}).",
        )
    return None


# ----------------------------------------------------------------------- per finding


def _exactly(compute: Callable[[], _T]) -> _T:
    """Run ``compute`` in the comparison's exact context, as a ``ValueError`` if it rounds."""
    try:
        with localcontext(EXACT):
            return compute()
    except Inexact as exc:
        raise ValueError(
            f"The finding's quantities need more than {EXACT_DIGITS} significant digits "
            "to be diagnosed exactly."
        ) from exc


def _early_rules(
    case: _Case, daily: Mapping[date, Decimal], first_known: Mapping[date, Decimal | None]
) -> Diagnosis | None:
    """Rules 1 and 2, the ones that need nothing but the daily usage."""
    found = _late_usage(case, daily, first_known)
    if found is None and _period_rules_apply(case.finding, case.formula):
        found = _period_off_by_one(case, daily)
    return found


def needs_hourly(
    *,
    finding: Finding,
    formula: Formula,
    daily: Mapping[date, Decimal],
    first_known: Mapping[date, Decimal | None],
    tolerance: Tolerance,
    today: date,
    diagnose_hourly: bool,
) -> bool:
    """Whether ``diagnose`` needs Stripe's hourly usage for this finding (rule 3).

    True when hourly diagnosis is on, the finding is a ``sum``/``count`` line item of two
    days or more, and neither rule 1 nor rule 2 fits. The spans are ``hourly_spans``.
    """
    if not (diagnose_hourly and _diagnosable(finding) and _period_rules_apply(finding, formula)):
        return False
    case = _Case(finding=finding, formula=Formula(formula), tolerance=tolerance, today=today)
    return _exactly(lambda: _early_rules(case, daily, first_known)) is None


def diagnose(
    *,
    finding: Finding,
    formula: Formula,
    daily: Mapping[date, Decimal],
    first_known: Mapping[date, Decimal | None],
    hourly: Mapping[datetime, Decimal] | HourlyFailed | None,
    tolerance: Tolerance,
    today: date,
    now: datetime,
    diagnose_hourly: bool,
) -> Diagnosis:
    """The likely cause of one finding of a pair by rules 1-5 (``wrong_meter`` comes later).

    ``daily``: Stripe's value per UTC day now, over the period widened by one day on both
    sides (a day absent has no usage). ``first_known``: each day of the period's earliest
    known value (absent: never fetched before; ``None``: first fetched without a bucket).
    ``hourly``: the buckets fetched over ``hourly_spans`` when ``needs_hourly`` said so,
    ``HourlyFailed()`` when that fetch failed, else ``None`` (then it is a caller error
    for rule 3 to need it). With ``diagnose_hourly`` false, rule 3 is never tried.

    A failed hourly fetch leaves rule 3 undecided: rules 4-5 are still tried, and if
    neither fits the diagnosis has no cause and a detail saying the fetch failed.
    """
    _current_hour(now)  # a naive `now` is refused whichever rules run
    if not _diagnosable(finding):
        return NO_CAUSE
    case = _Case(finding=finding, formula=Formula(formula), tolerance=tolerance, today=today)
    shift_applies = diagnose_hourly and _period_rules_apply(finding, case.formula)

    def rules() -> Diagnosis:
        found = _early_rules(case, daily, first_known)
        if found is None and shift_applies:
            if hourly is None:
                raise ValueError(
                    f"The {finding.kind} finding for {case.period} needs Stripe's hourly "
                    "usage (needs_hourly is true): pass the buckets fetched, or HourlyFailed()."
                )
            if not isinstance(hourly, HourlyFailed):
                found = _timezone_shift(case, hourly, now)
        found = found or _duplicated_usage(case) or _unit_scale(case)
        if found is not None:
            return found
        return (
            _hourly_failed(case) if shift_applies and isinstance(hourly, HourlyFailed) else NO_CAUSE
        )

    return _exactly(rules)


# -------------------------------------------------------------------- 6. wrong_meter


def wrong_meter(
    *, candidates: Sequence[WrongMeterCandidate[K]], tolerance: Tolerance
) -> dict[K, Diagnosis]:
    """Rule 6, across pairs: rows another meter's row explains, by key.

    Two rows fit when they have the same customer and period, different meters, and
    opposite differences (``d1 = -d2`` within tolerance). Both get the cause, each naming
    every other row that fits it. A row whose difference is zero within tolerance fits
    nothing. Pass only the run's rows still without a cause.
    """
    groups: defaultdict[tuple[str, date, date], list[WrongMeterCandidate[K]]] = defaultdict(list)
    seen: set[K] = set()
    for candidate in candidates:
        if candidate.key in seen:
            raise ValueError(f"Wrong-meter candidate {candidate.key!r} appears twice.")
        seen.add(candidate.key)
        if candidate.period_start >= candidate.period_end:
            raise ValueError(f"Wrong-meter candidate {candidate.key!r} has an empty period.")
        if not tolerance.equal(candidate.difference, _ZERO):
            key = (candidate.customer, candidate.period_start, candidate.period_end)
            groups[key].append(candidate)

    return _exactly(lambda: _opposites(groups.values(), tolerance))


def _opposites(
    groups: Iterable[Sequence[WrongMeterCandidate[K]]], tolerance: Tolerance
) -> dict[K, Diagnosis]:
    """Within each group (one customer, one period), the rows of opposite differences."""
    found: dict[K, Diagnosis] = {}
    for group in groups:
        for row in group:
            opposite = -row.difference
            others = [
                other
                for other in group
                if other.meter != row.meter and tolerance.equal(other.difference, opposite)
            ]
            if others:
                found[row.key] = Diagnosis(
                    cause=LikelyCause.WRONG_METER, detail=_wrong_meter_detail(row, others)
                )
    return found


def _wrong_meter_detail(
    row: WrongMeterCandidate[K], others: Sequence[WrongMeterCandidate[K]]
) -> str:
    last = row.period_end - _DAY
    period = str(row.period_start) if last == row.period_start else f"{row.period_start}..{last}"
    named = sorted({(other.meter, _text(other.difference)) for other in others})
    here = _text(row.difference)
    if len(named) == 1:
        meter, there = named[0]
        return (
            f"Meter {meter} has the opposite difference over {period} ({there} there, "
            f"{here} here): the usage was likely reported to (or billed on) the other meter."
        )
    listed = [f"{meter} ({there})" for meter, there in named]
    return (
        f"Meters {', '.join(listed[:-1])} and {listed[-1]} each have the opposite difference "
        f"over {period} ({here} here): the usage was likely reported to (or billed on) "
        "another meter."
    )
