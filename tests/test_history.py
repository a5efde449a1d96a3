"""The flow waits for Prefect's history: every task run recorded, or a bounded wait."""

from __future__ import annotations

import logging
import time
import uuid

import pytest
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context
from prefect.task_runners import ThreadPoolTaskRunner

from flows.history import TaskRuns, recorded_task_runs, wait_for_history

TASKS = 40


@task(cache_policy=NO_CACHE, persist_result=False)
def square(value: int) -> int:
    return value * value


@flow(task_runner=ThreadPoolTaskRunner(max_workers=8))
def fan_out(count: int) -> tuple[uuid.UUID, int]:
    futures = [square.submit(n) for n in range(count)]
    total = sum(future.result() for future in futures)
    flow_run = get_run_context().flow_run  # type: ignore[union-attr]
    assert flow_run is not None
    return flow_run.id, total


def test_every_task_run_is_recorded_before_the_wait_returns(prefect_server: str) -> None:
    flow_run_id, total = fan_out(TASKS)
    assert total == sum(n * n for n in range(TASKS))
    assert wait_for_history(flow_run_id, expected=TASKS, timeout=60) == TASKS
    assert recorded_task_runs(flow_run_id) == TASKS


def test_a_wait_for_runs_that_never_come_ends_when_the_count_stalls(
    prefect_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    flow_run_id, _ = fan_out(3)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="meter_recon.history"):
        recorded = wait_for_history(flow_run_id, expected=10, timeout=60, stall_after=1.0)
    assert recorded == 3
    assert time.monotonic() - started < 10
    assert "recorded 3 of 10 task runs (no progress" in caplog.text


def test_an_unknown_flow_run_has_no_history(prefect_server: str) -> None:
    assert wait_for_history(uuid.uuid4(), expected=0, timeout=5) == 0
    assert recorded_task_runs(uuid.uuid4()) == 0


@task(cache_policy=NO_CACHE, persist_result=False)
def fails() -> int:
    raise ValueError("no")


@flow(task_runner=ThreadPoolTaskRunner(max_workers=4))
def started_through_task_runs() -> tuple[uuid.UUID, int]:
    tasks = TaskRuns()
    assert tasks.call(square, 3).result() == 9
    assert tasks.call(fails).is_failed()
    futures = [tasks.submit(square, n) for n in range(5)]
    assert [f.result() for f in futures] == [0, 1, 4, 9, 16]
    flow_run = get_run_context().flow_run  # type: ignore[union-attr]
    assert flow_run is not None
    return flow_run.id, tasks.started


def test_task_runs_counts_every_task_run_it_starts_failed_or_not(prefect_server: str) -> None:
    flow_run_id, started = started_through_task_runs()
    assert started == 7
    assert wait_for_history(flow_run_id, expected=started, timeout=60) == 7
