"""Between two measured runs: let the last one's processes exit and the machine go quiet.

A run that starts while the one before it is still shutting down (its Dask workers, its
Prefect server) or while PostgreSQL writes out the ledger just seeded pays for that in its
start-up, and a start-up slower in one size than in another reads as marginal cost in the fit
over sizes. The seconds waited are kept with each run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

QUIET = 0.25  # the machine's busy share of all its cores below which a run may start
QUIET_FOR = 0.5  # seconds the share is measured over
TIMEOUT = 20.0  # seconds: a machine busy with other work is measured as it is


def cpu_busy(interval: float = QUIET_FOR) -> float:
    """The busy share of all the machine's cores over `interval` seconds (0 to 1); 0 where
    `/proc/stat` cannot be read."""
    before = _cpu_times()
    time.sleep(interval)
    after = _cpu_times()
    if before is None or after is None or after[0] <= before[0]:
        return 0.0
    total, idle = after[0] - before[0], after[1] - before[1]
    return max(0.0, 1.0 - idle / total)


def _cpu_times() -> tuple[int, int] | None:
    """(all ticks, idle and I/O-wait ticks) since boot."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    return sum(fields), fields[3] + fields[4]


def settle(
    *,
    busy: Callable[[], float] = cpu_busy,
    timeout: float = TIMEOUT,
    clock: Callable[[], float] = time.monotonic,
) -> float:
    """Wait until the machine is below `QUIET` (each reading takes `QUIET_FOR` seconds), for
    at most `timeout` seconds; returns the seconds waited."""
    started = clock()
    while busy() >= QUIET and clock() - started < timeout:
        pass
    return clock() - started
