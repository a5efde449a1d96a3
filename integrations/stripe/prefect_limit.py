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
- a process spends its batch locally, one request per slot: slot `i` opens at
  `sent + i / decay` (`sent`: when the granting attempt left, never after the grant) and a
  request may start in it until `tolerance / decay` later (a thread woken later takes the
  next slot). Slots that open before the grant's answer arrived are not used, and the last
  one opens before the next grant can come (`grant + k / decay`), so the slots of the whole
  run, whichever process uses them, open at least `1 / decay` apart;
- a process asks only when the bucket has drained: it reads the limit (a read writes nothing
  and restarts no clock; the holder reads just before its batch ends), sleeps for what is
  left, then asks. It is refused only when another process was granted the batch just
  before it, which wastes almost no slot-time;
- a process with no request waiting for `idle_return` seconds gives the rest of its batch back
  (`POST /v2/concurrency_limits/decrement`), so a worker that finishes does not hold up the
  others until its batch would have run out.

Why no second sees more than the budget. Starts in slots that open at least `1 / decay`
apart, each within `tolerance / decay` of its opening, put at most
`ceil(decay x T + tolerance)` in any `T` seconds; a request reaches Stripe some milliseconds
after it starts, not every one by the same delay, so the requests arriving in any one second
started within `1 + jitter` seconds:

    requests arriving in any second <= ceil(decay x (1 + jitter) + tolerance)
                                    <= budget = floor(rate x (1 - margin))

