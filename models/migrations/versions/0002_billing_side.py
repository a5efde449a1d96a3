"""what Stripe bills: price and subscription-item caches, pairs from Stripe, money at stake

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import models.types

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _pair_source(*values: str) -> sa.Enum:
    return sa.Enum(
        *values, name="pair_source", native_enum=False, create_constraint=True, length=32
    )


def upgrade() -> None:
    op.create_table(
        "stripe_price",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("meter_id", sa.String(length=255), nullable=True),
        sa.Column("billing_scheme", sa.String(length=32), nullable=False),
        sa.Column("unit_amount_decimal", models.types.ExactDecimal(length=80), nullable=True),
        sa.Column("tiers_mode", sa.String(length=32), nullable=True),
        sa.Column("tiers", sa.JSON(), nullable=True),
        sa.Column("transform_quantity", sa.JSON(), nullable=True),
        sa.Column("refreshed_at", models.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "subscription_item",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("subscription_id", sa.String(length=255), nullable=False),
        sa.Column("subscription_status", sa.String(length=32), nullable=False),
        sa.Column("subscription_created", models.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("stripe_customer_id", sa.String(length=255), nullable=False),
        sa.Column("meter_id", sa.String(length=255), nullable=False),
        sa.Column("price_id", sa.String(length=255), nullable=False),
        sa.Column("current_period_start", models.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("current_period_end", models.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("refreshed_at", models.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("subscription_item", schema=None) as batch_op:
        batch_op.create_index(
            "ix_subscription_item_pair", ["stripe_customer_id", "meter_id"], unique=False
        )
    with op.batch_alter_table("tracked_pair", schema=None) as batch_op:
        batch_op.alter_column(
            "source",
            existing_type=_pair_source("ledger", "manual"),
            type_=_pair_source("ledger", "manual", "stripe"),
            existing_nullable=False,
        )
    with op.batch_alter_table("reconciliation_run", schema=None) as batch_op:
        batch_op.add_column(sa.Column("discovery_error", sa.String(), nullable=True))
    with op.batch_alter_table("discrepancy", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("amount_at_stake", models.types.ExactDecimal(length=80), nullable=True)
        )
        batch_op.add_column(sa.Column("currency", sa.String(length=3), nullable=True))
        batch_op.add_column(
            sa.Column(
                "valuation",
                sa.Enum(
                    "stripe_price",
                    "ledger_price",
                    name="discrepancy_valuation",
                    native_enum=False,
                    create_constraint=True,
                    length=32,
                ),
                nullable=True,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("discrepancy", schema=None) as batch_op:
        # SQLite keeps a column's CHECK when the table is rebuilt: drop it first.
        batch_op.drop_constraint("discrepancy_valuation", type_="check")
        batch_op.drop_column("valuation")
        batch_op.drop_column("currency")
        batch_op.drop_column("amount_at_stake")
    # Not a batch: rebuilding the run table would trip the foreign keys that point at it
    # (SQLite 3.35+ drops a column in place).
    op.drop_column("reconciliation_run", "discovery_error")
    op.execute("DELETE FROM tracked_pair WHERE source = 'stripe'")
    with op.batch_alter_table("tracked_pair", schema=None) as batch_op:
        batch_op.alter_column(
            "source",
            existing_type=_pair_source("ledger", "manual", "stripe"),
            type_=_pair_source("ledger", "manual"),
            existing_nullable=False,
        )
    with op.batch_alter_table("subscription_item", schema=None) as batch_op:
        batch_op.drop_index("ix_subscription_item_pair")
    op.drop_table("subscription_item")
    op.drop_table("stripe_price")
