"""The fan-out: tracked pairs read a page at a time and submitted in bounded slices.

A run holds only what is in flight: one page of tracked pairs, the batch being filled, at
most `in_flight` submitted tasks, and fewer than `flush_at` failed pairs not yet recorded.
So the flow's memory does not grow with the number of pairs (it grew ~4 MiB per 1,000 pairs
when every pair, future and failure of the run was held to the end).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from queue import SimpleQueue
from typing import Any

from prefect import Task
from prefect.futures import PrefectFuture

from flows import progress
from flows.history import TaskRuns
from models.tables import TrackedPair
from tasks.reconcile_pairs import PairRef, PairsFailed, RunContext, describe_error

FLUSH_FAILURES_AT = 1000  # failed pairs recorded together, in one transaction


@dataclass(frozen=True, slots=True)
class Plan:
    """How a run's pairs are cut into tasks, decided from counts before any pair is read."""

    pairs_total: int  # tracked pairs the run reads
    runnable: int  # of which Stripe knows the meter
    pairs_per_task: int
    in_flight: int  # submitted tasks not yet finished, at most

    @property
    def tasks(self) -> int:
        return math.ceil(self.runnable / self.pairs_per_task)


class FanOut:
    """Submits batches of pairs as earlier ones finish, and records the pairs that failed."""

    def __init__(
        self,
        *,
        tasks: TaskRuns,
        context: RunContext,
        plan: Plan,
        reconcile: Task[..., Any],
        record_failures: Task[..., Any],
        flush_at: int = FLUSH_FAILURES_AT,
    ) -> None:
        self._tasks = tasks
        self._context = context
        self._plan = plan
        self._reconcile = reconcile
        self._record_failures = record_failures
        self._flush_at = flush_at
        self._pending: dict[PrefectFuture[Any], list[PairRef]] = {}
        self._finished: SimpleQueue[PrefectFuture[Any]] = SimpleQueue()
        self._failures: list[tuple[PairRef, str]] = []
        self.seen = 0  # pairs read
        self.done = 0  # pairs reconciled or failed
        self.most_in_flight = 0

    def run(self, pages: Iterable[list[TrackedPair]], formulas: dict[str, str]) -> int:
        """Reconcile every pair of `pages`; returns how many pairs were read."""
        self._progress()
        batch: list[PairRef] = []
        for page in pages:
            for row in page:
                pair = _ref(row, formulas)
                self.seen += 1
                if not pair.formula:
                    error = f"meter {pair.meter} is not a meter of this Stripe account"
                    self._failed([(pair, error)])
                    self.done += 1
                    continue
                batch.append(pair)
                if len(batch) == self._plan.pairs_per_task:
                    self._submit(batch)
                    batch = []
            self._progress()
        if batch:
            self._submit(batch)
        while self._pending:
            self._settle(self._finished.get())
        self._flush()
        return self.seen

    def _submit(self, batch: list[PairRef]) -> None:
        while len(self._pending) >= self._plan.in_flight:
            self._settle(self._finished.get())
        future = self._tasks.submit(self._reconcile, self._context, batch)
        self._pending[future] = batch
        self.most_in_flight = max(self.most_in_flight, len(self._pending))
        future.add_done_callback(self._finished.put)

    def _settle(self, future: PrefectFuture[Any]) -> None:
        batch = self._pending.pop(future)
        errors = _failure_texts(future)
        if errors:
            self._failed([(pair, errors.get(pair) or errors[None]) for pair in batch])
        self.done += len(batch)
        self._progress()

    def _failed(self, failures: list[tuple[PairRef, str]]) -> None:
        self._failures += failures
        if len(self._failures) >= self._flush_at:
            self._flush()

    def _flush(self) -> None:
        if self._failures:
            failures, self._failures = self._failures, []
            self._tasks.call(self._record_failures, self._context, failures).result()

    def _progress(self) -> None:
        progress.report(self.done, self._plan.pairs_total)


def _ref(row: TrackedPair, formulas: dict[str, str]) -> PairRef:
    return PairRef(
        customer=row.stripe_customer_id,
        meter=row.meter_id,
        formula=formulas.get(row.meter_id, ""),
        active_from=row.active_from,
        active_to=row.active_to,
    )


def _failure_texts(future: PrefectFuture[Any]) -> dict[PairRef | None, str]:
    """Empty when the task succeeded; else each pair's own error, or the task's (key None)."""
    try:
        future.result(raise_on_failure=True)
        return {}
    except PairsFailed as error:
        texts: dict[PairRef | None, str] = {None: describe_error(error)}
        for pair, text in error.failures.items():
            texts[pair] = text
        return texts
    except Exception as error:  # a signal (SIGTERM: Prefect's TerminationSignal) ends the run
        return {None: describe_error(error)}
