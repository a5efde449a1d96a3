"""two ledgers: ours and what Stripe invoiced, line items keyed by (ledger, id)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import models.types

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LEDGERS = ("internal", "stripe")
SOURCES = ("csv", "query", "stripe_invoice")
CAUSES_0003 = (
    "late_usage",
    "period_off_by_one",
    "timezone_shift",
    "duplicated_usage",
    "unit_scale",
    "wrong_meter",
)
CAUSES = (*CAUSES_0003, "cancelled_usage", "not_subscribed")
IDENTITY = (
    "stripe_customer_id",
    "meter_id",
    "kind",
    "period_start",
    "period_end",
    "line_item_id",
    "other_line_item_id",
)
# PostgreSQL's name for the key 0001 left unnamed; SQLite takes the same name when rebuilt.
LINE_ITEM_KEY = "invoice_line_item_pkey"


def _enum(values: Sequence[str], name: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=32)


def _line_items_0004() -> sa.Table:
    """The line item table as revisions 0001-0004 left it, its key named as PostgreSQL names
    it (SQLite's has no name to drop, so its rebuild starts from this, not from reflection)."""
    return sa.Table(
        "invoice_line_item",
        sa.MetaData(),
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("invoice_id", sa.String(length=255), nullable=False),
        sa.Column("stripe_customer_id", sa.String(length=255), nullable=False),
        sa.Column("meter_id", sa.String(length=255), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("quantity", models.types.ExactDecimal(length=80), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("amount", models.types.ExactDecimal(length=80), nullable=True),
        sa.Column("imported_at", models.types.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("period_end > period_start", name="ck_line_item_period"),
        sa.PrimaryKeyConstraint("id", name=LINE_ITEM_KEY),
        sa.Index("ix_line_item_pair_period", "stripe_customer_id", "meter_id", "period_start"),
    )


def upgrade() -> None:
    # Every row of before is ours, imported from CSV: the server defaults say so, and stay
    # so that a writer that names neither still writes a row of the internal ledger.
    with op.batch_alter_table("invoice_line_item", schema=None, copy_from=_line_items_0004()) as (
        batch_op
    ):
        batch_op.add_column(
            sa.Column(
                "ledger",
                _enum(LEDGERS, "line_item_ledger"),
                nullable=False,
                server_default="internal",
            )
        )
        batch_op.add_column(
            sa.Column(
                "source", _enum(SOURCES, "line_item_source"), nullable=False, server_default="csv"
            )
        )
        for name in ("withdrawn_at", "period_start_at", "period_end_at", "finalized_at"):
            batch_op.add_column(
                sa.Column(name, models.types.UTCDateTime(timezone=True), nullable=True)
            )
        batch_op.add_column(sa.Column("price_id", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("invoice_status", sa.String(length=32), nullable=True))
        batch_op.drop_constraint(LINE_ITEM_KEY, type_="primary")
        batch_op.create_primary_key(LINE_ITEM_KEY, ["ledger", "id"])
    with op.batch_alter_table("discrepancy", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "ledger",
                _enum(LEDGERS, "discrepancy_ledger"),
                nullable=False,
                server_default="internal",
            )
        )
        batch_op.drop_constraint("uq_discrepancy_identity", type_="unique")
        batch_op.create_unique_constraint("uq_discrepancy_identity", [*IDENTITY, "ledger"])
        # Two causes for the stripe ledger: its CHECK names every value.
        batch_op.alter_column(
            "likely_cause",
            existing_type=_enum(CAUSES_0003, "likely_cause"),
            type_=_enum(CAUSES, "likely_cause"),
            existing_nullable=True,
        )


def downgrade() -> None:
    # Rows of the stripe ledger, and the new causes, have no place in revision 0004.
    op.execute("DELETE FROM discrepancy WHERE ledger <> 'internal'")
    op.execute(
        "UPDATE discrepancy SET likely_cause = NULL, cause_detail = NULL "
        "WHERE likely_cause IN ('cancelled_usage', 'not_subscribed')"
    )
    op.execute("DELETE FROM invoice_line_item WHERE ledger <> 'internal'")
    with op.batch_alter_table("discrepancy", schema=None) as batch_op:
        batch_op.alter_column(
            "likely_cause",
            existing_type=_enum(CAUSES, "likely_cause"),
            type_=_enum(CAUSES_0003, "likely_cause"),
            existing_nullable=True,
        )
        batch_op.drop_constraint("uq_discrepancy_identity", type_="unique")
        batch_op.create_unique_constraint("uq_discrepancy_identity", list(IDENTITY))
        # SQLite keeps a column's CHECK when the table is rebuilt: drop it first.
        batch_op.drop_constraint("discrepancy_ledger", type_="check")
        batch_op.drop_column("ledger")
    with op.batch_alter_table("invoice_line_item", schema=None) as batch_op:
        batch_op.drop_constraint(LINE_ITEM_KEY, type_="primary")
        batch_op.create_primary_key(LINE_ITEM_KEY, ["id"])
        batch_op.drop_constraint("line_item_ledger", type_="check")
        batch_op.drop_constraint("line_item_source", type_="check")
        for name in (
            "invoice_status",
            "price_id",
            "finalized_at",
            "period_end_at",
            "period_start_at",
            "withdrawn_at",
            "source",
            "ledger",
        ):
            batch_op.drop_column(name)
