"""finance columns (work in progress: replaced by the lead's revisions 0002-0004)

Revision ID: 0099
Revises: 0001
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import models.types

revision: str = "0099"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("discrepancy", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("amount_at_stake", models.types.ExactDecimal(length=80), nullable=True)
        )
        batch_op.add_column(sa.Column("currency", sa.String(length=3), nullable=True))
        batch_op.add_column(sa.Column("valuation", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("likely_cause", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("cause_detail", sa.String(), nullable=True))
        batch_op.add_column(
            sa.Column("settles_at", models.types.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("reopened_at", models.types.UTCDateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("reconciliation_run", schema=None) as batch_op:
        batch_op.add_column(sa.Column("discovery_error", sa.String(), nullable=True))
        batch_op.add_column(
            sa.Column("discrepancies_settling", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("reconciliation_run", schema=None) as batch_op:
        batch_op.drop_column("discrepancies_settling")
        batch_op.drop_column("discovery_error")
    with op.batch_alter_table("discrepancy", schema=None) as batch_op:
        for name in (
            "reopened_at",
            "settles_at",
            "cause_detail",
            "likely_cause",
            "valuation",
            "currency",
            "amount_at_stake",
        ):
            batch_op.drop_column(name)
