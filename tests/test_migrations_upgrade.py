"""Upgrading a populated database keeps every row, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.exc import IntegrityError

from models.engine import get_engine
from models.migrate import alembic_config, current_revision, head_revision, upgrade

NOW = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)

# Today's rows as revision 0001 stored them: one per table, with values that must survive.
# Serial ids are left to the database (the run is id 1 in a fresh one).
ROWS_0001 = {
    "invoice_line_item": {
        "id": "li_1",
        "invoice_id": "in_1",
        "stripe_customer_id": "cus_A",
        "meter_id": "mtr_api",
        "period_start": date(2026, 11, 1),
        "period_end": date(2026, 12, 1),
        "quantity": "1234.567890123456789",
        "currency": "usd",
        "amount": "12.34",
        "imported_at": NOW,
    },
    "tracked_pair": {
        "stripe_customer_id": "cus_A",
        "meter_id": "mtr_api",
        "active_from": None,
        "active_to": None,
        "source": "manual",
        "created_at": NOW,
    },
    "meter": {
        "id": "mtr_api",
        "display_name": "API calls",
        "event_name": "api_call",
        "formula": "sum",
        "status": "active",
        "refreshed_at": NOW,
    },
    "reconciliation_run": {
        "window_start": date(2026, 11, 1),
        "window_end": date(2026, 11, 4),
        "trigger": "manual",
        "status": "completed",
        "pairs_total": 1,
        "pairs_ok": 1,
        "pairs_failed": 0,
        "line_items_compared": 1,
        "line_items_matched": 0,
        "line_items_pending": 0,
        "discrepancies_new": 1,
        "discrepancies_reopened": 0,
        "discrepancies_resolved": 0,
        "counts": {"quantity_mismatch": 1},
        "parameters": {"start": "2026-11-01"},
        "flow_run_id": None,
        "error": None,
        "started_at": NOW,
        "heartbeat_at": NOW,
        "finished_at": NOW,
    },
    "pair_result": {
        "run_id": 1,
        "stripe_customer_id": "cus_A",
        "meter_id": "mtr_api",
        "status": "ok",
        "error": None,
        "requests": 1,
        "duration_ms": 12,
        "compared": 1,
        "matched": 0,
        "pending": 0,
        "findings": 1,
        "discrepancies_new": 1,
        "discrepancies_reopened": 0,
        "discrepancies_resolved": 0,
        "recorded_at": NOW,
    },
    "usage_snapshot": {
        "stripe_customer_id": "cus_A",
        "meter_id": "mtr_api",
        "day": date(2026, 11, 2),
        "aggregated_value": "812.18",
        "fetched_at": NOW,
        "run_id": 1,
    },
    "discrepancy": {
        "stripe_customer_id": "cus_A",
        "meter_id": "mtr_api",
        "kind": "quantity_mismatch",
        "period_start": date(2026, 11, 1),
        "period_end": date(2026, 12, 1),
        "line_item_id": "li_1",
        "other_line_item_id": "",
        "stripe_quantity": "1260.709890123456789",
        "internal_quantity": "1234.567890123456789",
        "difference": "26.142",
        "detail": "Stripe has 26.142 more",
        "status": "acknowledged",
        "first_seen_run": 1,
        "last_seen_run": 1,
        "resolved_run": None,
        "alerted_at": NOW,
        "note": "known: late usage",
        "created_at": NOW,
        "updated_at": NOW,
    },
}

# Text columns as SQLite stores them; PostgreSQL's NUMERIC compares as Decimal.
DECIMALS = {
    "quantity",
    "amount",
    "aggregated_value",
    "stripe_quantity",
    "internal_quantity",
    "difference",
}
JSON_COLUMNS = {"counts", "parameters"}


def _populate_at_0001(url: str) -> None:
    command.upgrade(alembic_config(url), "0001")
    engine = get_engine(url)
    metadata = sa.MetaData()
    metadata.reflect(engine)
    with engine.begin() as connection:
        for table, row in ROWS_0001.items():
            connection.execute(metadata.tables[table].insert(), [row])


def _read(url: str, table: str) -> list[dict[str, object]]:
    with get_engine(url).connect() as connection:
        result = connection.execute(sa.text(f"SELECT * FROM {table}"))
        return [dict(row._mapping) for row in result]


@pytest.fixture
def upgraded_url(empty_database_url: str) -> str:
    _populate_at_0001(empty_database_url)
    upgrade(empty_database_url)
    return empty_database_url


def test_a_populated_database_upgrades_to_the_newest_revision(upgraded_url: str) -> None:
    assert current_revision(upgraded_url) == head_revision(upgraded_url)


@pytest.mark.parametrize("table", sorted(ROWS_0001))
def test_upgrading_keeps_every_row_and_value(upgraded_url: str, table: str) -> None:
    rows = _read(upgraded_url, table)
    assert len(rows) == 1
    for column, expected in ROWS_0001[table].items():
        value = rows[0][column]
        if column in DECIMALS:
            assert Decimal(str(value)) == Decimal(str(expected)), column
        elif column in JSON_COLUMNS:
            assert (json.loads(value) if isinstance(value, str) else value) == expected, column
        elif isinstance(expected, datetime):
            assert str(value)[:19].replace("T", " ") == f"{expected:%Y-%m-%d %H:%M:%S}", column
        elif isinstance(expected, date):
            assert str(value)[:10] == expected.isoformat(), column
        else:
            assert value == expected, column


def test_new_discrepancy_columns_start_empty(upgraded_url: str) -> None:
    (row,) = _read(upgraded_url, "discrepancy")
    for column in (
        "amount_at_stake",
        "currency",
        "valuation",
        "likely_cause",
        "cause_detail",
        "settles_at",
        "reopened_at",
    ):
        assert row[column] is None, column
    assert row["status"] == "acknowledged"
    assert row["note"] == "known: late usage"


def test_runs_of_before_the_upgrade_have_nothing_settling_and_no_discovery_error(
    upgraded_url: str,
) -> None:
    (row,) = _read(upgraded_url, "reconciliation_run")
    assert row["discrepancies_settling"] == 0
    assert row["discovery_error"] is None


def test_pair_results_of_before_the_upgrade_have_no_fetched_range(upgraded_url: str) -> None:
    (row,) = _read(upgraded_url, "pair_result")
    assert (row["fetched_start"], row["fetched_end"]) == (None, None)


def test_the_upgraded_pair_source_accepts_stripe_and_still_refuses_unknown_sources(
    upgraded_url: str,
) -> None:
    engine = get_engine(upgraded_url)
    insert = sa.text(
        "INSERT INTO tracked_pair (stripe_customer_id, meter_id, source, created_at) "
        "VALUES (:customer, 'mtr_api', :source, :now)"
    )
    with engine.begin() as connection:
        connection.execute(insert, {"customer": "cus_B", "source": "stripe", "now": NOW})
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(insert, {"customer": "cus_C", "source": "guess", "now": NOW})


@pytest.mark.parametrize(
    ("column", "value"), [("valuation", "estimate"), ("likely_cause", "bad_luck")]
)
def test_the_upgraded_discrepancy_refuses_unknown_enum_values(
    upgraded_url: str, column: str, value: str
) -> None:
    with pytest.raises(IntegrityError), get_engine(upgraded_url).begin() as connection:
        connection.execute(sa.text(f"UPDATE discrepancy SET {column} = :value"), {"value": value})


def test_downgrading_to_the_first_revision_and_up_again_keeps_the_rows(upgraded_url: str) -> None:
    command.downgrade(alembic_config(upgraded_url), "0001")
    upgrade(upgraded_url)
    for table in ROWS_0001:
        assert len(_read(upgraded_url, table)) == 1, table


# -- 0004 -> 0005: two ledgers ------------------------------------------------------------------


def _populate_at_0004(url: str) -> None:
    """Today's rows as revision 0004 stores them: a line item and its discrepancy."""
    command.upgrade(alembic_config(url), "0004")
    engine = get_engine(url)
    metadata = sa.MetaData()
    metadata.reflect(engine)
    with engine.begin() as connection:
        for table, row in ROWS_0001.items():
            connection.execute(metadata.tables[table].insert(), [row])
        connection.execute(
            metadata.tables["invoice_line_item"].insert(),
            [{**ROWS_0001["invoice_line_item"], "id": "li_2", "quantity": "7"}],
        )


