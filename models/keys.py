"""A discrepancy's identity: the one key the unique constraint, the recorder and the demo share.

Pure (no SQLAlchemy), so the comparison can name it too. The table's unique constraint is
built from `DiscrepancyKey._fields`, so the key and the constraint cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any, NamedTuple

from models.enums import DiscrepancyKind, Ledger


class DiscrepancyKey(NamedTuple):
    """(customer, meter, kind, period, line item ids, ledger): field names are the columns.

    Ids are empty strings where they do not apply (as stored, so the unique constraint
    holds on every database). Keys sort by pair first, then as a pair's findings do. The
    ledger comes last, defaulting to `internal`, so the internal comparison's keys read as
    they did before there were two ledgers.
    """

    stripe_customer_id: str
    meter_id: str
    kind: DiscrepancyKind
    period_start: date
    period_end: date
    line_item_id: str = ""
    other_line_item_id: str = ""
    ledger: Ledger = Ledger.INTERNAL

    @classmethod
    def from_mapping(cls, values: Mapping[Any, Any]) -> DiscrepancyKey:
        """The key of a row given by column name (a dict, or a SQL row's `_mapping`).

        The kind becomes the enum (a stored or JSON string is accepted) and a null id the
        empty string, so every key of one discrepancy is equal and hashes the same.
        """
        fields = {name: values[name] for name in cls._fields if name != "ledger"}
        fields["kind"] = DiscrepancyKind(fields["kind"])
        fields["ledger"] = Ledger(values.get("ledger") or Ledger.INTERNAL)
        for name in ("line_item_id", "other_line_item_id"):
            fields[name] = fields[name] or ""
        return cls(**fields)


#: The columns that make a discrepancy's identity, in the key's order.
DISCREPANCY_IDENTITY: tuple[str, ...] = DiscrepancyKey._fields

#: The part of the identity that tells one pair's discrepancies apart within one ledger (a
#: finding's identity): everything after the pair, but the ledger.
WITHIN_PAIR: tuple[str, ...] = DiscrepancyKey._fields[2:-1]

__all__ = ["DISCREPANCY_IDENTITY", "WITHIN_PAIR", "DiscrepancyKey"]
