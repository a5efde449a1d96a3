"""What the bench reads off the simulator besides its totals: discovery's and the diagnosis's
requests, each counted where it arrives, and when discovery's came.

The run's own count (`RunOutcome.requests`, the pairs' requests plus discovery's) is set
against these, so the table shows the bound `Q / R` counts both.
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator.stats import SimulatorStats

#: The endpoints only discovery asks: subscriptions, their further items, a tiered price.
DISCOVERY_KINDS = frozenset({"subscriptions_list", "subscription_items_list", "price_get"})
HOURLY_QUERY = "value_grouping_window=hour"


@dataclass(frozen=True, slots=True)
class Arrivals:
    """How many requests of one kind arrived, and the first and last arrival."""

    count: int
    first: float | None
    last: float | None

    @property
    def span(self) -> float:
        """Seconds from the first arrival to the last (0 for fewer than two)."""
        if self.first is None or self.last is None:
            return 0.0
        return self.last - self.first


class BenchStats(SimulatorStats):
    """The simulator's counters, plus discovery's and the hourly diagnosis's arrivals."""

    def __init__(self) -> None:
        super().__init__()
        self._groups: dict[str, list[float]] = {}

    def reset(self) -> None:
        super().reset()
        with self._lock:
            self._groups.clear()

    def record_arrival(self, when: float, target: str, kind: str) -> None:
        super().record_arrival(when, target, kind)
        group = request_group(target, kind)
        if group is None:
            return
        with self._lock:
            seen = self._groups.setdefault(group, [0, when, when])
            seen[0] += 1
            seen[1], seen[2] = min(seen[1], when), max(seen[2], when)

    def arrivals(self, group: str) -> Arrivals:
        """`group`: "discovery" or "hourly"."""
        with self._lock:
            seen = self._groups.get(group)
        if seen is None:
            return Arrivals(0, None, None)
        return Arrivals(int(seen[0]), seen[1], seen[2])


def request_group(target: str, kind: str) -> str | None:
    """Which of the bench's groups a request belongs to, if any."""
    if kind in DISCOVERY_KINDS:
        return "discovery"
    if kind == "event_summaries" and HOURLY_QUERY in target:
        return "hourly"
    return None
