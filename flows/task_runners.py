"""The task runner a run fans out on, chosen by the run's configuration with no code change.

- `threads` (default): Prefect's `ThreadPoolTaskRunner`, `max_workers` threads; Stripe's rate
  limit is a per-process limiter.
- `dask`: `prefect-dask`'s `DaskTaskRunner`, on the scheduler at `dask_address`, or on a
  `distributed.LocalCluster` of two worker processes of `max_workers` threads each; the rate
  limit is then a Prefect global concurrency limit every worker process shares
  (`integrations.stripe.prefect_limit`).
"""

from __future__ import annotations

import contextvars
import importlib
import math
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from integrations.settings import TaskRunnerKind
from tasks.run_config import LOCAL_CLUSTER_WORKERS, RunConfig

# Grouping pairs into tasks (`METER_RECON_PAIRS_PER_TASK`, else chosen per run). Measured on
# 2 cores with the embedded Prefect server: a task run costs the Prefect server ~30 ms of CPU
# to record (three state events, a log line) and the flow process ~5-8 ms; a Dask worker
# spends ~160 ms rebuilding Prefect's context for each task. At Stripe's 100 requests/s, one
# task per pair would ask for 3 cores just to keep Prefect's history. Runs up to
# ONE_TASK_PER_PAIR_UP_TO pairs keep one task per pair (every pair its own run in the UI);
# larger ones group pairs so that about TASKS_PER_SECOND tasks a second run at full speed.
ONE_TASK_PER_PAIR_UP_TO = 100
TASKS_PER_SECOND = {TaskRunnerKind.THREADS: 4.0, TaskRunnerKind.DASK: 1.0}


# Dask's statistical profiler samples every thread of a worker every 10 ms, for a dashboard
# the local cluster does not serve: with 16 threads a worker that is CPU it takes from the
# requests it paces.
WORKER_CONFIG: dict[str, Any] = {"distributed.worker.profile.enabled": False}


