"""Stripe's rate limit shared by the local cluster's workers: one grid on the machine's clock.

Process `i` of `n` owns every `n`-th slot of the grid from the `i`-th, so the processes never
start close to one another and never ask anyone for anything; a thread woken too late for a
slot takes its process's next one; together they stay within the budget of any second.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import replace
from types import SimpleNamespace

import distributed
import pytest
from pydantic import SecretStr

from integrations.settings import TaskRunnerKind
from integrations.stripe.interleaved import InterleavedRateLimiter, shared_interleaved_rate_limiter
from integrations.stripe.prefect_limit import PrefectRateLimiter, plan_for
from integrations.stripe.rate_limit import SlidingWindowRateLimiter
from simulator import max_in_window
from tasks.fetch import close_clients, stripe_client
from tasks.run_config import LOCAL_CLUSTER_WORKERS, RunConfig
from tests.fixtures.gcl import FakeClock


def starts_of(limiter: InterleavedRateLimiter, clock: FakeClock, count: int) -> list[float]:
    found = []
    for _ in range(count):
        limiter.acquire()
        found.append(clock())
    return found


def since_opening(limiter: InterleavedRateLimiter, start: float) -> float:
    """How long after one of `limiter`'s slots opened `start` came."""
    after = (start - limiter.index * limiter.spacing) % limiter.period
    return 0.0 if limiter.period - after < 1e-9 else after  # at an opening, less rounding


def test_each_process_starts_only_in_its_own_slots_of_the_grid() -> None:
    plan = plan_for(50.0)
    clock = FakeClock()
    second = InterleavedRateLimiter(plan, processes=2, index=1, clock=clock, sleep=clock.sleep)
    starts = starts_of(second, clock, 10)
    for start in starts:
        assert since_opening(second, start) < second.tolerance + 1e-9
    assert all(b - a == pytest.approx(second.period) for a, b in itertools.pairwise(starts[1:]))


def test_two_processes_interleave_one_slot_apart_without_asking_each_other() -> None:
    plan = plan_for(50.0)
    clock = FakeClock()
    limiters = [
        InterleavedRateLimiter(plan, processes=2, index=i, clock=clock, sleep=clock.sleep)
        for i in range(2)
    ]
    starts = []
    for _ in range(20):  # each "process" asks in turn, as fast as it can
        for limiter in limiters:
            limiter.acquire()
            starts.append(clock())
    gaps = [b - a for a, b in itertools.pairwise(sorted(starts))]
    spacing = 1 / plan.slot_decay_per_second
    assert min(gaps) >= spacing - limiters[0].tolerance
    assert sorted(gaps)[len(gaps) // 2] == pytest.approx(spacing)
    assert max_in_window(starts, 1.0) <= plan.worst_second()


def test_a_thread_woken_too_late_for_its_slot_takes_the_next_one() -> None:
    plan = plan_for(50.0)
    clock = FakeClock()
    limiter = InterleavedRateLimiter(plan, processes=2, index=1, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    first = clock()
    clock.sleep(limiter.period + limiter.tolerance * 1.5)  # past the next slot's tolerance
    limiter.acquire()
    assert clock() - first == pytest.approx(2 * limiter.period)


def test_a_slot_already_open_is_taken_at_once_within_its_tolerance() -> None:
    plan = plan_for(50.0)
    clock = FakeClock()
    limiter = InterleavedRateLimiter(plan, processes=2, index=0, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    opened = clock() - since_opening(limiter, clock()) + limiter.period
    clock.now = opened + limiter.tolerance / 2
    limiter.acquire()
    assert clock() == opened + limiter.tolerance / 2  # no wait: its slot is still open


def test_processes_on_the_real_clock_stay_within_the_budget_of_any_second() -> None:
    plan = plan_for(100.0)
    limiters = [InterleavedRateLimiter(plan, processes=2, index=i) for i in range(2)]
    starts: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + 2.0

    def client(limiter: InterleavedRateLimiter) -> None:
        while time.monotonic() < stop:
            limiter.acquire()
            with lock:
                starts.append(time.monotonic())

    threads = [threading.Thread(target=client, args=(lim,)) for lim in limiters for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert max_in_window(starts, 1.0) <= plan.worst_second() <= 100
    assert len(starts) / 2.0 >= 0.8 * plan.slot_decay_per_second  # no slot left for want of asking


def test_a_process_outside_the_machines_count_is_refused() -> None:
    with pytest.raises(ValueError, match="not a process of the machine"):
        InterleavedRateLimiter(plan_for(50.0), processes=2, index=2)


def test_every_caller_of_a_process_shares_one_limiter() -> None:
    plan = plan_for(60.0)
    one = shared_interleaved_rate_limiter(plan, processes=2, index=0)
    assert shared_interleaved_rate_limiter(plan, processes=2, index=0) is one
    assert shared_interleaved_rate_limiter(plan, processes=2, index=1) is not one


# -- which limiter a process paces by -----------------------------------------------------------


def client_limiter(config: RunConfig) -> object:
    close_clients()
    try:
        return stripe_client(config).rate_limiter
    finally:
        close_clients()


@pytest.fixture
def dask_config() -> RunConfig:
    return RunConfig(
        database_url=SecretStr("sqlite://"),
        stripe_api_key=SecretStr("sk_test_limiter_choice"),
        task_runner=TaskRunnerKind.DASK,
        max_requests_per_second=50.0,
    )


def test_a_worker_of_the_local_cluster_paces_by_its_share_of_the_grid(
    dask_config: RunConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(distributed, "get_worker", lambda: SimpleNamespace(name=1))
    limiter = client_limiter(dask_config)
    assert isinstance(limiter, InterleavedRateLimiter)
    assert (limiter.index, limiter.processes) == (1, LOCAL_CLUSTER_WORKERS)
    assert limiter.plan == plan_for(50.0, workers=LOCAL_CLUSTER_WORKERS)


def test_a_worker_of_a_cluster_elsewhere_shares_the_prefect_limit(
    dask_config: RunConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(distributed, "get_worker", lambda: SimpleNamespace(name=1))
    remote = replace(dask_config, dask_address="tcp://scheduler.internal:8786")
    assert isinstance(client_limiter(remote), PrefectRateLimiter)


def test_the_flows_own_process_paces_alone_outside_any_worker(dask_config: RunConfig) -> None:
    limiter = client_limiter(dask_config)  # not in a Dask worker: get_worker raises
    assert not isinstance(limiter, InterleavedRateLimiter | PrefectRateLimiter)
    assert isinstance(limiter, SlidingWindowRateLimiter)
    assert limiter.rate == 50.0
