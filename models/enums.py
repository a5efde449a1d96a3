"""The enumerations the tables store, free of SQLAlchemy so pure modules can use them.

`models.tables` re-exports every one, so a stored kind and a finding's kind are the same
value whichever module they were imported from.
"""

from __future__ import annotations

from enum import StrEnum


class Formula(StrEnum):
    SUM = "sum"
    COUNT = "count"
    LAST = "last"


class Trigger(StrEnum):
    SCHEDULED = "scheduled"
    MANUAL = "manual"


class RunStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    FAILED = "failed"


class PairStatus(StrEnum):
    OK = "ok"
    FETCH_FAILED = "fetch_failed"


class DiscrepancyKind(StrEnum):
    QUANTITY_MISMATCH = "quantity_mismatch"
    MISSING_IN_STRIPE = "missing_in_stripe"
    UNBILLED_USAGE = "unbilled_usage"
    OVERLAPPING_LINE_ITEMS = "overlapping_line_items"


class DiscrepancyStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class PairSource(StrEnum):
    LEDGER = "ledger"
    MANUAL = "manual"
    STRIPE = "stripe"


class Valuation(StrEnum):
    """How a discrepancy's amount at stake was priced."""

    STRIPE_PRICE = "stripe_price"
    LEDGER_PRICE = "ledger_price"


class LikelyCause(StrEnum):
    """Why Stripe and the ledger most likely differ, in the order the rules are tried."""

    LATE_USAGE = "late_usage"
    PERIOD_OFF_BY_ONE = "period_off_by_one"
    TIMEZONE_SHIFT = "timezone_shift"
    DUPLICATED_USAGE = "duplicated_usage"
    UNIT_SCALE = "unit_scale"
    WRONG_METER = "wrong_meter"
    # The stripe ledger's own (see "Two ledgers" in the design).
    CANCELLED_USAGE = "cancelled_usage"
    NOT_SUBSCRIBED = "not_subscribed"


#: The causes the internal ledger's rules (1-6) give; the stripe ledger adds its own.
INTERNAL_LEDGER_CAUSES: tuple[LikelyCause, ...] = (
    LikelyCause.LATE_USAGE,
    LikelyCause.PERIOD_OFF_BY_ONE,
    LikelyCause.TIMEZONE_SHIFT,
    LikelyCause.DUPLICATED_USAGE,
    LikelyCause.UNIT_SCALE,
    LikelyCause.WRONG_METER,
)


class Ledger(StrEnum):
    """Whose bill a line item (and a discrepancy) belongs to: ours, or what Stripe invoiced."""

    INTERNAL = "internal"
    STRIPE = "stripe"


class LineItemSource(StrEnum):
    """Where a line item came from: the CSV import, the ledger query, or a Stripe invoice."""

    CSV = "csv"
    QUERY = "query"
    STRIPE_INVOICE = "stripe_invoice"


__all__ = [
    "INTERNAL_LEDGER_CAUSES",
    "DiscrepancyKind",
    "DiscrepancyStatus",
    "Formula",
    "Ledger",
    "LikelyCause",
    "LineItemSource",
    "PairSource",
    "PairStatus",
    "RunStatus",
    "Trigger",
    "Valuation",
]
