"""Stripe's rate limit shared by the worker processes of one machine that cannot share one
window (no POSIX file locks, so no `machine_window`): a fixed share each, with no round trip.

A Dask `LocalCluster` has a known number of worker processes, so the limit can be cut into
fixed shares: the budget (98 % of the limit, as for the Prefect global concurrency limit) is
split into whole requests, one share per process, and each process lets at most its share
start in any window of `1 + jitter` seconds (the per-process sliding window the thread
runner uses). Requests that arrive at Stripe in any one second started within `1 + jitter`
seconds, so Stripe sees at most the budget in any second, and no process asks Prefect or
another process for anything.

What a process does not use of its share is lost to the others, which is what the machine's
shared window avoids: the run's last seconds, when one process has no work left.
"""

from __future__ import annotations

import math
import threading

from integrations.stripe import machine_window
from integrations.stripe.prefect_limit import DEFAULT_JITTER, DEFAULT_MARGIN
from integrations.stripe.rate_limit import SlidingWindowRateLimiter


def share_of(rate: float, *, processes: int, index: int, margin: float = DEFAULT_MARGIN) -> int:
    """Requests process `index` of `processes` may start in any `1 + jitter` seconds: the
    budget split in whole requests, the first ones taking one more when it does not divide."""
    if processes < 1 or not 0 <= index < processes:
        raise ValueError(f"process {index!r} of {processes!r}: not a process of the machine")
    budget = math.floor(rate * (1 - margin) + 1e-9)
    if budget < processes:
        raise ValueError(
            f"a rate limit of {rate!r} requests/s cannot be shared by {processes} processes"
        )
    base, extra = divmod(budget, processes)
    return base + (1 if index < extra else 0)


_shared: dict[tuple[float, int, int], SlidingWindowRateLimiter] = {}
_shared_lock = threading.Lock()


def local_share_limiter(
    rate: float, *, processes: int, index: int, jitter: float = DEFAULT_JITTER
) -> SlidingWindowRateLimiter:
    """The process-wide limiter of process `index`'s share of `rate` requests a second."""
    with _shared_lock:
        key = (rate, processes, index)
        limiter = _shared.get(key)
        if limiter is None:
            share = share_of(rate, processes=processes, index=index)
            limiter = _shared[key] = SlidingWindowRateLimiter(share, 1.0, margin=jitter)
        return limiter


def local_cluster_limiter(rate: float, *, processes: int, index: int) -> SlidingWindowRateLimiter:
    """Worker `index`'s limiter: the machine's shared window, or its fixed share where the
    machine has no POSIX file locks."""
    if machine_window.machine_window_supported():
        return machine_window.machine_window_limiter(rate)
    return local_share_limiter(rate, processes=processes, index=index)


def describe_local_limit(rate: float, *, processes: int) -> str:
    """How the local cluster's workers share `rate`, for the run's log."""
    if machine_window.machine_window_supported():
        window = machine_window.machine_window_limiter(rate)
        return (
            f"through one window on this machine: {window.capacity} requests in any "
            f"{window.window:.2f} s"
        )
    shares = [share_of(rate, processes=processes, index=i) for i in range(processes)]
    each = " + ".join(map(str, shares))
    return f"in fixed shares: {each} requests in any {1 + DEFAULT_JITTER:.2f} s"
