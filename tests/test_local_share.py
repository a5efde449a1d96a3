"""Stripe's rate limit shared by the local cluster's workers where the machine cannot share
one window between processes (no POSIX file locks): a fixed share each.

The budget (98 % of the limit) is split in whole requests, one share per worker process;
each keeps to its share in any `1 + jitter` seconds, so together they never let more than the
budget reach Stripe in a second, and no worker asks anyone for anything. Which limiter a
process paces by depends on where it runs.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import distributed
import pytest
from pydantic import SecretStr

from integrations.settings import TaskRunnerKind
from integrations.stripe import machine_window
from integrations.stripe.local_share import describe_local_limit, local_share_limiter, share_of
from integrations.stripe.machine_window import MachineWindowRateLimiter, machine_window_limiter
from integrations.stripe.prefect_limit import DEFAULT_JITTER, PrefectRateLimiter
from integrations.stripe.rate_limit import SlidingWindowRateLimiter
from simulator import max_in_window
from tasks.fetch import close_clients, stripe_client
from tasks.run_config import LOCAL_CLUSTER_WORKERS, RunConfig
from tests.fixtures.gcl import drive


@pytest.mark.parametrize(
    ("rate", "shares"),
    [(50.0, [25, 24]), (100.0, [49, 49]), (20.0, [10, 9]), (3.0, [1, 1])],
)
def test_the_budget_is_split_in_whole_requests_first_workers_first(
    rate: float, shares: list[int]
) -> None:
    assert [share_of(rate, processes=2, index=i) for i in range(2)] == shares
    assert sum(shares) == int(rate * 0.98 + 1e-9)


def test_a_limit_too_small_to_share_and_a_worker_outside_the_count_are_refused() -> None:
    with pytest.raises(ValueError, match="cannot be shared by 2 processes"):
        share_of(1.5, processes=2, index=0)
    with pytest.raises(ValueError, match="not a process of the machine"):
        share_of(50.0, processes=2, index=2)


def test_each_worker_keeps_to_its_share_in_any_window_of_one_second_and_the_jitter() -> None:
    limiter = local_share_limiter(60.0, processes=2, index=1)
    assert limiter.capacity == share_of(60.0, processes=2, index=1)
    assert limiter.window == pytest.approx(1.0 + DEFAULT_JITTER)
    assert local_share_limiter(60.0, processes=2, index=1) is limiter  # one per process


def test_two_workers_together_never_let_more_than_the_budget_start_in_a_second() -> None:
    rate = 80.0
    limiters = [
        SlidingWindowRateLimiter(share_of(rate, processes=2, index=i), 1.0, margin=DEFAULT_JITTER)
        for i in range(2)
    ]
    starts = drive(limiters, threads_each=4, seconds=2.5)
    budget = int(rate * 0.98)
    # Stamped just after each start: a window a little short of a second leaves room for a
    # stamp taken late on a busy machine (each worker alone may start its share at once).
    assert max_in_window(starts, 0.9) <= budget
    assert len(starts) >= 2 * budget  # the shares are used: nothing waits on the other worker


# -- which limiter a process paces by ----------------------------------------------------------


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


@pytest.fixture
def in_worker_1(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process is the Dask worker named 1."""
    monkeypatch.setattr(distributed, "get_worker", lambda: SimpleNamespace(name=1))


@pytest.mark.usefixtures("in_worker_1")
def test_a_worker_of_the_local_cluster_shares_the_machines_window(dask_config: RunConfig) -> None:
    limiter = client_limiter(dask_config)
    assert limiter is machine_window_limiter(50.0)
    assert isinstance(limiter, MachineWindowRateLimiter)
    assert limiter.capacity == 49


@pytest.mark.usefixtures("in_worker_1")
def test_without_file_locks_a_worker_of_the_local_cluster_keeps_to_its_share(
    dask_config: RunConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(machine_window, "machine_window_supported", lambda: False)
    limiter = client_limiter(dask_config)
    assert limiter is local_share_limiter(50.0, processes=LOCAL_CLUSTER_WORKERS, index=1)
    assert isinstance(limiter, SlidingWindowRateLimiter)
    assert limiter.capacity == 24


@pytest.mark.usefixtures("in_worker_1")
def test_a_worker_of_a_cluster_elsewhere_shares_the_prefect_limit(dask_config: RunConfig) -> None:
    remote = replace(dask_config, dask_address="tcp://scheduler.internal:8786")
    assert isinstance(client_limiter(remote), PrefectRateLimiter)


def test_the_flows_own_process_paces_alone_outside_any_worker(dask_config: RunConfig) -> None:
    limiter = client_limiter(dask_config)  # not in a Dask worker: get_worker raises
    assert isinstance(limiter, SlidingWindowRateLimiter)
    assert limiter.rate == 50.0
    assert limiter is not local_share_limiter(50.0, processes=LOCAL_CLUSTER_WORKERS, index=0)


def test_the_run_logs_how_the_local_workers_share_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert describe_local_limit(50.0, processes=2) == (
        "through one window on this machine: 49 requests in any 1.02 s"
    )
    monkeypatch.setattr(machine_window, "machine_window_supported", lambda: False)
    assert describe_local_limit(50.0, processes=2) == (
        "in fixed shares: 25 + 24 requests in any 1.05 s"
    )
