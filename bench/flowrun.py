"""One benchmark run of the real flow, in its own process, the way `meter-recon run` runs it.

`python -m bench.flowrun --start D --end D --out FILE`: settings come from the environment
(the parent sets `STRIPE_API_BASE`, `METER_RECON_DATABASE_URL`, `PREFECT_HOME`, ...). Writes
a JSON object with the run summary and where the time went inside the process. Prefect's
server is started, waited for and stopped by `integrations.prefect_server`, as the CLI does.
"""

from __future__ import annotations

import time

PROCESS_STARTED = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
from dataclasses import asdict  # noqa: E402
from datetime import date  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from bench.proc import peak_rss_kib  # noqa: E402
from integrations.prefect_server import started_first, wait_until_ready  # noqa: E402
from integrations.settings import Settings  # noqa: E402

# What the console script imports before it runs a command (cyclopts, rich, the settings).
from meter_recon.cli import get_settings, skip_final_collection  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--start", required=True)
    parser.add_argument("--end", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    # As `meter-recon run`: Prefect's server first (unless PREFECT_API_URL is set or
    # METER_RECON_EARLY_PREFECT_SERVER is false), then the imports, the wait, the flow.
    settings = get_settings()
    with started_first(enabled=settings.early_prefect_server):
        run(args, settings)
    skip_final_collection()  # as the console script does last


def run(args: argparse.Namespace, settings: Settings) -> None:
    marks: dict[str, float] = {"python_ready": time.time()}
    import flows.reconcile  # noqa: F401  (Prefect and the flow: what `meter-recon run` imports)
    from meter_recon.launch import execute

    marks["imports_done"] = time.time()
    from flows import progress

    def on_progress(done: int, total: int) -> None:
        now = time.time()
        marks.setdefault("fanout_started", now)
        if done >= total:
            marks["fanout_done"] = now

    progress.set_listener(on_progress)
    time_discovery(marks)
    from flows.task_runners import prestart_local_workers
    from tasks.run_config import RunConfig

    prestart_local_workers(RunConfig.of(settings))  # what `execute` does first, then waits:
    wait_until_ready()  # here, to time the wait
    marks["server_ready"] = time.time()
    summary: Any = execute(
        settings=settings,
        start=date.fromisoformat(args.start),
        end=date.fromisoformat(args.end),
        customers=[],
        meters=[],
        manual=True,
    )
    marks["flow_returned"] = time.time()
    own = resource.getrusage(resource.RUSAGE_SELF)
    from flows.task_runners import pairs_per_task_for

    result = {
        "summary": {k: str(v) if isinstance(v, date) else v for k, v in asdict(summary).items()},
        "process_started": PROCESS_STARTED,
        "marks": marks,
        "client_peak_rss_kib": peak_rss_kib(),
        "cpu_self": own.ru_utime + own.ru_stime,  # this process alone, not its children
        "settings": {
            "max_workers": settings.max_workers,
            "pairs_per_task": pairs_per_task_for(RunConfig.of(settings), summary.pairs_total),
            "task_runner": settings.task_runner.value,
            "max_requests_per_second": settings.max_requests_per_second,
        },
    }
    Path(args.out).write_text(json.dumps(result), encoding="utf-8")


def time_discovery(marks: dict[str, float]) -> None:
    """Mark when the run's discovery starts and ends: `discover-pairs` runs in the flow's
    thread and calls `tasks.discover.discover` (its retries too; the last attempt is kept)."""
    import tasks.discover

    discover = tasks.discover.discover

    def timed(config: Any, **options: Any) -> Any:
        marks["discovery_started"] = time.time()
        try:
            return discover(config, **options)
        finally:
            marks["discovery_done"] = time.time()

    tasks.discover.discover = timed


if __name__ == "__main__":
    main()
