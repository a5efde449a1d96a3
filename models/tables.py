"""The tables: the ledger, what is reconciled, what Stripe said, and what differs.

The enums the columns store live in `models.enums` (no SQLAlchemy) and the discrepancy's
identity in `models.keys`; both are re-exported here, so existing imports keep working.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import JSON, Column, Field, SQLModel

from models.enums import (
    DiscrepancyKind,
    DiscrepancyStatus,
    Formula,
    Ledger,
    LikelyCause,
    LineItemSource,
    PairSource,
    PairStatus,
    RunStatus,
    Trigger,
    Valuation,
)
from models.keys import DISCREPANCY_IDENTITY, DiscrepancyKey
from models.types import ExactDecimal, UTCDateTime, utcnow


def enum_column(enum: type[StrEnum], name: str, **kwargs: Any) -> Any:
    """A VARCHAR with a named CHECK constraint: portable, and readable from plain SQL."""
    return sa.Column(
        sa.Enum(
            enum,
            name=name,
            native_enum=False,
            create_constraint=True,
            length=32,
            values_callable=lambda members: [m.value for m in members],
            validate_strings=True,
        ),
        **kwargs,
    )


def quantity_column(*, nullable: bool = False) -> Any:
    return sa.Column(ExactDecimal(), nullable=nullable)


def timestamp_column(*, nullable: bool = False) -> Any:
    # A Python-side default too, so Core inserts (bulk upserts) get the time as well.
    return sa.Column(UTCDateTime(), nullable=nullable, default=None if nullable else utcnow)


class InvoiceLineItem(SQLModel, table=True):
    """One line item of a ledger, as invoiced: ours (`internal`) or Stripe's (`stripe`).

    Keyed by (ledger, id): each ledger's ids are its own. Never deleted: a line item its
    source no longer holds is withdrawn (`withdrawn_at`), and is no longer compared.
    """

    __tablename__ = "invoice_line_item"
    __table_args__ = (
        sa.CheckConstraint("period_end > period_start", name="ck_line_item_period"),
        sa.Index("ix_line_item_pair_period", "stripe_customer_id", "meter_id", "period_start"),
        # An invoice's line items, read when it is voided or read again (sync-invoices).
        sa.Index("ix_line_item_ledger_invoice", "ledger", "invoice_id"),
    )

    ledger: Ledger = Field(
        default=Ledger.INTERNAL,
        sa_column=enum_column(
            Ledger,
            "line_item_ledger",
            primary_key=True,
            nullable=False,
            default=Ledger.INTERNAL,
            server_default=Ledger.INTERNAL.value,
        ),
    )
    id: str = Field(primary_key=True, max_length=255)
    invoice_id: str = Field(max_length=255)
    stripe_customer_id: str = Field(max_length=255)
    meter_id: str = Field(max_length=255)
    period_start: date
    period_end: date
    quantity: Decimal = Field(sa_column=quantity_column())
    currency: str | None = Field(default=None, max_length=3)
    amount: Decimal | None = Field(default=None, sa_column=quantity_column(nullable=True))
    imported_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    source: LineItemSource = Field(
        default=LineItemSource.CSV,
        sa_column=enum_column(
            LineItemSource,
            "line_item_source",
            nullable=False,
            default=LineItemSource.CSV,
            server_default=LineItemSource.CSV.value,
        ),
    )
    withdrawn_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    # A Stripe line's exact instants, price and invoice state (null in the internal ledger).
    period_start_at: datetime | None = Field(
        default=None, sa_column=timestamp_column(nullable=True)
    )
    period_end_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    price_id: str | None = Field(default=None, max_length=255)
    invoice_status: str | None = Field(default=None, max_length=32)
    finalized_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))


class TrackedPair(SQLModel, table=True):
    """A (customer, meter) pair that runs reconcile; bounds only for pairs added by hand."""

    __tablename__ = "tracked_pair"
    __table_args__ = (
        sa.UniqueConstraint("stripe_customer_id", "meter_id", name="uq_tracked_pair"),
        sa.CheckConstraint(
            "active_to IS NULL OR active_from IS NULL OR active_to > active_from",
            name="ck_tracked_pair_bounds",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    stripe_customer_id: str = Field(max_length=255)
    meter_id: str = Field(max_length=255)
    active_from: date | None = None
    active_to: date | None = None
    source: PairSource = Field(sa_column=enum_column(PairSource, "pair_source", nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class Meter(SQLModel, table=True):
    """Cache of Stripe's meter configuration, refreshed at the start of each run."""

    __tablename__ = "meter"

    id: str = Field(primary_key=True, max_length=255)
    display_name: str = Field(max_length=255)
    event_name: str = Field(max_length=255)
    formula: Formula = Field(sa_column=enum_column(Formula, "meter_formula", nullable=False))
    status: str = Field(max_length=32)
    refreshed_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class ReconciliationRun(SQLModel, table=True):
    """One run of the flow over a window of UTC days."""

    __tablename__ = "reconciliation_run"

    id: int | None = Field(default=None, primary_key=True)
    window_start: date
    window_end: date
    trigger: Trigger = Field(sa_column=enum_column(Trigger, "run_trigger", nullable=False))
    status: RunStatus = Field(sa_column=enum_column(RunStatus, "run_status", nullable=False))
    pairs_total: int = 0
    pairs_ok: int = 0
    pairs_failed: int = 0
    line_items_compared: int = 0
    line_items_matched: int = 0
    line_items_pending: int = 0
    discrepancies_new: int = 0
    discrepancies_reopened: int = 0
    discrepancies_resolved: int = 0
    discrepancies_settling: int = Field(
        default=0, sa_column=sa.Column(sa.Integer(), nullable=False, server_default="0")
    )
    discovery_error: str | None = None
    counts: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    parameters: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    flow_run_id: str | None = Field(default=None, max_length=64)
    error: str | None = None
    started_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    heartbeat_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    finished_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))


