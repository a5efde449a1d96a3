"""Stripe's rate limit shared by every process of a run: a Prefect global concurrency limit.

When tasks run in several processes (the Dask task runner), a per-process limiter cannot keep
the account under Stripe's limit. A Prefect global concurrency limit (GCL) with
`slot_decay_per_second`, used in `rate_limit` mode, can: one bucket of `limit` slots on the
Prefect server, draining at `decay` slots a second, that every process takes slots from.

Measured on the embedded Prefect server (Prefect 3.9.1, 2 cores): one acquisition is one HTTP
request, 5-15 ms when the server is idle, more when it is busy recording task runs;
`prefect.concurrency.sync.rate_limit` also emits a Prefect event for every acquisition, which
made one cost 45-65 ms back to back (about 17 a second for all processes together), and it
retries refusals internally, so its caller cannot tell when the slots were granted. One
acquisition per Stripe request would cap a run far below Stripe's limit. So:

- a process asks for several slots at once: as many as it has threads waiting, at most
  `block`, and hands them out; `PrefectSlots` asks the way `rate_limit` does (the same
  endpoint and mode, sleeping `Retry-After` on 423) without the per-acquisition event, and
  reports when the granting attempt was sent;
- a slot not used within `ttl` seconds of that moment is thrown away, never kept for later;
- after a grant of `s` slots a process waits `s / decay` before asking again (an earlier
  attempt would be refused, and a refusal restarts the server's decay clock for everyone).

Why no sliding second sees more than `rate` requests start. The server grants at most
`limit + decay x T + 1` slots in any T seconds (the bucket's content, what decays meanwhile,
and one slot for its rounding); with `limit = 1` grants are at least `1 / decay` apart, so at
most `1 + floor(decay x T)`. A request starts at most `ttl` after its grant, so the requests
starting in any one second were granted within `W = 1 + ttl` seconds:

    requests in any second <= limit + decay x W + 1     (limit > 1)
                           <= 1 + floor(decay x W)      (limit = 1)
                           <= budget = floor(rate x (1 - margin))

`plan_for` takes the largest decay that keeps this. The margin (2 %) absorbs jitter between a
request's start here and its arrival at Stripe. Throughput is then at most `decay` requests/s
(78/s for a limit of 100/s): the price of sharing the limit across processes through Prefect.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DEFAULT_LIMIT_NAME = "meter-recon:stripe-requests"
DEFAULT_MARGIN = 0.02
DEFAULT_TTL = 0.15
SINGLE_SLOT_BELOW = 30.0  # requests/s under which slots are taken one at a time
SLOTS_PER_BLOCK_DIVISOR = 14.0  # block = rate / 14: about 11-14 acquisitions a second


@dataclass(frozen=True, slots=True)
class RateLimitPlan:
    """How `rate` requests/s maps onto a Prefect GCL (`limit` slots, `slot_decay_per_second`)."""

    rate: float
    limit: int
    slot_decay_per_second: float
    ttl: float

    @property
    def block(self) -> int:
        """The most slots one acquisition asks for."""
        return self.limit

    def worst_second(self) -> int:
        """The most requests that can start in any one second under this plan."""
        window = 1 + self.ttl
        if self.limit == 1:
            return 1 + math.floor(self.slot_decay_per_second * window)
        return math.floor(self.limit + self.slot_decay_per_second * window + 1)


def plan_for(
    rate: float, *, margin: float = DEFAULT_MARGIN, ttl: float = DEFAULT_TTL
) -> RateLimitPlan:
    """The GCL for `rate` requests/s: the largest decay whose worst second stays in budget."""
    if not rate > 0 or math.isinf(rate):
        raise ValueError(f"rate must be a positive number, got {rate!r}")
    if not 0 <= margin < 1 or ttl < 0:
        raise ValueError("margin must be in [0, 1) and ttl non-negative")
    budget = max(1, math.floor(rate * (1 - margin) + 1e-9))
    window = 1 + ttl
    limit = 1 if rate < SINGLE_SLOT_BELOW else max(2, round(rate / SLOTS_PER_BLOCK_DIVISOR))
    # limit 1: 1 + floor(decay x W) <= budget; else: limit + decay x W + 1 <= budget.
    decay = budget / window * (1 - 1e-6) if limit == 1 else (budget - limit - 1) / window
    decay = min(decay, rate * (1 - margin))
    return RateLimitPlan(rate=rate, limit=limit, slot_decay_per_second=decay, ttl=ttl)


def ensure_limit(plan: RateLimitPlan, name: str = DEFAULT_LIMIT_NAME) -> None:
    """Create the GCL, or bring its limit and decay to `plan` (at the start of a run)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(
            name, plan.limit, slot_decay_per_second=plan.slot_decay_per_second
        )


