"""Stripe's rate limit shared by every process of a run: a Prefect global concurrency limit.

When tasks run in several processes (the Dask task runner), a per-process limiter cannot keep
the account under Stripe's limit. A Prefect global concurrency limit (GCL) with
`slot_decay_per_second`, used in `rate_limit` mode, can: one bucket on the Prefect server that
every process takes slots from.

Measured on the embedded Prefect server (Prefect 3.9.1, 2 cores): one acquisition is one HTTP
request, 5-15 ms; `prefect.concurrency.sync.rate_limit` also emits a Prefect event for each
one, which made an acquisition cost 45-65 ms back to back, about 17 acquisitions/s for all
processes together. One acquisition per Stripe request would cap a run there. So a process
takes a *block* of slots per acquisition (about ten a second) and hands them to its threads;
a slot not used within `ttl` seconds of its grant is thrown away, never saved for a burst.

Why no sliding second sees more than `rate` requests start: the plan sets `limit = block`,
so after a block is granted the bucket is full, and the next grant must wait until `block`
slots have decayed: grants are at least `block / decay` seconds apart (the server only ever
rounds decay down, and a refused attempt restarts its decay clock, which only slows things).
A request starts at most `ttl` seconds after its block was asked for, so the requests that
start in any one second come from blocks granted within `W = 1 + ttl` seconds:

    requests in any second <= block x (1 + floor(W x decay / block)) <= budget

with `budget = floor(rate x (1 - margin))`. `plan_for` takes the largest decay for which
this holds (and never more than the budget per second). The margin (2 %) absorbs network
jitter between a request's start here and its arrival at Stripe. Throughput is then about
`decay` requests/s (89/s for a limit of 100/s): the price of sharing the limit across
processes through Prefect.
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
DEFAULT_TTL = 0.1
DEFAULT_ACQUISITIONS_PER_SECOND = 10.0


@dataclass(frozen=True, slots=True)
class RateLimitPlan:
    """How a rate of `rate` requests/s maps onto a Prefect GCL."""

    rate: float
    limit: int
    slot_decay_per_second: float
    block: int
    ttl: float

    def worst_second(self) -> int:
        """The most requests that can start in any one second under this plan."""
        window = 1 + self.ttl
        return self.block * (1 + math.floor(window * self.slot_decay_per_second / self.block))


def plan_for(
    rate: float,
    *,
    margin: float = DEFAULT_MARGIN,
    ttl: float = DEFAULT_TTL,
    acquisitions_per_second: float = DEFAULT_ACQUISITIONS_PER_SECOND,
) -> RateLimitPlan:
    """The GCL settings for `rate` requests/s: blocks sized for ~10 acquisitions a second."""
    if not rate > 0 or math.isinf(rate):
        raise ValueError(f"rate must be a positive number, got {rate!r}")
    if not 0 <= margin < 1 or ttl < 0:
        raise ValueError("margin must be in [0, 1) and ttl non-negative")
    budget = max(1, math.floor(rate * (1 - margin) + 1e-9))
    # Blocks of about rate / 10 slots; among the sizes near that, the one that wastes the
    # least of the budget (e.g. 14 for 98: seven blocks fill it exactly), larger on a tie.
    target = max(1, min(budget, math.floor(rate / acquisitions_per_second)))
    sizes = range(max(1, target // 2), min(budget, target * 3 // 2) + 1)
    block = max(sizes, key=lambda size: (budget // size * size, size))
    blocks_per_window = budget // block
    # Strictly below `blocks_per_window` grants per window of 1 + ttl seconds, after the first.
    decay = blocks_per_window * block / (1 + ttl) * (1 - 1e-6)
    decay = min(decay, rate * (1 - margin))
    return RateLimitPlan(rate=rate, limit=block, slot_decay_per_second=decay, block=block, ttl=ttl)


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
    """Takes slots of a GCL in `rate_limit` mode, the way `prefect.concurrency.sync.rate_limit`
    does (`POST /v2/concurrency_limits/increment`, then sleep `Retry-After` on 423 and ask
    again), with two differences that matter here: it returns when the granting attempt was
    sent and answered, so the caller knows how old its slots can be, and it emits no Prefect event per
    acquisition (each one costs the Prefect server more than the acquisition itself).

    One client per limiter, opened on first use (again if the Prefect API changes), used by
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

    Thread-safe. One thread at a time asks Prefect for a block of slots (the others wait for
    it); each `acquire()` then takes one slot of the block, or a new block when the block is
    used up or older than `ttl` seconds. A block's age counts from when the attempt that won
    it was sent (never later than the grant), so however slow Prefect answers, no slot is
    used more than `ttl` seconds after the server granted it. `acquire_slots(name, slots)`
    returns when the granting attempt was sent and when its answer came back.
    """

    def __init__(
        self,
        plan: RateLimitPlan,
        *,
        name: str = DEFAULT_LIMIT_NAME,
        acquire_slots: Callable[[str, int], tuple[float, float]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plan = plan
        self.name = name
        self._acquire_slots = acquire_slots or PrefectSlots(clock)
        self._clock = clock
        self._lock = threading.Lock()
        self._left = 0
        self._expires = -math.inf
        self._next_ask = -math.inf
        self.blocks_acquired = 0
        self.slots_wasted = 0

    def acquire(self) -> None:
        with self._lock:
            if self._left > 0 and self._clock() < self._expires:
                self._left -= 1
                return
            self.slots_wasted += self._left
            # The bucket cannot hold a new block before `block / decay` after our last grant:
            # asking earlier is refused, and a refusal restarts the server's decay clock.
            wait = self._next_ask - self._clock()
            if wait > 0:
                time.sleep(wait)
            sent, answered = self._acquire_slots(self.name, self.plan.block)
            self.blocks_acquired += 1
            self._expires = sent + self.plan.ttl
            self._next_ask = answered + self.plan.block / self.plan.slot_decay_per_second
            self._left = self.plan.block - 1

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