@pytest.fixture
def upgraded_from_0004(empty_database_url: str) -> str:
    _populate_at_0004(empty_database_url)
    command.upgrade(alembic_config(empty_database_url), "0005")
    return empty_database_url


def test_line_items_of_before_the_upgrade_are_the_internal_ledger_from_csv(
    upgraded_from_0004: str,
) -> None:
    rows = sorted(_read(upgraded_from_0004, "invoice_line_item"), key=lambda row: str(row["id"]))
    assert [row["id"] for row in rows] == ["li_1", "li_2"]
    for row in rows:
        assert (row["ledger"], row["source"]) == ("internal", "csv")
        for column in (
            "withdrawn_at",
            "period_start_at",
            "period_end_at",
            "price_id",
            "invoice_status",
            "finalized_at",
        ):
            assert row[column] is None, column
    assert Decimal(str(rows[1]["quantity"])) == Decimal(7)


def test_discrepancies_of_before_the_upgrade_are_against_the_internal_ledger(
    upgraded_from_0004: str,
) -> None:
    (row,) = _read(upgraded_from_0004, "discrepancy")
    assert row["ledger"] == "internal"
    assert (row["status"], row["note"]) == ("acknowledged", "known: late usage")


def test_a_stripe_line_may_share_an_internal_line_items_id_but_not_another_stripe_lines(
    upgraded_from_0004: str,
) -> None:
    insert = sa.text(
        "INSERT INTO invoice_line_item (ledger, source, id, invoice_id, stripe_customer_id, "
        "meter_id, period_start, period_end, quantity, imported_at) VALUES ('stripe', "
        "'stripe_invoice', 'li_1', 'in_9', 'cus_A', 'mtr_api', :start, :end, '3', :now)"
    )
    values = {"start": date(2026, 11, 1), "end": date(2026, 12, 1), "now": NOW}
    engine = get_engine(upgraded_from_0004)
    with engine.begin() as connection:
        connection.execute(insert, values)
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(insert, values)