class PairResult(SQLModel, table=True):
    """What happened to one pair in one run."""

    __tablename__ = "pair_result"
    __table_args__ = (
        sa.UniqueConstraint("run_id", "stripe_customer_id", "meter_id", name="uq_pair_result"),
        sa.Index("ix_pair_result_pair", "stripe_customer_id", "meter_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="reconciliation_run.id", index=True)
    stripe_customer_id: str = Field(max_length=255)
    meter_id: str = Field(max_length=255)
    status: PairStatus = Field(sa_column=enum_column(PairStatus, "pair_status", nullable=False))
    error: str | None = None
    requests: int = 0
    duration_ms: int = 0
    compared: int = 0
    matched: int = 0
    pending: int = 0
    findings: int = 0
    discrepancies_new: int = 0
    discrepancies_reopened: int = 0
    discrepancies_resolved: int = 0
    # The `stripe` ledger's line items (Stripe's invoices), counted apart from the internal
    # ledger's `compared`, `matched` and `pending`.
    stripe_compared: int = Field(
        default=0, sa_column=sa.Column(sa.Integer(), nullable=False, server_default="0")
    )
    stripe_matched: int = Field(
        default=0, sa_column=sa.Column(sa.Integer(), nullable=False, server_default="0")
    )
    stripe_pending: int = Field(
        default=0, sa_column=sa.Column(sa.Integer(), nullable=False, server_default="0")
    )
    # The days [fetched_start, fetched_end) asked of Stripe: a day covered without a bucket had
    # no usage then, so usage that appears there later is a change from 0.
    fetched_start: date | None = None
    fetched_end: date | None = None
    recorded_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class UsageSnapshot(SQLModel, table=True):
    """What Stripe said for one (customer, meter, day) at its latest fetch."""

    __tablename__ = "usage_snapshot"

    stripe_customer_id: str = Field(primary_key=True, max_length=255)
    meter_id: str = Field(primary_key=True, max_length=255)
    day: date = Field(primary_key=True)
    aggregated_value: Decimal = Field(sa_column=quantity_column())
    fetched_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    run_id: int = Field(foreign_key="reconciliation_run.id")


class UsageChange(SQLModel, table=True):
    """A day whose value moved between two fetches: the evidence for late usage."""

    __tablename__ = "usage_change"
    __table_args__ = (
        sa.Index("ix_usage_change_pair_day", "stripe_customer_id", "meter_id", "day"),
    )

    id: int | None = Field(default=None, primary_key=True)
    stripe_customer_id: str = Field(max_length=255)
    meter_id: str = Field(max_length=255)
    day: date
    previous_value: Decimal = Field(sa_column=quantity_column())
    value: Decimal = Field(sa_column=quantity_column())
    run_id: int = Field(foreign_key="reconciliation_run.id")
    fetched_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class StripePrice(SQLModel, table=True):
    """Cache of the Stripe prices that metered subscription items bill with."""

    __tablename__ = "stripe_price"

    id: str = Field(primary_key=True, max_length=255)
    currency: str = Field(max_length=3)
    meter_id: str | None = Field(default=None, max_length=255)
    billing_scheme: str = Field(max_length=32)
    unit_amount_decimal: Decimal | None = Field(
        default=None, sa_column=quantity_column(nullable=True)
    )
    tiers_mode: str | None = Field(default=None, max_length=32)
    # Exact decimal strings, as Stripe sends them: [{"up_to", "unit_amount_decimal", ...}].
    tiers: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSON))
    transform_quantity: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    refreshed_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class SubscriptionItem(SQLModel, table=True):
    """What Stripe bills: one metered subscription item, naming a customer, meter and price."""

    __tablename__ = "subscription_item"
    __table_args__ = (sa.Index("ix_subscription_item_pair", "stripe_customer_id", "meter_id"),)

    id: str = Field(primary_key=True, max_length=255)
    subscription_id: str = Field(max_length=255)
    subscription_status: str = Field(max_length=32)
    subscription_created: datetime = Field(sa_column=timestamp_column())
    stripe_customer_id: str = Field(max_length=255)
    meter_id: str = Field(max_length=255)
    price_id: str = Field(max_length=255)
    current_period_start: datetime | None = Field(
        default=None, sa_column=timestamp_column(nullable=True)
    )
    current_period_end: datetime | None = Field(
        default=None, sa_column=timestamp_column(nullable=True)
    )
    refreshed_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())


