"""why it differs: usage history, likely causes, settling

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import models.types

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CAUSES = (
    "late_usage",
    "period_off_by_one",
    "timezone_shift",
    "duplicated_usage",
    "unit_scale",
    "wrong_meter",
)


def upgrade() -> None:
    op.create_table(
        "usage_change",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("stripe_customer_id", sa.String(length=255), nullable=False),
        sa.Column("meter_id", sa.String(length=255), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("previous_value", models.types.ExactDecimal(length=80), nullable=False),
        sa.Column("value", models.types.ExactDecimal(length=80), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("fetched_at", models.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["reconciliation_run.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("usage_change", schema=None) as batch_op:
        batch_op.create_index(
            "ix_usage_change_pair_day", ["stripe_customer_id", "meter_id", "day"], unique=False
        )
    with op.batch_alter_table("pair_result", schema=None) as batch_op:
        batch_op.add_column(sa.Column("fetched_start", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("fetched_end", sa.Date(), nullable=True))
        batch_op.create_index(
            "ix_pair_result_pair", ["stripe_customer_id", "meter_id"], unique=False
        )
    with op.batch_alter_table("reconciliation_run", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("discrepancies_settling", sa.Integer(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("discrepancy", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "likely_cause",
                sa.Enum(
                    *CAUSES,
                    name="likely_cause",
                    native_enum=False,
                    create_constraint=True,
                    length=32,
                ),
                nullable=True,
            )
        )
        batch_op.add_column(sa.Column("cause_detail", sa.String(), nullable=True))
        batch_op.add_column(
            sa.Column("settles_at", models.types.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("discrepancy", schema=None) as batch_op:
        batch_op.drop_column("settles_at")
        batch_op.drop_column("cause_detail")
        # SQLite keeps a column's CHECK when the table is rebuilt: drop it first.
        batch_op.drop_constraint("likely_cause", type_="check")
        batch_op.drop_column("likely_cause")
    with op.batch_alter_table("pair_result", schema=None) as batch_op:
        batch_op.drop_index("ix_pair_result_pair")
        batch_op.drop_column("fetched_end")
        batch_op.drop_column("fetched_start")
    # Not a batch: rebuilding the run table would trip the foreign keys that point at it
    # (SQLite 3.35+ drops a column in place).
    op.drop_column("reconciliation_run", "discrepancies_settling")
    with op.batch_alter_table("usage_change", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_change_pair_day")
    op.drop_table("usage_change")
