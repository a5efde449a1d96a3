"""One pair's `stripe` ledger in the fan-out: Stripe's usage over each finalized line, the
comparison, and its findings as the recorder takes them (money, cause, settling).

The pair's daily buckets, fetched once for both ledgers, give each line's usage when the line
starts and ends at 00:00 UTC; any other line costs one `usage_total` request over its exact
instants, counted in the pair's requests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime
from decimal import Decimal

from models.enums import Formula, Ledger
from tasks.compare import Finding, PairComparison, Scope, Tolerance, Window
from tasks.compare_stripe import (
    LineState,
    StripeFinding,
    StripeLineItem,
    StripePairComparison,
    compare_stripe_pair,
    exact_usage,
)
from tasks.load_stripe import StripeLedger
from tasks.record import Assessment, LedgerFindings, settles_at

#: Stripe's usage of the pair over `[start, end)` (exact instants) and the requests it took.
UsageTotal = Callable[[datetime, datetime], tuple[Decimal, int]]


def compared_items(
    items: tuple[StripeLineItem, ...], *, window: Window, today: date
) -> list[StripeLineItem]:
    """The line items `compare_stripe_pair` compares: finalized, touching the window, their
    period over by today."""
    return [
        item
        for item in items
        if item.state is LineState.FINALIZED
        and item.period_start < window.end
        and item.period_end > window.start
        and item.period_end <= today
    ]


def line_usage(
    items: list[StripeLineItem],
    *,
    daily: Mapping[date, Decimal],
    formula: Formula,
    usage_total: UsageTotal,
) -> tuple[dict[str, Decimal], int]:
    """`S` of each line item (its id -> Stripe's usage over exactly its period) and how many
    requests it took: none for a day-aligned line, one `usage_total` for any other."""
    usage: dict[str, Decimal] = {}
    requests = 0
    for item in items:
        exact = exact_usage(item, daily, formula)
        if exact is None:
            exact, made = usage_total(item.period_start_at, item.period_end_at)
            requests += made
        usage[item.id] = exact
    return usage, requests


def compare_stripe_ledger(
    ledger: StripeLedger,
    *,
    customer: str,
    meter: str,
    daily: Mapping[date, Decimal],
    window: Window,
    today: date,
    run_started: datetime,
    formula: Formula,
    tolerance: Tolerance,
    usage_total: UsageTotal,
) -> tuple[StripePairComparison, int]:
    """The pair's `stripe` ledger compared, and the extra requests it took."""
    usage, requests = line_usage(
        compared_items(ledger.items, window=window, today=today),
        daily=daily,
        formula=formula,
        usage_total=usage_total,
    )
    result = compare_stripe_pair(
        items=ledger.items,
        stripe_usage=usage,
        daily=daily,
        window=window,
        today=today,
        run_started=run_started,
        formula=formula,
        prices=ledger.prices,
        pair_price=ledger.pair_price,
        subscription_items=ledger.subscription_items,
        customer=customer,
        meter=meter,
        tolerance=tolerance,
    )
    return result, requests


def _finding(found: StripeFinding) -> Finding:
    return Finding(
        kind=found.kind,
        period_start=found.period_start,
        period_end=found.period_end,
        line_item_id=found.line_item_id,
        other_line_item_id=found.other_line_item_id,
        stripe_quantity=found.stripe_quantity,
        internal_quantity=found.internal_quantity,
        difference=found.difference,
        detail=found.detail,
    )


def _assessment(found: StripeFinding, *, now: datetime, settle_hours: int) -> Assessment:
    return Assessment(
        amount_at_stake=found.valued.amount_at_stake,
        currency=found.valued.currency,
        valuation=found.valued.valuation,
        likely_cause=found.likely_cause,
        cause_detail=found.cause_detail,
        settles_at=settles_at(found.period_end, run_started=now, settle_hours=settle_hours),
    )


def as_recorded(
    result: StripePairComparison,
    *,
    window: Window,
    withdrawn: frozenset[str],
    now: datetime,
    settle_hours: int,
) -> LedgerFindings:
    """The comparison as the recorder takes it: its scope in the `stripe` ledger (so only that
    ledger's rows resolve), each finding's money, cause and settling."""
    scope = Scope(
        window=window,
        compared_line_item_ids=result.compared_line_item_ids,
        considered_line_item_ids=result.considered_line_item_ids,
        unbilled_days=result.unbilled_days,
        ledger=Ledger.STRIPE,
        withdrawn_line_item_ids=withdrawn,
    )
    comparison = PairComparison(
        findings=tuple(_finding(found) for found in result.findings),
        compared=result.compared,
        matched=result.matched,
        pending=result.pending,
        scope=scope,
    )
    assessments = [
        _assessment(found, now=now, settle_hours=settle_hours) for found in result.findings
    ]
    return LedgerFindings(comparison=comparison, assessments=assessments)


__all__ = [
    "UsageTotal",
    "as_recorded",
    "compare_stripe_ledger",
    "compared_items",
    "line_usage",
]
