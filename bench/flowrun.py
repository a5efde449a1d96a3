"""One benchmark run of the real flow, in its own process, the way `meter-recon run` runs it.

`python -m bench.flowrun --start D --end D --out FILE`: settings come from the environment
(the parent sets `STRIPE_API_BASE`, `METER_RECON_DATABASE_URL`, `PREFECT_HOME`, ...). Writes
a JSON object with the run summary and where the time went inside the process.
"""

from __future__ import annotations

import time

PROCESS_STARTED = time.time()

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import urllib.request  # noqa: E402
from dataclasses import asdict  # noqa: E402
from datetime import date  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402


def spawn_prefect_server(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """A Prefect server process, started exactly as Prefect starts its embedded one
    (`SubprocessASGIServer`); returns it and its API URL."""
    spec = importlib.util.find_spec("prefect")
    assert spec is not None
    assert spec.origin is not None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server_env = {
        **env,
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
    }
    command = [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(spec.origin).parent.parent)]
    command += ["--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--log-level", "error", "--lifespan", "on"]
    return subprocess.Popen(command, env=server_env), f"http://127.0.0.1:{port}/api"


def start_prefect_server_first() -> subprocess.Popen[bytes]:
    """Prototype (`--early-api`): start the process's Prefect server before importing anything.

    Prefect's embedded server is started by the first API call, after the process imported
    Prefect and the flow (~1.5 s) and then `prefect.server.api.server` (~2.5 s more), and the
    server process then imports it all again. Started first, with the very command
    `SubprocessASGIServer` runs, it boots while the flow process imports; `PREFECT_API_URL`
    then names it, which is Prefect's own way to use a running server.
    """
    server, url = spawn_prefect_server(dict(os.environ))
    os.environ["PREFECT_API_URL"] = url
    return server


def wait_for_server(url: str | None = None, timeout: float = 60.0) -> None:
    url = (url or os.environ["PREFECT_API_URL"]) + "/health"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the Prefect server did not start")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--start", required=True)
    parser.add_argument("--end", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--early-api", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    server = start_prefect_server_first() if args.early_api else None

    marks: dict[str, float] = {"python_ready": time.time()}
    import flows.reconcile  # noqa: F401  (Prefect and the flow: what `meter-recon run` imports)
    from meter_recon.runner import execute, settings_for

    marks["imports_done"] = time.time()
    from meter_recon import progress

    def on_progress(done: int, total: int) -> None:
        now = time.time()
        marks.setdefault("fanout_started", now)
        if done >= total:
            marks["fanout_done"] = now

    progress.set_listener(on_progress)
    settings = settings_for(None)
    if server is not None:
        wait_for_server()
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
    from flows.runners import pairs_per_task_for

    result = {
        "summary": {k: str(v) if isinstance(v, date) else v for k, v in asdict(summary).items()},
        "process_started": PROCESS_STARTED,
        "marks": marks,
        "client_peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "settings": {
            "max_workers": settings.max_workers,
            "pairs_per_task": pairs_per_task_for(settings, summary.pairs_total),
            "task_runner": settings.task_runner.value,
            "max_requests_per_second": settings.max_requests_per_second,
        },
    }
    Path(args.out).write_text(json.dumps(result), encoding="utf-8")
    if server is not None:
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all(timeout=30)
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
