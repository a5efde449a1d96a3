"""The marginal cost of a request, read off the simulator's arrival times.

The fitted line through runs of different sizes (`bench.run`) mixes the slope with run-to-run
noise in start-up. The arrivals of one run give the slope directly: the seconds between the
request at the 10th and the 90th percentile, per request, away from the ramp-up and the tail.
"""

from __future__ import annotations

from collections.abc import Sequence


def seconds_per_request(
    arrivals: Sequence[float], *, low: float = 0.1, high: float = 0.9
) -> float | None:
    """Mean spacing of the arrivals between two quantiles; None with too few to tell."""
    ordered = sorted(arrivals)
    first, last = int(len(ordered) * low), int(len(ordered) * high)
    if last - first < 10:
        return None
    return (ordered[last] - ordered[first]) / (last - first)
