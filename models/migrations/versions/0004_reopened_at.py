"""an exact RE-OPENED: when a discrepancy last opened again

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import models.types

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("discrepancy", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("reopened_at", models.types.UTCDateTime(timezone=True), nullable=True)
        )
    # Rows already waiting for an alert at upgrade time cannot be told apart (a re-open
    # used to leave no trace): they stay NULL and are announced as NEW.


def downgrade() -> None:
    with op.batch_alter_table("discrepancy", schema=None) as batch_op:
        batch_op.drop_column("reopened_at")
