"""What each finding of a pair is worth, why it likely happened, and until when it settles.

Pure but for one callable: the pair's task loads the prices and the usage history, and
passes a function that fetches Stripe's hourly usage; this module applies
``tasks.value``, ``tasks.diagnose`` and the settling rule to each finding, in order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

from tasks.compare import Finding, Formula, Kind, Tolerance
from tasks.diagnose import HourlyFailed, diagnose, hourly_spans, needs_hourly
from tasks.record import Assessment, settles_at
from tasks.value import NOT_VALUED, LedgerPrice, Price, Valued, value_discrepancy

__all__ = [
    "DIAGNOSED_KINDS",
    "HourlyFetch",
    "Pricing",
    "assess_findings",
    "needs_history",
    "value_finding",
]

#: The kinds a likely cause is looked for (``overlapping_line_items`` gets none).
DIAGNOSED_KINDS = frozenset({Kind.QUANTITY_MISMATCH, Kind.MISSING_IN_STRIPE, Kind.UNBILLED_USAGE})

#: Fetches Stripe's hourly buckets over the spans given (``[from, to)``, whole UTC hours),
#: merged into one mapping, or ``HourlyFailed()`` when a fetch failed after its retries.
HourlyFetch = Callable[
    [Sequence[tuple[datetime, datetime]]], Mapping[datetime, Decimal] | HourlyFailed
]


@dataclass(frozen=True, slots=True)
class Pricing:
    """How a pair's findings are priced.

    ``stripe``: the pair's Stripe price, which takes precedence. ``unsupported``: the pair has
    a Stripe price the valuation does not understand, so nothing is valued (the ledger's
    price is not what Stripe bills). Without a Stripe price, ``by_line_item`` holds each line
    item's own price and ``unbilled`` the one for unbilled days.
    """

    stripe: Price | None = None
    unsupported: bool = False
    by_line_item: Mapping[str, LedgerPrice | None] = field(default_factory=dict)
    unbilled: LedgerPrice | None = None


def value_finding(finding: Finding, pricing: Pricing) -> Valued:
    """The finding's amount at stake, by its Stripe price, else its ledger price."""
    if pricing.unsupported:
        return NOT_VALUED
    ledger = None
    if pricing.stripe is None:
        ledger = (
            pricing.unbilled
            if finding.kind is Kind.UNBILLED_USAGE
            else pricing.by_line_item.get(finding.line_item_id)
        )
    return value_discrepancy(
        kind=finding.kind,
        stripe_quantity=finding.stripe_quantity,
        internal_quantity=finding.internal_quantity,
        price=pricing.stripe,
        ledger_price=ledger,
    )


def needs_history(findings: Iterable[Finding]) -> bool:
    """Whether any finding is diagnosed, so the pair's usage history has to be read."""
    return any(finding.kind in DIAGNOSED_KINDS for finding in findings)


@dataclass(frozen=True, slots=True)
class _Diagnoser:
    formula: Formula
    daily: Mapping[date, Decimal]
    first_known: Mapping[date, Decimal | None]
    tolerance: Tolerance
    today: date
    now: datetime
    diagnose_hourly: bool
    fetch_hourly: HourlyFetch

    def assessment(self, finding: Finding, valued: Valued, settles: datetime | None) -> Assessment:
        cause, detail = None, None
        if finding.kind in DIAGNOSED_KINDS:
            found = diagnose(
                finding=finding,
                formula=self.formula,
                daily=self.daily,
                first_known=self.first_known,
                hourly=self._hourly(finding),
                tolerance=self.tolerance,
                today=self.today,
                now=self.now,
                diagnose_hourly=self.diagnose_hourly,
            )
            cause, detail = found.cause, found.detail
        return Assessment(
            amount_at_stake=valued.amount_at_stake,
            currency=valued.currency,
            valuation=valued.valuation,
            likely_cause=cause,
            cause_detail=detail,
            settles_at=settles,
        )

    def _hourly(self, finding: Finding) -> Mapping[datetime, Decimal] | HourlyFailed | None:
        """Stripe's hourly usage around the finding's boundaries, only when rule 3 needs it."""
        if not needs_hourly(
            finding=finding,
            formula=self.formula,
            daily=self.daily,
            first_known=self.first_known,
            tolerance=self.tolerance,
            today=self.today,
            diagnose_hourly=self.diagnose_hourly,
        ):
            return None
        spans = hourly_spans(finding.period_start, finding.period_end, now=self.now)
        return self.fetch_hourly(spans) if spans else {}


def assess_findings(
    *,
    findings: Sequence[Finding],
    pricing: Pricing,
    formula: Formula,
    daily: Mapping[date, Decimal],
    first_known: Mapping[date, Decimal | None],
    tolerance: Tolerance,
    today: date,
    now: datetime,
    diagnose_hourly: bool,
    fetch_hourly: HourlyFetch,
    settle_hours: int,
) -> list[Assessment]:
    """One ``Assessment`` per finding, in order.

    ``daily``: Stripe's values over the fetched (widened) range; ``first_known``: each of
    those days as first fetched, read before this run's snapshots were written; ``now``:
    when the run started (the current hour for the diagnosis, the start for settling).
    """
    diagnoser = _Diagnoser(
        formula=Formula(formula),
        daily=daily,
        first_known=first_known,
        tolerance=tolerance,
        today=today,
        now=now,
        diagnose_hourly=diagnose_hourly,
        fetch_hourly=fetch_hourly,
    )
    return [
        diagnoser.assessment(
            finding,
            value_finding(finding, pricing),
            settles_at(finding.period_end, run_started=now, settle_hours=settle_hours),
        )
        for finding in findings
    ]
