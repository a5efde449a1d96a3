from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from meter_recon.cli import main
from models.migrate import current_revision, head_revision
from models.tables import Discrepancy, DiscrepancyStatus, InvoiceLineItem, TrackedPair
from simulator import StripeSimulator
from tasks.record import PairStats, record_pair
from tests.builders import comparison, days, item, new_run
from tests.fixtures.prefect import LEAK_CANARY_KEY

DATA = Path(__file__).with_name("data")
JSON_KEYS = [
    "id",
    "customer",
    "meter",
    "period_start",
    "period_end",
    "kind",
    "line_item_id",
    "other_line_item_id",
    "stripe_quantity",
    "internal_quantity",
    "difference",
    "status",
    "first_seen_run",
    "last_seen_run",
    "amount_at_stake",
    "currency",
    "valuation",
    "likely_cause",
    "cause_detail",
    "settles_at",
    "ledger",
]


def run_cli(*args: str) -> int:
    return main(list(args))


def test_db_upgrade_twice_through_the_console_script(empty_database_url: str) -> None:
    for _ in range(2):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "meter_recon.cli",
                "db",
                "upgrade",
                "--database-url",
                empty_database_url,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert f"revision {head_revision(empty_database_url)}" in done.stdout
    assert current_revision(empty_database_url) == head_revision(empty_database_url)


def test_without_database_url_the_default_is_a_sqlite_file_in_the_working_directory() -> None:
    assert run_cli("db", "upgrade") == 0
    assert Path("meter_recon.db").is_file()


