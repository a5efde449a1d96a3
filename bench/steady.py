"""The marginal cost of a request, read off the simulator's arrival times.

The fitted line through runs of different sizes (`bench.run`) mixes the slope with run-to-run
noise in start-up. The arrivals of one run give the slope directly: the seconds between the
request at the 10th and the 90th percentile, per request, away from the ramp-up and the tail.
The same arrivals show the stalls: gaps of more than half a second with no request at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise


def seconds_per_request(
    arrivals: Sequence[float], *, low: float = 0.1, high: float = 0.9
) -> float | None:
    """Mean spacing of the arrivals between two quantiles; None with too few to tell."""
    ordered = sorted(arrivals)
    first, last = int(len(ordered) * low), int(len(ordered) * high)
    if last - first < 10:
        return None
    return (ordered[last] - ordered[first]) / (last - first)


def idle_seconds(arrivals: Sequence[float], *, gap: float = 0.5) -> tuple[float, int]:
    """Time between the first and the last arrival spent in gaps longer than `gap` seconds
    with no request at all (stalls), and how many such gaps there were."""
    ordered = sorted(arrivals)
    gaps = [b - a for a, b in pairwise(ordered) if b - a > gap]
    return sum(gaps), len(gaps)


def stall_spans(arrivals: Sequence[float], *, gap: float = 0.5) -> list[tuple[float, float]]:
    """Each stall as (seconds after the first arrival it began, its length): where a run
    waits (its start, a hand-over, its tail) tells what it waits for."""
    ordered = sorted(arrivals)
    if not ordered:
        return []
    return [
        (round(a - ordered[0], 2), round(b - a, 2)) for a, b in pairwise(ordered) if b - a > gap
    ]
