"""The reconciliation flow end to end: simulator over a real socket, a real database, Prefect."""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from sqlalchemy import Engine
from sqlmodel import Session, select

import flows.reconcile as reconcile_module
from flows.reconcile import RunOutcome, reconcile_meters
from integrations.settings import get_settings
from meter_recon.cli import main
from models.engine import get_engine
from models.tables import (
    Discrepancy,
    DiscrepancyStatus,
    PairResult,
    PairStatus,
    ReconciliationRun,
    RunStatus,
    Trigger,
)
from simulator import StripeSimulator
from tests.fixtures.alerts import AlertInbox
from tests.fixtures.prefect import LEAK_CANARY_KEY
from tests.world import World, build_world, found

pytestmark = pytest.mark.usefixtures("fast_task_retries")


@pytest.fixture
def world(flow_env: StripeSimulator, engine: Engine, tmp_path: Path) -> World:
    return build_world(flow_env, engine, tmp_path)


def run_window(world: World) -> RunOutcome:
    return reconcile_meters(start=world.start, end=world.end, trigger=Trigger.MANUAL)


def test_a_run_finds_exactly_the_hand_computed_discrepancies(world: World, engine: Engine) -> None:
    summary = run_window(world)
    assert found(engine) == world.expected
    assert summary.status == "completed"
    assert (summary.pairs_total, summary.pairs_ok, summary.pairs_failed) == (
        world.pairs,
        world.pairs,
        0,
    )
    assert (summary.compared, summary.matched, summary.pending) == (
        world.compared,
        world.matched,
        world.pending,
    )
    assert summary.new == len(world.expected)


def test_the_run_record_keeps_window_trigger_counts_and_flow_run(
    world: World, engine: Engine
) -> None:
    summary = run_window(world)
    with Session(engine) as session:
        run = session.get(ReconciliationRun, summary.run_id)
    assert run is not None
    assert run.status is RunStatus.COMPLETED
    assert (run.window_start, run.window_end, run.trigger) == (
        world.start,
        world.end,
        Trigger.MANUAL,
    )
    assert run.pairs_total == world.pairs
    assert run.pairs_failed == 0
    assert run.discrepancies_new == len(world.expected)
    assert run.counts["by_kind"] == {
        "missing_in_stripe": 1,
        "overlapping_line_items": 1,
        "quantity_mismatch": 3,
        "unbilled_usage": 1,
    }
    assert run.flow_run_id
    assert run.finished_at
    assert run.finished_at >= run.started_at
    assert run.parameters["start"] == world.start.isoformat()


def _rows(engine: Engine) -> list[dict[str, Any]]:
    with Session(engine) as session:
        rows = session.exec(select(Discrepancy).order_by(Discrepancy.id)).all()  # type: ignore[arg-type]
        return [r.model_dump(exclude={"last_seen_run", "updated_at"}) for r in rows]


def test_a_rerun_is_idempotent(world: World, engine: Engine) -> None:
    run_window(world)
    before = _rows(engine)
    again = run_window(world)
    assert _rows(engine) == before
    assert (again.new, again.reopened, again.resolved) == (0, 0, 0)


def test_usage_snapshots_explain_every_discrepancy(world: World, engine: Engine) -> None:
    run_window(world)
    with Session(engine) as session:
        snapshot = session.execute(
            sa.text(
                "SELECT day, aggregated_value FROM usage_snapshot "
                "WHERE stripe_customer_id = 'cus_mismatch' ORDER BY day"
            )
        ).all()
    assert [str(v) for _, v in snapshot] == ["10", "5"]


