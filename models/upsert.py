"""`INSERT ... ON CONFLICT` for whichever database the session is on."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def insert_for(session: Session, table: Any) -> Any:
    """The dialect's insert construct, which offers `on_conflict_do_update/nothing`."""
    return insert_for_dialect(session.get_bind().dialect.name, table)


def insert_for_dialect(name: str, table: Any) -> Any:
    """`insert_for` by dialect name, for statements built once and reused."""
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"meter-recon supports SQLite and PostgreSQL, not {name}")
