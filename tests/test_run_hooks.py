"""A run that fails or crashes as a whole tells finance once; a missed nightly is told by the
next run. Real flows on Prefect's test server, the simulator, a real database and inbox."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.states import Crashed, Failed
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col, select

import flows.reconcile as reconcile_module
from flows.hooks import alert_run_ended
from flows.reconcile import reconcile_meters, refresh_meters
from flows.windows import utc_today
from integrations.settings import get_settings
from models.tables import PairResult, ReconciliationRun, RunStatus, Trigger
from models.types import utcnow
from simulator import StripeSimulator
from tasks.fetch import KeyRefused
from tests.fixtures.alerts import AlertInbox
from tests.fixtures.prefect import LEAK_CANARY_KEY
from tests.world import World, build_world

UNREACHABLE = "postgresql://recon:hunter2pw@127.0.0.1:1/recon"


@pytest.fixture
def world(flow_env: StripeSimulator, engine: Engine, tmp_path: Path) -> World:
    return build_world(flow_env, engine, tmp_path)


def runs(engine: Engine) -> list[ReconciliationRun]:
    with Session(engine) as session:
        return list(
            session.exec(select(ReconciliationRun).order_by(col(ReconciliationRun.id))).all()
        )


def test_a_run_whose_database_is_unreachable_alerts_once_naming_its_flow_run(
    flow_env: StripeSimulator, alert_inbox: AlertInbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METER_RECON_DATABASE_URL", UNREACHABLE)
    get_settings.cache_clear()
    start, end = utc_today() - timedelta(days=3), utc_today()
    with pytest.raises(OperationalError):
        reconcile_meters(start=start, end=end, trigger=Trigger.MANUAL)
    assert len(alert_inbox.messages) == 1
    message = alert_inbox.messages[0]
    assert message["title"].startswith("meter-recon flow run ")
    assert message["title"].endswith(" failed")
    body = message["message"]
    assert f"over {start}..{end} (UTC days, end exclusive) failed: " in body
    assert "connect" in body.lower()
    assert "/runs/flow-run/" in body
    assert "hunter2pw" not in body + message["title"]


def test_a_run_whose_meter_refresh_raises_alerts_once_with_its_run_id_and_no_key(
    world: World, engine: Engine, alert_inbox: AlertInbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconcile_module, "refresh_meters", refresh_meters.with_options(retries=0))
    world.simulator.api_key = "sk_test_someoneelse_0000000000000000"  # ours gets a 401
    with pytest.raises(KeyRefused):
        reconcile_meters(start=world.start, end=world.end, trigger=Trigger.MANUAL)
    (run,) = runs(engine)
    assert run.status is RunStatus.FAILED
    assert len(alert_inbox.messages) == 1
    message = alert_inbox.messages[0]
    assert message["title"] == f"meter-recon run {run.id} failed"
    body = message["message"]
    assert body.startswith(
        f"meter-recon run {run.id} over {world.start}..{world.end} (UTC days, end exclusive) "
        "failed: Flow run encountered an exception: "
    )
    assert body.endswith(f"/runs/flow-run/{run.flow_run_id}.")
    assert LEAK_CANARY_KEY not in body


def cli_env(
    world: World, database_url: str, prefect_server: str, inbox: AlertInbox
) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("METER_RECON_", "PREFECT_", "STRIPE_"))
    }
    env.update(
        PREFECT_API_URL=prefect_server,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        STRIPE_API_KEY=LEAK_CANARY_KEY,
        STRIPE_API_BASE=world.simulator.url,
        METER_RECON_DATABASE_URL=database_url,
        METER_RECON_ALERT_URLS=inbox.apprise_url,
        METER_RECON_MAX_WORKERS="1",
    )
    return env


def pair_results(engine: Engine) -> int:
    with Session(engine) as session:
        return len(session.exec(select(PairResult.id)).all())


def test_a_run_terminated_midway_is_crashed_and_alerts_once(
    world: World,
    engine: Engine,
    database_url: str,
    prefect_server: str,
    alert_inbox: AlertInbox,
    tmp_path: Path,
) -> None:
    world.simulator.latency = 0.4
    window = ["--start", str(world.start), "--end", str(world.end)]
    process = subprocess.Popen(
        [sys.executable, "-m", "meter_recon.cli", "run", *window],
        env=cli_env(world, database_url, prefect_server, alert_inbox),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    while pair_results(engine) < 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, process.communicate()[0]
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=60)[0]
    assert process.returncode != 0, output
    (run,) = runs(engine)
    assert run.status is RunStatus.FAILED
    assert len(alert_inbox.messages) == 1, output
    message = alert_inbox.messages[0]
    assert message["title"] == f"meter-recon run {run.id} crashed", output
    assert f"over {world.start}..{world.end}" in message["message"]
    assert run.flow_run_id
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(uuid.UUID(run.flow_run_id))
    assert flow_run.state is not None and flow_run.state.is_crashed()
    time.sleep(0.5)  # nothing else arrives late
    assert len(alert_inbox.messages) == 1


def test_the_first_run_after_days_without_a_completed_one_says_so_first_in_its_alert(
    world: World, engine: Engine, alert_inbox: AlertInbox
) -> None:
    finished = utcnow() - timedelta(days=3, hours=4, minutes=1)
    with Session(engine) as session:
        last = ReconciliationRun(
            window_start=world.start,
            window_end=world.end,
            trigger=Trigger.SCHEDULED,
            status=RunStatus.COMPLETED,
            started_at=finished - timedelta(minutes=5),
            finished_at=finished,
        )
        session.add(last)
        session.commit()
        last_id = last.id
    reconcile_meters(start=world.start, end=world.end, trigger=Trigger.MANUAL)
    line = (
        f"The last completed run finished 3 days 4 hours ago (run {last_id}, "
        f"{finished:%Y-%m-%d %H:%M} UTC)."
    )
    assert len(alert_inbox.messages) == 1
    assert alert_inbox.messages[0]["message"].splitlines()[0] == line
    current = runs(engine)[-1]
    assert current.counts["last_completed"]["run_id"] == last_id
    reconcile_meters(start=world.start, end=world.end, trigger=Trigger.MANUAL)
    assert len(alert_inbox.messages) == 1  # the gap is closed: nothing new, nothing sent


def ended_flow_run(parameters: dict[str, object]) -> FlowRun:
    return FlowRun(flow_id=uuid.uuid4(), name="crafty-fox", parameters=parameters)


@pytest.mark.usefixtures("prefect_server")  # the hook logs to the flow run on the API
def test_a_nightly_run_without_a_record_is_alerted_with_its_nightly_window(
    database_url: str, alert_inbox: AlertInbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METER_RECON_DATABASE_URL", database_url)
    get_settings.cache_clear()
    flow_run = ended_flow_run({"lookback_days": 5})
    alert_run_ended(reconcile_meters, flow_run, Crashed(message="Execution was interrupted."))
    (message,) = alert_inbox.messages
    window = f"{utc_today() - timedelta(days=5)}..{utc_today()}"
    assert message["message"].startswith(
        f"meter-recon flow run crafty-fox ({flow_run.id}) over {window} (UTC days, end "
        "exclusive) crashed: Execution was interrupted"
    )


@pytest.mark.usefixtures("prefect_server")
def test_a_hook_whose_alert_is_refused_logs_it_and_does_not_raise(
    database_url: str,
    alert_inbox: AlertInbox,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("METER_RECON_DATABASE_URL", database_url)
    get_settings.cache_clear()
    alert_inbox.fail_with = 500
    alert_run_ended(reconcile_meters, ended_flow_run({}), Failed(message="boom"))
    assert alert_inbox.messages == []
    assert "could not alert finance that the run failed: AlertNotDelivered" in caplog.text