def test_failing_pairs_complete_with_errors_and_the_others_are_recorded(
    world: World, engine: Engine, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run_window(world)
    before = {r for r in found(engine) if r.key.stripe_customer_id == "cus_mismatch"}
    world.simulator.faults.script(*["500"] * 200, customer="cus_mismatch")
    code = main(
        [
            "run",
            "--start",
            str(world.start),
            "--end",
            str(world.end),
            "--database-url",
            database_url,
        ]
    )
    assert code == 1
    assert "completed_with_errors" in capsys.readouterr().out
    with Session(engine) as session:
        run = session.exec(
            select(ReconciliationRun).order_by(sa.desc(ReconciliationRun.id))
        ).first()  # type: ignore[arg-type]
        assert run is not None
        results = {
            r.stripe_customer_id: r
            for r in session.exec(select(PairResult).where(PairResult.run_id == run.id))
        }
    assert run.status is RunStatus.COMPLETED_WITH_ERRORS
    assert run.pairs_failed == 1
    failed = results["cus_mismatch"]
    assert failed.status is PairStatus.FETCH_FAILED
    assert failed.error
    assert "500" in failed.error
    assert {r.status for c, r in results.items() if c != "cus_mismatch"} == {PairStatus.OK}
    assert {r for r in found(engine) if r.key.stripe_customer_id == "cus_mismatch"} == before


def test_faults_and_a_429_storm_give_the_same_discrepancies_as_a_clean_run(
    world: World, engine: Engine
) -> None:
    from tasks.fetch import configure_clients

    configure_clients(
        backoff_base=0.2, backoff_cap=1.0, timeout=1.0, max_attempts=20, max_retry_seconds=60.0
    )
    sim = world.simulator
    sim.faults.set_random(0.3, ["500", "503", "reset", "timeout", "malformed", "409"], seed=11)
    sim.faults.timeout_delay = 1.5
    sim.rate_limit = 4
    summary = run_window(world)
    assert summary.status == "completed"
    assert sim.stats.faults + sim.stats.rate_limited > 0
    assert found(engine) == world.expected


def test_prefect_history_holds_every_task_run_and_both_artifacts(world: World) -> None:
    summary = run_window(world)
    flow_run_id = flow_run_id_of(summary)
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
        artifacts = client.read_artifacts()
    assert task_run_kinds(task_runs) == {
        "refresh-meters": 1,
        "discover-pairs": 1,  # no sync-invoices: `flow_env` compares the internal ledger only
        "reconcile": world.pairs,
        "diagnose-wrong-meter": 1,
        "publish-report": 1,
        "alert-finance": 1,
    }
    assert all(t.state and t.state.is_completed() for t in task_runs)
    assert summary.task_runs_recorded == len(task_runs) == summary.task_runs_expected
    keys = {a.key for a in artifacts if a.flow_run_id == flow_run_id}
    assert keys == {"meter-recon-run-summary", "meter-recon-open-discrepancies"}


def test_a_run_comparing_stripes_invoices_records_its_sync_task_run_too(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METER_RECON_LEDGERS", "internal,stripe")
    summary = run_window(world)
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id_of(summary)]))
        )
    assert task_run_kinds(task_runs)["sync-invoices"] == 1
    assert summary.task_runs_recorded == len(task_runs) == summary.task_runs_expected


def test_a_run_with_failed_pairs_also_expects_and_records_their_task_run(world: World) -> None:
    world.simulator.faults.script(*["500"] * 200, customer="cus_missing")
    summary = run_window(world)
    assert summary.pairs_failed == 1
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id_of(summary)]))
        )
    assert task_run_kinds(task_runs)["record-failed-pairs"] == 1
    assert summary.task_runs_recorded == len(task_runs) == summary.task_runs_expected


def task_run_kinds(task_runs: list[Any]) -> dict[str, int]:
    """How many task runs of each task ("reconcile" for the fan-out, named per pair)."""
    kinds = Counter(
        "reconcile" if t.name.startswith("reconcile ") else t.name.rsplit("-", 1)[0]
        for t in task_runs
    )
    return dict(kinds)


def flow_run_id_of(summary: RunOutcome) -> uuid.UUID:
    with Session(get_engine(get_settings().database_url)) as session:
        run = session.get(ReconciliationRun, summary.run_id)
    assert run is not None
    assert run.flow_run_id
    return uuid.UUID(run.flow_run_id)


