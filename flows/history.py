"""Make sure Prefect's history holds every task run before a run says it is done.

Task-run states reach the server as events sent in the background; a process that exits
right after its flow loses those still queued (measured: 12-17 % of 5,000-10,000 one-pair
task runs recorded when the process exited at once). So the flow drains the event queue and
then waits until the server has recorded every task run it made.

The embedded server records a task run for ~30 ms of CPU, and drops events once ~10,000 are
waiting ("Subscription queue is full"); a run whose events were dropped would wait for ever.
So the wait also ends when the count has not moved for `stall_after` seconds, with a warning.
"""

from __future__ import annotations

import logging
import time
from typing import Any, TypeVar
from uuid import UUID

from prefect import Task
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State
from prefect.events.worker import EventsWorker
from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner
from prefect.utilities.callables import get_call_parameters

FINAL_STATES = ["COMPLETED", "FAILED", "CRASHED", "CANCELLED"]
STALL_SECONDS = 20.0
POLL_SECONDS = (0.05, 0.5)  # first poll, slowest poll

logger = logging.getLogger("meter_recon.history")

R = TypeVar("R")


class TaskRuns:
    """Starts every task run of a flow run, so the count Prefect's history must reach is
    what was actually started, kept in this one place."""

    def __init__(self) -> None:
        self.started = 0
        #: The runner `submit` hands task runs to: the run's own (chosen by its configuration,
        #: `flows.task_runners.task_runner_for`) while it is open, else the flow's.
        self.runner: TaskRunner[Any] | None = None

    def call(self, task: Task[..., R], *args: Any) -> State[R]:
        """Run a task in the flow's thread; its final state, failed or not."""
        self.started += 1
        state: State[R] = task(*args, return_state=True)  # type: ignore[assignment]
        return state

    def submit(self, task: Task[..., R], *args: Any) -> PrefectFuture[R]:
        """Hand a task run to the task runner."""
        self.started += 1
        if self.runner is None:
            return task.submit(*args)
        future: PrefectFuture[R] = self.runner.submit(task, get_call_parameters(task.fn, args, {}))
        return future


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


def wait_for_history(
    flow_run_id: UUID, *, expected: int, timeout: float, stall_after: float = STALL_SECONDS
) -> int:
    """Drain queued events, then wait until `expected` task runs are recorded.

    Gives up at `timeout`, or when no new task run was recorded for `stall_after` seconds;
    returns how many are recorded.
    """
    started = time.monotonic()
    deadline = started + timeout
    EventsWorker.drain_all(timeout=timeout, at_exit=False)
    recorded = recorded_task_runs(flow_run_id)
    progressed = time.monotonic()
    poll = POLL_SECONDS[0]
    while recorded < expected:
        now = time.monotonic()
        if now >= deadline or now - progressed >= stall_after:
            logger.warning(
                "Prefect recorded %d of %d task runs (%s after %.0f s)",
                recorded,
                expected,
                "timed out" if now >= deadline else "no progress",
                now - started,
            )
            break
        time.sleep(poll)
        poll = min(poll * 2, POLL_SECONDS[1])
        count = recorded_task_runs(flow_run_id)
        if count > recorded:
            progressed = time.monotonic()
        recorded = count
    return recorded
