"""`prefect deploy --all` accepts prefect.yaml against a running Prefect server."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.responses import DeploymentResponse
from prefect.exceptions import ObjectAlreadyExists
from sqlalchemy import Engine
from sqlmodel import Session

from models.tables import DiscrepancyStatus
from tests.builders import new_run
from tests.finance import seed_discrepancies, statuses

ROOT = Path(__file__).resolve().parent.parent


def prefect_cli(
    *args: str, api_url: str, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_API_URL=api_url, PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env.update(extra_env or {})
    prefect = Path(sys.executable).with_name("prefect")
    return subprocess.run(
        [str(prefect), "--no-prompt", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )


@pytest.fixture(scope="module")
def work_pool(prefect_server: str) -> str:
    # already there from an earlier test in this session
    with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
        client.create_work_pool(WorkPoolCreate(name="meter-recon", type="process"))
    return "meter-recon"


@pytest.fixture(scope="module")
def deployed(prefect_server: str, work_pool: str) -> dict[str, DeploymentResponse]:
    done = prefect_cli("deploy", "--all", api_url=prefect_server)
    assert done.returncode == 0, done.stdout + done.stderr
    with get_client(sync_client=True) as client:
        return {d.name: d for d in client.read_deployments()}


def test_prefect_deploy_all_registers_the_three_deployments(
    deployed: dict[str, DeploymentResponse], work_pool: str
) -> None:
    deployments = deployed
    assert {"nightly", "period-close", "manual"} <= set(deployments)
    nightly = deployments["nightly"]
    [schedule] = nightly.schedules
    assert schedule.schedule.cron == "30 2 * * *"  # type: ignore[union-attr]
    assert schedule.schedule.timezone == "UTC"  # type: ignore[union-attr]
    assert nightly.work_pool_name == work_pool
    assert deployments["period-close"].parameters == {"lookback_days": 35, "trigger": "scheduled"}
    assert deployments["manual"].schedules == []
    assert deployments["manual"].parameters == {"trigger": "manual"}
    properties = nightly.parameter_openapi_schema["properties"]
    assert {"start", "end", "customers", "meters", "lookback_days", "trigger"} <= set(properties)


def test_the_triage_form_is_a_list_of_ids_a_select_and_a_text_box(
    deployed: dict[str, DeploymentResponse],
) -> None:
    triage = deployed["triage"]
    assert triage.schedules == []
    assert triage.parameters == {}
    schema = triage.parameter_openapi_schema
    assert sorted(schema["required"]) == ["action", "ids", "note"]
    properties = schema["properties"]
    assert properties["ids"]["type"] == "array"
    assert properties["ids"]["items"] == {"type": "integer"}
    assert properties["note"]["type"] == "string"
    ref = properties["action"]["$ref"]
    action = schema["definitions"][ref.rsplit("/", 1)[-1]]
    assert action["enum"] == ["acknowledge", "reopen"]


def _finished(flow_run_id: object) -> FlowRun:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id)  # type: ignore[arg-type]


def test_a_custom_run_from_the_ui_acknowledges_the_ids_it_names(
    deployed: dict[str, DeploymentResponse], database_url: str, engine: Engine
) -> None:
    ids = seed_discrepancies(engine, new_run(engine))
    with get_client(sync_client=True) as client:
        # What the UI's "Custom run" form posts: the parameters as the form filled them.
        flow_run = client.create_flow_run_from_deployment(
            deployed["triage"].id,
            parameters={"ids": ids[:2], "action": "acknowledge", "note": "credit note CN-7"},
        )
    done = prefect_cli(
        "flow-run",
        "execute",
        str(flow_run.id),
        api_url=str(os.environ.get("PREFECT_API_URL") or _api_url()),
        extra_env={"METER_RECON_HOME": str(ROOT), "METER_RECON_DATABASE_URL": database_url},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert _finished(flow_run.id).state_type is StateType.COMPLETED
    with Session(engine) as session:
        assert statuses(session, ids) == [
            (DiscrepancyStatus.ACKNOWLEDGED, "credit note CN-7"),
            (DiscrepancyStatus.ACKNOWLEDGED, "credit note CN-7"),
            (DiscrepancyStatus.OPEN, None),
        ]


def _api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value())
