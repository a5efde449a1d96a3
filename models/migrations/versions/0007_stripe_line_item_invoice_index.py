"""the stripe ledger's line items by invoice: an index on (ledger, invoice_id), so withdrawing
a void or re-read invoice's line items reads its rows, not the whole table

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_line_item_ledger_invoice", "invoice_line_item", ["ledger", "invoice_id"])


def downgrade() -> None:
    op.drop_index("ix_line_item_ledger_invoice", table_name="invoice_line_item")