def _local_cluster_config() -> dict[str, Any]:
    """Dask's configuration while the local cluster starts: no profiler, and, where the
    platform has it, workers forked from one server process that has imported the flow
    already (`forkserver`, its preload): the import is paid once, not once per worker."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return WORKER_CONFIG
    from dask.config import set as dask_config_set
    from distributed.utils import get_mp_context

    config = {**WORKER_CONFIG, "distributed.worker.multiprocessing-method": "forkserver"}
    with dask_config_set(config):
        # After distributed's own preload is set (it sets it on first use), and before the
        # server starts: once started, a server keeps what it imported.
        context = get_mp_context()  # type: ignore[no-untyped-call]
        context.set_forkserver_preload(["distributed", WORKER_IMPORTS])
    return config


def _dask_runner_class() -> type[Any]:
    """`SharedApiDaskTaskRunner`, defined on first use: `prefect_dask` imports `distributed`,
    which a thread-pool run has no use for (it would add to every run's start-up)."""
    from dask.config import set as dask_config_set
    from prefect_dask.task_runners import DaskTaskRunner

    class SharedApiDaskTaskRunner(DaskTaskRunner):
        """A `DaskTaskRunner` whose workers report to the flow's own Prefect API.

        Without `PREFECT_API_URL`, a flow runs on Prefect's embedded server, and the settings it
        hands to Dask workers name no API: each worker process would start an embedded server of
        its own (several servers on one database, or none reachable: "Server process did not
        start"). While this runner is open it names the embedded server's address in the
        settings its tasks carry, so every worker reports to the one server the flow uses, and
        takes its Stripe rate limit from there.
        """

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._api_settings: AbstractContextManager[Any] | None = None

        def __enter__(self) -> SharedApiDaskTaskRunner:
            from prefect.settings import PREFECT_API_URL, temporary_settings

            if not PREFECT_API_URL.value():
                from prefect.server.api.server import SubprocessASGIServer

                server = SubprocessASGIServer()
                server.start()  # already running: the flow run itself started it
                self._api_settings = temporary_settings(updates={PREFECT_API_URL: server.api_url})
                self._api_settings.__enter__()
            try:
                super().__enter__()  # type: ignore[no-untyped-call]
            except BaseException:
                self._leave_api_settings()
                raise
            return self

        @property
        def client(self) -> Any:
            """The Dask client, on first use starting the local cluster (under
            `_local_cluster_config`) unless the runner has an address."""
            if self._client is not None or self.address:
                return super().client
            with dask_config_set(_local_cluster_config()):
                return super().client

        def __exit__(self, *args: Any) -> None:
            try:
                super().__exit__(*args)
            finally:
                self._leave_api_settings()

        def _leave_api_settings(self) -> None:
            if self._api_settings is not None:
                self._api_settings.__exit__(None, None, None)
                self._api_settings = None

    SharedApiDaskTaskRunner.__module__ = __name__
    SharedApiDaskTaskRunner.__qualname__ = "SharedApiDaskTaskRunner"
    return SharedApiDaskTaskRunner


def __getattr__(name: str) -> Any:
    # `flows.task_runners.SharedApiDaskTaskRunner` exists for pickle (Dask workers unpickle the
    # flow, task runner included) and for callers, without importing Dask up front.
    if name == "SharedApiDaskTaskRunner":
        cls = globals()[name] = _dask_runner_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def pairs_per_task_for(config: RunConfig, pairs: int) -> int:
    """Pairs per task: the setting when given, else chosen for this run's size and rate."""
    if config.pairs_per_task is not None:
        return config.pairs_per_task
    if pairs <= ONE_TASK_PER_PAIR_UP_TO:
        return 1
    per_second = TASKS_PER_SECOND[config.task_runner]
    wanted = math.ceil(config.max_requests_per_second / per_second)
    # Two tasks per worker thread (at most), so the last ones do not run alone for long, and
    # no third round of a single task left over (1,500 pairs on 16 threads: 47 per task, not
    # 46 with a 33rd task of 28 pairs running alone at the end).
    balanced = math.ceil(pairs / (2 * config.max_workers))
    return max(1, min(wanted, balanced, 1000))


def in_flight_for(config: RunConfig) -> int:
    """Tasks a run keeps submitted at once: two per worker thread keeps every thread busy
    while the flow holds only a bounded slice of the run (not all of it) in memory."""
    return max(2, 2 * config.max_workers)


def local_threads_per_worker(config: RunConfig) -> int:
    """`max_workers` threads in all, split between the local cluster's worker processes."""
    return max(1, math.ceil(config.max_workers / LOCAL_CLUSTER_WORKERS))


def task_runner_for(config: RunConfig) -> TaskRunner[Any]:
    """A bounded thread pool on one machine, or a Dask cluster to scale out."""
    if config.task_runner is TaskRunnerKind.DASK:
        runner = __getattr__("SharedApiDaskTaskRunner")
        if config.dask_address:
            return runner(address=config.dask_address)  # type: ignore[no-any-return]
        return runner(  # type: ignore[no-any-return]
            cluster_kwargs={
                "n_workers": LOCAL_CLUSTER_WORKERS,
                # The run's threads split between the workers, as the rate limit is: each
                # worker keeps to its share of both.
                "threads_per_worker": local_threads_per_worker(config),
                "processes": True,
                "dashboard_address": None,
            }
        )
    return ThreadPoolTaskRunner(max_workers=config.max_workers)


#: What a Dask worker imports to unpickle its first task: the flow's module, and everything
#: the flow and its tasks import.
WORKER_IMPORTS = "flows.reconcile"


def import_the_flow() -> None:
    """Run on each worker as the cluster starts (returns nothing: a module does not pickle)."""
    importlib.import_module(WORKER_IMPORTS)


class RunnerStart:
    """The fan-out's task runner, started while the run's first steps run.

    A local Dask cluster takes seconds to be of use: two processes start, then each imports
    the flow to unpickle its first task. Started in a thread of its own as the run begins,
    that happens while the flow reads meters and discovers pairs (waiting on Stripe, mostly),
    instead of after them. `runner()` waits for it, and raises what stopped it.
    """

    def __init__(self, runner: TaskRunner[Any], *, warm: bool) -> None:
        self._runner = runner
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if warm:
            context = contextvars.copy_context()  # Prefect's settings: the flow's API
            self._thread = threading.Thread(
                target=context.run, args=(self._warm,), name="meter-recon-dask-start", daemon=True
            )
            self._thread.start()

    def _warm(self) -> None:
        try:
            client = getattr(self._runner, "client")  # noqa: B009  (starts the cluster)
            client.run(import_the_flow)
        except BaseException as error:  # told by `runner()`, in the flow's thread
            self._error = error

    def runner(self) -> TaskRunner[Any]:
        """The runner, ready: its cluster started and its workers' imports done."""
        self.wait()
        if self._error is not None:
            raise self._error
        return self._runner

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()


def prestart_local_workers(config: RunConfig) -> None:
    """Start, now, the process the local cluster's workers will be forked from, importing the
    flow in the background: a command calls it before it waits for Prefect's server, so the
    import is done by the time the fan-out wants workers. Nothing to do for threads, for a
    cluster elsewhere, or where the platform forks no server (the cluster then spawns)."""
    if config.task_runner is not TaskRunnerKind.DASK or config.dask_address:
        return
    if "forkserver" in _local_cluster_config().get("distributed.worker.multiprocessing-method", ""):
        from multiprocessing import forkserver

        forkserver.ensure_running()


@contextmanager
def started_task_runner(config: RunConfig) -> Iterator[RunnerStart]:
    """The configuration's task runner, entered now; a local Dask cluster starts beside the
    steps that run until the fan-out. Leaving it stops the cluster (after a start under way)."""
    with task_runner_for(config) as runner:
        start = RunnerStart(
            runner, warm=config.task_runner is TaskRunnerKind.DASK and not config.dask_address
        )
        try:
            yield start
        finally:
            start.wait()
