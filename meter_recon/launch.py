"""Running the flow from the command line: settings, progress on a terminal, the summary."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flows import progress
from integrations.prefect_server import PRIVACY_DEFAULTS
from integrations.settings import Settings, get_settings

logger = logging.getLogger("meter_recon.run")

# No telemetry from Prefect by default, here and in what this process starts.
for _name, _value in PRIVACY_DEFAULTS.items():
    os.environ.setdefault(_name, _value)


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
    start: date | None,
    end: date | None,
    customers: list[str],
    meters: list[str],
    manual: bool,
    lookback_days: int | None = None,
) -> object:
    """Run the flow in this process (Prefect's embedded server unless PREFECT_API_URL is set).

    A server `prefect_server.started_first` started is waited for here, after the imports,
    and the flow runs on it without flow-run heartbeats (`prefect_server.flow_run_settings`).
    """
    from flows.reconcile import reconcile_meters
    from flows.task_runners import task_runner_for
    from integrations.prefect_server import flow_run_settings, wait_until_ready
    from models.tables import Trigger

    wait_until_ready()
    flow = reconcile_meters.with_options(task_runner=task_runner_for(settings))
    with flow_run_settings():
        return flow(
            start=start,
            end=end,
            customers=customers or None,
            meters=meters or None,
            lookback_days=lookback_days,
            trigger=Trigger.MANUAL if manual else Trigger.SCHEDULED,
        )


def settings_for(database_url: str | None) -> Settings:
    """Settings with the command line's --database-url, visible to every task and worker."""
    if database_url:
        os.environ["METER_RECON_DATABASE_URL"] = database_url
    get_settings.cache_clear()
    return get_settings()
