"""The fan-out holds a bounded slice of a run: a page of pairs, a few tasks in flight, the
failures not yet recorded; every pair is still reconciled once, counted, and reported."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

import pytest
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import SecretStr

from flows import progress
from flows.fanout import FanOut, Plan
from flows.history import TaskRuns
from models.tables import PairSource, TrackedPair
from tasks.reconcile_pairs import PairRef, PairsFailed, RunContext
from tasks.run_config import RunConfig

pytestmark = pytest.mark.usefixtures("prefect_server")

CONTEXT = RunContext(
    run_id=1,
    window_start=date(2026, 11, 1),
    window_end=date(2026, 11, 4),
    today=date(2026, 11, 5),
    config=RunConfig(database_url=SecretStr("sqlite://"), abs_tol=Decimal(0)),
)
FORMULAS = {"mtr_api": "sum"}


@dataclass
class Tracker:
    """What the stand-in tasks saw, shared across their threads."""

    failing: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    running: int = 0
    most_running: int = 0
    pages_read: int = 0
    pages_read_at_first_finish: int | None = None
    reconciled: list[PairRef] = field(default_factory=list)
    recorded: list[list[tuple[PairRef, str]]] = field(default_factory=list)


TRACKER = Tracker()


@pytest.fixture(autouse=True)
def tracker() -> Tracker:
    global TRACKER
    TRACKER = Tracker()
    return TRACKER


@task(name="reconcile-pairs", cache_policy=NO_CACHE, persist_result=False)
def hold(context: RunContext, pairs: list[PairRef]) -> dict[str, int]:
    """Reconciles nothing: holds its slot a moment, fails the pairs the tracker says."""
    with TRACKER.lock:
        TRACKER.running += 1
        TRACKER.most_running = max(TRACKER.most_running, TRACKER.running)
    time.sleep(0.02)
    failing = {p: "APIError: 500" for p in pairs if p.customer in TRACKER.failing}
    with TRACKER.lock:
        TRACKER.running -= 1
        TRACKER.reconciled += [p for p in pairs if p not in failing]
        if TRACKER.pages_read_at_first_finish is None:
            TRACKER.pages_read_at_first_finish = TRACKER.pages_read
    if failing:
        raise PairsFailed(failing)
    return {"pairs": len(pairs)}


@task(name="record-failed-pairs", cache_policy=NO_CACHE, persist_result=False)
def keep(context: RunContext, failures: list[tuple[PairRef, str]]) -> int:
    TRACKER.recorded.append(list(failures))
    return len(failures)


def tracked(customer: str, meter: str = "mtr_api") -> TrackedPair:
    return TrackedPair(stripe_customer_id=customer, meter_id=meter, source=PairSource.LEDGER)


def pages_of(pairs: list[TrackedPair], size: int) -> Iterator[list[TrackedPair]]:
    for start in range(0, len(pairs), size):
        TRACKER.pages_read += 1
        yield pairs[start : start + size]


def fan_out(
    pairs: list[TrackedPair], *, page: int, per_task: int, in_flight: int, flush_at: int = 1000
) -> tuple[FanOut, TaskRuns]:
    runnable = sum(p.meter_id in FORMULAS for p in pairs)
    plan = Plan(
        pairs_total=len(pairs), runnable=runnable, pairs_per_task=per_task, in_flight=in_flight
    )
    tasks = TaskRuns()
    fan = FanOut(
        tasks=tasks,
        context=CONTEXT,
        plan=plan,
        reconcile=hold,
        record_failures=keep,
        flush_at=flush_at,
    )

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=8))
    def run() -> int:
        return fan.run(pages_of(pairs, page), FORMULAS)

    assert run() == len(pairs)
    return fan, tasks


def customers(n: int) -> list[TrackedPair]:
    return [tracked(f"cus_{i:03d}") for i in range(n)]


def test_no_more_tasks_are_in_flight_than_the_plan_allows() -> None:
    pairs = customers(40)
    fan, tasks = fan_out(pairs, page=7, per_task=2, in_flight=3)
    assert TRACKER.most_running <= 3
    assert fan.most_in_flight == 3
    assert tasks.started == 20
    assert sorted(p.customer for p in TRACKER.reconciled) == [p.stripe_customer_id for p in pairs]


def test_pages_are_read_only_as_tasks_finish() -> None:
    fan_out(customers(40), page=4, per_task=2, in_flight=2)
    assert TRACKER.pages_read == 10
    # Page 1 fills both slots; page 2 waits for a slot: nothing further is read before.
    assert TRACKER.pages_read_at_first_finish is not None
    assert TRACKER.pages_read_at_first_finish <= 2


def test_failed_and_unknown_meter_pairs_are_recorded_in_slices() -> None:
    pairs = customers(30) + [tracked(f"cus_x{i}", meter="mtr_gone") for i in range(5)]
    TRACKER.failing = {"cus_003", "cus_004", "cus_017", "cus_029"}
    fan, tasks = fan_out(pairs, page=8, per_task=2, in_flight=4, flush_at=3)
    failed = {pair.customer: error for flush in TRACKER.recorded for pair, error in flush}
    unknown = {f"cus_x{i}" for i in range(5)}
    assert {c: failed[c] for c in TRACKER.failing} == dict.fromkeys(
        TRACKER.failing, "APIError: 500"
    )
    assert {failed[c] for c in unknown} == {"meter mtr_gone is not a meter of this Stripe account"}
    # A failed task's other pairs come along (record-failed-pairs skips those recorded OK).
    batch_mates = set(failed) - TRACKER.failing - unknown
    assert batch_mates <= {p.customer for p in TRACKER.reconciled}
    assert len(failed) == sum(len(flush) for flush in TRACKER.recorded)
    assert len(TRACKER.recorded) > 1
    assert all(len(flush) < 3 + 2 for flush in TRACKER.recorded)
    assert tasks.started == 15 + len(TRACKER.recorded)  # 30 runnable pairs, 2 per task
    assert fan.done == fan.seen == 35


def test_progress_counts_every_pair_once_up_to_the_total() -> None:
    reports: list[tuple[int, int]] = []
    progress.set_listener(lambda done, total: reports.append((done, total)))
    try:
        pairs = [*customers(9), tracked("cus_zz", meter="mtr_gone")]
        fan_out(pairs, page=3, per_task=2, in_flight=2)
    finally:
        progress.set_listener(None)
    assert reports[0] == (0, 10)
    assert reports[-1] == (10, 10)
    assert [done for done, _ in reports] == sorted(done for done, _ in reports)


def test_a_run_with_no_pairs_submits_nothing() -> None:
    fan, tasks = fan_out([], page=5, per_task=2, in_flight=2)
    assert (tasks.started, fan.seen, fan.most_in_flight) == (0, 0, 0)


class _InterruptedWait:
    """A future whose wait is interrupted by a signal, as SIGTERM interrupts the flow's."""

    def result(self, raise_on_failure: bool = True) -> object:
        from prefect.exceptions import TerminationSignal

        raise TerminationSignal(signal=15)


def test_a_signal_while_waiting_for_a_task_ends_the_run_not_the_task() -> None:
    from prefect.exceptions import TerminationSignal

    from flows.fanout import _failure_texts

    with pytest.raises(TerminationSignal):
        _failure_texts(_InterruptedWait())  # type: ignore[arg-type]
