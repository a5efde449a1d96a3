"""Stripe's rate limit shared by every process of a run: a Prefect global concurrency limit.

When tasks run in several processes (the Dask task runner), a per-process limiter cannot keep
the account under Stripe's limit. A Prefect global concurrency limit (GCL) with
`slot_decay_per_second`, taken in `rate_limit` mode, can: one bucket of `limit` slots on the
Prefect server, draining at `decay` slots a second, that every process takes slots from.

What Prefect's server does (Prefect 3.9, `prefect.server.models.concurrency_limits_v2`): a
grant of `s` slots succeeds when `active - floor(decay x seconds since the row was updated) +
s <= limit`; a grant, a refusal (423) and a release all update the row, and a refusal does not
apply the decay first, so every refusal throws away the decay accrued since the last update
(slot-time nobody gets back). Each acquisition is one database write, and
`prefect.concurrency.sync.rate_limit` adds an event to each; one process's calls are served one
at a time. One acquisition per Stripe request capped a run far below Stripe's limit, so:

- the GCL's `limit` is one batch of `k` slots (`RateLimitPlan.block`), sized from the rate and
  the number of worker processes; a process always takes a whole batch, so the bucket is empty
  at every grant and grants are at least `k / decay` apart, whoever gets them;
- a process spends its batch locally: its requests start at least `1 / decay` apart, none
  before the grant's answer arrived and none after `sent + (k - 1) / decay` (`sent`: when the
  granting attempt left, never after the grant). The next grant comes at or after
  `grant + k / decay`, so every start of the run, whichever process makes it, is at least
  `1 / decay` after the one before;
- a process asks only when the bucket has drained: it reads the limit (a read writes nothing
  and restarts no clock), sleeps for what is left, then asks. It is refused only when another
  process was granted the batch just before it, which wastes almost no slot-time;
- a process with no request waiting for `idle_return` seconds gives the rest of its batch back
  (`POST /v2/concurrency_limits/decrement`), so a worker that finishes does not hold up the
  others until its batch would have run out.

Why no second sees more than the budget. Starts at least `1 / decay` apart put at most
`floor(decay x T) + 1` in any `T` seconds; a request reaches Stripe some milliseconds after it
starts, not every one by the same delay, so the requests arriving in any one second started
within `1 + jitter` seconds:

    requests arriving in any second <= floor(decay x (1 + jitter)) + 1
                                    <= budget = floor(rate x (1 - margin))

A release keeps this: it gives back only slots whose time has not come, counted so that the
next grant is at least `1 / decay` after the releasing process's last start.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

DEFAULT_LIMIT_NAME = "meter-recon:stripe-requests"
DEFAULT_MARGIN = 0.02
DEFAULT_JITTER = 0.02  # seconds: how unevenly requests that start in order reach Stripe
DEFAULT_WORKERS = 2  # worker processes sharing the limit (a Dask `LocalCluster`)
BATCH_SECONDS_PER_WORKER = 0.5  # a batch is this many seconds of the limit per worker ...
MAX_BATCH_SECONDS = 1.0  # ... at most this many
DEFAULT_IDLE_RETURN = 0.15  # seconds without a request asking before a batch is given back
MAX_POLL_SECONDS = 0.1  # a waiting process reads the limit at least this often


@dataclass(frozen=True, slots=True)
class RateLimitPlan:
    """How `rate` requests/s maps onto a Prefect GCL (`limit` slots, `slot_decay_per_second`)."""

    rate: float
    limit: int
    slot_decay_per_second: float
    jitter: float = DEFAULT_JITTER

    @property
    def block(self) -> int:
        """The slots one acquisition takes: the whole bucket."""
        return self.limit

    def worst_second(self) -> int:
        """The most requests that can reach Stripe in any one second under this plan."""
        return math.floor(self.slot_decay_per_second * (1 + self.jitter) + 1e-9) + 1


def plan_for(
    rate: float,
    *,
    workers: int = DEFAULT_WORKERS,
    margin: float = DEFAULT_MARGIN,
    jitter: float = DEFAULT_JITTER,
) -> RateLimitPlan:
    """The GCL for `rate` requests/s shared by `workers` processes: the largest decay whose
    worst second stays in budget, and batches of `BATCH_SECONDS_PER_WORKER` per worker."""
    if not rate > 0 or math.isinf(rate):
        raise ValueError(f"rate must be a positive number, got {rate!r}")
    if not 0 <= margin < 1 or jitter < 0 or workers < 1:
        raise ValueError("margin must be in [0, 1), jitter non-negative, workers at least 1")
    budget = math.floor(rate * (1 - margin) + 1e-9)
    if budget < 2:
        raise ValueError(f"a rate limit shared across processes needs 2 requests/s, got {rate!r}")
    # floor(decay x (1 + jitter)) + 1 <= budget  <=>  decay x (1 + jitter) < budget
    decay = budget / (1 + jitter) * (1 - 1e-6)
    seconds = min(MAX_BATCH_SECONDS, BATCH_SECONDS_PER_WORKER * workers)
    limit = max(1, round(decay * seconds))
    return RateLimitPlan(rate=rate, limit=limit, slot_decay_per_second=decay, jitter=jitter)


def ensure_limit(plan: RateLimitPlan, name: str = DEFAULT_LIMIT_NAME) -> None:
    """Create the GCL, or bring its limit and decay to `plan` (at the start of a run)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(
            name, plan.limit, slot_decay_per_second=plan.slot_decay_per_second
        )


