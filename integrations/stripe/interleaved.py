"""Stripe's rate limit shared by the worker processes of one machine, with no round trip.

The processes of a Dask `LocalCluster` share a machine, so they share its monotonic clock
(`CLOCK_MONOTONIC`: one count for every process of a machine). That clock is the whole
agreement they need: the run's request slots open on one grid, `1 / decay` apart (the pace
`prefect_limit.plan_for` computes), and process `i` of `n` owns every `n`-th slot starting
at the `i`-th. A request starts in the next slot of its process that is still open, at
most `tolerance / decay` after it opens (a thread woken later takes the next one). So,
across every process of the machine, starts open at least `1 / decay` apart, each within
`tolerance / decay` of its opening, and any second sees at most `plan.worst_second()`
arrive at Stripe, as with the Prefect global concurrency limit, without asking Prefect for
anything: a Prefect call per batch (a database write on its server) and the wait for the
bucket to drain are what made the shared limit cost more than the limit itself.

What a process does not use is lost: a process with nothing to send leaves its slots
empty. The run keeps every process busy (two tasks a thread in flight), so that is the
run's last seconds, when one process has finished before the other.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from integrations.stripe.prefect_limit import RateLimitPlan


class InterleavedRateLimiter:
    """A `RateLimiter` for process `index` of `processes` on one machine: its own slots of
    one grid every process of the machine paces by. Thread-safe; one per process."""

    def __init__(
        self,
        plan: RateLimitPlan,
        *,
        processes: int,
        index: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if processes < 1 or not 0 <= index < processes:
            raise ValueError(f"process {index!r} of {processes!r}: not a process of the machine")
        self.plan = plan
        self.processes = processes
        self.index = index
        self.spacing = 1.0 / plan.slot_decay_per_second  # between any two slots of the grid
        self.period = processes * self.spacing  # between two slots of this process
        self.tolerance = plan.tolerance * self.spacing
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next = -math.inf  # this process's next unused slot number
        self.started = 0

    def opens(self, slot: int) -> float:
        """When this process's slot number `slot` opens on the shared clock."""
        return slot * self.period + self.index * self.spacing

    def acquire(self) -> None:
        with self._lock:
            while True:
                now = self._clock()
                # The first slot not yet closed at `now`, and not used before.
                late = math.floor((now - self.tolerance - self.index * self.spacing) / self.period)
                late += 1
                slot = int(max(self._next, late))
                opens = self.opens(slot)
                if opens > now:
                    self._sleep(opens - now)
                    now = self._clock()
                if now < opens + self.tolerance:
                    self._next = slot + 1
                    self.started += 1
                    return
                self._next = slot + 1  # woke up too late for it (a busy CPU): the next one

    def __repr__(self) -> str:
        return (
            f"InterleavedRateLimiter(process {self.index} of {self.processes}, "
            f"{self.plan.slot_decay_per_second:.2f} requests/s in all)"
        )


_shared: dict[tuple[float, int, int], InterleavedRateLimiter] = {}
_shared_lock = threading.Lock()


def shared_interleaved_rate_limiter(
    plan: RateLimitPlan, *, processes: int, index: int
) -> InterleavedRateLimiter:
    """The process-wide interleaved limiter for `plan`'s rate, as process `index`."""
    with _shared_lock:
        key = (plan.rate, processes, index)
        limiter = _shared.get(key)
        if limiter is None:
            limiter = _shared[key] = InterleavedRateLimiter(plan, processes=processes, index=index)
        return limiter
