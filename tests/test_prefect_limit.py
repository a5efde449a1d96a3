"""Stripe's rate limit shared through a Prefect GCL: batches of slots spent locally.

Each process takes the whole bucket at once, only once it has drained, and starts its
requests at the limit's pace; a process that stops asking gives back what it has not spent,
so the others lose no time. Against a stand-in computed as Prefect's server computes it,
then against the real Prefect API.
"""

from __future__ import annotations

import itertools
import math
import threading
import time

import pytest

from integrations.stripe.prefect_limit import (
    BATCH_SECONDS_PER_WORKER,
    DEFAULT_IDLE_RETURN,
    MAX_BATCH_SECONDS,
    MAX_POLL_SECONDS,
    MissingRateLimit,
    PrefectRateLimiter,
    PrefectSlots,
    RateLimitPlan,
    ensure_limit,
    plan_for,
)
from simulator import max_in_window
from tests.fixtures.gcl import FakeClock, FakeGcl

RTT = 0.012  # seconds a Prefect API call takes


def clocked(
    plan: RateLimitPlan, processes: int = 1
) -> tuple[FakeClock, FakeGcl, list[PrefectRateLimiter]]:
    """A GCL for `plan` and `processes` limiters sharing it, all on one fake clock."""
    clock = FakeClock()
    gcl = FakeGcl(plan.limit, plan.slot_decay_per_second, RTT, clock=clock, sleep=clock.sleep)
    limiters = [
        PrefectRateLimiter(plan, server=gcl, clock=clock, sleep=clock.sleep, watch_idle=False)
        for _ in range(processes)
    ]
    return clock, gcl, limiters


def start(limiter: PrefectRateLimiter, clock: FakeClock, starts: list[float]) -> float:
    limiter.acquire()
    starts.append(clock())
    return clock()


def min_gap(starts: list[float]) -> float:
    ordered = sorted(starts)
    return min(b - a for a, b in itertools.pairwise(ordered))


# -- the plan ----------------------------------------------------------------------------------


def test_a_batch_is_the_whole_bucket_sized_from_the_rate_and_the_number_of_workers() -> None:
    one, two, many = (plan_for(100.0, workers=n) for n in (1, 2, 8))
    assert one.block == one.limit == round(one.slot_decay_per_second * BATCH_SECONDS_PER_WORKER)
    assert two.limit == round(two.slot_decay_per_second * 2 * BATCH_SECONDS_PER_WORKER)
    assert many.limit == round(many.slot_decay_per_second * MAX_BATCH_SECONDS) < 8 * one.limit
    assert plan_for(40.0).limit < plan_for(100.0).limit


def test_the_pace_leaves_room_for_arrival_jitter_within_the_budget() -> None:
    plan = plan_for(100.0)
    assert plan.worst_second() == 98
    assert plan.slot_decay_per_second * (1 + plan.jitter) + plan.tolerance <= 98
    assert plan.slot_decay_per_second > 92


def test_a_rate_too_small_to_share_is_refused() -> None:
    with pytest.raises(ValueError, match="2 requests/s"):
        plan_for(1.5)


# -- one process -------------------------------------------------------------------------------


def test_a_process_spends_its_batch_at_the_limits_pace_from_the_grants_answer() -> None:
    plan = plan_for(40.0)
    clock, gcl, (limiter,) = clocked(plan)
    starts: list[float] = []
    while len(gcl.grants) < 2:
        start(limiter, clock, starts)
    batch = starts[:-1]  # the last start is the next batch's first
    assert limiter.acquisitions == 2
    spacing = 1 / plan.slot_decay_per_second
    sent = gcl.grants[0] - RTT / 2
    assert batch[0] >= gcl.grants[0] + RTT / 2  # not before the answer arrived
    assert batch[-1] <= sent + (plan.limit - 1) * spacing + 1e-9
    assert min_gap(batch) >= spacing - 1e-9
    # Every slot after the answer is used; those of the answer's delay are lost.
    assert len(batch) == plan.limit - math.ceil(RTT / spacing)


