"""The enums pure modules share: plain ``StrEnum`` values, no SQLAlchemy or SQLModel.

A pure module (the comparison, valuation, diagnosis) imports its enums from here, so
importing it never pulls in the database layer; ``models.tables`` re-exports them.
"""

from __future__ import annotations

from enum import StrEnum


class Formula(StrEnum):
    SUM = "sum"
    COUNT = "count"
    LAST = "last"


class DiscrepancyKind(StrEnum):
    QUANTITY_MISMATCH = "quantity_mismatch"
    MISSING_IN_STRIPE = "missing_in_stripe"
    UNBILLED_USAGE = "unbilled_usage"
    OVERLAPPING_LINE_ITEMS = "overlapping_line_items"


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