A release keeps this: it gives back only slots that have not opened, less one, so the next
grant comes after every slot the releasing process may have used has closed. Throughput is
then at most `decay` (92.9 requests/s for a limit of 100/s), less the slots of one round trip
to Prefect per batch.
"""

from __future__ import annotations

import contextvars
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

DEFAULT_LIMIT_NAME = "meter-recon:stripe-requests"
DEFAULT_MARGIN = 0.02
DEFAULT_JITTER = 0.05  # seconds: how unevenly requests that start in order reach Stripe
DEFAULT_TOLERANCE = 0.5  # of a slot: how late in its slot a request may still start
DEFAULT_WORKERS = 2  # worker processes sharing the limit (a Dask `LocalCluster`)
BATCH_SECONDS_PER_WORKER = 1.0  # a batch is this many seconds of the limit per worker ...
MAX_BATCH_SECONDS = 2.0  # ... at most this many
DEFAULT_IDLE_RETURN = 0.15  # seconds without a request asking before a batch is given back
MAX_POLL_SECONDS = 0.2  # a waiting process reads the limit at least this often


@dataclass(frozen=True, slots=True)
class RateLimitPlan:
    """How `rate` requests/s maps onto a Prefect GCL (`limit` slots, `slot_decay_per_second`),
    and how late in its slot a request may start (`tolerance`, a fraction of a slot)."""

    rate: float
    limit: int
    slot_decay_per_second: float
    jitter: float = DEFAULT_JITTER
    tolerance: float = DEFAULT_TOLERANCE

    @property
    def block(self) -> int:
        """The slots one acquisition takes: the whole bucket."""
        return self.limit

    def worst_second(self) -> int:
        """The most requests that can reach Stripe in any one second under this plan."""
        window = self.slot_decay_per_second * (1 + self.jitter) + self.tolerance
        return math.ceil(window - 1e-9)


def plan_for(
    rate: float,
    *,
    workers: int = DEFAULT_WORKERS,
    margin: float = DEFAULT_MARGIN,
    jitter: float = DEFAULT_JITTER,
    tolerance: float = DEFAULT_TOLERANCE,
) -> RateLimitPlan:
    """The GCL for `rate` requests/s shared by `workers` processes: the largest decay whose
    worst second stays in budget, and batches of `BATCH_SECONDS_PER_WORKER` per worker."""
    if not rate > 0 or math.isinf(rate):
        raise ValueError(f"rate must be a positive number, got {rate!r}")
    if not 0 <= margin < 1 or jitter < 0 or workers < 1 or not 0 < tolerance <= 1:
        raise ValueError(
            "margin must be in [0, 1), jitter non-negative, workers at least 1, tolerance in (0, 1]"
        )
    budget = math.floor(rate * (1 - margin) + 1e-9)
    if budget < 2:
        raise ValueError(f"a rate limit shared across processes needs 2 requests/s, got {rate!r}")
    # ceil(decay x (1 + jitter) + tolerance) <= budget
    decay = (budget - tolerance) / (1 + jitter) * (1 - 1e-6)
    seconds = min(MAX_BATCH_SECONDS, BATCH_SECONDS_PER_WORKER * workers)
    limit = max(1, round(decay * seconds))
    return RateLimitPlan(
        rate=rate, limit=limit, slot_decay_per_second=decay, jitter=jitter, tolerance=tolerance
    )


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
    """Slots granted to this process: slot `i` may start from `sent + i x spacing`, within
    `tolerance` of it; only slots that begin after the grant's answer are usable."""

    slots: int
    spacing: float
    tolerance: float
    sent: float
    answered: float
    next_slot: int = 0

    def __post_init__(self) -> None:
        self.next_slot = max(0, math.ceil((self.answered - self.sent) / self.spacing - 1e-9))

    def slot_for(self, now: float) -> int:
        """The first unused slot still open at `now` (`slots` when none is)."""
        late = math.floor((now - self.sent - self.tolerance) / self.spacing) + 1
        return min(self.slots, max(self.next_slot, late))

    def opens(self, slot: int) -> float:
        return self.sent + slot * self.spacing

    def unspent_after(self, now: float) -> int:
        """Slots this batch may give back at `now`: those that open later, less one, so that
        the next grant comes after every slot this process may have used has closed."""
        due = math.ceil((now - self.sent) / self.spacing - 1e-9) + 1
        return max(0, self.slots - max(due, self.next_slot))


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
        self._ahead: tuple[Bucket, float] | None = None  # the bucket read near a batch's end
        self._read_seconds = 0.02  # how long a read takes (a moving average)
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
        """Start one request in the next open slot of the current batch, if it has one.

        Near the batch's end, the thread waiting for one of its last slots reads the bucket
        first, so that the next batch is asked for as soon as the bucket drains.
        """
        batch = self._batch
        while batch is not None:
            slot = batch.slot_for(self._clock())
            if slot >= batch.slots:
                self._batch = None
                return False
            opens = batch.opens(slot)
            if self._ahead is None and batch.opens(batch.slots - 1) - opens <= self._read_seconds:
                self._ahead = self._read()
            now = self._clock()
            if opens > now:
                self._sleep(opens - now)
                now = self._clock()
            if now < opens + batch.tolerance:
                batch.next_slot = slot + 1
                self.slots_started += 1
                return True
            # Woke up too late for this slot (a busy CPU, a slow read): the next one.
        return False

    def _read(self) -> tuple[Bucket, float]:
        """The bucket as read now, and when the answer came; keeps the read's duration."""
        sent = self._clock()
        bucket = self._server.read(self.name)
        answered = self._clock()
        self._read_seconds = 0.8 * self._read_seconds + 0.2 * (answered - sent)
        return bucket, answered

    def _take_batch(self) -> None:
        """Wait until the bucket has drained, then take all of it; again if another process
        took it first.

        A read that finds `a` slots active was answered at or after the server counted them,
        so the bucket is empty `a / decay` seconds after the answer (the server decays
        `floor(decay x seconds)`), unless another process takes it first.
        """
        ahead, self._ahead = self._ahead, None
        if ahead is not None and self._clock() - ahead[1] > MAX_POLL_SECONDS:
            ahead = None  # read before a batch nobody finished: too old to go by
        while True:
            bucket, read_at = ahead or self._read()
            ahead = None
            if bucket.active > 0:
                wait = read_at + bucket.active / bucket.decay - self._clock()
                if wait > MAX_POLL_SECONDS:
                    self._sleep(MAX_POLL_SECONDS)
                    continue  # read again: another process may have given slots back
                if wait > 0:
                    self._sleep(wait)
            attempt = self._server.take(self.name, bucket.limit)
            if not attempt.granted:
                self.refusals += 1
                continue
            self.acquisitions += 1
            self.slots_granted += bucket.limit
            self._batch = _Batch(
                slots=bucket.limit,
                spacing=1.0 / bucket.decay,
                tolerance=self.plan.tolerance / bucket.decay,
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
            self._ahead = None
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
        # In a copy of this thread's context: Prefect's settings live in a context variable, and
        # a bare thread would see none, no API URL, and start a temporary Prefect server of its
        # own to give the slots back to (a server the batch never came from).
        context = contextvars.copy_context()
        threading.Thread(
            target=context.run, args=(self._watch,), name="meter-recon-rate-limit", daemon=True
        ).start()

    def _watch(self) -> None:
        """While a batch has time left, give it back once nobody has wanted it for a while."""
        while True:
            time.sleep(self._idle_return / 3)
            with self._count_lock:
                batch = self._batch
                if batch is None or batch.slot_for(self._clock()) >= batch.slots:
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
