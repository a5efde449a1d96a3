"""What the simulator saw: request counts per kind and request start times."""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Iterable

KINDS = (
    "event_summaries",
    "meters_list",
    "meter_get",
    "meter_events_post",
    "subscriptions_list",
    "subscription_get",
    "subscription_items_list",
    "prices_list",
    "price_get",
    "meter_event_adjustments_post",
    "invoices_list",
    "invoice_get",
    "invoice_lines_list",
    "unknown_route",
)
OUTCOMES = ("rate_limited", "faults", "unauthorized", "errors")
#: `event_summaries` requests without `value_grouping_window` (one total over exact instants,
#: as `usage_total` asks): counted under this name as well, apart from daily and hourly ones.
UNGROUPED_SUMMARIES = "event_summaries_ungrouped"
_GROUPING = "value_grouping_window="
_MAX_TIMES = 1_000_000
_MAX_TARGETS = 10_000


def max_in_window(times: Iterable[float], window: float = 1.0) -> int:
    """The most `times` that fall in any half-open window `[t, t + window)`."""
    ordered = sorted(times)
    best, low = 0, 0
    for high, time in enumerate(ordered):
        while time - ordered[low] >= window:
            low += 1
        best = max(best, high - low + 1)
    return best


class SimulatorStats:
    """Counters and timelines, written by the server thread and read by tests.

    `counts[kind]` counts requests routed to each endpoint kind (whatever their outcome);
    `rate_limited`, `faults`, `unauthorized` and `errors` (4xx answers) count outcomes;
    `counts[UNGROUPED_SUMMARIES]` the `event_summaries` requests that ask no grouping window.
    `arrival_times` holds every request's arrival (`time.monotonic()`), `start_times` those
    the rate limiter accepted; `targets` the most recent request targets (`GET /path?query`).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.event_summaries_by_customer: Counter[str] = Counter()
        self.arrival_times: deque[float] = deque(maxlen=_MAX_TIMES)
        self.start_times: deque[float] = deque(maxlen=_MAX_TIMES)
        self.targets: deque[str] = deque(maxlen=_MAX_TARGETS)
        self.total = 0

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()
            self.event_summaries_by_customer.clear()
            self.arrival_times.clear()
            self.start_times.clear()
            self.targets.clear()
            self.total = 0

    def record_arrival(self, when: float, target: str, kind: str) -> None:
        with self._lock:
            self.total += 1
            self.arrival_times.append(when)
            self.targets.append(target)
            self.counts[kind] += 1
            if kind == "event_summaries" and _GROUPING not in target.partition("?")[2]:
                self.counts[UNGROUPED_SUMMARIES] += 1

    def record_customer(self, customer: str) -> None:
        with self._lock:
            self.event_summaries_by_customer[customer] += 1

    def record_start(self, when: float) -> None:
        with self._lock:
            self.start_times.append(when)

    def count(self, outcome: str) -> None:
        with self._lock:
            self.counts[outcome] += 1

    def _count(self, name: str) -> int:
        with self._lock:
            return self.counts[name]

    @property
    def event_summaries(self) -> int:
        return self._count("event_summaries")

    @property
    def meters_list(self) -> int:
        return self._count("meters_list")

    @property
    def meter_get(self) -> int:
        return self._count("meter_get")

    @property
    def meter_events_post(self) -> int:
        return self._count("meter_events_post")

    def requests_to(self, kind: str) -> int:
        """Requests routed to the endpoint `kind` (one of `KINDS`, or `UNGROUPED_SUMMARIES`)."""
        return self._count(kind)

    @property
    def unknown_route(self) -> int:
        return self._count("unknown_route")

    @property
    def rate_limited(self) -> int:
        return self._count("rate_limited")

    @property
    def faults(self) -> int:
        return self._count("faults")

    @property
    def unauthorized(self) -> int:
        return self._count("unauthorized")

    @property
    def errors(self) -> int:
        return self._count("errors")

    def max_starts_per_window(self, window: float = 1.0) -> int:
        """The most accepted request starts in any sliding window of `window` seconds."""
        with self._lock:
            times = list(self.start_times)
        return max_in_window(times, window)

    def max_arrivals_per_window(self, window: float = 1.0) -> int:
        """The most request arrivals (rate-limited ones included) in any sliding window."""
        with self._lock:
            times = list(self.arrival_times)
        return max_in_window(times, window)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            counts = {name: self.counts[name] for name in (*KINDS, UNGROUPED_SUMMARIES, *OUTCOMES)}
            return {**counts, "total": self.total}

    def __repr__(self) -> str:
        return f"SimulatorStats({self.snapshot()})"
