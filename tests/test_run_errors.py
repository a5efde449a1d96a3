"""`meter-recon run` stops at once, in one sentence with exit code 2, when Stripe refuses the
API key or the database is lost mid-run: not after failing every pair one by one."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

import flows.reconcile as reconcile_module
from meter_recon.cli import main
from meter_recon.errors import EXIT_BAD_INPUT
from models.tables import PairResult, ReconciliationRun, RunStatus
from simulator import StripeSimulator
from tests.fixtures.alerts import AlertInbox
from tests.fixtures.db import backends, drop_postgres_database, postgres_url
from tests.fixtures.prefect import LEAK_CANARY_KEY
from tests.world import World, build_world

OTHER_KEY = "sk_test_NOTTHEKEY_9f8e7d6c5b4a39281706"


@pytest.fixture
def world(flow_env: StripeSimulator, engine: Engine, tmp_path: Path) -> World:
    return build_world(flow_env, engine, tmp_path)


def run_cli(world: World, database_url: str) -> int:
    return main(
        [
            "run",
            "--start",
            world.start.isoformat(),
            "--end",
            world.end.isoformat(),
            "--database-url",
            database_url,
        ]
    )


def only_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_a_key_stripe_refuses_ends_the_run_at_once_in_one_sentence(
    world: World,
    engine: Engine,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert world.simulator.api_key == LEAK_CANARY_KEY  # the simulator takes only its own key
    monkeypatch.setenv("STRIPE_API_KEY", OTHER_KEY)
    assert run_cli(world, database_url) == EXIT_BAD_INPUT
    err = only_line(capsys)
    assert err.startswith("error: Stripe refused the API key (401")
    assert "check STRIPE_API_KEY" in err and OTHER_KEY not in err and "NOTTHEKEY" not in err
    # One request, the meters: no retry, no discovery, not one pair tried.
    assert world.simulator.stats.unauthorized == 1
    assert world.simulator.stats.counts["event_summaries"] == 0
    with Session(engine) as session:
        (run,) = session.exec(select(ReconciliationRun)).all()
        pairs = session.exec(select(PairResult)).all()
    assert run.status is RunStatus.FAILED
    assert run.error is not None and "Stripe refused the API key (401" in run.error
    assert pairs == []


@pytest.mark.parametrize("backend", [b for b in backends() if b == "postgresql"], indirect=True)
def test_a_database_lost_mid_run_fails_the_run_in_one_sentence(
    world: World,
    database_url: str,
    alert_inbox: AlertInbox,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The database goes the moment finance's alert arrives: every pair is reconciled, the
    alert and the run's end are not recorded."""
    base = postgres_url()
    assert base is not None
    keep = alert_inbox.keep

    def drop_the_database_then_keep(body: bytes) -> None:
        drop_postgres_database(base, database_url)
        keep(body)

    monkeypatch.setattr(alert_inbox, "keep", drop_the_database_then_keep)
    monkeypatch.setattr(reconcile_module, "alert_finance", _alert_without_delays())
    assert run_cli(world, database_url) == EXIT_BAD_INPUT
    err = only_line(capsys)
    assert "error: Cannot reach the database postgresql://" in err
    assert "does not exist" in err and "that the server is running" in err
    assert alert_inbox.messages  # the run did get that far


def _alert_without_delays() -> object:
    from tasks.alert import alert_finance

    return alert_finance.with_options(retry_delay_seconds=0)


def test_the_failed_run_keeps_the_sentence_as_its_error(
    world: World,
    engine: Engine,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """What `meter-recon report` and Prefect's UI show of the refused key is the same sentence."""
    monkeypatch.setenv("STRIPE_API_KEY", OTHER_KEY)
    run_cli(world, database_url)
    printed = only_line(capsys).removeprefix("error: ").strip()
    with Session(engine) as session:
        run = session.exec(select(ReconciliationRun).order_by(col(ReconciliationRun.id))).one()
    assert run.error == f"KeyRefused: {printed}"


def test_pairs_sync_with_a_key_stripe_refuses_says_so_in_one_sentence(
    simulator: StripeSimulator,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from integrations.settings import get_settings
    from tasks.fetch import close_clients

    simulator.api_key = LEAK_CANARY_KEY
    monkeypatch.setenv("STRIPE_API_KEY", OTHER_KEY)
    monkeypatch.setenv("STRIPE_API_BASE", simulator.url)
    get_settings.cache_clear()
    try:
        assert main(["pairs", "sync", "--database-url", database_url]) == EXIT_BAD_INPUT
    finally:
        close_clients()
    err = only_line(capsys)
    assert err.startswith("error: Stripe refused the API key (401") and OTHER_KEY not in err
    assert simulator.stats.unauthorized == 1
