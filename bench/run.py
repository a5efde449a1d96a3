"""The benchmark: the real flow against the Stripe simulator, sized 1,000 to 100,000 pairs.

    python -m bench.run            # `make bench`: the full table
    python -m bench.run --quick    # a smoke run of every row kind, a few minutes
    python -m bench.run --only default-grouping,large-runs --sizes 1000 --large-sizes 2000

Each case is one function registered with `@case` (`--only` picks some by name). One
simulator (50 ms latency, 100 requests/s server-side limit answered with Stripe's 429)
serves every case but `large-runs`, which has its own fast one (5 ms, 1,000 requests/s) to
show the flow's memory stays flat up to 100,000 pairs (peak RSS and CPU per pair). Each
flow run is its own process, started as `meter-recon run` runs: Prefect's embedded server
started first on a bench-owned `PREFECT_HOME` (created once, then reused; one start-up row
uses a brand-new home, one leaves the server to Prefect as before), imports, the wait for the
server, the flow, the wait for Prefect's history, exit. Its wall time is compared with the
physical bound `requests / R`, where the requests are all the simulator saw: the pairs', the
diagnosis's hourly buckets (2 per mismatched multi-day `sum` line item), discovery's (every
seeded customer has a subscription: 5,000 at 20,000 pairs) and the meter refresh; the table
sets them against the run's own count. Rows (each names its task runner, grouping, database
and rate): the flow with its default grouping of pairs into tasks, one task per pair (the
"before"), the Dask `LocalCluster` (recording into SQLite and/or PostgreSQL,
`--dask-databases`), a Prefect server that is already running (`PREFECT_API_URL`, as
deployments run), the large runs, all comparing the internal ledger only
(`METER_RECON_LEDGERS=internal`, so their figures stay comparable with those before the
`stripe` ledger); then the same work by hand with the official `stripe` SDK, micro-benchmarks
of the comparison, of valuing and diagnosing findings, and of recording on SQLite and
PostgreSQL (`--postgres-url`, default the local server; skipped with a note when
unreachable), the ledger query's sync; last, the flow comparing both ledgers with invoices
for every pair (`--stripe-ledger-sizes`): what the `stripe` ledger's requests cost. Prints
the tables and writes them, with the raw figures, to `bench/results/latest.md` and
`latest.json` (`--out`). Exit status 1 when a run failed a pair or found
other discrepancies than the seeded ones.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.baseline import run_baseline
from bench.dataset import Seeded, build, write_ledger
from bench.discovery import measure as measure_discovery
from bench.discovery import table as discovery_table
from bench.environ import child_environ
from bench.ledger_sync import run as run_ledger_sync
from bench.micro import (
    MicroResult,
    PostgresUnreachable,
    bench_assess,
    bench_compare,
    ensure_postgres_database,
    postgres_record,
    sqlite_record,
    throwaway_postgres,
)
from bench.proc import cpu_seconds, status_kib
from bench.settle import settle
from bench.stats import BenchStats
from bench.steady import idle_seconds, seconds_per_request, stall_spans
from bench.stripe_ledger import BOTH_LEDGERS, LedgerCost, cost_table, read_cost
from integrations.prefect_server import spawn
from simulator import StripeSimulator

ROOT = Path(__file__).resolve().parent.parent
SQLITE, POSTGRES = "SQLite", "PostgreSQL"
RESULTS = ROOT / "bench" / "results"
API_KEY = "sk_test_meter_recon_bench"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class FlowCase:
    label: str
    pairs: int
    pairs_per_task: int
    prefect_home: str
    tasks: int = 0
    requests: int = 0
    wall: float = 0.0
    rate: float = 100.0
    rate_limited: int = 0
    max_per_second: int = 0
    client_rss_mib: float = 0.0
    server_rss_mib: float = 0.0
    client_cpu: float = 0.0  # the flow's own process (not its children)
    server_cpu: float = 0.0  # Prefect's server (uvicorn), when the flow process started it
    workers_cpu: float = 0.0  # every other descendant: the Dask cluster's worker processes
    task_runs_expected: int = 0
    task_runs_recorded: int = 0
    discrepancies: int = 0
    discrepancies_expected: int = 0
    status: str = ""
    pairs_failed: int = 0
    steady_ratio: float = 0.0  # seconds per request x R in the steady middle of the fan-out
    idle: float = 0.0  # seconds in gaps of more than 0.5 s with no request (stalls)
    stalls: int = 0
    stall_spans: list[tuple[float, float]] = field(default_factory=list)  # (at, seconds)
    #: The flow's RSS (MiB) every half second, as (seconds after the run began, MiB), and
    #: when its phases began: where the peak is, in the raw figures.
    rss_timeline: list[tuple[float, int]] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)
    settled: float = 0.0  # seconds waited, before the run, for the machine to go quiet
    runner: str = ""  # the task runner the run fanned out on, as it ran
    grouping: str = ""  # pairs per task, and whether set or chosen by the flow
    database: str = SQLITE  # where the run records: SQLite (a file) or PostgreSQL
    run_requests: int = 0  # the run's own count: its pairs' requests plus discovery's
    discovery_requests: int = 0  # at the simulator: subscriptions, their items, tiered prices
    discovery_seconds: float = 0.0  # the discovery step inside the flow process (threads)
    discovery_span: float = 0.0  # first to last discovery request at the simulator
    subscriptions: int = 0
    hourly_requests: int = 0  # the diagnosis's hourly buckets, at the simulator
    hourly_expected: int = 0
    phases: dict[str, float] = field(default_factory=dict)
    #: METER_RECON_LEDGERS of the run: the internal ledger only, as every row measured before
    #: the `stripe` ledger (comparable with them), unless the row says both ledgers.
    ledgers: str = "internal"
    stripe_cost: LedgerCost | None = None  # what the `stripe` ledger cost, when compared

    @property
    def bound(self) -> float:
        return self.requests / self.rate

    @property
    def ratio(self) -> float:
        return self.wall / self.bound if self.bound else math.nan


# -- process sampling -------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry.name))
    return found


def _is_prefect_server(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"uvicorn" in command and b"prefect.server.api.server:create_app" in command


class RssSampler:
    """Peak RSS of a process and, separately, of its descendants: Prefect's server, and any
    other (the Dask cluster's worker processes), whose CPU is kept apart from the server's."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.client_kib = 0
        self.descendants_kib: dict[int, int] = {}
        self.client_cpu = 0.0
        self.descendants_cpu: dict[int, float] = {}
        self.servers: set[int] = set()
        self.timeline: list[tuple[float, int]] = []  # (time, the flow's RSS in MiB) each sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.client_kib = max(self.client_kib, status_kib("VmHWM", self.pid))
            self.timeline.append((round(time.time(), 1), status_kib("VmRSS", self.pid) // 1024))
            self.client_cpu = max(self.client_cpu, cpu_seconds(self.pid))
            stack = _children(self.pid)
            while stack:
                child = stack.pop()
                peak = status_kib("VmHWM", child)
                self.descendants_kib[child] = max(self.descendants_kib.get(child, 0), peak)
                cpu = cpu_seconds(child)
                self.descendants_cpu[child] = max(self.descendants_cpu.get(child, 0.0), cpu)
                if child not in self.servers and _is_prefect_server(child):
                    self.servers.add(child)
                stack.extend(_children(child))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


# -- one flow run ------------------------------------------------------------------------------


def flow_env(
    *,
    simulator: StripeSimulator,
    database_url: str,
    prefect_home: str,
    pairs_per_task: int,
    rate: float,
    workers: int,
    extra: dict[str, str],
) -> dict[str, str]:
    env = child_environ(
        {
            "PREFECT_HOME": prefect_home,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "STRIPE_API_KEY": API_KEY,
            "STRIPE_API_BASE": simulator.url,
            "METER_RECON_DATABASE_URL": database_url,
            "METER_RECON_MAX_REQUESTS_PER_SECOND": str(rate),
            "METER_RECON_MAX_WORKERS": str(workers),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if pairs_per_task:  # 0: let the flow choose
        env["METER_RECON_PAIRS_PER_TASK"] = str(pairs_per_task)
    env.update(extra)
    return env


def count_discrepancies(database_url: str) -> tuple[int, str]:
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.connect() as connection:
        open_ = connection.execute(
            text("SELECT count(*) FROM discrepancy WHERE status = 'open'")
        ).scalar_one()
        status = connection.execute(
            text("SELECT status FROM reconciliation_run ORDER BY id DESC LIMIT 1")
        ).scalar_one()
    engine.dispose()
    return int(open_), str(status)


@contextmanager
def case_database(case: FlowCase, *, workdir: Path, stem: str, postgres_url: str) -> Iterator[str]:
    """The run's database: a new SQLite file, or a throwaway PostgreSQL database."""
    if case.database == POSTGRES:
        with throwaway_postgres(postgres_url) as url:
            yield url
        return
    yield f"sqlite:///{workdir / f'{stem}.db'}"


def run_flow_case(
    case: FlowCase,
    *,
    seeded: Seeded,
    simulator: StripeSimulator,
    workdir: Path,
    workers: int,
    extra_env: dict[str, str],
    log: Path,
    postgres_url: str = "",
) -> FlowCase:
    stem = f"flow-{case.pairs}-{case.pairs_per_task}-{time.monotonic_ns()}"
    with case_database(case, workdir=workdir, stem=stem, postgres_url=postgres_url) as url:
        return _run_flow_case(
            case,
            seeded=seeded,
            simulator=simulator,
            workdir=workdir,
            workers=workers,
            extra_env=extra_env,
            log=log,
            stem=stem,
            database_url=url,
        )


def _run_flow_case(
    case: FlowCase,
    *,
    seeded: Seeded,
    simulator: StripeSimulator,
    workdir: Path,
    workers: int,
    extra_env: dict[str, str],
    log: Path,
    stem: str,
    database_url: str,
) -> FlowCase:
    write_ledger(seeded, database_url)
    simulator.data = seeded.data
    simulator.reset_stats()
    env = flow_env(
        simulator=simulator,
        database_url=database_url,
        prefect_home=case.prefect_home,
        pairs_per_task=case.pairs_per_task,
        rate=case.rate,
        workers=workers,
        extra={"METER_RECON_LEDGERS": case.ledgers, **extra_env},
    )
    out = workdir / f"{stem}.json"
    command = [
        sys.executable,
        "-m",
        "bench.flowrun",
        "--start",
        seeded.window_start.isoformat(),
        "--end",
        seeded.window_end.isoformat(),
        "--out",
        str(out),
    ]
    case.settled = settle()
    with log.open("ab") as sink:
        sink.write(f"\n=== {case.label}: {case.pairs} pairs, {case.database} ===\n".encode())
        sink.flush()
        started = time.time()
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=sink)
        with RssSampler(process.pid) as sampler:
            _, status, usage = os.wait4(process.pid, 0)
        ended = time.time()
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0 or not out.exists():
        raise RuntimeError(f"{case.label} ({case.pairs} pairs) failed; see {log}")
    result: dict[str, Any] = json.loads(out.read_text())
    marks = result["marks"]
    summary = result["summary"]
    stats = simulator.stats
    case.wall = ended - started
    case.requests = stats.total
    case.rate_limited = stats.rate_limited
    case.max_per_second = stats.max_arrivals_per_window(1.0)
    steady = seconds_per_request(list(stats.arrival_times))
    case.idle, case.stalls = idle_seconds(list(stats.arrival_times))
    case.stall_spans = stall_spans(list(stats.arrival_times))
    case.rss_timeline = [(round(at - started, 1), mib) for at, mib in sampler.timeline]
    case.marks = {name: round(at - started, 1) for name, at in marks.items()}
    case.steady_ratio = steady * case.rate if steady is not None else 0.0
    run_settings = result["settings"]
    case.tasks = math.ceil(seeded.pairs / run_settings["pairs_per_task"])
    case.runner = runner_label(run_settings)
    case.grouping = grouping_label(run_settings["pairs_per_task"], chosen=not case.pairs_per_task)
    case.task_runs_expected = int(summary["task_runs_expected"])
    case.task_runs_recorded = int(summary["task_runs_recorded"])
    case.pairs_failed = int(summary["pairs_failed"])
    case.client_rss_mib = max(sampler.client_kib, result["client_peak_rss_kib"]) / 1024
    case.server_rss_mib = max(sampler.descendants_kib.values(), default=0) / 1024
    # The flow process's own CPU as it measured itself when the flow returned (`wait4`'s
    # figure would add every descendant it reaped: the server, the Dask workers).
    case.client_cpu = float(result.get("cpu_self", usage.ru_utime + usage.ru_stime))
    cpu = sampler.descendants_cpu
    case.server_cpu = sum(seconds for pid, seconds in cpu.items() if pid in sampler.servers)
    case.workers_cpu = sum(seconds for pid, seconds in cpu.items() if pid not in sampler.servers)
    case.discrepancies, case.status = count_discrepancies(database_url)
    case.discrepancies_expected = seeded.expected_discrepancies
    case.run_requests = int(summary["requests"])
    case.subscriptions = seeded.subscriptions
    case.hourly_expected = seeded.hourly_requests
    if isinstance(stats, BenchStats):
        discovery, hourly = stats.arrivals("discovery"), stats.arrivals("hourly")
        case.discovery_requests, case.discovery_span = discovery.count, discovery.span
        case.hourly_requests = hourly.count
    if "stripe" in case.ledgers.split(","):
        case.stripe_cost = read_cost(
            stats, database_url=database_url, seeded=seeded, hourly=case.hourly_requests
        )
    if "discovery_started" in marks and "discovery_done" in marks:
        case.discovery_seconds = marks["discovery_done"] - marks["discovery_started"]
    fanout_started = marks.get("fanout_started", marks["flow_returned"])
    fanout_done = marks.get("fanout_done", marks["flow_returned"])
    case.phases = {
        "python_and_imports": marks["imports_done"] - started,
        "server_wait": marks["server_ready"] - marks["imports_done"],
        "until_fanout": fanout_started - marks["server_ready"],
        "fanout": fanout_done - fanout_started,
        "after_fanout": marks["flow_returned"] - fanout_done,
        "exit": ended - marks["flow_returned"],
    }
    return case


def runner_label(run_settings: dict[str, Any]) -> str:
    if run_settings["task_runner"] == "dask":
        return "Dask LocalCluster (2 processes)"
    return f"threads ({run_settings['max_workers']})"


def grouping_label(pairs_per_task: int, *, chosen: bool) -> str:
    per_task = "1 pair per task" if pairs_per_task == 1 else f"{pairs_per_task} pairs per task"
    return f"{per_task} ({'chosen by the flow' if chosen else 'set'})"


# -- the table ---------------------------------------------------------------------------------


def fit_line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares (intercept, slope)."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    if sxx == 0:
        return mean_y, 0.0
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx
    return mean_y - slope * mean_x, slope


def flow_table(cases: list[FlowCase]) -> list[str]:
    lines = [
        "| case | runner | grouping | database | R req/s | pairs | tasks | requests "
        "| of which discovery / hourly | run's count | wall s | bound s "
        "| ratio | 429s answered (retried) / pairs failed | max req in 1 s "
        "| peak RSS flow / server MiB | task runs recorded | discrepancies (expected) |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cases:
        lines.append(
            f"| {c.label} | {c.runner} | {c.grouping} | {c.database} | {c.rate:,.0f} "
            f"| {c.pairs:,} | {c.tasks:,} | {c.requests:,} "
            f"| {c.discovery_requests:,} / {c.hourly_requests:,} | {c.run_requests:,} "
            f"| {c.wall:.1f} "
            f"| {c.bound:.1f} | {c.ratio:.3f} | {c.rate_limited} / {c.pairs_failed} "
            f"| {c.max_per_second} "
            f"| {c.client_rss_mib:.0f} / {c.server_rss_mib:.0f} "
            f"| {c.task_runs_recorded:,} / {c.task_runs_expected:,} "
            f"| {c.discrepancies:,} ({c.discrepancies_expected:,}) |"
        )
    return lines


def phase_table(cases: list[FlowCase]) -> list[str]:
    lines = [
        "| case | pairs | start + imports s | wait for Prefect's server s "
        "| flow set-up (Prefect's server if Prefect starts it) s | of which discovery s "
        "| fan-out s | fan-out / bound | steady s per request x R | stalls > 0.5 s (s) "
        "| after fan-out (history wait) s | exit s "
        "| CPU s flow / server / Dask workers | CPU ms per pair flow / server / Dask workers |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cases:
        p = c.phases
        fanout_bound = max(c.requests - 1 - c.discovery_requests, 1) / c.rate
        lines.append(
            f"| {c.label} | {c.pairs:,} | {p['python_and_imports']:.1f} "
            f"| {p['server_wait']:.1f} | {p['until_fanout']:.1f} "
            f"| {c.discovery_seconds:.1f} | {p['fanout']:.1f} "
            f"| {p['fanout'] / fanout_bound:.3f} "
            f"| {c.steady_ratio:.3f} | {c.stalls} ({c.idle:.1f}) "
            f"| {p['after_fanout']:.1f} | {p['exit']:.1f} "
            f"| {c.client_cpu:.1f} / {c.server_cpu:.1f} / {c.workers_cpu:.1f} "
            f"| {c.client_cpu * 1000 / c.pairs:.1f} / {c.server_cpu * 1000 / c.pairs:.1f} "
            f"/ {c.workers_cpu * 1000 / c.pairs:.1f} |"
        )
    return lines


def ledgers_note(cases: list[FlowCase]) -> list[str]:
    """Which ledgers the rows compared: the internal one only, unless a row says both."""
    both = sorted({c.label for c in cases if c.ledgers != "internal"})
    if not cases:
        return []
    if len(both) == len({c.label for c in cases}):
        return [f"Every row compares both ledgers (`METER_RECON_LEDGERS={BOTH_LEDGERS}`).", ""]
    said = (
        "Every row compares the internal ledger only (`METER_RECON_LEDGERS=internal`), as "
        "every row measured before the `stripe` ledger did, so the figures stay comparable"
    )
    if both:
        said += f"; but {', '.join(both)}: both ledgers (`{BOTH_LEDGERS}`)"
    return [said + ".", ""]


def request_lines(cases: list[FlowCase]) -> list[str]:
    """Discovery's and the diagnosis's requests in the largest run of each label, and the
    check that the bound counts them: the simulator saw the run's own count plus the meter
    refresh, and every hourly request the seeded mismatches call for."""
    lines = []
    largest: dict[str, FlowCase] = {}
    for c in cases:
        if c.label not in largest or c.pairs > largest[c.label].pairs:
            largest[c.label] = c
    for c in largest.values():
        if c.pairs < 1000:
            continue
        outside = c.requests - c.run_requests
        lines.append(
            f"- {c.label}, {c.pairs:,} pairs: discovery paged {c.subscriptions:,} subscriptions "
            f"in {c.discovery_requests:,} requests ({c.discovery_seconds:.1f} s in the flow, "
            f"{c.discovery_span:.1f} s from its first request to its last); the diagnosis asked "
            f"{c.hourly_requests:,} hourly requests ({c.hourly_expected:,} expected: 2 per "
            f"mismatched multi-day `sum` line item), {c.hourly_requests / c.requests:.1%} of "
            f"the run's; the run counted {c.run_requests:,} requests, the simulator saw "
            f"{c.requests:,} ({outside:,} outside the pairs and discovery: the meter refresh)"
        )
    return lines


def scaling_lines(cases: list[FlowCase]) -> list[str]:
    lines = []
    by_label: dict[str, list[FlowCase]] = {}
    for c in cases:
        if c.label.startswith("flow"):
            by_label.setdefault(c.label, []).append(c)
    for label, group in by_label.items():
        if len(group) < 2:
            continue
        fixed, per_request = fit_line([(c.requests, c.wall) for c in group])
        rss0, rss_slope = fit_line([(c.pairs, c.client_rss_mib) for c in group])
        largest = max(group, key=lambda c: c.pairs)
        lines.append(
            f"- {label}: wall = {fixed:.1f} s + {per_request * 1000:.2f} ms x requests "
            f"(marginal cost {per_request * group[0].rate:.3f} x 1/R; "
            f"fixed start-up {fixed:.1f} s); "
            f"steady state of the largest run {largest.steady_ratio:.3f} x 1/R; "
            f"flow RSS = {rss0:.0f} MiB + {rss_slope * 1000:.1f} MiB per 1,000 pairs"
        )
    return lines


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import prefect

    return (
        f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, Prefect {prefect.__version__}"
    )


# -- the cases: one function each, registered in the order they run ---------------------------


def parse_ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


@contextmanager
def simulator_for(latency: float, rate: float) -> Iterator[StripeSimulator]:
    with StripeSimulator(latency=latency, rate_limit=rate, api_key=API_KEY) as simulator:
        simulator.state.stats = BenchStats()  # counts discovery's and the hourly requests
        yield simulator


def default_prefect_home() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "meter-recon-bench" / "prefect-home"


@dataclass
class Bench:
    """What every case shares: the options, the work files, the simulator and the results."""

    args: argparse.Namespace
    workdir: Path
    log: Path
    simulator: StripeSimulator
    cases: list[FlowCase] = field(default_factory=list)
    baseline: list[str] = field(default_factory=list)
    micro: list[MicroResult | str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def measure(
        self,
        case: FlowCase,
        seeded: Seeded,
        env: dict[str, str] | None = None,
        *,
        simulator: StripeSimulator | None = None,
        keep: bool = True,
    ) -> FlowCase:
        """Run the flow once for `case`; `keep` puts it in the table."""
        run_flow_case(
            case,
            seeded=seeded,
            simulator=simulator or self.simulator,
            workdir=self.workdir,
            workers=self.args.workers,
            extra_env=env or {},
            log=self.log,
            postgres_url=self.args.postgres_url,
        )
        if keep:
            self.cases.append(case)
        return case

    def sized(
        self,
        label: str,
        sizes: list[int],
        *,
        pairs_per_task: int = 0,
        env: dict[str, str] | None = None,
        home: Path | None = None,
        simulator: StripeSimulator | None = None,
        rate: float | None = None,
        database: str = SQLITE,
    ) -> list[FlowCase]:
        """One row per size, each on freshly seeded data."""
        rows = []
        for size in sizes:
            case = FlowCase(
                label,
                size,
                pairs_per_task,
                str(home or self.args.prefect_home),
                rate=rate or self.args.rate,
                database=database,
            )
            rows.append(self.measure(case, build(size), env, simulator=simulator))
            print(
                f"  {label} x {size:,}: {case.wall:.1f} s, ratio {case.ratio:.3f}, "
                f"429s {case.rate_limited}, history {case.task_runs_recorded}/"
                f"{case.task_runs_expected}, flow RSS {case.client_rss_mib:.0f} MiB, "
                f"started after {case.settled:.1f} s for a quiet machine",
                flush=True,
            )
        return rows


Case = Callable[[Bench], None]
CASES: dict[str, Case] = {}


def case(function: Case) -> Case:
    """Register a bench case under its name (`startup` -> `--only startup`)."""
    CASES[function.__name__.replace("_", "-")] = function
    return function


@case
def startup(bench: Bench) -> None:
    """10 pairs, so the run is nearly all start-up: on the existing Prefect home (after a
    warm-up run that creates it if needed), with Prefect starting its own server as before,
    and on a brand-new home."""
    home = str(bench.args.prefect_home)
    tiny = build(10)
    bench.measure(FlowCase("start-up, existing Prefect home", 10, 1, home), tiny, keep=False)
    runs: list[tuple[FlowCase, dict[str, str]]] = [
        (FlowCase("start-up, existing Prefect home", 10, 1, home), {}),
        (
            FlowCase("start-up, existing home, Prefect starts its server (before)", 10, 1, home),
            {"METER_RECON_EARLY_PREFECT_SERVER": "false"},
        ),
    ]
    new_home = bench.workdir / "new-prefect-home"
    if not bench.args.no_new_home:
        runs.append((FlowCase("start-up, new Prefect home", 10, 1, str(new_home)), {}))
    for row, env in runs:
        bench.measure(row, tiny, env)
        print(f"  {row.label}: {row.wall:.1f} s", flush=True)
    shutil.rmtree(new_home, ignore_errors=True)


@case
def one_task_per_pair(bench: Bench) -> None:
    """The "before": every pair its own task run."""
    bench.sized(
        "flow, 1 task per pair (before)", parse_ints(bench.args.per_pair_sizes), pairs_per_task=1
    )


@case
def default_grouping(bench: Bench) -> None:
    """The flow as it runs by default: pairs grouped into tasks for the run's size and rate."""
    bench.sized(DEFAULT_LABEL, parse_ints(bench.args.sizes))


@case
def dask(bench: Bench) -> None:
    """The Dask `LocalCluster`: two worker processes sharing Stripe's limit through Prefect,
    recording into a SQLite file (both processes write one file) and/or PostgreSQL."""
    args = bench.args
    for database in parse_databases(args.dask_databases):
        for prefect_database in parse_databases(args.dask_prefect_databases):
            env = {"METER_RECON_TASK_RUNNER": "dask"}
            label = f"flow, Dask LocalCluster (2 processes), {database}"
            try:
                if prefect_database == POSTGRES:
                    env["PREFECT_API_DATABASE_CONNECTION_URL"] = prefect_postgres_url(args)
                    label += ", Prefect's server on PostgreSQL"
                bench.sized(label, parse_ints(args.dask_sizes), env=env, database=database)
            except PostgresUnreachable as exc:
                bench.notes.append(f"- {label}: not run, {exc}")


@case
def runners(bench: Bench) -> None:
    """Threads and the Dask `LocalCluster` side by side: the same pairs, rate and database,
    one size after the other; whole and marginal cost against the bound, 429s, and the CPU
    each pair costs the flow's process, Prefect's server and the Dask workers."""
    args = bench.args
    sizes = parse_ints(args.runner_sizes)
    if not sizes:
        return
    database = parse_databases(args.runner_database)[0]
    rows: dict[str, list[FlowCase]] = {}
    try:
        with simulator_for(args.latency, args.runner_rate) as simulator:
            for name, env in (("threads", {}), ("Dask", {"METER_RECON_TASK_RUNNER": "dask"})):
                rows[name] = bench.sized(
                    f"flow, {name} beside {'Dask' if name == 'threads' else 'threads'}",
                    sizes,
                    env=env,
                    simulator=simulator,
                    rate=args.runner_rate,
                    database=database,
                )
    except PostgresUnreachable as exc:
        bench.notes.append(f"- threads beside Dask: not run, {exc}")
        return
    bench.notes += ["", *runner_table(rows)]


def runner_table(rows: dict[str, list[FlowCase]]) -> list[str]:
    """Per runner: the largest run's whole cost, the fan-out's, and the marginal cost fitted
    over the sizes twice: on the whole run (start-up left out, its run-to-run noise in) and on
    the fan-out alone (where the pairs are reconciled: no start-up at all); CPU per pair by
    process."""
    lines = [
        "| runner, side by side | R req/s | pairs | wall s | bound s | whole (wall / bound) "
        "| fan-out / bound | marginal: wall over sizes | marginal: fan-out over sizes | 429s "
        "| stalls > 0.5 s (s) | CPU ms per pair flow / server / Dask workers |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for group in rows.values():
        largest = max(group, key=lambda c: c.pairs)
        fanout_bound = fanout_requests(largest) / largest.rate
        wall_fit = marginal(group, lambda c: c.requests, lambda c: c.wall)
        fanout_fit = marginal(group, fanout_requests, lambda c: c.phases["fanout"])
        pairs = largest.pairs
        lines.append(
            f"| {largest.runner} | {largest.rate:,.0f} | {pairs:,} | {largest.wall:.1f} "
            f"| {largest.bound:.1f} | {largest.ratio:.3f} "
            f"| {largest.phases['fanout'] / fanout_bound:.3f} | {wall_fit} | {fanout_fit} "
            f"| {sum(c.rate_limited for c in group)} | {largest.stalls} ({largest.idle:.1f}) "
            f"| {largest.client_cpu * 1000 / pairs:.1f} / {largest.server_cpu * 1000 / pairs:.1f}"
            f" / {largest.workers_cpu * 1000 / pairs:.1f} |"
        )
    return lines


def fanout_requests(case: FlowCase) -> int:
    """The requests of the fan-out: all but discovery's and the meter refresh."""
    return max(case.requests - 1 - case.discovery_requests, 1)


def marginal(
    group: list[FlowCase],
    requests: Callable[[FlowCase], float],
    seconds: Callable[[FlowCase], float],
) -> str:
    """The fitted seconds per request over the sizes, x R ("-" from a single size)."""
    if len(group) < 2:
        return "-"
    _, per_request = fit_line([(requests(c), seconds(c)) for c in group])
    return f"{per_request * group[0].rate:.3f}"


PREFECT_DATABASE = "meter_recon_bench_prefect"


def prefect_postgres_url(args: argparse.Namespace) -> str:
    """Prefect's server's own database on PostgreSQL (asyncpg), kept across runs."""
    url = ensure_postgres_database(args.postgres_url, PREFECT_DATABASE)
    return url.replace("postgresql://", "postgresql+asyncpg://", 1)


def parse_databases(text: str) -> list[str]:
    names = {"sqlite": SQLITE, "postgres": POSTGRES, "postgresql": POSTGRES}
    return [names[part] for part in parse_names(text.lower())]


@case
def server_running(bench: Bench) -> None:
    """A Prefect server already up (`PREFECT_API_URL`, as deployments run): the flow process
    starts no server of its own."""
    sizes = parse_ints(bench.args.server_sizes)
    if not sizes:
        return
    home = bench.args.prefect_home.parent / "prefect-server-home"
    home.mkdir(parents=True, exist_ok=True)
    server_env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    server_env |= {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    server = spawn(server_env)
    try:
        server.wait_until_healthy(timeout=120)
        env = {"PREFECT_API_URL": server.api_url}
        bench.sized("start-up, Prefect server already running", [10], home=home, env=env)
        bench.sized(
            "flow, default grouping, Prefect server already running", sizes, home=home, env=env
        )
    finally:
        server.stop()


@case
def large_runs(bench: Bench) -> None:
    """Memory stays flat: the default flow at up to 100,000 pairs against a fast Stripe
    (little latency, a high limit), its peak RSS and CPU per pair set against the smallest."""
    args = bench.args
    sizes = parse_ints(args.large_sizes)
    if not sizes:
        return
    with simulator_for(args.large_latency, args.large_rate) as fast:
        rows = bench.sized(
            f"flow, default grouping, fast Stripe ({args.large_latency * 1000:.0f} ms)",
            sizes,
            simulator=fast,
            rate=args.large_rate,
        )
    smallest, largest = min(rows, key=lambda c: c.pairs), max(rows, key=lambda c: c.pairs)
    bench.notes.append(
        f"- fast Stripe ({args.large_rate:,.0f} requests/s, {args.large_latency * 1000:.0f} ms): "
        f"at {largest.pairs:,} pairs the flow's peak RSS is {largest.client_rss_mib:.0f} MiB, "
        f"{largest.client_rss_mib / smallest.client_rss_mib:.0%} of the {smallest.pairs:,}-pair "
        f"run's {smallest.client_rss_mib:.0f} MiB; CPU per pair flow "
        f"{largest.client_cpu * 1000 / largest.pairs:.2f} ms / server "
        f"{largest.server_cpu * 1000 / largest.pairs:.2f} ms"
    )


@case
def discovery_memory(bench: Bench) -> None:
    """Discovery alone, in its own process: its peak RSS at 20,000 and 100,000 pairs (every
    pair already tracked, as the flow finds them), against the fast Stripe."""
    args = bench.args
    sizes = parse_ints(args.discovery_sizes)
    if not sizes:
        return
    rows = []
    with simulator_for(args.large_latency, args.large_rate) as fast:
        for size in sizes:
            row = measure_discovery(
                size,
                simulator=fast,
                api_key=API_KEY,
                rate=args.large_rate,
                workdir=bench.workdir,
                log=bench.log,
            )
            rows.append(row)
            print(
                f"  discovery alone x {size:,}: {row.seconds:.1f} s, peak RSS "
                f"{row.peak_mib:.0f} MiB ({row.growth_mib:+.0f} MiB while discovering)",
                flush=True,
            )
    bench.notes += ["", *discovery_table(rows)]


@case
def baseline(bench: Bench) -> None:
    """The same work by hand: a sequential loop over the official `stripe` SDK."""
    args, simulator = bench.args, bench.simulator
    if args.no_baseline:
        return
    seeded = build(args.baseline_pairs)
    database_url = f"sqlite:///{bench.workdir / 'baseline.db'}"
    write_ledger(seeded, database_url)
    simulator.data = seeded.data
    simulator.reset_stats()
    result = run_baseline(
        seeded, database_url=database_url, api_base=simulator.url, api_key=API_KEY
    )
    requests = simulator.stats.total
    bound = requests / args.rate
    flow = next(
        (c for c in bench.cases if c.pairs == args.baseline_pairs and c.label == DEFAULT_LABEL),
        None,
    )
    versus = f"; the flow is {result.seconds / flow.wall:.1f}x faster" if flow else ""
    bench.baseline.append(
        f"| by hand: sequential `stripe` SDK loop + plain comparison | "
        f"{result.pairs:,} | {requests:,} | {result.seconds:.1f} | {bound:.1f} "
        f"| {result.seconds / bound:.3f} | {simulator.stats.rate_limited} "
        f"| {result.pairs_with_differences:,} pairs differ{versus} |"
    )
    print(f"  baseline x {result.pairs:,}: {result.seconds:.1f} s", flush=True)


@case
def micro(bench: Bench) -> None:
    """The comparison alone, and recording on SQLite and PostgreSQL."""
    args = bench.args
    if args.no_micro:
        return
    bench.micro.append(bench_compare(args.micro_pairs * 10))
    bench.micro.append(bench_assess(args.micro_pairs))
    bench.micro.append(sqlite_record(bench.workdir, args.micro_pairs))
    bench.micro.append(postgres_record(args.postgres_url, args.micro_pairs))


@case
def ledger_sync(bench: Bench) -> None:
    """The ledger query streamed from PostgreSQL: rows per second, peak RSS flat in rows."""
    sizes = parse_ints(bench.args.ledger_sizes)
    if sizes:
        bench.notes += ["", *run_ledger_sync(bench.args.postgres_url, sizes)]


@case
def stripe_ledger(bench: Bench) -> None:
    """The flow with both ledgers and invoices for every pair: what the `stripe` ledger's
    listing, lines and per-line `usage_total` requests cost, as shares of the run's."""
    for size in parse_ints(bench.args.stripe_ledger_sizes):
        row = FlowCase(
            STRIPE_LEDGER_LABEL, size, 0, str(bench.args.prefect_home), rate=bench.args.rate
        )
        row.ledgers = BOTH_LEDGERS
        bench.measure(row, build(size, invoices=True))
        cost = row.stripe_cost
        assert cost is not None
        print(
            f"  {row.label} x {size:,}: {row.wall:.1f} s, ratio {row.ratio:.3f}, "
            f"stripe ledger {cost.added:,} of {row.requests:,} requests, "
            f"discrepancies {cost.discrepancies}",
            flush=True,
        )


DEFAULT_LABEL = "flow, default grouping"
STRIPE_LEDGER_LABEL = "flow, both ledgers, invoices for every pair"


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,5000,20000", help="pairs, default grouping")
    parser.add_argument(
        "--per-pair-sizes", default="1000,5000", help="pairs, one task per pair (before)"
    )
    parser.add_argument("--dask-sizes", default="5000", help="pairs, Dask LocalCluster")
    parser.add_argument(
        "--runner-sizes", default="500,1000,1500", help="pairs, threads beside Dask (empty: none)"
    )
    parser.add_argument(
        "--runner-rate", type=float, default=50.0, help="requests/s, threads beside Dask"
    )
    parser.add_argument(
        "--runner-database", default="postgres", help="where threads beside Dask record"
    )
    parser.add_argument(
        "--stripe-ledger-sizes",
        default="1000,20000",
        help="pairs, both ledgers with invoices for every pair (empty: none)",
    )
    parser.add_argument(
        "--ledger-sizes", default="100000,1000000", help="ledger query rows synced (empty: none)"
    )
    parser.add_argument(
        "--dask-databases",
        default="postgres",
        help="where the Dask rows record: sqlite, postgres, or both (sqlite,postgres)",
    )
    parser.add_argument(
        "--dask-prefect-databases",
        default="sqlite",
        help="Prefect's server's database, Dask rows: sqlite (its default), postgres, or both",
    )
    parser.add_argument(
        "--server-sizes", default="1000,5000", help="pairs, with a Prefect server already running"
    )
    parser.add_argument(
        "--large-sizes", default="20000,100000", help="pairs, fast Stripe (memory stays flat)"
    )
    parser.add_argument(
        "--discovery-sizes", default="20000,100000", help="pairs, discovery alone (its memory)"
    )
    parser.add_argument("--large-rate", type=float, default=1000.0, help="requests/s, large runs")
    parser.add_argument("--large-latency", type=float, default=0.005, help="seconds, large runs")
    parser.add_argument("--rate", type=float, default=100.0, help="requests/s (server and client)")
    parser.add_argument("--latency", type=float, default=0.05, help="simulator latency, seconds")
    parser.add_argument("--workers", type=int, default=16, help="METER_RECON_MAX_WORKERS")
    parser.add_argument("--baseline-pairs", type=int, default=1000)
    parser.add_argument("--micro-pairs", type=int, default=2000)
    parser.add_argument("--prefect-home", type=Path, default=default_prefect_home())
    parser.add_argument(
        "--postgres-url", default=os.environ.get("METER_RECON_BENCH_POSTGRES_URL", DEFAULT_POSTGRES)
    )
    parser.add_argument(
        "--only", default="", help=f"comma-separated cases to run, of: {', '.join(CASES)}"
    )
    parser.add_argument("--no-new-home", action="store_true", help="skip the new-home start-up")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--no-micro", action="store_true")
    parser.add_argument("--quick", action="store_true", help="sizes 200,1000; small baseline")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.per_pair_sizes, args.dask_sizes = "200,1000", "200", "200"
        args.server_sizes, args.large_sizes = "200,1000", "500,2000"
        args.runner_sizes = "200,500"
        args.discovery_sizes = "500,2000"
        args.baseline_pairs, args.micro_pairs = 200, 300
        args.stripe_ledger_sizes = "1000"
    try:
        parse_databases(args.dask_databases)
        parse_databases(args.dask_prefect_databases)
    except KeyError as unknown_database:
        parser.error(f"unknown database {unknown_database}; databases: sqlite, postgres")
    unknown = set(parse_names(args.only)) - set(CASES)
    if unknown:
        parser.error(f"unknown case(s) {', '.join(sorted(unknown))}; cases: {', '.join(CASES)}")
    return args


def parse_names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def report(bench: Bench, started: float) -> str:
    args, rate = bench.args, bench.args.rate
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        f"# meter-recon benchmark ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Machine: {machine()}. Load average at the end: {load} (other work on the machine "
        "shows here).",
        f"Simulator: {args.latency * 1000:.0f} ms latency, {rate:.0f} requests/s server-side "
        f"limit; client limit {rate:.0f}/s (the fast-Stripe rows: {args.large_latency * 1000:.0f}"
        f" ms, {args.large_rate:.0f}/s); {args.workers} task-runner threads; "
        "3 days of usage per pair.",
        "",
        *flow_table(bench.cases),
        "",
        *ledgers_note(bench.cases),
        "Where the time went (inside each run's process):",
        "",
        *phase_table(bench.cases),
        "",
        *scaling_lines(bench.cases),
        *request_lines(bench.cases),
        *bench.notes,
        *(["", *table] if (table := cost_table(bench.cases)) else []),
    ]
    if bench.baseline:
        lines += [
            "",
            "| baseline | pairs | requests | wall s | bound s | ratio | 429s | result |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
            *bench.baseline,
        ]
    if bench.micro:
        lines += [
            "",
            "| micro-benchmark | units | seconds | per second | ms per unit | what it did |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for m in bench.micro:
            if isinstance(m, str):
                lines.append(f"| record (PostgreSQL) | - | - | - | - | {m} |")
            else:
                lines.append(
                    f"| {m.name} | {m.units:,} {m.unit} | {m.seconds:.2f} "
                    f"| {m.per_second:,.0f} {m.unit}/s | {m.ms_per_unit:.3f} | {m.note} |"
                )
    lines += ["", f"Total bench time {time.time() - started:.0f} s."]
    return "\n".join(lines)


def write_results(bench: Bench, text: str) -> None:
    out: Path = bench.args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n", encoding="utf-8")
    out.with_suffix(".json").write_text(
        json.dumps(
            {
                "cases": [asdict(c) | {"bound": c.bound, "ratio": c.ratio} for c in bench.cases],
                "micro": [asdict(m) if isinstance(m, MicroResult) else m for m in bench.micro],
            },
            indent=2,
        ),
        encoding="utf-8",
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chosen = parse_names(args.only) or list(CASES)
    args.prefect_home.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="meter-recon-bench-"))
    print(f"bench: work files and flow logs in {workdir}", flush=True)
    started = time.time()
    try:
        with simulator_for(args.latency, args.rate) as simulator:
            bench = Bench(args, workdir, workdir / "flow-runs.log", simulator)
            for name in chosen:
                CASES[name](bench)
                # The tables so far, after every case: a long run cut short keeps its rows.
                write_results(bench, report(bench, started))
    finally:
        # Keep the flow-run log and the per-run JSON; the databases are large and rebuilt.
        for database in workdir.glob("*.db*"):
            database.unlink(missing_ok=True)
    text = report(bench, started)
    print("\n" + text, flush=True)
    write_results(bench, text)
    ok = all(
        c.pairs_failed == 0 and c.discrepancies == c.discrepancies_expected for c in bench.cases
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