def test_import_of_a_malformed_file_exits_2_naming_each_bad_line(
    database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_cli(
        "import-line-items", str(DATA / "ledger_malformed.csv"), "--database-url", database_url
    )
    err = capsys.readouterr().err
    assert code == 2
    for line in (3, 4, 5, 6, 7, 8, 9):
        assert f"line {line}" in err
    assert "line 2" not in err and "line 10" not in err
    with Session(engine) as session:
        assert session.exec(select(InvoiceLineItem)).all() == []


def test_import_of_a_good_file_reports_counts(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        run_cli("import-line-items", str(DATA / "ledger_good.csv"), "--database-url", database_url)
        == 0
    )
    assert "imported 4 line item(s)" in capsys.readouterr().out


def test_import_of_a_missing_file_exits_2(database_url: str) -> None:
    assert run_cli("import-line-items", "nope.csv", "--database-url", database_url) == 2


def test_pairs_add_then_list(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        run_cli(
            "pairs",
            "add",
            "cus_Z",
            "mtr_api",
            "--from",
            "2026-10-01",
            "--database-url",
            database_url,
        )
        == 0
    )
    assert run_cli("pairs", "list", "--database-url", database_url) == 0
    out = capsys.readouterr().out
    assert "cus_Z" in out and "2026-10-01" in out and "manual" in out


@pytest.mark.parametrize(
    "args",
    [
        ("pairs", "add", "cus_Z", "mtr_api", "--from", "2026-13-01"),
        ("pairs", "add", "cus_Z", "mtr_api", "--from", "2026-10-02", "--to", "2026-10-01"),
        ("pairs", "add", "cus_Z"),
        ("discrepancies", "--status", "closed"),
        ("discrepancies", "--kind", "everything"),
        ("discrepancies", "--cause", "gremlins"),
        ("discrepancies", "--sort", "size"),
        ("nonsense",),
    ],
)
def test_bad_usage_exits_2(database_url: str, args: tuple[str, ...]) -> None:
    assert run_cli(*args, "--database-url", database_url) == 2


def _seed_discrepancies(engine: Engine) -> None:
    run = new_run(engine)
    result = comparison(
        days({"2026-11-01": "7", "2026-11-02": "0.5"}),
        item("li_1", "2026-11-01", "2026-11-02", "5"),
        item("li_2", "2026-10-15", "2026-11-02", "1"),
    )
    record_pair(
        engine=engine,
        run_id=run,
        customer="cus_A",
        meter="mtr_api",
        comparison=result,
        daily={},
        fetched=None,
        stats=PairStats(requests=1, duration_ms=1),
    )


def test_discrepancies_json_has_the_documented_shape(
    database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    _seed_discrepancies(engine)
    assert run_cli("discrepancies", "--format", "json", "--database-url", database_url) == 0
    records = json.loads(capsys.readouterr().out)
    assert records and all(list(r) == JSON_KEYS for r in records)
    unbilled = next(r for r in records if r["kind"] == "unbilled_usage")
    assert unbilled["line_item_id"] is None and unbilled["other_line_item_id"] is None
    assert unbilled["stripe_quantity"] == "0.5"
    assert unbilled["period_start"] == "2026-11-02" and unbilled["period_end"] == "2026-11-03"
    overlap = next(r for r in records if r["kind"] == "overlapping_line_items")
    assert (overlap["line_item_id"], overlap["other_line_item_id"]) == ("li_2", "li_1")
    assert overlap["internal_quantity"] is None and overlap["difference"] is None


def test_discrepancies_csv_has_the_same_columns_in_order(
    database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    _seed_discrepancies(engine)
    assert run_cli("discrepancies", "--format", "csv", "--database-url", database_url) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == JSON_KEYS
    assert len(rows) > 1


def test_discrepancies_filters_by_kind_customer_and_status(
    database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    _seed_discrepancies(engine)
    run_cli(
        "discrepancies",
        "--kind",
        "quantity_mismatch",
        "--format",
        "json",
        "--database-url",
        database_url,
    )
    assert [r["kind"] for r in json.loads(capsys.readouterr().out)] == ["quantity_mismatch"] * 2
    run_cli(
        "discrepancies",
        "--customer",
        "cus_nobody",
        "--format",
        "json",
        "--database-url",
        database_url,
    )
    assert json.loads(capsys.readouterr().out) == []
    run_cli(
        "discrepancies", "--status", "resolved", "--format", "json", "--database-url", database_url
    )
    assert json.loads(capsys.readouterr().out) == []
    run_cli("discrepancies", "--status", "all", "--format", "json", "--database-url", database_url)
    assert len(json.loads(capsys.readouterr().out)) == 4


def test_ack_marks_acknowledged_with_the_note(database_url: str, engine: Engine) -> None:
    _seed_discrepancies(engine)
    with Session(engine) as session:
        target = session.exec(select(Discrepancy)).first()
        assert target is not None and target.id is not None
    assert (
        run_cli(
            "ack",
            str(target.id),
            "--note",
            "credit note CN-12 issued",
            "--database-url",
            database_url,
        )
        == 0
    )
    with Session(engine) as session:
        row = session.get(Discrepancy, target.id)
        assert row is not None
        assert row.status is DiscrepancyStatus.ACKNOWLEDGED
        assert row.note == "credit note CN-12 issued"


def test_ack_of_an_unknown_id_exits_2_with_one_sentence(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("ack", "999999", "--note", "x", "--database-url", database_url) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: There is no discrepancy with id 999999."


def _day(offset: int) -> str:
    from datetime import timedelta

    from flows.windows import utc_today

    return (utc_today() + timedelta(days=offset)).isoformat()


@pytest.mark.parametrize(
    ("start", "end", "sentence"),
    [
        (_day(-1), _day(-3), "The window is reversed"),
        (_day(-2), _day(-2), "The window is empty"),
        (_day(-2), _day(1), "The window ends after today"),
        ("2026-02-30", _day(-1), "--start '2026-02-30' is not a date"),
    ],
)
def test_run_with_a_bad_window_exits_2_with_one_sentence(
    database_url: str, capsys: pytest.CaptureFixture[str], start: str, end: str, sentence: str
) -> None:
    code = run_cli("run", "--start", start, "--end", end, "--database-url", database_url)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith(f"error: {sentence}")
    assert err.count("\n") == 0
    assert err.endswith(".")


def test_run_without_a_stripe_key_exits_2(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_cli("run", "--start", _day(-3), "--end", _day(0), "--database-url", database_url)
    assert code == 2
    assert "STRIPE_API_KEY" in capsys.readouterr().err


def test_run_on_a_database_without_schema_says_to_upgrade(
    empty_database_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_x")
    code = run_cli(
        "run", "--start", _day(-3), "--end", _day(0), "--database-url", empty_database_url
    )
    assert code == 2
    assert "meter-recon db upgrade" in capsys.readouterr().err


def test_run_names_its_own_flags_in_a_window_refusal(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_cli("run", "--start", _day(-1), "--end", _day(-3), "--database-url", database_url)
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        f"error: The window is reversed: --end {_day(-3)} is before --start {_day(-1)}."
    )


CREATED = 1_759_276_800  # 2025-10-01


def _bill_a_stranger(simulator: StripeSimulator) -> None:
    """Stripe bills cus_Stranger on mtr_api; the ledger never heard of it."""
    simulator.add_meter("mtr_api", event_name="api_call")
    simulator.add_price(
        id="price_api",
        currency="usd",
        meter="mtr_api",
        billing_scheme="per_unit",
        unit_amount_decimal="0.25",
    )
    simulator.add_subscription(
        id="sub_S",
        customer="cus_Stranger",
        status="active",
        created=CREATED,
        items=[{"id": "si_S1", "price": "price_api"}],
    )


def test_pairs_sync_tracks_what_stripe_bills_and_says_what_it_added(
    flow_env: StripeSimulator, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _bill_a_stranger(flow_env)
    assert run_cli("pairs", "sync", "--database-url", database_url) == 0
    out = capsys.readouterr().out
    assert "tracking cus_Stranger / mtr_api (source stripe)" in out
    assert "1 billed pair(s) in 1 metered item(s), 1 price(s); 1 newly tracked" in out
    assert run_cli("pairs", "sync", "--database-url", database_url) == 0
    again = capsys.readouterr().out
    assert "tracking" not in again
    assert "0 newly tracked" in again


def test_pairs_list_shows_each_pair_s_source_and_price(
    flow_env: StripeSimulator, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _bill_a_stranger(flow_env)
    assert run_cli("pairs", "add", "cus_Z", "mtr_api", "--database-url", database_url) == 0
    assert run_cli("pairs", "sync", "--database-url", database_url) == 0
    capsys.readouterr()
    assert run_cli("pairs", "list", "--database-url", database_url) == 0
    lines = capsys.readouterr().out.splitlines()
    stranger = next(line for line in lines if "cus_Stranger" in line)
    by_hand = next(line for line in lines if "cus_Z" in line)
    assert "stripe" in stranger and "price_api (usd)" in stranger
    assert "manual" in by_hand and "price_api" not in by_hand


def test_pairs_sync_that_cannot_read_stripe_exits_1_and_changes_nothing(
    flow_env: StripeSimulator,
    database_url: str,
    engine: Engine,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _bill_a_stranger(flow_env)
    flow_env.faults.script(*["500"] * 50, endpoint="subscriptions_list")
    assert run_cli("pairs", "sync", "--database-url", database_url) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("discovery failed: StripeAPIError: ")
    assert LEAK_CANARY_KEY not in err
    with Session(engine) as session:
        assert session.exec(select(TrackedPair)).all() == []
