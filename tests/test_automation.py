"""docs/automations/nightly-late-or-failed.yaml, applied with Prefect's own CLI to a real
Prefect server and read back through its API: a nightly run that is Late, Failed or Crashed
notifies the block; other deployments' runs and other states do not."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prefect.blocks.notifications import SlackWebhook
from prefect.client.orchestration import get_client
from prefect.server.events.schemas.automations import EventTrigger
from prefect.server.events.schemas.events import ReceivedEvent

ROOT = Path(__file__).resolve().parent.parent
AUTOMATION = ROOT / "docs" / "automations" / "nightly-late-or-failed.yaml"
PLACEHOLDER = "YOUR-NOTIFICATION-BLOCK-ID"
NAME = "meter-recon nightly late, failed or crashed"


def prefect_cli(prefect_server: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env.update(PREFECT_API_URL=prefect_server, PREFECT_SERVER_ANALYTICS_ENABLED="false")
    prefect = Path(sys.executable).with_name("prefect")
    return subprocess.run(
        [str(prefect), *arguments], env=env, capture_output=True, text=True, timeout=120
    )


def flow_run_event(state: str, *, deployment: str, flow: str = "meter-recon") -> ReceivedEvent:
    run_id = uuid.uuid4()
    return ReceivedEvent(
        occurred=datetime.now(UTC),
        event=f"prefect.flow-run.{state}",
        resource={"prefect.resource.id": f"prefect.flow-run.{run_id}"},
        related=[
            {
                "prefect.resource.id": f"prefect.flow.{uuid.uuid4()}",
                "prefect.resource.role": "flow",
                "prefect.resource.name": flow,
            },
            {
                "prefect.resource.id": f"prefect.deployment.{uuid.uuid4()}",
                "prefect.resource.role": "deployment",
                "prefect.resource.name": deployment,
            },
        ],
        id=uuid.uuid4(),
    )


@pytest.fixture(scope="module")
def created(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> EventTrigger:
    """The file with a real notification block's id, created by the CLI, read back."""
    block_id = SlackWebhook(url="https://hooks.slack.com/services/T0/B0/finance").save(
        f"finance-{uuid.uuid4().hex[:8]}"
    )
    applied = tmp_path_factory.mktemp("automation") / AUTOMATION.name
    applied.write_text(AUTOMATION.read_text().replace(PLACEHOLDER, str(block_id)))
    result = prefect_cli(prefect_server, "automation", "create", "--from-file", str(applied))
    assert result.returncode == 0, result.stdout + result.stderr
    with get_client(sync_client=True) as client:
        (automation,) = client.read_automations_by_name(NAME)
        client.delete_automation(automation.id)
    assert automation.enabled
    (action,) = automation.actions
    assert action.type == "send-notification"
    assert action.block_document_id == block_id  # type: ignore[union-attr]
    return EventTrigger.model_validate(automation.trigger.model_dump())


@pytest.mark.parametrize("state", ["Late", "Failed", "Crashed"])
def test_a_nightly_run_late_failed_or_crashed_triggers_the_notification(
    created: EventTrigger, state: str
) -> None:
    assert created.covers(flow_run_event(state, deployment="nightly"))


def test_a_completed_nightly_run_triggers_nothing(created: EventTrigger) -> None:
    assert not created.covers(flow_run_event("Completed", deployment="nightly"))


def test_a_failed_run_of_another_deployment_or_flow_triggers_nothing(
    created: EventTrigger,
) -> None:
    assert not created.covers(flow_run_event("Failed", deployment="manual"))
    assert not created.covers(flow_run_event("Failed", deployment="nightly", flow="other"))


def test_the_file_names_the_deployment_prefect_yaml_schedules() -> None:
    assert "  - name: nightly\n" in (ROOT / "prefect.yaml").read_text()


def test_the_file_is_refused_until_a_block_id_is_put_in(prefect_server: str) -> None:
    result = prefect_cli(prefect_server, "automation", "create", "--from-file", str(AUTOMATION))
    assert result.returncode != 0
    with get_client(sync_client=True) as client:
        assert client.read_automations_by_name(NAME) == []
