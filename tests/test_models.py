from __future__ import annotations

from datetime import date
from decimal import Decimal
from enum import StrEnum

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlmodel import Session, select

import models.enums
import models.tables
from models.enums import Ledger
from models.keys import DISCREPANCY_IDENTITY, DiscrepancyKey
from models.tables import (
    Discrepancy,
    DiscrepancyKind,
    DiscrepancyStatus,
    InvoiceLineItem,
    ReconciliationRun,
    RunStatus,
    Trigger,
)
from models.types import canonical_decimal
from tests.builders import line_item

EXACT_VALUES = [
    "0.1",
    "0.000000001",
    "123456789012.123456789",
    "-3",
    "0",
    "100",
    "1E+3",
    "99999999999999999999999999.000000000000000001",
]


@pytest.mark.parametrize("value", EXACT_VALUES)
def test_quantities_round_trip_exactly(engine: Engine, value: str) -> None:
    with Session(engine) as session:
        session.add(line_item("li_x", quantity=value))
        session.commit()
    with Session(engine) as session:
        stored = session.get(InvoiceLineItem, (Ledger.INTERNAL, "li_x"))
        assert stored is not None
        assert isinstance(stored.quantity, Decimal)
        assert stored.quantity == Decimal(value)


def test_floats_are_refused_as_quantities(engine: Engine) -> None:
    with Session(engine) as session:
        item = line_item("li_f")
        item.quantity = 0.1  # type: ignore[assignment]
        session.add(item)
        with pytest.raises(StatementError, match="Decimal"):
            session.commit()


@pytest.mark.parametrize(
    ("value", "text_form"),
    [("1E+3", "1000"), ("1.50", "1.5"), ("-0.00", "0"), ("0.000000001", "0.000000001")],
)
def test_canonical_decimal_text_has_one_form_per_number(value: str, text_form: str) -> None:
    assert canonical_decimal(Decimal(value)) == text_form


def test_period_must_end_after_it_starts(engine: Engine) -> None:
    with Session(engine) as session:
        session.add(line_item("li_bad", start="2026-10-02", end="2026-10-02"))
        with pytest.raises(IntegrityError):
            session.commit()


def test_dates_are_dates(engine: Engine) -> None:
    with Session(engine) as session:
        session.add(line_item("li_d", start="2026-10-01", end="2026-11-01"))
        session.commit()
        stored = session.exec(select(InvoiceLineItem)).one()
        assert stored.period_start == date(2026, 10, 1)
        assert type(stored.period_end) is date


def _run(session: Session) -> ReconciliationRun:
    run = ReconciliationRun(
        window_start=date(2026, 11, 1),
        window_end=date(2026, 11, 4),
        trigger=Trigger.MANUAL,
        status=RunStatus.RUNNING,
    )
    session.add(run)
    session.flush()
    return run


def _discrepancy(run_id: int, **overrides: object) -> Discrepancy:
    values: dict[str, object] = {
        "stripe_customer_id": "cus_A",
        "meter_id": "mtr_api",
        "kind": DiscrepancyKind.UNBILLED_USAGE,
        "period_start": date(2026, 11, 1),
        "period_end": date(2026, 11, 2),
        "stripe_quantity": Decimal("5"),
        "internal_quantity": Decimal("0"),
        "difference": Decimal("5"),
        "status": DiscrepancyStatus.OPEN,
        "first_seen_run": run_id,
        "last_seen_run": run_id,
    }
    values.update(overrides)
    return Discrepancy.model_validate(values)


def test_discrepancy_identity_is_unique_in_the_database(engine: Engine) -> None:
    with Session(engine) as session:
        run = _run(session)
        assert run.id is not None
        session.add(_discrepancy(run.id))
        session.commit()
        session.add(_discrepancy(run.id, stripe_quantity=Decimal("6")))
        with pytest.raises(IntegrityError):
            session.commit()


def test_the_unique_constraint_is_the_discrepancy_key() -> None:
    table = Discrepancy.__table__  # type: ignore[attr-defined]
    [unique] = [c for c in table.constraints if c.name == "uq_discrepancy_identity"]
    assert tuple(column.name for column in unique.columns) == DiscrepancyKey._fields
    assert DiscrepancyKey._fields == DISCREPANCY_IDENTITY


def test_a_stored_discrepancy_gives_back_its_key(engine: Engine) -> None:
    with Session(engine) as session:
        run = _run(session)
        assert run.id is not None
        session.add(_discrepancy(run.id))
        session.commit()
        stored = session.exec(select(Discrepancy)).one()
        key = DiscrepancyKey.from_mapping(stored.model_dump())
    assert key == DiscrepancyKey(
        "cus_A", "mtr_api", DiscrepancyKind.UNBILLED_USAGE, date(2026, 11, 1), date(2026, 11, 2)
    )


def test_a_key_read_from_text_is_the_key_built_from_the_enum() -> None:
    built = DiscrepancyKey(
        "cus_A", "mtr_api", DiscrepancyKind.UNBILLED_USAGE, date(2026, 11, 1), date(2026, 11, 2)
    )
    read = DiscrepancyKey.from_mapping(
        {
            "stripe_customer_id": "cus_A",
            "meter_id": "mtr_api",
            "kind": "unbilled_usage",
            "period_start": date(2026, 11, 1),
            "period_end": date(2026, 11, 2),
            "line_item_id": None,
            "other_line_item_id": None,
        }
    )
    assert read == built
    assert hash(read) == hash(built)
    assert read.kind is DiscrepancyKind.UNBILLED_USAGE
    assert (read.line_item_id, read.other_line_item_id) == ("", "")


def test_every_enum_lives_in_models_enums_and_the_tables_re_export_it() -> None:
    enums = {
        name: value
        for name, value in vars(models.enums).items()
        if isinstance(value, type) and issubclass(value, StrEnum) and value is not StrEnum
    }
    exported = [n for n in models.enums.__all__ if isinstance(getattr(models.enums, n), type)]
    assert sorted(enums) == sorted(exported)
    for name, enum in enums.items():
        assert getattr(models.tables, name) is enum
        assert name in models.tables.__all__
    tables_own = [
        name
        for name, value in vars(models.tables).items()
        if isinstance(value, type)
        and issubclass(value, StrEnum)
        and value is not StrEnum
        and value.__module__ != "models.enums"
    ]
    assert tables_own == []


def test_discrepancy_runs_are_foreign_keys(engine: Engine) -> None:
    with Session(engine) as session:
        session.add(_discrepancy(424242))
        with pytest.raises(IntegrityError):
            session.commit()


def test_enum_columns_reject_unknown_values_at_the_database(engine: Engine) -> None:
    with Session(engine) as session:
        run = _run(session)
        session.commit()
        statement = text("UPDATE reconciliation_run SET status = 'exploded' WHERE id = :id")
        with pytest.raises(IntegrityError):
            session.execute(statement, {"id": run.id})
