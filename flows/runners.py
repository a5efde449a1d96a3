"""The task runner a run fans out on, chosen by settings with no code change in the flow."""

from __future__ import annotations

from typing import Any

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from meter_recon.settings import Settings, TaskRunnerKind


def task_runner_for(settings: Settings) -> TaskRunner[Any]:
    """A bounded thread pool on one machine, or a Dask cluster to scale out."""
    if settings.task_runner is TaskRunnerKind.DASK:
        from prefect_dask.task_runners import DaskTaskRunner

        if settings.dask_address:
            return DaskTaskRunner(address=settings.dask_address)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": 2,
                "threads_per_worker": max(1, settings.max_workers // 2),
                "processes": True,
                "dashboard_address": None,
            }
        )
    return ThreadPoolTaskRunner(max_workers=settings.max_workers)