class Discrepancy(SQLModel, table=True):
    """A difference between Stripe and the ledger, with its lifecycle; never deleted."""

    __tablename__ = "discrepancy"
    __table_args__ = (
        sa.UniqueConstraint(*DISCREPANCY_IDENTITY, name="uq_discrepancy_identity"),
        sa.Index("ix_discrepancy_status", "status"),
        sa.Index("ix_discrepancy_pair", "stripe_customer_id", "meter_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    stripe_customer_id: str = Field(max_length=255)
    meter_id: str = Field(max_length=255)
    ledger: Ledger = Field(
        default=Ledger.INTERNAL,
        sa_column=enum_column(
            Ledger,
            "discrepancy_ledger",
            nullable=False,
            default=Ledger.INTERNAL,
            server_default=Ledger.INTERNAL.value,
        ),
    )
    kind: DiscrepancyKind = Field(
        sa_column=enum_column(DiscrepancyKind, "discrepancy_kind", nullable=False)
    )
    period_start: date
    period_end: date
    line_item_id: str = Field(default="", max_length=255)
    other_line_item_id: str = Field(default="", max_length=255)
    stripe_quantity: Decimal = Field(sa_column=quantity_column())
    internal_quantity: Decimal | None = Field(
        default=None, sa_column=quantity_column(nullable=True)
    )
    difference: Decimal | None = Field(default=None, sa_column=quantity_column(nullable=True))
    detail: str = ""
    status: DiscrepancyStatus = Field(
        sa_column=enum_column(DiscrepancyStatus, "discrepancy_status", nullable=False)
    )
    first_seen_run: int = Field(foreign_key="reconciliation_run.id")
    last_seen_run: int = Field(foreign_key="reconciliation_run.id")
    resolved_run: int | None = Field(default=None, foreign_key="reconciliation_run.id")
    alerted_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    note: str | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=timestamp_column())
    reopened_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))
    amount_at_stake: Decimal | None = Field(default=None, sa_column=quantity_column(nullable=True))
    currency: str | None = Field(default=None, max_length=3)
    valuation: Valuation | None = Field(
        default=None, sa_column=enum_column(Valuation, "discrepancy_valuation", nullable=True)
    )
    likely_cause: LikelyCause | None = Field(
        default=None, sa_column=enum_column(LikelyCause, "likely_cause", nullable=True)
    )
    cause_detail: str | None = None
    settles_at: datetime | None = Field(default=None, sa_column=timestamp_column(nullable=True))


__all__ = [
    "DISCREPANCY_IDENTITY",
    "Discrepancy",
    "DiscrepancyKey",
    "DiscrepancyKind",
    "DiscrepancyStatus",
    "Formula",
    "InvoiceLineItem",
    "Ledger",
    "LikelyCause",
    "LineItemSource",
    "Meter",
    "PairResult",
    "PairSource",
    "PairStatus",
    "ReconciliationRun",
    "RunStatus",
    "StripePrice",
    "SubscriptionItem",
    "TrackedPair",
    "Trigger",
    "UsageChange",
    "UsageSnapshot",
    "Valuation",
]
