"""`meter-recon demo`, end to end: two runs in one directory on a Prefect test server."""

from __future__ import annotations

import io
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from flows.windows import utc_today
from meter_recon.cli import main
from meter_recon.demo import (
    DATABASE_FILE,
    DEMO_FILES,
    LEDGER_FILE,
    STATE_FILE,
    STRIPE_FILE,
    DemoOutcome,
    DemoState,
    _disagreements,
    _remove_demo_files,
    _state_for,
    cause_line,
    not_invoiced_line,
    post_meter_events,
    run_demo,
)
from meter_recon.seed import MIN_CUSTOMERS, DemoData, default_window, generate
from models.engine import dispose_engines, get_engine
from models.enums import INTERNAL_LEDGER_CAUSES
from models.ledger import import_line_items
from models.migrate import upgrade
from models.tables import DiscrepancyKind, LikelyCause
from simulator import SimulatorData
from tasks.report import render_terminal

CUSTOMERS = 13
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


def test_first_run_finds_every_planted_discrepancy_and_nothing_else(
    demo_runs: tuple[DemoRun, DemoRun],
) -> None:
    first = demo_runs[0].outcome
    assert first.seeded
    assert first.exit_code == 0
    assert first.disagreements == ()
    before, after = first.summaries
    for summary in (before, after):
        assert summary.status == "completed"
        assert summary.pairs_failed == 0
    by_kind = first.data.expected_by_kind()
    for kind in DiscrepancyKind:
        found = {(ledger, key) for ledger, key in first.found if key.kind is kind}
        assert by_kind[kind], f"nothing of kind {kind} was planted"
        assert found == by_kind[kind], kind
    late = [e for e in first.data.expected if e.after_late_events]
    assert before.new == len(first.data.expected) - len(late)
    assert (after.new, after.reopened, after.resolved) == (len(late), 0, 0)
    assert after.run_id == before.run_id + 1
    assert first.summary.pending > 0 and first.summary.matched > 0


