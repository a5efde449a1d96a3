"""`meter-recon demo`, end to end: two runs in one directory on a Prefect test server."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from rich.console import Console

from meter_recon.cli import main
from meter_recon.demo import (
    DATABASE_FILE,
    DEMO_FILES,
    LEDGER_FILE,
    STATE_FILE,
    STRIPE_FILE,
    DemoOutcome,
    DemoState,
    _remove_demo_files,
    _state_for,
    run_demo,
)
from meter_recon.importer import import_line_items
from meter_recon.seed import default_window, generate
from meter_recon.simulator import SimulatorData
from meter_recon.windows import utc_today
from models.engine import dispose_engines, get_engine
from models.migrate import upgrade
from models.tables import DiscrepancyKind

CUSTOMERS = 8
SEED = 3


@dataclass(frozen=True)
class DemoRun:
    outcome: DemoOutcome
    output: str


@pytest.fixture(scope="module")
def demo_directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demo") / "demo"


@pytest.fixture(scope="module")
def demo_runs(prefect_server: str, demo_directory: Path) -> Iterator[tuple[DemoRun, DemoRun]]:
    """The demo run twice in the same directory, as `make demo` twice would."""
    before = {k: v for k, v in os.environ.items() if k.startswith(("STRIPE_", "METER_RECON_"))}
    runs = []
    for _ in range(2):
        buffer = io.StringIO()
        outcome = run_demo(
            directory=demo_directory,
            customers=CUSTOMERS,
            seed=SEED,
            console=Console(file=buffer, width=200, highlight=False),
        )
        runs.append(DemoRun(outcome, buffer.getvalue()))
    after = {k: v for k, v in os.environ.items() if k.startswith(("STRIPE_", "METER_RECON_"))}
    assert after == before, "the demo must leave the process environment as it found it"
    yield runs[0], runs[1]
    dispose_engines()


@pytest.mark.slow
def test_first_run_finds_every_planted_discrepancy_and_nothing_else(
    demo_runs: tuple[DemoRun, DemoRun],
) -> None:
    first = demo_runs[0].outcome
    assert first.seeded
    assert first.exit_code == 0
    assert first.summary.status == "completed"
    assert first.summary.pairs_failed == 0
    by_kind = first.data.expected_by_kind()
    for kind in DiscrepancyKind:
        found = {identity for identity in first.found if identity[2] is kind}
        assert by_kind[kind], f"nothing of kind {kind} was planted"
        assert found == by_kind[kind], kind
    assert first.summary.new == len(first.data.expected)
    assert first.summary.pending > 0 and first.summary.matched > 0


@pytest.mark.slow
def test_first_run_reports_the_planted_numbers(demo_runs: tuple[DemoRun, DemoRun]) -> None:
    first = demo_runs[0].outcome
    records = {
        (r["customer"], r["meter"], r["kind"], r["period_start"], r["line_item_id"] or ""): r
        for r in first.open_records
    }
    for expected in first.data.expected:
        key = (
            expected.customer,
            expected.meter,
            expected.kind.value,
            expected.period_start.isoformat(),
            expected.line_item_id,
        )
        record = records[key]
        assert Decimal(record["stripe_quantity"]) == expected.stripe_quantity
        if expected.internal_quantity is None:
            assert record["internal_quantity"] is None
        else:
            assert Decimal(record["internal_quantity"]) == expected.internal_quantity


@pytest.mark.slow
def test_first_run_alerts_finance_through_apprise(demo_runs: tuple[DemoRun, DemoRun]) -> None:
    run = demo_runs[0]
    (alert,) = run.outcome.alerts
    count = len(run.outcome.data.expected)
    assert f"{count} new, 0 re-opened" in alert["title"]
    for kind in DiscrepancyKind:
        assert kind.value in alert["message"]
    assert run.outcome.summary.alerted == count
    assert f"alert received: {alert['title']}" in run.output


@pytest.mark.slow
def test_first_run_prints_the_report(demo_runs: tuple[DemoRun, DemoRun]) -> None:
    output = demo_runs[0].output
    assert f"{len(demo_runs[0].outcome.data.expected)} new, 0 re-opened" in output
    for kind in DiscrepancyKind:
        assert kind.value in output
    assert "all 13 planted discrepancies were found" in output
    assert "the invoice was cut before the last day's usage arrived" in output
    assert "--format csv" in output and "meter-recon ack" in output


@pytest.mark.slow
def test_second_run_shows_nothing_new_and_sends_no_alert(
    demo_runs: tuple[DemoRun, DemoRun],
) -> None:
    first, second = (run.outcome for run in demo_runs)
    assert not second.seeded
    assert second.exit_code == 0
    assert second.state == first.state
    assert (second.summary.new, second.summary.reopened, second.summary.resolved) == (0, 0, 0)
    assert second.summary.run_id == first.summary.run_id + 1
    assert second.alerts == []
    assert second.found == first.found == first.data.expected_identities()
    assert "0 new, 0 re-opened" in demo_runs[1].output
    assert "no alert sent" in demo_runs[1].output


@pytest.mark.slow
def test_the_directory_holds_what_a_user_can_reuse(
    demo_runs: tuple[DemoRun, DemoRun], demo_directory: Path
) -> None:
    first = demo_runs[0].outcome
    state = json.loads((demo_directory / STATE_FILE).read_text())
    assert state["anchor"] == first.state.anchor.isoformat()
    assert (state["seed"], state["customers"]) == (SEED, CUSTOMERS)
    loaded = SimulatorData.load(demo_directory / STRIPE_FILE)
    assert loaded.event_count == len(first.data.events) - loaded.duplicates_ignored
    data = generate(anchor=first.state.anchor, customers=CUSTOMERS, seed=SEED)
    assert (demo_directory / LEDGER_FILE).read_text() == data.ledger_csv()
    assert first.database_url == f"sqlite:///{demo_directory / DATABASE_FILE}"


def test_too_few_customers_is_bad_input(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    assert main(["demo", "--directory", str(directory), "--customers", "3"]) == 2
    assert not (directory / STATE_FILE).exists()


def test_a_ledger_without_its_state_file_asks_for_fresh(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "demo"
    directory.mkdir()
    url = f"sqlite:///{directory / DATABASE_FILE}"
    upgrade(url)
    data = generate(anchor=utc_today(), customers=5)
    import_line_items(engine=get_engine(url), path=data.write_ledger_csv(tmp_path / "l.csv"))
    assert main(["demo", "--directory", str(directory)]) == 2
    assert "--fresh" in capsys.readouterr().err
    dispose_engines()


def test_fresh_removes_only_the_demos_files(tmp_path: Path) -> None:
    for name in (*DEMO_FILES, "notes.txt"):
        (tmp_path / name).write_text("x")
    _remove_demo_files(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_a_stored_demo_keeps_its_own_seed_and_customers(tmp_path: Path) -> None:
    anchor = utc_today()
    stored = DemoState(anchor=anchor, seed=9, customers=6, window=default_window(anchor))
    (tmp_path / STATE_FILE).write_text(stored.to_json())
    buffer = io.StringIO()
    state = _state_for(
        tmp_path,
        customers=36,
        seed=7,
        database_url=f"sqlite:///{tmp_path / DATABASE_FILE}",
        console=Console(file=buffer, width=200),
    )
    assert state == stored
    assert "--customers 6 --seed 9" in buffer.getvalue()


def test_a_state_file_from_the_future_asks_for_fresh(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    anchor = utc_today() + timedelta(days=2)
    state = DemoState(anchor=anchor, seed=7, customers=6, window=default_window(anchor))
    (tmp_path / STATE_FILE).write_text(state.to_json())
    assert main(["demo", "--directory", str(tmp_path)]) == 2
    assert "--fresh" in capsys.readouterr().err


def test_the_tests_alert_inbox_is_the_demos() -> None:
    from meter_recon.demo import AlertInbox
    from tests.fixtures.alerts import AlertInbox as TestsInbox

    assert TestsInbox is AlertInbox


def test_the_inbox_keeps_each_post_as_sent_and_as_a_message() -> None:
    import httpx

    from meter_recon.demo import AlertInbox

    with AlertInbox() as inbox:
        url = inbox.apprise_url.replace("json://", "http://")
        assert httpx.post(url, content=b'{"title": "2 new"}').status_code == 200
        assert httpx.post(url, content=b"not json").status_code == 200
    assert inbox.raw == [b'{"title": "2 new"}', b"not json"]
    assert inbox.messages == [{"title": "2 new"}, {"raw": "not json"}]


def test_an_inbox_told_to_fail_answers_with_that_status_and_keeps_nothing() -> None:
    import httpx

    from meter_recon.demo import AlertInbox

    with AlertInbox() as inbox:
        inbox.fail_with = 503
        url = inbox.apprise_url.replace("json://", "http://")
        assert httpx.post(url, content=b'{"title": "x"}').status_code == 503
    assert inbox.messages == [] and inbox.raw == []
