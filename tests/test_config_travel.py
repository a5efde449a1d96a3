"""Run configuration travels one way: read once where a run starts, frozen into `RunConfig`,
handed to the tasks as arguments, recorded without secrets; never through the environment."""

from __future__ import annotations

import ast
import json
import pickle
from collections import Counter
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from pydantic import SecretStr
from sqlmodel import Session

from flows.reconcile import reconcile_meters
from integrations.settings import Settings, get_settings
from models.engine import get_engine
from models.tables import ReconciliationRun, Trigger
from simulator import StripeSimulator
from tasks.reconcile_pairs import RunContext
from tasks.run_config import RunConfig
from tests.fixtures.prefect import LEAK_CANARY_KEY
from tests.world import build_world

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("models", "integrations", "simulator", "tasks", "flows", "meter_recon")
#: The only functions of tasks/ and flows/ that may read the settings: the flows' entries,
#: and the failure hook, which Prefect calls with only (flow, flow_run, state).
ENTRY_POINTS = {
    ("flows/reconcile.py", "reconcile_meters"),
    ("flows/triage.py", "triage_discrepancies"),
    ("flows/hooks.py", "alert_run_ended"),
}
ENVIRON_WRITES = {"update", "pop", "setdefault", "clear", "popitem"}
PASSWORD = "pw-CANARY-8c1f"
ALERT_TOKEN = "tok-CANARY-77ab"


def modules(*folders: str) -> Iterator[tuple[str, ast.Module]]:
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            yield name, ast.parse(path.read_text(encoding="utf-8"), filename=name)


def _is_environ(node: ast.AST) -> bool:
    """`os.environ`, or `environ` imported from os."""
    if isinstance(node, ast.Attribute):
        return node.attr == "environ" and isinstance(node.value, ast.Name) and node.value.id == "os"
    return isinstance(node, ast.Name) and node.id == "environ"


