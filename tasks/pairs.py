"""The fan-out unit: fetch, compare and record one pair (or a small batch of pairs)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from prefect.tasks import exponential_backoff
from sqlmodel import Session

from meter_recon.settings import get_settings
from meter_recon.stripe.redaction import redact
from models.engine import get_engine, read_only
from models.runs import ok_pairs
from tasks.compare import Formula, Tolerance, Window, compare_pair, fetch_range
from tasks.fetch import fetch_daily_usage
from tasks.load import load_line_items
from tasks.record import PairStats, record_pair


@dataclass(frozen=True, slots=True)
class RunContext:
    """What every pair of a run shares; cheap to serialise."""

    run_id: int
    window_start: date
    window_end: date
    today: date
    abs_tol: str
    rel_tol: str


@dataclass(frozen=True, slots=True)
class PairRef:
    customer: str
    meter: str
    formula: str
    active_from: date | None = None
    active_to: date | None = None

    @property
    def label(self) -> str:
        return f"{self.customer} / {self.meter}"


class PairsFailed(Exception):
    """Some pairs of a task could not be reconciled; Prefect retries the task for them."""

    def __init__(self, failures: dict[PairRef, str]) -> None:
        self.failures = failures
        first = next(iter(failures.items()))
        more = f" (and {len(failures) - 1} more pair(s))" if len(failures) > 1 else ""
        super().__init__(f"{first[0].label}: {first[1]}{more}")


def describe_error(error: BaseException) -> str:
    """One line for a pair result: what failed, never a secret."""
    text = " ".join(str(error).split()) or type(error).__name__
    return redact(f"{type(error).__name__}: {text}")[:1000]


def reconcile_one(context: RunContext, pair: PairRef) -> dict[str, Any]:
    """Load, fetch, compare, record; raises on any failure, leaving the pair untouched."""
    settings = get_settings()
    engine = get_engine(settings.database_url)
    window = Window(context.window_start, context.window_end)
    started = time.perf_counter()
    with Session(read_only(engine)) as session:
        items = load_line_items(
            session=session,
            customer=pair.customer,
            meter=pair.meter,
            start=window.start,
            end=window.end,
        )
    fetched = fetch_range(window=window, line_items=items, today=context.today)
    daily: dict[date, Decimal] = {}
    requests = 0
    if fetched is not None:
        usage = fetch_daily_usage(
            settings, meter=pair.meter, customer=pair.customer, start=fetched[0], end=fetched[1]
        )
        daily, requests = usage.values, usage.requests
    result = compare_pair(
        daily=daily,
        line_items=items,
        window=window,
        today=context.today,
        formula=Formula(pair.formula),
        tolerance=Tolerance(Decimal(context.abs_tol), Decimal(context.rel_tol)),
        active_from=pair.active_from,
        active_to=pair.active_to,
    )
    outcome = record_pair(
        engine=engine,
        run_id=context.run_id,
        customer=pair.customer,
        meter=pair.meter,
        comparison=result,
        daily=daily,
        fetched=fetched,
        stats=PairStats(requests=requests, duration_ms=int((time.perf_counter() - started) * 1000)),
    )
    return {
        "findings": len(result.findings),
        "new": outcome.new,
        "reopened": outcome.reopened,
        "resolved": outcome.resolved,
    }


def _already_recorded(context: RunContext, pairs: list[PairRef]) -> set[tuple[str, str]]:
    """Pairs this run already recorded OK (a retried task does not redo them)."""
    engine = get_engine(get_settings().database_url)
    with Session(read_only(engine)) as session:
        return ok_pairs(
            session=session, run_id=context.run_id, customers=(p.customer for p in pairs)
        )


def _task_run_name() -> str:
    from prefect.runtime import task_run

    pairs: list[PairRef] = task_run.parameters.get("pairs", [])
    if len(pairs) == 1:
        return f"reconcile {pairs[0].label}"
    return f"reconcile {len(pairs)} pairs from {pairs[0].label}" if pairs else "reconcile"


@task(
    name="reconcile-pairs",
    task_run_name=_task_run_name,
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    cache_policy=NO_CACHE,
    persist_result=False,
    log_prints=False,
)
def reconcile_pairs(context: RunContext, pairs: list[PairRef]) -> dict[str, int]:
    """Reconcile each pair in its own transaction; a failing pair does not stop the others."""
    logger = get_run_logger()
    done = _already_recorded(context, pairs)
    failures: dict[PairRef, str] = {}
    totals = {"pairs": 0, "findings": 0, "new": 0, "reopened": 0, "resolved": 0}
    for pair in pairs:
        if (pair.customer, pair.meter) in done:
            continue
        try:
            counts = reconcile_one(context, pair)
        except Exception as error:
            failures[pair] = describe_error(error)
            logger.warning("pair %s failed: %s", pair.label, failures[pair])
            continue
        totals["pairs"] += 1
        for name in ("findings", "new", "reopened", "resolved"):
            totals[name] += counts[name]
        if counts["findings"]:
            logger.info(
                "pair %s: %d discrepancies (%d new, %d re-opened), %d resolved",
                pair.label,
                counts["findings"],
                counts["new"],
                counts["reopened"],
                counts["resolved"],
            )
    if failures:
        raise PairsFailed(failures)
    return totals
