"""Discovery's memory alone: `tasks.discover.discover` in its own process, its peak RSS read.

The parent seeds the simulator with the bench's subscriptions (one per customer, 4 metered
items each) and a database where every billed pair is already tracked (as the flow finds
them: the ledger tracked them), then starts `python -m bench.discovery --out FILE` with the
settings in its environment. The child imports what discovery needs, opens the database,
notes its RSS, resets the peak (`/proc/self/clear_refs`), discovers, and writes its peak and
what it found. So the figure is discovery's own, not the flow's or the seeding's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.environ import child_environ
from bench.proc import status_kib

ROOT = Path(__file__).resolve().parent.parent


def _reset_peak() -> bool:
    """Start `VmHWM` again from the current RSS (Linux >= 4.0); False where it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def child(out: Path) -> None:
    """Discover once with the environment's settings; write the figures to `out`."""
    from sqlalchemy import text

    from integrations.settings import get_settings
    from models.engine import get_engine
    from tasks.discover import discover
    from tasks.run_config import RunConfig

    config = RunConfig.of(get_settings())
    with get_engine(config.database).connect() as connection:  # the driver loaded, the pool up
        connection.execute(text("SELECT 1"))
    before = status_kib("VmRSS")
    reset = _reset_peak()
    started = time.monotonic()
    found = discover(config)
    seconds = time.monotonic() - started
    added = found.added if isinstance(found.added, int) else len(found.added)  # before: a tuple
    figures = {
        "rss_before_kib": before,
        "peak_kib": status_kib("VmHWM"),
        "peak_reset": reset,
        "seconds": seconds,
        "pairs": found.pairs,
        "items": found.items,
        "added": added,
        "prices": found.prices,
        "requests": found.requests,
    }
    out.write_text(json.dumps(figures), encoding="utf-8")


@dataclass(frozen=True, slots=True)
class DiscoveryMemory:
    pairs: int
    subscriptions: int
    rss_before_mib: float
    peak_mib: float
    seconds: float
    requests: int
    found_pairs: int
    added: int

    @property
    def growth_mib(self) -> float:
        return self.peak_mib - self.rss_before_mib


def seed(n: int, database_url: str) -> tuple[Any, int]:
    """The simulator's data for n pairs (subscriptions only: discovery reads nothing else) and
    a migrated database tracking every pair; returns the data and its subscriptions."""
    from bench.dataset import METERS, add_subscriptions, pair_list
    from models.engine import get_engine, session_scope
    from models.migrate import upgrade
    from models.pairs import track_from_ledger
    from simulator import SimulatorData

    data = SimulatorData()
    for meter, event_name, formula in METERS:
        data.add_meter(id=meter, event_name=event_name, formula=formula)
    pairs = pair_list(n)
    subscriptions = add_subscriptions(data, pairs)
    upgrade(database_url)
    with session_scope(get_engine(database_url)) as session:
        track_from_ledger(session=session, pairs=[(c, m) for c, m, _e, _f in pairs])
    return data, subscriptions


def measure(
    n: int, *, simulator: Any, api_key: str, rate: float, workdir: Path, log: Path
) -> DiscoveryMemory:
    """Seed n pairs, run discovery in a child process, and read its figures."""
    database_url = f"sqlite:///{workdir / f'discovery-{n}-{time.monotonic_ns()}.db'}"
    simulator.data, subscriptions = seed(n, database_url)
    simulator.reset_stats()
    env = child_environ(
        {
            "STRIPE_API_KEY": api_key,
            "STRIPE_API_BASE": simulator.url,
            "METER_RECON_DATABASE_URL": database_url,
            "METER_RECON_MAX_REQUESTS_PER_SECOND": str(rate),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
    )
    out = workdir / f"discovery-{n}.json"
    with log.open("ab") as sink:
        sink.write(f"\n=== discovery alone: {n} pairs ===\n".encode())
        sink.flush()
        command = [sys.executable, "-m", "bench.discovery", "--out", str(out)]
        subprocess.run(command, cwd=ROOT, env=env, stdout=sink, stderr=sink, check=True)
    figures = json.loads(out.read_text())
    if not figures["peak_reset"]:
        raise RuntimeError("could not reset the peak RSS (/proc/self/clear_refs)")
    return DiscoveryMemory(
        pairs=n,
        subscriptions=subscriptions,
        rss_before_mib=figures["rss_before_kib"] / 1024,
        peak_mib=figures["peak_kib"] / 1024,
        seconds=figures["seconds"],
        requests=figures["requests"],
        found_pairs=figures["pairs"],
        added=figures["added"],
    )


def table(rows: list[DiscoveryMemory]) -> list[str]:
    lines = [
        "| discovery alone | pairs | subscriptions | requests | s | RSS before MiB "
        "| peak RSS MiB | growth MiB | pairs found / newly tracked |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| `discover` (every pair already tracked) | {r.pairs:,} | {r.subscriptions:,} "
            f"| {r.requests:,} | {r.seconds:.1f} | {r.rss_before_mib:.0f} | {r.peak_mib:.0f} "
            f"| {r.growth_mib:.0f} | {r.found_pairs:,} / {r.added:,} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.discovery")
    parser.add_argument("--out", type=Path, required=True)
    child(parser.parse_args().out)


if __name__ == "__main__":
    main()