def test_the_discrepancy_identity_includes_its_ledger_after_the_upgrade(
    upgraded_from_0004: str,
) -> None:
    row = {**ROWS_0001["discrepancy"], "ledger": "stripe", "status": "open"}
    engine = get_engine(upgraded_from_0004)
    table = sa.Table("discrepancy", sa.MetaData(), autoload_with=engine)
    with engine.begin() as connection:
        connection.execute(table.insert(), [row])
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(table.insert(), [row])


def test_the_upgraded_ledger_columns_refuse_unknown_values(upgraded_from_0004: str) -> None:
    engine = get_engine(upgraded_from_0004)
    for statement in (
        "UPDATE invoice_line_item SET ledger = 'erp'",
        "UPDATE invoice_line_item SET source = 'guess'",
        "UPDATE discrepancy SET ledger = 'erp'",
    ):
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(sa.text(statement))
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE discrepancy SET likely_cause = 'cancelled_usage'"))


def test_downgrading_to_0004_and_up_again_keeps_every_internal_row(
    upgraded_from_0004: str,
) -> None:
    command.downgrade(alembic_config(upgraded_from_0004), "0004")
    assert current_revision(upgraded_from_0004) == "0004"
    assert len(_read(upgraded_from_0004, "invoice_line_item")) == 2
    assert len(_read(upgraded_from_0004, "discrepancy")) == 1
    upgrade(upgraded_from_0004)
    items = _read(upgraded_from_0004, "invoice_line_item")
    assert sorted(str(row["id"]) for row in items) == ["li_1", "li_2"]
    assert {row["ledger"] for row in items} == {"internal"}
    (row,) = _read(upgraded_from_0004, "discrepancy")
    assert (row["ledger"], row["status"]) == ("internal", "acknowledged")


# -- 0005 -> 0006 -> 0007: the stripe ledger's counts per pair, its line items by invoice -----


@pytest.fixture
def upgraded_from_0005(empty_database_url: str) -> str:
    _populate_at_0004(empty_database_url)
    command.upgrade(alembic_config(empty_database_url), "0005")
    upgrade(empty_database_url)
    return empty_database_url


def test_pair_results_of_before_compared_no_stripe_line_item(upgraded_from_0005: str) -> None:
    (row,) = _read(upgraded_from_0005, "pair_result")
    assert (row["stripe_compared"], row["stripe_matched"], row["stripe_pending"]) == (0, 0, 0)
    assert row["status"] == ROWS_0001["pair_result"]["status"]


def test_line_items_are_indexed_by_ledger_and_invoice_after_the_upgrade(
    upgraded_from_0005: str,
) -> None:
    indexes = sa.inspect(get_engine(upgraded_from_0005)).get_indexes("invoice_line_item")
    by_name = {index["name"]: index["column_names"] for index in indexes}
    assert by_name["ix_line_item_ledger_invoice"] == ["ledger", "invoice_id"]
    assert len(_read(upgraded_from_0005, "invoice_line_item")) == 2


def test_downgrading_to_0005_and_up_again_keeps_every_row(upgraded_from_0005: str) -> None:
    command.downgrade(alembic_config(upgraded_from_0005), "0005")
    assert current_revision(upgraded_from_0005) == "0005"
    upgrade(upgraded_from_0005)
    assert current_revision(upgraded_from_0005) == head_revision(upgraded_from_0005)
    assert sorted(str(r["id"]) for r in _read(upgraded_from_0005, "invoice_line_item")) == [
        "li_1",
        "li_2",
    ]
    assert len(_read(upgraded_from_0005, "pair_result")) == 1
    assert len(_read(upgraded_from_0005, "discrepancy")) == 1