def environment_writes(tree: ast.Module) -> list[tuple[int, str]]:
    """Each line that changes the process environment or clears the settings cache."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AugAssign | ast.Delete):
            targets = node.targets if isinstance(node, ast.Assign | ast.Delete) else [node.target]
            if any(isinstance(t, ast.Subscript) and _is_environ(t.value) for t in targets):
                found.append((node.lineno, "os.environ[...] written or deleted"))
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        owner = func.value if isinstance(func, ast.Attribute) else None
        if owner is not None and _is_environ(owner) and name in ENVIRON_WRITES:
            found.append((node.lineno, f"os.environ.{name}"))
        if name in {"putenv", "unsetenv", "cache_clear"}:
            found.append((node.lineno, f"{name}()"))
    return found


def settings_reads(tree: ast.Module) -> list[str | None]:
    """The top-level function each `get_settings` use of a module is in (None: outside any)."""
    reads: list[str | None] = []
    for statement in tree.body:
        owner = statement.name if isinstance(statement, ast.FunctionDef) else None
        for node in ast.walk(statement):
            if (isinstance(node, ast.Name) and node.id == "get_settings") or (
                isinstance(node, ast.Attribute) and node.attr == "get_settings"
            ):
                reads.append(owner)
    return reads


def test_the_scan_sees_every_way_of_writing_the_environment() -> None:
    tree = ast.parse(
        "import os\n"
        "os.environ['A'] = '1'\n"
        "del os.environ['A']\n"
        "os.environ.update(A='1')\n"
        "os.environ.pop('A', None)\n"
        "os.environ.setdefault('A', '1')\n"
        "os.putenv('A', '1')\n"
        "get_settings.cache_clear()\n"
        "os.environ.get('A')\n"
    )
    assert [line for line, _ in environment_writes(tree)] == [2, 3, 4, 5, 6, 7, 8]


def test_product_code_never_writes_the_environment_nor_clears_the_settings_cache() -> None:
    offences = [
        f"{name}:{line}: {what}"
        for name, tree in modules(*PRODUCT)
        for line, what in environment_writes(tree)
    ]
    assert offences == []


def test_tasks_and_flows_read_the_settings_only_at_the_flows_entries_once_each() -> None:
    reads = Counter(
        (name, owner) for name, tree in modules("tasks", "flows") for owner in settings_reads(tree)
    )
    assert reads == dict.fromkeys(ENTRY_POINTS, 1)


def secret_settings() -> Settings:
    return Settings(
        database_url=f"postgresql://meter:{PASSWORD}@127.0.0.1:1/meter_recon",
        stripe_api_key=SecretStr(LEAK_CANARY_KEY),
        alert_urls=[f"json://inbox:{ALERT_TOKEN}@127.0.0.1:1/alerts"],
        settle_hours=48,
        diagnose=False,
        pairs_per_task=7,
    )


def test_a_run_config_holds_the_settings_a_task_needs_and_pickles_for_dask_workers() -> None:
    config = RunConfig.of(secret_settings())

    assert pickle.loads(pickle.dumps(config)) == config  # noqa: S301
    assert (config.settle_hours, config.diagnose, config.pairs_per_task) == (48, False, 7)
    assert config.ledgers == ("internal", "stripe")
    assert config.database == f"postgresql://meter:{PASSWORD}@127.0.0.1:1/meter_recon"
    assert RunConfig.of(Settings()).pairs_per_task is None  # not set: chosen per run


def test_a_run_config_shows_no_secret_in_its_repr_nor_in_what_a_run_records() -> None:
    config = RunConfig.of(secret_settings())
    recorded = json.dumps(config.recorded())

    for text in (repr(config), str(config), recorded):
        for secret in (PASSWORD, LEAK_CANARY_KEY, ALERT_TOKEN):
            assert secret not in text
    assert config.recorded()["database_url"] == "postgresql://meter:***@127.0.0.1:1/meter_recon"
    assert config.recorded()["alert_urls"] == 1
    assert config.recorded()["settle_hours"] == 48


def test_prefects_stored_flow_run_parameters_never_show_the_database_password(
    prefect_server: str,
) -> None:
    """Prefect keeps a flow run's parameters: the URL's password, the Stripe key and the
    alert URLs are `SecretStr`s, which Prefect stores masked (the run itself fails here:
    nothing listens on that port)."""
    config = RunConfig.of(secret_settings())
    state = reconcile_meters(
        trigger=Trigger.MANUAL,
        database_url=config.database_url,
        config=config,
        return_state=True,
    )
    assert state.is_failed()
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
    stored = json.dumps(flow_run.parameters) + str(flow_run.state.message if flow_run.state else "")
    assert flow_run.parameters["database_url"] == "**********"
    assert flow_run.parameters["config"]["database_url"] == "**********"
    for secret in (PASSWORD, LEAK_CANARY_KEY, ALERT_TOKEN):
        assert secret not in stored


def test_a_run_records_its_configuration_with_its_parameters_and_no_secret(
    flow_env: StripeSimulator, database_url: str, tmp_path: Path
) -> None:
    engine = get_engine(database_url)
    world = build_world(flow_env, engine, tmp_path)

    summary = reconcile_meters(start=world.start, end=world.end, trigger=Trigger.MANUAL)

    with Session(engine) as session:
        run = session.get(ReconciliationRun, summary.run_id)
    assert run is not None
    recorded = run.parameters["config"]
    assert recorded["stripe_api_base"] == flow_env.url
    assert recorded["max_requests_per_second"] == 500
    assert recorded["ledgers"] == ["internal"]  # as flow_env sets METER_RECON_LEDGERS
    assert LEAK_CANARY_KEY not in json.dumps(run.parameters)


def test_the_database_url_parameter_points_the_run_at_that_database(
    flow_env: StripeSimulator,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = get_engine(database_url)
    world = build_world(flow_env, engine, tmp_path)
    monkeypatch.setenv("METER_RECON_DATABASE_URL", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    get_settings.cache_clear()

    summary = reconcile_meters(
        start=world.start,
        end=world.end,
        trigger=Trigger.MANUAL,
        database_url=SecretStr(database_url),
    )

    with Session(engine) as session:
        assert session.get(ReconciliationRun, summary.run_id) is not None
    assert not (tmp_path / "elsewhere.db").exists()


def test_a_run_context_carries_its_config_to_the_tasks() -> None:
    config = RunConfig.of(secret_settings())
    context = RunContext(
        run_id=1,
        window_start=date(2026, 11, 1),
        window_end=date(2026, 11, 4),
        today=date(2026, 11, 5),
        config=config,
    )
    assert pickle.loads(pickle.dumps(context)).config == config  # noqa: S301
    assert context.tolerance == config.tolerance