def test_first_run_reports_the_planted_numbers(demo_runs: tuple[DemoRun, DemoRun]) -> None:
    first = demo_runs[0].outcome
    records = {
        (
            r.get("ledger") or "internal",
            r["customer"],
            r["meter"],
            r["kind"],
            r["period_start"],
            r["line_item_id"] or "",
        ): r
        for r in first.open_records
    }
    for expected in first.data.expected:
        key = (
            expected.ledger,
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
        if expected.amount_at_stake is None:
            assert record["amount_at_stake"] is None and record["currency"] is None
        else:
            assert Decimal(record["amount_at_stake"]) == expected.amount_at_stake
            assert record["currency"].lower() == expected.currency
        assert record["likely_cause"] == expected.cause


def test_first_run_gives_one_discrepancy_of_each_likely_cause(
    demo_runs: tuple[DemoRun, DemoRun],
) -> None:
    records = demo_runs[0].outcome.open_records
    causes = Counter(r["likely_cause"] for r in records if r["ledger"] == "internal")
    assert {cause.value for cause in INTERNAL_LEDGER_CAUSES} <= set(causes)
    assert causes[LikelyCause.LATE_USAGE.value] == 1
    assert causes[LikelyCause.WRONG_METER.value] == 2
    stripe = Counter(r["likely_cause"] for r in records if r["ledger"] == "stripe")
    assert {"late_usage", "cancelled_usage", "not_subscribed"} <= set(stripe)


def test_first_run_alerts_finance_through_apprise(demo_runs: tuple[DemoRun, DemoRun]) -> None:
    run = demo_runs[0]
    before, after = run.outcome.alerts
    count = len(run.outcome.data.expected)
    late = len([e for e in run.outcome.data.expected if e.after_late_events])
    assert f"{count - late} new, 0 re-opened" in before["title"]
    assert f"{late} new, 0 re-opened" in after["title"]
    for kind in DiscrepancyKind:
        assert kind.value in before["message"]
    assert sum(s.alerted for s in run.outcome.summaries) == count
    assert f"alert received: {before['title']}" in run.output
    assert f"alert received: {after['title']}" in run.output


def test_first_run_prints_the_report(demo_runs: tuple[DemoRun, DemoRun]) -> None:
    output = demo_runs[0].output
    late = [e for e in demo_runs[0].outcome.data.expected if e.after_late_events]
    assert f"{len(demo_runs[0].outcome.data.expected) - len(late)} new, 0 re-opened" in output
    for kind in DiscrepancyKind:
        assert kind.value in output
    for cause in INTERNAL_LEDGER_CAUSES:
        assert cause.value in output
    planted = len(demo_runs[0].outcome.data.expected)  # both ledgers
    assert f"all {planted} planted discrepancies were found, each with its planted amount" in output
    assert output.rstrip().splitlines()[-1].startswith("Stripe metered but did not invoice: ")
    assert "the invoice was cut before the last day's usage arrived" in output
    assert "posted 2 late meter event(s)" in output and "running the flow again" in output
    assert "--format csv" in output and "meter-recon ack" in output


def test_first_run_ends_with_the_money_the_causes_and_prefects_ui(
    demo_runs: tuple[DemoRun, DemoRun],
) -> None:
    outcome = demo_runs[0].outcome
    assert outcome.report.run_id == outcome.summary.run_id
    assert outcome.report.at_stake == len(outcome.open_records)
    tail = demo_runs[0].output.rsplit("money at stake in the", 1)[1]
    for line in render_terminal(outcome.report)[1:]:
        assert line in tail
    for currency in ("eur", "jpy", "usd"):
        assert f" {currency} not billed, " in tail
    assert cause_line(outcome.open_records) in tail
    assert "prefect server start" in tail and "PREFECT_API_URL=" in tail


def test_second_run_shows_nothing_new_and_sends_no_alert(
    demo_runs: tuple[DemoRun, DemoRun],
) -> None:
    first, second = (run.outcome for run in demo_runs)
    assert not second.seeded
    assert second.exit_code == 0
    assert second.state == first.state
    (summary,) = second.summaries
    assert (summary.new, summary.reopened, summary.resolved) == (0, 0, 0)
    assert summary.run_id == first.summary.run_id + 1
    assert second.alerts == []
    assert second.found == first.found == first.data.expected_identities()
    assert second.disagreements == ()
    assert "0 new, 0 re-opened" in demo_runs[1].output
    assert "no alert sent" in demo_runs[1].output
    assert "posted again the 2 late meter event(s)" in demo_runs[1].output


def test_the_directory_holds_what_a_user_can_reuse(
    demo_runs: tuple[DemoRun, DemoRun], demo_directory: Path
) -> None:
    first = demo_runs[0].outcome
    state = json.loads((demo_directory / STATE_FILE).read_text())
    assert state["anchor"] == first.state.anchor.isoformat()
    assert (state["seed"], state["customers"]) == (SEED, CUSTOMERS)
    loaded = SimulatorData.load(demo_directory / STRIPE_FILE)
    assert loaded.event_count == (
        len(first.data.events) - loaded.duplicates_ignored - loaded.events_canceled
    )
    assert not {e.identifier for e in first.data.late_events} & set(
        (demo_directory / STRIPE_FILE).read_text().split('"')
    )  # the late events are posted, not in the data file
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
    data = generate(anchor=utc_today(), customers=MIN_CUSTOMERS)
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


# -- the self-check, the money and the late events, without a flow run ----------------------


def records_as_planted(data: DemoData) -> list[dict[str, Any]]:
    """The discrepancies listing a run that found exactly what was planted would give."""
    return [
        {
            "id": number,
            "customer": e.customer,
            "meter": e.meter,
            "period_start": e.period_start.isoformat(),
            "period_end": e.period_end.isoformat(),
            "kind": e.kind.value,
            "line_item_id": e.line_item_id or None,
            "other_line_item_id": e.other_line_item_id or None,
            "amount_at_stake": None if e.amount_at_stake is None else str(e.amount_at_stake),
            "currency": e.currency,
            "likely_cause": None if e.cause is None else str(e.cause),
            "ledger": e.ledger,
        }
        for number, e in enumerate(data.expected, start=1)
    ]


def planted_by_identity(data: DemoData) -> dict[Any, Any]:
    return {e.planted_key: e for e in data.expected}


def test_what_was_planted_agrees_with_itself() -> None:
    data = generate(anchor=utc_today(), customers=CUSTOMERS, seed=SEED)
    assert list(_disagreements(records_as_planted(data), planted_by_identity(data))) == []


def test_another_cause_another_amount_a_miss_and_an_extra_each_disagree() -> None:
    data = generate(anchor=utc_today(), customers=CUSTOMERS, seed=SEED)
    records = records_as_planted(data)
    caused = next(r for r in records if r["likely_cause"] == "timezone_shift")
    caused["likely_cause"] = None
    valued = next(r for r in records if r["amount_at_stake"] is not None and r is not caused)
    valued["amount_at_stake"] = str(Decimal(valued["amount_at_stake"]) + Decimal("0.000001"))
    missed = records.pop()
    extra = dict(missed, kind="unbilled_usage", line_item_id=None, period_start="2020-01-01")
    records.append(extra)
    lines = list(_disagreements(records, planted_by_identity(data)))
    assert len(lines) == 4
    assert any(
        "planted with cause timezone_shift" in line and "found with cause none" in line
        for line in lines
    )
    assert any("but not found" in line for line in lines)
    assert any("was found but not planted" in line for line in lines)
    # Apart by less than a cent: the same money shown, so the exact decimals say how.
    assert any(f"(exactly {valued['amount_at_stake']}, planted " in line for line in lines)


def test_causes_are_counted_in_rule_order_with_the_rows_without_one() -> None:
    records: list[dict[str, Any]] = [
        {"amount_at_stake": "1.5", "currency": "usd", "likely_cause": None},
        {"amount_at_stake": "-0.25", "currency": "usd", "likely_cause": "late_usage"},
        {"amount_at_stake": "-3600", "currency": "jpy", "likely_cause": None},
        {"amount_at_stake": None, "currency": None, "likely_cause": "wrong_meter"},
    ]
    assert cause_line(records) == "likely causes: late_usage 1, wrong_meter 1, no cause 2"


def test_the_last_line_says_what_stripe_metered_but_did_not_invoice_per_currency() -> None:
    records: list[dict[str, Any]] = [
        {"ledger": "stripe", "amount_at_stake": "12.25", "currency": "usd"},
        {"ledger": "stripe", "amount_at_stake": "0.1", "currency": "usd"},
        {"ledger": "stripe", "amount_at_stake": "-0.69", "currency": "eur"},  # over-invoiced
        {"ledger": "stripe", "amount_at_stake": "4420", "currency": "jpy"},
        {"ledger": "stripe", "amount_at_stake": None, "currency": None},
        {"ledger": "internal", "amount_at_stake": "5", "currency": "usd"},
    ]
    assert not_invoiced_line(records) == (
        "Stripe metered but did not invoice: 4,420 jpy, 12.35 usd"
    )
    assert not_invoiced_line(records[2:3]) == "Stripe metered but did not invoice: nothing"


def test_a_stripe_ledger_row_is_told_apart_from_the_same_day_in_the_internal_ledger() -> None:
    data = generate(anchor=utc_today(), customers=CUSTOMERS, seed=SEED)
    records = records_as_planted(data)
    internal = next(r for r in records if r["ledger"] == "internal")
    records.append(dict(internal, ledger="stripe", id=len(records) + 1))
    (line,) = _disagreements(records, planted_by_identity(data))
    assert "(stripe ledger)" in line and "was found but not planted" in line


def test_late_events_are_posted_the_way_an_application_reports_usage() -> None:
    from simulator import StripeSimulator

    data = generate(anchor=utc_today(), customers=CUSTOMERS, seed=SEED)
    with StripeSimulator(
        data=SimulatorData.from_json(data.simulator_json()), api_key="sk_test_x"
    ) as stripe:
        before = stripe.data.event_count
        post_meter_events(stripe_url=stripe.url, api_key="sk_test_x", events=data.late_events)
        assert stripe.data.event_count == before + len(data.late_events)
        post_meter_events(stripe_url=stripe.url, api_key="sk_test_x", events=data.late_events)
        assert stripe.data.event_count == before + len(data.late_events)  # same identifiers
        assert stripe.data.duplicates_ignored == 2 + len(data.late_events)


def test_the_closing_lines_point_to_the_users_prefect_server_or_say_how_to_start_one() -> None:
    from meter_recon.demo import prefect_ui_lines

    started = prefect_ui_lines(None)
    assert "prefect server start" in started
    assert "PREFECT_API_URL=http://127.0.0.1:4200/api make demo" in started
    assert "http://10.0.0.5:4200:" in prefect_ui_lines("http://10.0.0.5:4200/api")