class MissingRateLimit(RuntimeError):
    """The GCL does not exist on the Prefect server: refusing to run without a rate limit."""


class PrefectSlots:
    """Takes slots of a GCL in `rate_limit` mode, as `prefect.concurrency.sync.rate_limit`
    does (`POST /v2/concurrency_limits/increment`; on 423 sleep `Retry-After`, ask again),
    but returns when the granting attempt was sent and answered, and emits no event.

    One client per instance, opened on first use (again if the Prefect API changes), used by
    one thread at a time (the limiter's lock), talking to the API the calling task runs
    against.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._client: Any = None
        self._api_url: str | None = None

    def _current_client(self) -> Any:
        from prefect.client.orchestration import get_client
        from prefect.settings import get_current_settings

        api_url = get_current_settings().api.url
        if self._client is None or api_url != self._api_url:
            if self._client is not None:
                self._client.__exit__(None, None, None)
            client = get_client(sync_client=True)
            client.__enter__()
            self._client, self._api_url = client, api_url
        return self._client

    def __call__(self, name: str, slots: int) -> tuple[float, float]:
        import httpx

        client = self._current_client()
        while True:
            sent = self._clock()
            try:
                response = client.increment_concurrency_slots(
                    names=[name], slots=slots, mode="rate_limit"
                )
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code != 423:
                    raise
                time.sleep(float(exc.response.headers.get("Retry-After", "0.05")))
                continue
            if not response.json():
                raise MissingRateLimit(
                    f"The Prefect global concurrency limit {name!r} does not exist; "
                    "the flow creates it when it starts."
                )
            return sent, self._clock()


class PrefectRateLimiter:
    """A `RateLimiter` whose slots come from a Prefect GCL shared by every process.

    Thread-safe. A thread that finds no fresh slot asks Prefect for as many as there are
    threads waiting (at most the plan's block) while the others wait for it; slots are handed
    out at once, and thrown away `ttl` seconds after the attempt that won them was sent (never
    later than the grant), however slow Prefect answered. `acquire_slots(name, n)` takes `n`
    slots and returns when the granting attempt was sent and when its answer came back.
    """

    def __init__(
        self,
        plan: RateLimitPlan,
        *,
        name: str = DEFAULT_LIMIT_NAME,
        acquire_slots: Callable[[str, int], tuple[float, float]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.plan = plan
        self.name = name
        self._acquire_slots = acquire_slots or PrefectSlots(clock)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._waiting = 0
        self._left = 0
        self._expires = -math.inf
        self._next_ask = -math.inf
        self.acquisitions = 0
        self.slots_granted = 0
        self.slots_wasted = 0

    def acquire(self) -> None:
        with self._count_lock:
            self._waiting += 1
        try:
            with self._lock:
                if self._left > 0 and self._clock() < self._expires:
                    self._left -= 1
                    return
                self.slots_wasted += self._left
                self._left = 0
                wait = self._next_ask - self._clock()
                if wait > 0:
                    self._sleep(wait)
                with self._count_lock:
                    wanted = max(1, min(self.plan.block, self._waiting))
                sent, answered = self._acquire_slots(self.name, wanted)
                self.acquisitions += 1
                self.slots_granted += wanted
                self._expires = sent + self.plan.ttl
                self._next_ask = answered + wanted / self.plan.slot_decay_per_second
                self._left = wanted - 1
        finally:
            with self._count_lock:
                self._waiting -= 1

    def __repr__(self) -> str:
        return f"PrefectRateLimiter({self.name!r}, {self.plan})"


_shared: dict[tuple[str, float], PrefectRateLimiter] = {}
_shared_lock = threading.Lock()


def shared_prefect_rate_limiter(rate: float, name: str = DEFAULT_LIMIT_NAME) -> PrefectRateLimiter:
    """The process-wide Prefect-backed limiter for `rate` requests a second."""
    with _shared_lock:
        limiter = _shared.get((name, rate))
        if limiter is None:
            limiter = _shared[(name, rate)] = PrefectRateLimiter(plan_for(rate), name=name)
        return limiter
