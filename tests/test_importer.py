from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from models.ledger import CsvRejected, import_line_items
from models.pairs import track_by_hand
from models.tables import InvoiceLineItem, PairSource, TrackedPair
from tests.builders import csv_file

DATA = Path(__file__).with_name("data")


def _items(engine: Engine) -> dict[str, InvoiceLineItem]:
    with Session(engine) as session:
        return {item.id: item for item in session.exec(select(InvoiceLineItem)).all()}


def _pairs(engine: Engine) -> list[TrackedPair]:
    with Session(engine) as session:
        return list(session.exec(select(TrackedPair)).all())


def test_good_file_is_imported_exactly(engine: Engine) -> None:
    report = import_line_items(engine=engine, path=DATA / "ledger_good.csv")
    assert (report.rows, report.upserted, report.pairs_added) == (4, 4, 4)
    items = _items(engine)
    assert items["li_003"].quantity == Decimal("123456789012.123456789")
    assert items["li_002"].quantity == Decimal("0.000000001")
    assert items["li_004"].quantity == Decimal(-3)
    assert items["li_001"].currency == "USD"
    assert items["li_001"].amount == Decimal("12.01")
    assert items["li_002"].currency is None
    assert items["li_002"].amount is None


def test_reimport_upserts_by_id(engine: Engine, tmp_path: Path) -> None:
    import_line_items(engine=engine, path=DATA / "ledger_good.csv")
    changed = csv_file(
        tmp_path / "changed.csv", "li_001,in_009,cus_A,mtr_api,2026-10-01,2026-11-01,1300,,"
    )
    report = import_line_items(engine=engine, path=changed)
    assert report.pairs_added == 0
    items = _items(engine)
    assert len(items) == 4
    assert items["li_001"].quantity == Decimal(1300)
    assert items["li_001"].invoice_id == "in_009"


def test_a_repeated_id_in_one_file_keeps_the_later_row(engine: Engine, tmp_path: Path) -> None:
    path = csv_file(
        tmp_path / "repeat.csv",
        "li_1,in_1,cus_A,mtr_api,2026-10-01,2026-11-01,1,,",
        "li_1,in_1,cus_A,mtr_api,2026-10-01,2026-11-01,2,,",
    )
    import_line_items(engine=engine, path=path)
    assert _items(engine)["li_1"].quantity == Decimal(2)


def test_malformed_rows_are_each_named_and_nothing_is_written(engine: Engine) -> None:
    import_line_items(engine=engine, path=DATA / "ledger_good.csv")
    before = {k: (v.quantity, v.period_start) for k, v in _items(engine).items()}
    with pytest.raises(CsvRejected) as rejected:
        import_line_items(engine=engine, path=DATA / "ledger_malformed.csv")
    errors = [(e.line, e.column) for e in rejected.value.report.errors]
    assert errors == [
        (3, "period_start"),
        (4, "quantity"),
        (5, "period_end"),
        (6, None),
        (7, "stripe_customer_id"),
        (8, "currency"),
        (9, "amount"),
    ]
    assert {k: (v.quantity, v.period_start) for k, v in _items(engine).items()} == before
    assert "li_101" not in _items(engine)
    assert len(_pairs(engine)) == 4


def test_bad_header_is_reported_on_line_one(engine: Engine) -> None:
    with pytest.raises(CsvRejected) as rejected:
        import_line_items(engine=engine, path=DATA / "ledger_bad_header.csv")
    messages = [str(e) for e in rejected.value.report.errors]
    assert all(m.startswith("line 1: header:") for m in messages)
    assert any("'invoice'" in m for m in messages)
    assert any("missing column 'quantity'" in m for m in messages)


def test_errors_in_a_late_batch_still_roll_back_earlier_batches(
    engine: Engine, tmp_path: Path
) -> None:
    rows = [f"li_{i},in_1,cus_{i % 7},mtr_api,2026-10-01,2026-11-01,{i},," for i in range(12001)]
    rows.append("li_bad,in_1,cus_A,mtr_api,2026-10-01,2026-11-01,oops,,")
    with pytest.raises(CsvRejected) as rejected:
        import_line_items(engine=engine, path=csv_file(tmp_path / "big.csv", *rows))
    assert [e.line for e in rejected.value.report.errors] == [12003]
    assert _items(engine) == {}
    assert _pairs(engine) == []


def test_new_pairs_are_tracked_open_ended_and_hand_bounds_stay(engine: Engine) -> None:
    from datetime import date

    with Session(engine) as session:
        track_by_hand(
            session=session, customer="cus_A", meter="mtr_api", active_from=date(2026, 10, 5)
        )
        session.commit()
    import_line_items(engine=engine, path=DATA / "ledger_good.csv")
    pairs = {(p.stripe_customer_id, p.meter_id): p for p in _pairs(engine)}
    assert len(pairs) == 4
    assert pairs["cus_A", "mtr_api"].source is PairSource.MANUAL
    assert pairs["cus_A", "mtr_api"].active_from == date(2026, 10, 5)
    assert pairs["cus_B", "mtr_api"].source is PairSource.LEDGER
    assert pairs["cus_B", "mtr_api"].active_from is None
    assert pairs["cus_B", "mtr_api"].active_to is None