def test_a_request_woken_too_late_for_its_slot_takes_the_next_one() -> None:
    plan = plan_for(40.0)
    clock, gcl, _ = clocked(plan, processes=0)
    spacing = 1 / plan.slot_decay_per_second
    late: list[float] = []  # what the limiter's next sleep overshoots by: a busy CPU

    def sleep(seconds: float) -> None:
        clock.sleep(seconds + (late.pop() if late else 0.0))

    limiter = PrefectRateLimiter(plan, server=gcl, clock=clock, sleep=sleep, watch_idle=False)
    starts: list[float] = []
    start(limiter, clock, starts)
    late.append(spacing * (1 + plan.tolerance * 0.5))  # into the slot after the one it slept for
    start(limiter, clock, starts)
    assert (starts[1] - starts[0]) / spacing == pytest.approx(2 + plan.tolerance * 0.5)
    late.append(spacing * (1 + plan.tolerance * 1.5))  # past that one's tolerance too
    start(limiter, clock, starts)
    assert (starts[2] - starts[0]) / spacing == pytest.approx(5)  # when the next one opens
    assert len(gcl.grants) == 1


def test_a_spent_batch_is_followed_by_the_next_once_the_bucket_has_drained() -> None:
    plan = plan_for(40.0)
    clock, gcl, (limiter,) = clocked(plan)
    starts: list[float] = []
    while len(gcl.grants) < 3:
        start(limiter, clock, starts)
    assert gcl.refusals == []
    first, second, third = gcl.grants
    # Read ahead near the batch's end and asked for once it drains: late by the read's and the
    # request's way to the server, and the slot the server's rounding down may keep.
    drain, spacing = plan.limit / plan.slot_decay_per_second, 1 / plan.slot_decay_per_second
    assert drain <= second - first <= drain + RTT + spacing
    assert drain <= third - second <= drain + RTT + spacing
    assert min_gap(starts) >= 1 / plan.slot_decay_per_second - 1e-9


# -- processes sharing the bucket --------------------------------------------------------------


def test_a_process_waits_for_the_bucket_to_drain_instead_of_being_refused() -> None:
    plan = plan_for(40.0)
    clock, gcl, (a, b) = clocked(plan, processes=2)
    starts: list[float] = []
    start(a, clock, starts)
    start(b, clock, starts)  # a holds the bucket: b reads, sleeps, then takes it
    assert gcl.refusals == []
    assert gcl.grants[1] - gcl.grants[0] >= plan.limit / plan.slot_decay_per_second
    for limiter in (a, b, a, b, a):
        start(limiter, clock, starts)
    assert min_gap(starts) >= 1 / plan.slot_decay_per_second - 1e-9


def test_a_process_that_stops_asking_gives_back_its_unspent_slots() -> None:
    plan = plan_for(40.0)
    clock, gcl, (a, b) = clocked(plan, processes=2)
    starts: list[float] = []
    for _ in range(3):
        last = start(a, clock, starts)
    clock.sleep(0.2)  # a's worker has finished: nobody asks a for slots any more
    returned = a.give_back_if_idle()
    spacing = 1 / plan.slot_decay_per_second
    assert returned == gcl.returned > plan.limit - 3 - (0.2 + 2 * RTT) / spacing - 2
    start(b, clock, starts)
    # b is granted long before a's batch would have drained, and never starts close to a.
    assert gcl.grants[1] - gcl.grants[0] < plan.limit * spacing / 2
    assert starts[-1] - last >= spacing
    assert gcl.refusals == []


def test_the_idle_watcher_gives_slots_back_to_the_prefect_api_the_batch_came_from() -> None:
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    class Recording(FakeGcl):
        returned_to: list[str | None] = []

        def give_back(self, name: str, slots: int, held_seconds: float) -> None:
            self.returned_to.append(get_current_settings().api.url)
            super().give_back(name, slots, held_seconds)

    plan = plan_for(40.0)
    gcl = Recording(plan.limit, plan.slot_decay_per_second, RTT)
    limiter = PrefectRateLimiter(plan, server=gcl, idle_return=0.05)
    api = "http://127.0.0.1:4299/api"  # the flow's server; no temporary one may be started
    with temporary_settings(updates={PREFECT_API_URL: api}):
        limiter.acquire()
    deadline = time.monotonic() + 5
    while not gcl.returned_to and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gcl.returned_to == [api]


