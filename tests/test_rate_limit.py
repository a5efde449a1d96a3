"""The client-side rate limit: no more than `rate` request starts in any sliding second."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from datetime import date

import pytest

from integrations.stripe import (
    RateLimiter,
    SlidingWindowRateLimiter,
    StripeClient,
    shared_rate_limiter,
)
from simulator import StripeSimulator, max_in_window
from tests.fixtures.stripe import JAN_1

ClientFactory = Callable[..., StripeClient]


class FakeClock:
    """A clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def fake_limiter(rate: float, **options: float) -> tuple[SlidingWindowRateLimiter, FakeClock]:
    clock = FakeClock()
    return SlidingWindowRateLimiter(rate, clock=clock, sleep=clock.sleep, **options), clock


def starts(limiter: SlidingWindowRateLimiter, clock: FakeClock, count: int) -> list[float]:
    times = []
    for _ in range(count):
        limiter.acquire()
        times.append(clock())
    return times


def test_never_more_than_rate_starts_in_any_one_second_window() -> None:
    limiter, clock = fake_limiter(20)
    times = starts(limiter, clock, 200)
    assert max_in_window(times, 1.0) == 20
    assert times[-1] - times[0] == pytest.approx(9.0)  # 200 starts at 20/s: 10 full windows


def test_a_burst_after_idle_gets_one_window_not_a_bucket_plus_refill() -> None:
    limiter, clock = fake_limiter(20)
    starts(limiter, clock, 20)
    clock.sleep(0.5)  # a token bucket would have refilled 10 tokens by now
    times = starts(limiter, clock, 20)
    assert times[0] == pytest.approx(1001.0)  # nothing more until the first burst is a second old
    assert max_in_window([1000.0] * 20 + times, 1.0) == 20


def test_margin_spaces_windows_slightly_wider() -> None:
    limiter, clock = fake_limiter(10, margin=0.05)
    times = starts(limiter, clock, 30)
    assert max_in_window(times, 1.04) == 10
    assert times[-1] - times[0] == pytest.approx(2.1)


def test_a_fractional_rate_below_one_spaces_single_requests() -> None:
    limiter, clock = fake_limiter(0.5)
    times = starts(limiter, clock, 3)
    assert [round(later - earlier, 6) for earlier, later in itertools.pairwise(times)] == [2.0, 2.0]


def test_a_fractional_rate_above_one_never_exceeds_it() -> None:
    limiter, clock = fake_limiter(2.5)
    times = starts(limiter, clock, 25)
    assert max_in_window(times, 1.0) <= 2.5


@pytest.mark.parametrize("rate", [0, -1, float("inf"), float("nan")])
def test_rate_must_be_positive_and_finite(rate: float) -> None:
    with pytest.raises(ValueError, match="rate"):
        SlidingWindowRateLimiter(rate)


def test_threads_sharing_a_limiter_are_granted_starts_that_respect_it() -> None:
    granted: list[float] = []
    served: list[int] = []

    class Recording(SlidingWindowRateLimiter):
        def _try_start(self, now: float) -> float | None:
            delay = super()._try_start(now)
            if delay is None:
                granted.append(now)
            return delay

    limiter = Recording(50)
    deadline = time.monotonic() + 1.0
    lock = threading.Lock()

    def work(index: int) -> None:
        while time.monotonic() < deadline:
            limiter.acquire()
            with lock:
                served.append(index)

    threads = [threading.Thread(target=work, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert max_in_window(granted, 1.0) == 50
    assert set(served) == set(range(8))  # first come, first served: nobody starves


def test_a_late_waking_caller_cannot_release_a_backlog() -> None:
    limiter, clock = fake_limiter(5)
    starts(limiter, clock, 5)
    clock.sleep(3.0)  # the process was frozen: five more starts are "overdue"
    times = starts(limiter, clock, 10)
    assert times[:5] == [1003.0] * 5
    assert times[5:] == [1004.0] * 5


def test_one_limiter_per_rate_is_shared_by_the_process() -> None:
    assert shared_rate_limiter(13.0) is shared_rate_limiter(13.0)
    assert shared_rate_limiter(13.0) is not shared_rate_limiter(14.0)
    assert isinstance(shared_rate_limiter(13.0), RateLimiter)


def test_clients_with_the_same_rate_share_one_limiter(stripe_client_factory: ClientFactory) -> None:
    first = stripe_client_factory(rate_limiter=None, max_requests_per_second=17.0)
    second = stripe_client_factory(rate_limiter=None, max_requests_per_second=17.0)
    assert first.rate_limiter is second.rate_limiter is shared_rate_limiter(17.0)


def _hammer_for(seconds: float, client: StripeClient, threads: int = 16) -> list[BaseException]:
    """`threads` threads calling the client back to back; what any of them raised."""
    deadline = time.monotonic() + seconds
    failures: list[BaseException] = []

    def hammer() -> None:
        try:
            while time.monotonic() < deadline:
                result = client.daily_usage(
                    meter_id="mtr_x", customer="cus_A", start=date(2025, 1, 1), end=date(2025, 1, 2)
                )
                assert result.values == {date(2025, 1, 1): 1}
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    workers = [threading.Thread(target=hammer) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return failures


@pytest.fixture
def jittery_meter(simulator: StripeSimulator) -> StripeSimulator:
    simulator.add_meter("mtr_x", event_name="x")
    simulator.add_event("x", "cus_A", JAN_1, "1")
    simulator.latency = 0.01
    simulator.jitter = 0.02
    simulator.rate_limit = 20.0  # Stripe's answer to more: a 429
    return simulator


def test_sixteen_threads_with_a_margin_for_arrival_jitter_never_exceed_it_at_the_server(
    jittery_meter: StripeSimulator, stripe_client_factory: ClientFactory
) -> None:
    limiter = shared_rate_limiter(20.0, margin=0.05)
    failures = _hammer_for(2.5, stripe_client_factory(rate_limiter=limiter))
    assert failures == []
    assert jittery_meter.stats.max_arrivals_per_window(1.0) <= 20
    assert jittery_meter.stats.event_summaries >= 40  # and the limit is used, not starved


def test_sixteen_threads_through_the_default_limiter_rarely_meet_a_429_and_lose_nothing(
    jittery_meter: StripeSimulator, stripe_client_factory: ClientFactory
) -> None:
    # No limiter given: the client uses the process-wide one for 20 requests a second, whose
    # smaller default margin trades a rare, retried 429 for throughput.
    failures = _hammer_for(
        2.5, stripe_client_factory(rate_limiter=None, max_requests_per_second=20.0)
    )
    assert failures == []
    answered = jittery_meter.stats.event_summaries
    assert answered >= 40
    assert jittery_meter.stats.rate_limited <= answered // 10  # unlimited: most of them
