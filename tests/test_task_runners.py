"""The fan-out's task runner starts as the run begins: a local Dask cluster comes up, and its
workers import the flow, while the flow reads meters and discovers pairs."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from multiprocessing import forkserver
from typing import Any

import pytest
from pydantic import SecretStr

from flows.task_runners import (
    RunnerStart,
    import_the_flow,
    local_threads_per_worker,
    prestart_local_workers,
)
from integrations.settings import TaskRunnerKind
from tasks.run_config import RunConfig


class SlowCluster:
    """Stands in for a Dask task runner whose `client` starts a cluster (until `up` is set)."""

    def __init__(self, *, fails: bool = False) -> None:
        self.up = threading.Event()
        self.fails = fails
        self.started_in: str | None = None
        self.ran: list[Callable[[], Any]] = []

    @property
    def client(self) -> SlowCluster:
        self.started_in = threading.current_thread().name
        assert self.up.wait(5)
        if self.fails:
            raise RuntimeError("the cluster could not start")
        return self

    def run(self, function: Callable[[], Any]) -> None:
        self.ran.append(function)


def test_the_cluster_starts_in_a_thread_of_its_own_while_the_flow_goes_on() -> None:
    cluster = SlowCluster()
    start = RunnerStart(cluster, warm=True)  # type: ignore[arg-type]
    # Returned at once: the flow's thread is free while the cluster starts.
    assert cluster.ran == []
    cluster.up.set()
    assert start.runner() is cluster
    assert cluster.started_in == "meter-recon-dask-start"
    assert cluster.ran == [import_the_flow]  # every worker imports the flow before its tasks


def test_a_cluster_that_could_not_start_fails_the_fan_out_in_the_flows_thread() -> None:
    cluster = SlowCluster(fails=True)
    start = RunnerStart(cluster, warm=True)  # type: ignore[arg-type]
    cluster.up.set()
    with pytest.raises(RuntimeError, match="could not start"):
        start.runner()


def test_a_thread_runner_is_used_as_it_is() -> None:
    cluster = SlowCluster()
    start = RunnerStart(cluster, warm=False)  # type: ignore[arg-type]
    assert start.runner() is cluster
    assert cluster.started_in is None  # nothing started early, nothing to wait for


def test_a_worker_imports_the_flow_and_sends_nothing_back() -> None:
    assert import_the_flow() is None


@pytest.mark.parametrize(
    ("runner", "address", "started"),
    [
        (TaskRunnerKind.DASK, None, True),
        (TaskRunnerKind.DASK, "tcp://scheduler.internal:8786", False),
        (TaskRunnerKind.THREADS, None, False),
    ],
    ids=["local-cluster", "cluster-elsewhere", "threads"],
)
def test_only_a_local_cluster_has_its_fork_server_started_before_the_flow(
    monkeypatch: pytest.MonkeyPatch, runner: TaskRunnerKind, address: str | None, started: bool
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(forkserver, "ensure_running", lambda: calls.append("started"))
    config = RunConfig(
        database_url=SecretStr("sqlite://"), task_runner=runner, dask_address=address
    )
    prestart_local_workers(config)
    assert calls == (["started"] if started else [])


def test_the_local_cluster_splits_the_runs_threads_between_its_workers() -> None:
    config = RunConfig(database_url=SecretStr("sqlite://"), max_workers=16)
    assert local_threads_per_worker(config) == 8
    assert local_threads_per_worker(replace(config, max_workers=3)) == 2
    assert local_threads_per_worker(replace(config, max_workers=1)) == 1
