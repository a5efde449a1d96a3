"""The cached meter configuration: refreshed from Stripe, read back when Stripe is away."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlmodel import Session, select

from integrations.stripe.models import Meter as StripeMeter
from models.engine import session_scope
from models.meters import cached_formulas, upsert_meters
from models.tables import Meter


def meter(id: str, formula: str = "sum", name: str = "API calls") -> StripeMeter:
    return StripeMeter(
        id=id, display_name=name, event_name="api_call", formula=formula, status="active"
    )


def test_upserted_meters_are_read_back_as_formulas(engine: Engine) -> None:
    with session_scope(engine) as session:
        assert upsert_meters(session=session, meters=[meter("mtr_a"), meter("mtr_b", "last")]) == 2
    with Session(engine) as session:
        assert cached_formulas(session=session) == {"mtr_a": "sum", "mtr_b": "last"}


def test_a_meter_upserted_again_is_refreshed_not_duplicated(engine: Engine) -> None:
    with session_scope(engine) as session:
        upsert_meters(session=session, meters=[meter("mtr_a")])
    with session_scope(engine) as session:
        upsert_meters(session=session, meters=[meter("mtr_a", "count", name="Calls")])
    with Session(engine) as session:
        rows = session.exec(select(Meter)).all()
    assert [(m.id, m.display_name, m.formula.value) for m in rows] == [("mtr_a", "Calls", "count")]


def test_no_meters_writes_nothing(engine: Engine) -> None:
    with session_scope(engine) as session:
        assert upsert_meters(session=session, meters=[]) == 0
    with Session(engine) as session:
        assert cached_formulas(session=session) == {}