def test_a_process_with_a_request_waiting_keeps_its_batch() -> None:
    plan = plan_for(40.0)
    clock, gcl, (limiter,) = clocked(plan)
    limiter.acquire()
    clock.sleep(0.01)
    assert limiter.give_back_if_idle() == 0  # asked a moment ago
    assert gcl.returned == 0


def test_when_one_worker_finishes_the_other_takes_the_whole_limit_at_once() -> None:
    rate, latency = 100.0, 0.02
    plan = plan_for(rate)
    gcl = FakeGcl(plan.limit, plan.slot_decay_per_second, RTT)
    early, late = PrefectRateLimiter(plan, server=gcl), PrefectRateLimiter(plan, server=gcl)
    starts: dict[str, list[float]] = {"early": [], "late": []}
    lock = threading.Lock()
    holding = threading.Event()
    t0 = time.monotonic()
    ends = {"early": t0 + 1.0, "late": t0 + 3.5}  # the early one stops in its first batch

    def worker(limiter: PrefectRateLimiter, who: str) -> None:
        while time.monotonic() < ends[who]:
            limiter.acquire()
            with lock:
                starts[who].append(time.monotonic())
            holding.set()
            time.sleep(latency)  # the request

    def threads(limiter: PrefectRateLimiter, who: str) -> list[threading.Thread]:
        return [threading.Thread(target=worker, args=(limiter, who)) for _ in range(4)]

    first, second = threads(early, "early"), threads(late, "late")
    for thread in first:
        thread.start()
    assert holding.wait(5)  # the early worker holds the first batch
    for thread in second:
        thread.start()
    for thread in first + second:
        thread.join()
    assert early.slots_returned > 0
    every = starts["early"] + starts["late"]
    assert max_in_window(every, 1.0) <= plan.worst_second()
    # The late worker starts soon after the early one's last request, long before the early
    # worker's batch would have run out, and then runs at nearly the whole limit.
    last_early = max(starts["early"])
    # Noticed idle (within a third of the idle time), given back, noticed by the late worker's
    # next read, read and taken: a few round trips, and some slack for a busy machine.
    handover = DEFAULT_IDLE_RETURN * 4 / 3 + MAX_POLL_SECONDS + 4 * RTT
    assert min(starts["late"]) - last_early < handover + 0.15
    assert min(starts["late"]) < gcl.grants[0] + plan.limit / plan.slot_decay_per_second - 0.5
    after = [s for s in starts["late"] if s > last_early + 0.5]
    assert len(after) / (after[-1] - after[0]) >= 0.85 * plan.slot_decay_per_second
    assert len(gcl.refusals) <= len(gcl.grants)


# -- the real Prefect API ----------------------------------------------------------------------


def test_prefect_grants_the_whole_bucket_refuses_more_and_takes_slots_back(
    prefect_server: str,
) -> None:
    name = "meter-recon:test-batches"
    plan = plan_for(40.0)
    ensure_limit(plan, name)
    slots = PrefectSlots()
    bucket = slots.read(name)
    assert (bucket.limit, bucket.decay) == (plan.limit, pytest.approx(plan.slot_decay_per_second))
    while slots.read(name).active:
        time.sleep(0.05)
    granted = slots.take(name, bucket.limit)
    assert granted.granted and granted.sent <= granted.answered
    refused = slots.take(name, bucket.limit)
    assert not refused.granted
    before = slots.read(name).active
    assert 0 < before <= plan.limit
    slots.give_back(name, plan.limit, held_seconds=0.1)
    assert slots.read(name).active == 0
    with pytest.raises(MissingRateLimit, match="does not exist"):
        slots.read("meter-recon:no-such-limit")
    assert math.isfinite(granted.answered)