class MissingRateLimit(RuntimeError):
    """The GCL does not exist on the Prefect server: refusing to run without a rate limit."""


def _missing(name: str) -> MissingRateLimit:
    return MissingRateLimit(
        f"The Prefect global concurrency limit {name!r} does not exist; "
        "the flow creates it when it starts."
    )


@dataclass(frozen=True, slots=True)
class Bucket:
    """A GCL as read: its size, its decay and the slots still active (after decay)."""

    limit: int
    decay: float
    active: int


@dataclass(frozen=True, slots=True)
class Attempt:
    """One request for slots: granted or refused, when it left and when its answer came."""

    granted: bool
    sent: float
    answered: float


class SlotServer(Protocol):
    """What the limiter needs of Prefect's server (a stand-in in the tests)."""

    def read(self, name: str) -> Bucket: ...

    def take(self, name: str, slots: int) -> Attempt: ...

    def give_back(self, name: str, slots: int, held_seconds: float) -> None: ...


class PrefectSlots:
    """A GCL on the Prefect API the calling task runs against: read it, take slots in
    `rate_limit` mode (as `prefect.concurrency.sync.rate_limit` does, without its event, and
    without retrying a refusal: the caller decides when to ask again), give slots back.

    One client per instance, opened on first use (again if the Prefect API changes), used by
    one thread at a time (the limiter's lock).
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

    def read(self, name: str) -> Bucket:
        from prefect.exceptions import ObjectNotFound

        try:
            limit = self._current_client().read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            raise _missing(name) from None
        return Bucket(
            limit=int(limit.limit),
            decay=float(limit.slot_decay_per_second),
            active=int(limit.active_slots),
        )

    def take(self, name: str, slots: int) -> Attempt:
        import httpx

        sent = self._clock()
        try:
            response = self._current_client().increment_concurrency_slots(
                names=[name], slots=slots, mode="rate_limit"
            )
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 423:
                raise
            return Attempt(granted=False, sent=sent, answered=self._clock())
        if not response.json():
            raise _missing(name)
        return Attempt(granted=True, sent=sent, answered=self._clock())

    def give_back(self, name: str, slots: int, held_seconds: float) -> None:
        self._current_client().release_concurrency_slots(
            names=[name], slots=slots, occupancy_seconds=max(held_seconds, 0.001)
        )


@dataclass(slots=True)
class _Batch:
    """Slots granted to this process: starts allowed from `answered` to `last_start`."""

    slots: int
    spacing: float
    sent: float
    answered: float

    @property
    def last_start(self) -> float:
        return self.sent + (self.slots - 1) * self.spacing

    def unspent_after(self, now: float) -> int:
        """Slots this batch may give back at `now`: those whose time has not come, less one,
        so that the next grant is at least one spacing after this process's last start."""
        due = math.ceil((now - self.sent) / self.spacing - 1e-9) + 1
        return max(0, self.slots - due)


