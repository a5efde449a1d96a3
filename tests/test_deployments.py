"""`prefect deploy --all` accepts prefect.yaml against a running Prefect server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate

ROOT = Path(__file__).resolve().parent.parent


def prefect_cli(*args: str, api_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_API_URL=api_url, PREFECT_SERVER_ANALYTICS_ENABLED="false")
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


@pytest.fixture
def work_pool(prefect_server: str) -> str:
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name="meter-recon", type="process"))
        except Exception as exc:  # already there from an earlier test in this session
            if "already exists" not in str(exc):
                raise
    return "meter-recon"


def test_prefect_deploy_all_registers_the_three_deployments(
    prefect_server: str, work_pool: str
) -> None:
    done = prefect_cli("deploy", "--all", api_url=prefect_server)
    assert done.returncode == 0, done.stdout + done.stderr
    with get_client(sync_client=True) as client:
        deployments = {d.name: d for d in client.read_deployments()}
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
