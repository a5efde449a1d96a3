"""Make sure Prefect's history holds every task run before a run says it is done.

Task-run states reach the server as events sent in the background; a process that exits
right after its flow loses those still queued. So the flow drains the event queue and then
waits until the server has recorded every task run it made.
"""

from __future__ import annotations

import logging
import time
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.events.worker import EventsWorker

FINAL_STATES = ["COMPLETED", "FAILED", "CRASHED", "CANCELLED"]

logger = logging.getLogger("meter_recon.history")


def recorded_task_runs(flow_run_id: UUID) -> int:
    """Task runs of the flow run that Prefect's server holds in a final state."""
    with get_client(sync_client=True) as client:
        response = client.request(
            "POST",
            "/task_runs/count",
            json={
                "flow_runs": {"id": {"any_": [str(flow_run_id)]}},
                "task_runs": {"state": {"type": {"any_": FINAL_STATES}}},
            },
        )
        return int(response.json())


def wait_for_history(flow_run_id: UUID, *, expected: int, timeout: float) -> int:
    """Drain queued events, then wait until `expected` task runs are recorded (or time out)."""
    EventsWorker.drain_all(timeout=timeout, at_exit=False)
    deadline = time.monotonic() + timeout
    recorded = recorded_task_runs(flow_run_id)
    while recorded < expected and time.monotonic() < deadline:
        time.sleep(0.25)
        recorded = recorded_task_runs(flow_run_id)
    if recorded < expected:
        logger.warning(
            "Prefect recorded %d of %d task runs after %.0f s", recorded, expected, timeout
        )
    return recorded
