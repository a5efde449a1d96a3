"""Stripe's meter configuration, cached: a run whose meter refresh fails uses the last one."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from sqlmodel import Session, select

from models.tables import Formula, Meter
from models.types import utcnow
from models.upsert import insert_for


class MeterConfig(Protocol):
    """What a meter's row is made of; Stripe's `billing.meter`, as the client reads it, has it."""

    @property
    def id(self) -> str: ...
    @property
    def display_name(self) -> str: ...
    @property
    def event_name(self) -> str: ...
    @property
    def formula(self) -> str: ...
    @property
    def status(self) -> str: ...


def upsert_meters(*, session: Session, meters: Iterable[MeterConfig]) -> int:
    """Insert or refresh each meter's row (keyed by Stripe's id); returns how many."""
    now = utcnow()
    rows = [
        {
            "id": m.id,
            "display_name": m.display_name,
            "event_name": m.event_name,
            "formula": Formula(m.formula),
            "status": m.status,
            "refreshed_at": now,
        }
        for m in meters
    ]
    if not rows:
        return 0
    statement = insert_for(session, Meter.__table__).values(rows)  # type: ignore[attr-defined]
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["id"],
            set_={k: statement.excluded[k] for k in rows[0] if k != "id"},
        )
    )
    return len(rows)


def cached_formulas(*, session: Session) -> dict[str, str]:
    """Each cached meter's aggregation formula, by meter id."""
    return {m.id: m.formula.value for m in session.exec(select(Meter)).all()}
