"""The reliability faults docs/operations.md's "Stripe access" lists: each compared with a clean
run of the same data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlmodel import Session, col, select

from flows.reconcile import reconcile_meters
from models.tables import Discrepancy, PairResult, ReconciliationRun, RunStatus, Trigger
from simulator import StripeSimulator
from tests.fixtures.db import backends
from tests.fixtures.prefect import LEAK_CANARY_KEY
from tests.world import World, build_world, found


@pytest.fixture
def world(flow_env: StripeSimulator, engine: Engine, tmp_path: Path) -> World:
    return build_world(flow_env, engine, tmp_path)


def cli_env(world: World, database_url: str, prefect_server: str, **extra: str) -> dict[str, str]:
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
        **extra,
    )
    return env


def run_command(world: World) -> list[str]:
    window = ["--start", str(world.start), "--end", str(world.end)]
    return [sys.executable, "-m", "meter_recon.cli", "run", *window]


def start_cli_run(world: World, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        run_command(world),
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def duplicates(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                sa.text(
                    "SELECT COUNT(*) FROM (SELECT 1 FROM discrepancy GROUP BY stripe_customer_id,"
                    " meter_id, kind, period_start, period_end, line_item_id, other_line_item_id"
                    " HAVING COUNT(*) > 1) AS d"
                )
            ).scalar_one()
        )


def pair_results(engine: Engine) -> int:
    with Session(engine) as session:
        return len(session.exec(select(PairResult.id)).all())


def test_a_run_killed_midway_then_run_again_leaves_the_rows_of_a_clean_run(
    world: World, engine: Engine, database_url: str, prefect_server: str, tmp_path: Path
) -> None:
    world.simulator.latency = 0.4
    env = cli_env(world, database_url, prefect_server, METER_RECON_MAX_WORKERS="1")
    killed = start_cli_run(world, env, tmp_path)
    deadline = time.monotonic() + 60
    while pair_results(engine) < 3 and time.monotonic() < deadline and killed.poll() is None:
        time.sleep(0.05)
    assert killed.poll() is None, killed.communicate()[0]
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert 3 <= pair_results(engine) < world.pairs

    world.simulator.latency = 0.0
    time.sleep(1.2)
    again = subprocess.run(
        run_command(world),
        env={**env, "METER_RECON_STALE_AFTER_SECONDS": "1", "METER_RECON_MAX_WORKERS": "4"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert found(engine) == world.expected
    assert duplicates(engine) == 0
    with Session(engine) as session:
        runs = session.exec(select(ReconciliationRun).order_by(col(ReconciliationRun.id))).all()
    assert [r.status for r in runs] == [RunStatus.FAILED, RunStatus.COMPLETED]
    assert runs[0].error and "marked failed by a later run" in runs[0].error


def test_two_runs_of_the_same_window_at_once_leave_one_row_per_identity(
    world: World, engine: Engine, database_url: str, prefect_server: str, tmp_path: Path
) -> None:
    world.simulator.latency = 0.05
    env = cli_env(world, database_url, prefect_server, METER_RECON_MAX_WORKERS="4")
    runs = [start_cli_run(world, env, tmp_path) for _ in range(2)]
    outputs = [run.communicate(timeout=180)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert found(engine) == world.expected
    assert duplicates(engine) == 0
    with Session(engine) as session:
        statuses = session.exec(select(ReconciliationRun.status)).all()
        discrepancies = session.exec(select(Discrepancy)).all()
    assert statuses == [RunStatus.COMPLETED, RunStatus.COMPLETED]
    assert len(discrepancies) == len(world.expected)


@pytest.mark.parametrize("backend", [b for b in backends() if b == "postgresql"], indirect=True)
def test_the_database_going_away_costs_at_most_the_pairs_in_flight(
    world: World, engine: Engine, database_url: str
) -> None:
    world.simulator.latency = 0.3
    name = make_url(database_url).database
    admin = make_url(database_url).set(drivername="postgresql", database="postgres")
    stop = threading.Event()
    terminated: list[int] = []

    def terminate_connections() -> None:
        with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
            while not stop.wait(0.35):
                rows = conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (name,),
                ).fetchall()
                terminated.append(len(rows))
                if len(terminated) >= 4:
                    return

    killer = threading.Thread(target=terminate_connections)
    killer.start()
    try:
        summary = reconcile_meters(start=world.start, end=world.end, trigger=Trigger.MANUAL)
    finally:
        stop.set()
        killer.join()
    assert sum(terminated) > 0
    assert summary.status in {"completed", "completed_with_errors"}
    assert duplicates(engine) == 0
    recorded = found(engine)
    assert recorded <= world.expected
    failed_customers = _failed_customers(engine, summary.run_id)
    assert {r.key.stripe_customer_id for r in world.expected - recorded} <= failed_customers

    world.simulator.latency = 0.0
    reconcile_meters(start=world.start, end=world.end, trigger=Trigger.MANUAL)
    assert found(engine) == world.expected


def _failed_customers(engine: Engine, run_id: int) -> set[str]:
    with Session(engine) as session:
        rows = session.exec(
            select(PairResult.stripe_customer_id).where(
                PairResult.run_id == run_id, PairResult.status == "fetch_failed"
            )
        ).all()
    return set(rows)
