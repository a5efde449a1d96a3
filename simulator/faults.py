"""Injected faults: what the simulator does instead of answering a request.

Faults hit event-summaries requests and the billing side (subscriptions, subscription items,
prices, meter event adjustments, invoices and their lines). A scripted fault applies to event
summaries unless it names another `endpoint` (or `ANY_ENDPOINT`), so scripts written for pairs
are not used up by the discovery requests made before them; random faults hit every faultable
endpoint unless told otherwise.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, replace

# `status` faults answer with that HTTP status and a Stripe error body; `reset` closes the
# connection without a response; `timeout` holds the response for `delay` seconds (longer
# than the client's timeout); `malformed` answers 200 with a truncated JSON body.
STATUS_FAULTS = ("409", "429", "500", "502", "503")
FAULT_KINDS = (*STATUS_FAULTS, "reset", "timeout", "malformed")
DEFAULT_MIX = ("500", "503", "reset", "timeout", "malformed")
DEFAULT_TIMEOUT_DELAY = 35.0  # longer than the client's default 30 s timeout
EVENT_SUMMARIES = "event_summaries"
ANY_ENDPOINT = "any"
FAULTABLE_ENDPOINTS = frozenset(
    {
        EVENT_SUMMARIES,
        "subscriptions_list",
        "subscription_get",
        "subscription_items_list",
        "prices_list",
        "price_get",
        "meter_event_adjustments_post",
        "invoices_list",
        "invoice_get",
        "invoice_lines_list",
    }
)


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault.

    `should_retry` adds `Stripe-Should-Retry: true|false` and `retry_after` adds `Retry-After`
    (seconds) to a status fault; `customer` restricts a scripted fault to that customer's
    requests; `delay` is how long a `timeout` fault holds the response (None: the injector's
    `timeout_delay`); `endpoint` is the endpoint kind it hits (`event_summaries`,
    `subscriptions_list`, `subscription_get`, `subscription_items_list`, `prices_list`,
    `price_get`, `meter_event_adjustments_post`, `invoices_list`, `invoice_get`,
    `invoice_lines_list`, or `any` of them).
    """

    kind: str
    should_retry: bool | None = None
    retry_after: float | None = None
    customer: str | None = None
    delay: float | None = None
    endpoint: str = EVENT_SUMMARIES

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; known: {', '.join(FAULT_KINDS)}")
        if self.endpoint != ANY_ENDPOINT and self.endpoint not in FAULTABLE_ENDPOINTS:
            known = ", ".join(sorted(FAULTABLE_ENDPOINTS))
            raise ValueError(f"unknown endpoint {self.endpoint!r}; known: {known}, any")

    def applies(self, customer: str | None, endpoint: str) -> bool:
        return self.customer in (None, customer) and self.endpoint in (ANY_ENDPOINT, endpoint)

    @property
    def status(self) -> int | None:
        return int(self.kind) if self.kind in STATUS_FAULTS else None


def parse_kinds(text: str) -> tuple[str, ...]:
    """`"500,503,reset"` -> the fault kinds, validated."""
    kinds = tuple(part.strip() for part in text.split(",") if part.strip())
    for kind in kinds:
        Fault(kind)
    return kinds


class FaultInjector:
    """Faults for the next event-summaries requests: a script first, then a random rate.

    A script is a queue: each request takes the first queued fault that applies to its
    customer. Random faults hit a `rate` fraction of the remaining requests, drawn from `mix`.
    """

    def __init__(self, *, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._queue: deque[Fault] = deque()
        self._rng = random.Random(seed)
        self.rate = 0.0
        self.mix: tuple[str, ...] = DEFAULT_MIX
        self.random_customer: str | None = None
        self.random_endpoints: frozenset[str] = FAULTABLE_ENDPOINTS
        self.timeout_delay = DEFAULT_TIMEOUT_DELAY

    def set_random(
        self,
        rate: float,
        mix: Iterable[str] = DEFAULT_MIX,
        *,
        customer: str | None = None,
        seed: int | None = None,
        endpoints: Iterable[str] = FAULTABLE_ENDPOINTS,
    ) -> None:
        """Fail a `rate` fraction (0..1) of requests (to `endpoints`) with faults from `mix`."""
        kinds = tuple(mix)
        hit = frozenset(endpoints)
        if hit - FAULTABLE_ENDPOINTS:
            raise ValueError(f"unknown endpoints: {', '.join(sorted(hit - FAULTABLE_ENDPOINTS))}")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault rate must be within 0..1, got {rate!r}")
        if rate and not kinds:
            raise ValueError("a fault rate needs at least one fault kind")
        for kind in kinds:
            Fault(kind)
        with self._lock:
            self.rate, self.mix, self.random_customer = rate, kinds, customer
            self.random_endpoints = hit
            if seed is not None:
                self._rng.seed(seed)

    def script(
        self, *faults: Fault | str, customer: str | None = None, endpoint: str | None = None
    ) -> None:
        """Queue faults for the next requests (of `customer`, to `endpoint`, when given)."""
        queued = [Fault(fault) if isinstance(fault, str) else fault for fault in faults]
        if customer is not None:
            queued = [replace(fault, customer=customer) for fault in queued]
        if endpoint is not None:
            queued = [replace(fault, endpoint=endpoint) for fault in queued]
        with self._lock:
            self._queue.extend(queued)

    def clear(self) -> None:
        """No scripted faults, no random faults."""
        with self._lock:
            self._queue.clear()
            self.rate, self.mix, self.random_customer = 0.0, DEFAULT_MIX, None
            self.random_endpoints = FAULTABLE_ENDPOINTS
            self.timeout_delay = DEFAULT_TIMEOUT_DELAY

    @property
    def pending(self) -> int:
        """Scripted faults not yet applied."""
        with self._lock:
            return len(self._queue)

    def next_fault(self, customer: str | None, *, endpoint: str = EVENT_SUMMARIES) -> Fault | None:
        """The fault for one request of `customer` to `endpoint`, or None to answer normally."""
        with self._lock:
            for index, fault in enumerate(self._queue):
                if fault.applies(customer, endpoint):
                    del self._queue[index]
                    return fault
            applies = self.random_customer in (None, customer) and endpoint in self.random_endpoints
            if self.rate and applies and self._rng.random() < self.rate:
                return Fault(self._rng.choice(self.mix))
            return None
