"""the stripe ledger's counts per pair: compared, matched and pending line items of Stripe's
invoices, kept apart from the internal ledger's

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-09
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("stripe_compared", "stripe_matched", "stripe_pending")


def upgrade() -> None:
    # Pair results of before compared no line item of Stripe's: 0, as the server default says.
    with op.batch_alter_table("pair_result", schema=None) as batch_op:
        for name in COLUMNS:
            batch_op.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("pair_result", schema=None) as batch_op:
        for name in reversed(COLUMNS):
            batch_op.drop_column(name)
