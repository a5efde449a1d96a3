"""Running the flow from the command line: settings, progress on a terminal, the summary."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flows import progress
from integrations.settings import Settings

logger = logging.getLogger("meter_recon.run")


@contextmanager
def progress_display(console: Console) -> Iterator[None]:
    """A bar on a terminal; a log line every 10 % otherwise."""
    if console.is_terminal:
        bar = Progress(
            TextColumn("reconciling pairs"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        task_id = bar.add_task("pairs", total=None)

        def on_progress(done: int, total: int) -> None:
            bar.update(task_id, completed=done, total=total)

        progress.set_listener(on_progress)
        with bar:
            try:
                yield
            finally:
                progress.set_listener(None)
        return

    last_decile = -1

    def log_progress(done: int, total: int) -> None:
        nonlocal last_decile
        decile = 10 if total == 0 else done * 10 // total
        if decile != last_decile:
            last_decile = decile
            console.print(f"reconciled {done} of {total} pairs")

    progress.set_listener(log_progress)
    try:
        yield
    finally:
        progress.set_listener(None)


def execute(
    *,
    settings: Settings,
    database_url: str | None = None,
    start: date | None,
    end: date | None,
    customers: list[str],
    meters: list[str],
    manual: bool,
    lookback_days: int | None = None,
) -> object:
    """Run the flow in this process (Prefect's embedded server unless PREFECT_API_URL is set).

    The settings the command read (or the demo built) reach the flow as its `config`
    parameter, `--database-url` as its `database_url` parameter (a secret: Prefect stores it
    masked); nothing goes through the process environment. A server
    `prefect_server.started_first` started is waited for here, after the imports, and the
    flow runs on it in `prefect_server.prefect_settings()`.
    """
    from pydantic import SecretStr

    from flows.reconcile import reconcile_meters
    from flows.task_runners import prestart_local_workers
    from integrations.prefect_server import prefect_settings, wait_until_ready
    from models.tables import Trigger
    from tasks.run_config import RunConfig

    config = RunConfig.of(settings)
    prestart_local_workers(config)  # a local Dask cluster's imports, while the server boots
    wait_until_ready()
    with prefect_settings():
        return reconcile_meters(
            start=start,
            end=end,
            customers=customers or None,
            meters=meters or None,
            lookback_days=lookback_days,
            trigger=Trigger.MANUAL if manual else Trigger.SCHEDULED,
            database_url=SecretStr(database_url) if database_url else None,
            config=config,
        )