class PrefectRateLimiter:
    """A `RateLimiter` whose slots come from a Prefect GCL shared by every process.

    Thread-safe; one per process. `acquire` returns when one more request may start: the next
    time of this process's batch, or, once the batch is spent, after taking the next one when
    the bucket has drained. With `watch_idle`, a daemon thread gives back the rest of a batch
    nobody has asked for in `idle_return` seconds.
    """

    def __init__(
        self,
        plan: RateLimitPlan,
        *,
        name: str = DEFAULT_LIMIT_NAME,
        server: SlotServer | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        idle_return: float = DEFAULT_IDLE_RETURN,
        watch_idle: bool = True,
    ) -> None:
        self.plan = plan
        self.name = name
        self._server: SlotServer = server or PrefectSlots(clock)
        self._clock = clock
        self._sleep = sleep
        self._idle_return = idle_return
        self._watch_idle = watch_idle
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._waiting = 0
        self._batch: _Batch | None = None
        self._next_start = -math.inf
        self._last_activity = -math.inf
        self._watching = False
        self.acquisitions = 0
        self.refusals = 0
        self.slots_granted = 0
        self.slots_started = 0
        self.slots_returned = 0

    def acquire(self) -> None:
        with self._count_lock:
            self._waiting += 1
        try:
            with self._lock:
                while not self._start_in_batch():
                    self._take_batch()
        finally:
            with self._count_lock:
                self._waiting -= 1
                self._last_activity = self._clock()

    def _start_in_batch(self) -> bool:
        """Start one request within the current batch, at its pace, if it has time left."""
        batch = self._batch
        if batch is None:
            return False
        at = max(self._clock(), self._next_start, batch.answered)
        if at > batch.last_start + 1e-9:
            self._batch = None
            return False
        now = self._clock()
        if at > now:
            self._sleep(at - now)
            now = self._clock()
        if now > batch.last_start + 1e-9:  # slept past the batch (a busy CPU)
            self._batch = None
            return False
        self._next_start = now + batch.spacing
        self.slots_started += 1
        return True

    def _take_batch(self) -> None:
        """Wait until the bucket has drained, then take all of it; again if another process
        took it first."""
        while True:
            bucket = self._server.read(self.name)
            if bucket.active > 0:
                wait = bucket.active / bucket.decay
                self._sleep(min(wait, MAX_POLL_SECONDS))
                if wait > MAX_POLL_SECONDS:
                    continue  # read again: another process may have given slots back
            attempt = self._server.take(self.name, bucket.limit)
            if not attempt.granted:
                self.refusals += 1
                continue
            self.acquisitions += 1
            self.slots_granted += bucket.limit
            self._batch = _Batch(
                slots=bucket.limit,
                spacing=1.0 / bucket.decay,
                sent=attempt.sent,
                answered=attempt.answered,
            )
            self._start_watcher()
            return

    def give_back_if_idle(self) -> int:
        """Give back the unspent slots of a batch no request has waited for in `idle_return`
        seconds; returns how many."""
        with self._count_lock:
            idle = self._waiting == 0 and self._clock() - self._last_activity >= self._idle_return
        if not idle or not self._lock.acquire(blocking=False):
            return 0
        try:
            batch = self._batch
            if batch is None or self._waiting > 0:
                return 0
            now = self._clock()
            unspent = batch.unspent_after(now)
            if unspent == 0:
                return 0
            self._batch = None
            self._server.give_back(self.name, unspent, now - batch.sent)
            self.slots_returned += unspent
            return unspent
        finally:
            self._lock.release()

    def _start_watcher(self) -> None:
        """Called with the new batch in place: one watcher at a time, started when none is."""
        with self._count_lock:
            if not self._watch_idle or self._watching:
                return
            self._watching = True
        threading.Thread(target=self._watch, name="meter-recon-rate-limit", daemon=True).start()

    def _watch(self) -> None:
        """While a batch has time left, give it back once nobody has wanted it for a while."""
        while True:
            time.sleep(self._idle_return / 3)
            with self._count_lock:
                batch = self._batch
                if batch is None or self._clock() > batch.last_start:
                    self._watching = False
                    return
            self.give_back_if_idle()

    def __repr__(self) -> str:
        return f"PrefectRateLimiter({self.name!r}, {self.plan})"


_shared: dict[tuple[str, float], PrefectRateLimiter] = {}
_shared_lock = threading.Lock()


def shared_prefect_rate_limiter(rate: float, name: str = DEFAULT_LIMIT_NAME) -> PrefectRateLimiter:
    """The process-wide Prefect-backed limiter for `rate` requests a second (its batch size
    and pace are the GCL's own, as the flow created it)."""
    with _shared_lock:
        limiter = _shared.get((name, rate))
        if limiter is None:
            limiter = _shared[(name, rate)] = PrefectRateLimiter(plan_for(rate), name=name)
        return limiter
