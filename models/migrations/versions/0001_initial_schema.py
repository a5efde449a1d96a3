"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import models.types

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "invoice_line_item",
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
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("invoice_line_item", schema=None) as batch_op:
        batch_op.create_index(
            "ix_line_item_pair_period",
            ["stripe_customer_id", "meter_id", "period_start"],
            unique=False,
        )

    op.create_table(
        "meter",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("display_name", sa.String(length=255), nullable=False),
        sa.Column("event_name", sa.String(length=255), nullable=False),
        sa.Column(
            "formula",
            sa.Enum(
                "sum",
                "count",
                "last",
                name="meter_formula",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("refreshed_at", models.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "reconciliation_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("window_start", sa.Date(), nullable=False),
        sa.Column("window_end", sa.Date(), nullable=False),
        sa.Column(
            "trigger",
            sa.Enum(
                "scheduled",
                "manual",
                name="run_trigger",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column(
            "status",
            sa.Enum(
                "running",
                "completed",
                "completed_with_errors",
                "failed",
                name="run_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("pairs_total", sa.Integer(), nullable=False),
        sa.Column("pairs_ok", sa.Integer(), nullable=False),
        sa.Column("pairs_failed", sa.Integer(), nullable=False),
        sa.Column("line_items_compared", sa.Integer(), nullable=False),
        sa.Column("line_items_matched", sa.Integer(), nullable=False),
        sa.Column("line_items_pending", sa.Integer(), nullable=False),
        sa.Column("discrepancies_new", sa.Integer(), nullable=False),
        sa.Column("discrepancies_reopened", sa.Integer(), nullable=False),
        sa.Column("discrepancies_resolved", sa.Integer(), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("flow_run_id", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", models.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", models.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", models.types.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "tracked_pair",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("stripe_customer_id", sa.String(length=255), nullable=False),
        sa.Column("meter_id", sa.String(length=255), nullable=False),
        sa.Column("active_from", sa.Date(), nullable=True),
        sa.Column("active_to", sa.Date(), nullable=True),
        sa.Column(
            "source",
            sa.Enum(
                "ledger",
                "manual",
                name="pair_source",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("created_at", models.types.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "active_to IS NULL OR active_from IS NULL OR active_to > active_from",
            name="ck_tracked_pair_bounds",
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("stripe_customer_id", "meter_id", name="uq_tracked_pair"),
    )
    op.create_table(
        "discrepancy",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("stripe_customer_id", sa.String(length=255), nullable=False),
        sa.Column("meter_id", sa.String(length=255), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "quantity_mismatch",
                "missing_in_stripe",
                "unbilled_usage",
                "overlapping_line_items",
                name="discrepancy_kind",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("line_item_id", sa.String(length=255), nullable=False),
        sa.Column("other_line_item_id", sa.String(length=255), nullable=False),
        sa.Column("stripe_quantity", models.types.ExactDecimal(length=80), nullable=False),
        sa.Column("internal_quantity", models.types.ExactDecimal(length=80), nullable=True),
        sa.Column("difference", models.types.ExactDecimal(length=80), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "open",
                "acknowledged",
                "resolved",
                name="discrepancy_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("first_seen_run", sa.Integer(), nullable=False),
        sa.Column("last_seen_run", sa.Integer(), nullable=False),
        sa.Column("resolved_run", sa.Integer(), nullable=True),
        sa.Column("alerted_at", models.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", models.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", models.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["first_seen_run"],
            ["reconciliation_run.id"],
        ),
        sa.ForeignKeyConstraint(
            ["last_seen_run"],
            ["reconciliation_run.id"],
        ),
        sa.ForeignKeyConstraint(
            ["resolved_run"],
            ["reconciliation_run.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "stripe_customer_id",
            "meter_id",
            "kind",
            "period_start",
            "period_end",
            "line_item_id",
            "other_line_item_id",
            name="uq_discrepancy_identity",
        ),
    )
    with op.batch_alter_table("discrepancy", schema=None) as batch_op:
        batch_op.create_index(
            "ix_discrepancy_pair", ["stripe_customer_id", "meter_id"], unique=False
        )
        batch_op.create_index("ix_discrepancy_status", ["status"], unique=False)

    op.create_table(
        "pair_result",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("stripe_customer_id", sa.String(length=255), nullable=False),
        sa.Column("meter_id", sa.String(length=255), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "ok",
                "fetch_failed",
                name="pair_status",
                native_enum=False,
                create_constraint=True,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("compared", sa.Integer(), nullable=False),
        sa.Column("matched", sa.Integer(), nullable=False),
        sa.Column("pending", sa.Integer(), nullable=False),
        sa.Column("findings", sa.Integer(), nullable=False),
        sa.Column("discrepancies_new", sa.Integer(), nullable=False),
        sa.Column("discrepancies_reopened", sa.Integer(), nullable=False),
        sa.Column("discrepancies_resolved", sa.Integer(), nullable=False),
        sa.Column("recorded_at", models.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["reconciliation_run.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "stripe_customer_id", "meter_id", name="uq_pair_result"),
    )
    with op.batch_alter_table("pair_result", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pair_result_run_id"), ["run_id"], unique=False)

    op.create_table(
        "usage_snapshot",
        sa.Column("stripe_customer_id", sa.String(length=255), nullable=False),
        sa.Column("meter_id", sa.String(length=255), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("aggregated_value", models.types.ExactDecimal(length=80), nullable=False),
        sa.Column("fetched_at", models.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["reconciliation_run.id"],
        ),
        sa.PrimaryKeyConstraint("stripe_customer_id", "meter_id", "day"),
    )


def downgrade() -> None:
    op.drop_table("usage_snapshot")
    with op.batch_alter_table("pair_result", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pair_result_run_id"))

    op.drop_table("pair_result")
    with op.batch_alter_table("discrepancy", schema=None) as batch_op:
        batch_op.drop_index("ix_discrepancy_status")
        batch_op.drop_index("ix_discrepancy_pair")

    op.drop_table("discrepancy")
    op.drop_table("tracked_pair")
    op.drop_table("reconciliation_run")
    op.drop_table("meter")
    with op.batch_alter_table("invoice_line_item", schema=None) as batch_op:
        batch_op.drop_index("ix_line_item_pair_period")

    op.drop_table("invoice_line_item")