def test_finance_is_alerted_once_per_discrepancy(
    world: World, engine: Engine, alert_inbox: AlertInbox
) -> None:
    first = run_window(world)
    assert first.alerted == len(world.expected)
    assert len(alert_inbox.messages) == 1
    message = alert_inbox.messages[0]
    assert f"{len(world.expected)} new" in message["title"]
    assert "cus_mismatch / mtr_api" in message["message"]
    second = run_window(world)
    assert second.alerted == 0
    assert len(alert_inbox.messages) == 1


def test_a_failed_delivery_is_sent_by_the_next_run(
    world: World, engine: Engine, alert_inbox: AlertInbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks import alert as alert_module

    monkeypatch.setattr(
        reconcile_module,
        "alert_finance",
        alert_module.alert_finance.with_options(retry_delay_seconds=0),
    )
    alert_inbox.fail_with = 500
    first = run_window(world)
    assert first.status == "completed"
    assert first.alerted == 0
    with Session(engine) as session:
        assert all(r.alerted_at is None for r in session.exec(select(Discrepancy)))
    alert_inbox.fail_with = None
    second = run_window(world)
    assert second.alerted == len(world.expected)
    assert len(alert_inbox.messages) == 1


def test_a_reopened_discrepancy_is_alerted_again(
    world: World, engine: Engine, alert_inbox: AlertInbox, database_url: str
) -> None:
    run_window(world)
    with Session(engine) as session:
        target = session.exec(
            select(Discrepancy).where(Discrepancy.line_item_id == "li_mismatch")
        ).one()
    assert main(["ack", str(target.id), "--note", "known", "--database-url", database_url]) == 0
    world.simulator.add_event(
        "api_call",
        "cus_mismatch",
        __import__("tests.world", fromlist=["noon"]).noon(world.start, 55),
        "1",
    )
    summary = run_window(world)
    assert summary.reopened == 1
    assert "1 re-opened" in alert_inbox.messages[-1]["title"]
    with Session(engine) as session:
        row = session.get(Discrepancy, target.id)
    assert row is not None
    assert row.status is DiscrepancyStatus.OPEN
    assert row.stripe_quantity == 16


def test_the_key_appears_in_no_log_artifact_alert_or_table(
    world: World, engine: Engine, alert_inbox: AlertInbox, caplog: pytest.LogCaptureFixture
) -> None:
    world.simulator.faults.script(*["500"] * 200, customer="cus_missing")
    with caplog.at_level(logging.DEBUG):
        summary = run_window(world)
    assert summary.pairs_failed == 1
    texts = [record.getMessage() for record in caplog.records]
    texts += [json.dumps(m) for m in alert_inbox.messages]
    with get_client(sync_client=True) as client:
        texts += [json.dumps(a.data, default=str) for a in client.read_artifacts()]
        texts += [str(log.message) for log in client.read_logs()]
    with engine.connect() as connection:
        for table in sa.inspect(engine).get_table_names():
            texts += [
                repr(tuple(row)) for row in connection.execute(sa.text(f"SELECT * FROM {table}"))
            ]
    assert texts
    assert not [t for t in texts if LEAK_CANARY_KEY in t or "LEAKCANARY" in t]


def test_pairs_grouped_per_task_are_still_recorded_one_by_one(
    world: World, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METER_RECON_PAIRS_PER_TASK", "3")
    get_settings.cache_clear()
    summary = run_window(world)
    assert found(engine) == world.expected
    with Session(engine) as session:
        run = session.get(ReconciliationRun, summary.run_id)
        results = session.exec(select(PairResult).where(PairResult.run_id == summary.run_id)).all()
    assert run is not None
    assert run.parameters["pairs_per_task"] == 3
    assert len(results) == world.pairs
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id_of(summary)]))
        )
    assert sum(t.name.startswith("reconcile ") for t in task_runs) == 3  # 8 pairs, 3 per task
