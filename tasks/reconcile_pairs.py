"""The fan-out unit: fetch, compare, value, diagnose and record one pair (or a small batch)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from prefect.tasks import exponential_backoff
from sqlmodel import Session

from integrations.stripe import StripeError
from integrations.stripe.redaction import redact
from models.billing import price_for_pair
from models.engine import get_engine, read_only
from models.enums import Ledger
from models.runs import ok_pairs
from models.types import utcnow
from models.usage import first_known_values
from tasks.assess import Pricing, assess_findings, needs_history
from tasks.compare import (
    Finding,
    Formula,
    Kind,
    PairComparison,
    Tolerance,
    Window,
    compare_pair,
    fetch_range,
)
from tasks.diagnose import HourlyFailed
from tasks.fetch import fetch_daily_usage, fetch_hourly_usage, stripe_client
from tasks.load import PairLedger, load_ledger, load_unbilled_price
from tasks.load_stripe import StripeLedger, load_stripe_ledger, stripe_fetch_range
from tasks.record import Assessment, LedgerFindings, PairStats, record_pair
from tasks.run_config import RunConfig
from tasks.stripe_pair import as_recorded, compare_stripe_ledger
from tasks.value import UnsupportedPrice, price_from_stripe


@dataclass(frozen=True, slots=True)
class RunContext:
    """What every pair of a run shares, its configuration included; cheap to serialise
    (Dask workers get it pickled, as a task argument).

    `now` is when the run started (timezone-aware UTC): the diagnosis's current hour and
    the start settling is measured from, so every pair of a run sees the same instant.
    Without it, each pair takes the time it is reconciled.
    """

    run_id: int
    window_start: date
    window_end: date
    today: date
    config: RunConfig
    now: datetime | None = None
    # Decided once as the run starts: an internal ledger with no line item is not compared.
    internal_ledger_empty: bool = False

    @property
    def tolerance(self) -> Tolerance:
        return self.config.tolerance

    @property
    def ledgers(self) -> tuple[str, ...]:
        """The ledgers this run compares: the configuration's, less an empty internal one."""
        return tuple(
            name
            for name in self.config.ledgers
            if not (name == Ledger.INTERNAL and self.internal_ledger_empty)
        )


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
    """Load, fetch, compare, assess, record; raises on any failure, leaving the pair untouched.

    What the run's log should say about the pair (a price that cannot be valued, hourly
    usage that could not be fetched) comes back under `notes`.
    """
    config = context.config
    engine = get_engine(config.database)
    window = Window(context.window_start, context.window_end)
    internal, stripe = Ledger.INTERNAL in context.ledgers, Ledger.STRIPE in context.ledgers
    started = time.perf_counter()
    with Session(read_only(engine)) as session:
        ledger = (
            load_ledger(
                session=session,
                customer=pair.customer,
                meter=pair.meter,
                start=window.start,
                end=window.end,
            )
            if internal
            else PairLedger(items=[])
        )
        theirs = (
            load_stripe_ledger(
                session=session,
                customer=pair.customer,
                meter=pair.meter,
                start=window.start,
                end=window.end,
            )
            if stripe
            else None
        )
    fetched = fetch_range(window=window, line_items=ledger.items, today=context.today)
    if theirs is not None:  # one daily fetch serves both ledgers
        fetched = stripe_fetch_range(fetched=fetched, items=theirs.items, today=context.today)
    daily: dict[date, Decimal] = {}
    requests = 0
    if fetched is not None:
        usage = fetch_daily_usage(
            config, meter=pair.meter, customer=pair.customer, start=fetched[0], end=fetched[1]
        )
        daily, requests = usage.values, usage.requests
    notes: list[str] = []
    result: PairComparison | None = None
    assessments: list[Assessment] = []
    if internal:
        result, assessments, made = _internal(
            context, pair, ledger=ledger, daily=daily, fetched=fetched, notes=notes
        )
        requests += made
    recorded_stripe = None
    if theirs is not None:
        notes += theirs.notes
        recorded_stripe, made = _stripe(context, pair, theirs, daily=daily)
        requests += made
    outcome = record_pair(
        engine=engine,
        run_id=context.run_id,
        customer=pair.customer,
        meter=pair.meter,
        comparison=result,
        daily=daily,
        fetched=fetched,
        stats=PairStats(requests=requests, duration_ms=int((time.perf_counter() - started) * 1000)),
        assessments=assessments,
        stripe=recorded_stripe,
    )
    compared = [result, None if recorded_stripe is None else recorded_stripe.comparison]
    return {
        "findings": sum(len(part.findings) for part in compared if part is not None),
        "new": outcome.new,
        "reopened": outcome.reopened,
        "resolved": outcome.resolved,
        "notes": notes,
    }


def _internal(
    context: RunContext,
    pair: PairRef,
    *,
    ledger: PairLedger,
    daily: dict[date, Decimal],
    fetched: tuple[date, date] | None,
    notes: list[str],
) -> tuple[PairComparison, list[Assessment], int]:
    """The internal ledger compared, valued and diagnosed; and the hourly requests it took."""
    result = compare_pair(
        daily=daily,
        line_items=ledger.items,
        window=Window(context.window_start, context.window_end),
        today=context.today,
        formula=Formula(pair.formula),
        tolerance=context.tolerance,
        active_from=pair.active_from,
        active_to=pair.active_to,
    )
    if ledger.withdrawn:
        scope = replace(result.scope, withdrawn_line_item_ids=ledger.withdrawn)
        result = replace(result, scope=scope)
    if not result.findings:
        return result, [], 0
    hourly = _HourlyFetcher(config=context.config, pair=pair, notes=notes)
    assessments = _assess(
        context,
        pair,
        result,
        ledger=ledger,
        daily=daily,
        fetched=fetched,
        hourly=hourly,
        notes=notes,
    )
    return result, assessments, hourly.requests


def _stripe(
    context: RunContext, pair: PairRef, ledger: StripeLedger, *, daily: dict[date, Decimal]
) -> tuple[LedgerFindings, int]:
    """The `stripe` ledger compared with the same daily usage; a line not on 00:00 UTC costs
    one request over its exact instants (counted)."""
    client = stripe_client(context.config)

    def usage_total(start: datetime, end: datetime) -> tuple[Decimal, int]:
        total = client.usage_total(
            meter=pair.meter,
            customer=pair.customer,
            start_time=int(start.timestamp()),
            end_time=int(end.timestamp()),
        )
        return total.value, total.requests

    window = Window(context.window_start, context.window_end)
    now = context.now or utcnow()
    result, requests = compare_stripe_ledger(
        ledger,
        customer=pair.customer,
        meter=pair.meter,
        daily=daily,
        window=window,
        today=context.today,
        run_started=now,
        formula=Formula(pair.formula),
        tolerance=context.tolerance,
        usage_total=usage_total,
    )
    recorded = as_recorded(
        result,
        window=window,
        withdrawn=ledger.withdrawn,
        now=now,
        settle_hours=context.config.settle_hours,
    )
    return recorded, requests


def _assess(
    context: RunContext,
    pair: PairRef,
    result: PairComparison,
    *,
    ledger: PairLedger,
    daily: dict[date, Decimal],
    fetched: tuple[date, date] | None,
    hourly: _HourlyFetcher,
    notes: list[str],
) -> list[Assessment]:
    """Value and diagnose the pair's findings; reads history before this run records any."""
    config = context.config
    with Session(read_only(get_engine(config.database))) as session:
        pricing = _pricing(session, pair, result.findings, ledger=ledger, notes=notes)
        first_known = (
            first_known_values(
                session=session,
                customer=pair.customer,
                meter=pair.meter,
                start=fetched[0],
                end=fetched[1],
            )
            if fetched is not None and needs_history(result.findings)
            else {}
        )
    return assess_findings(
        findings=result.findings,
        pricing=pricing,
        formula=Formula(pair.formula),
        daily=daily,
        first_known=first_known,
        tolerance=context.tolerance,
        today=context.today,
        now=context.now or utcnow(),
        diagnose_hourly=config.diagnose,
        fetch_hourly=hourly,
        settle_hours=config.settle_hours,
    )


def _pricing(
    session: Session,
    pair: PairRef,
    findings: Sequence[Finding],
    *,
    ledger: PairLedger,
    notes: list[str],
) -> Pricing:
    """The pair's Stripe price if it has one; else its ledger prices, read only if needed."""
    price = price_for_pair(session=session, customer=pair.customer, meter=pair.meter)
    if price is not None:
        try:
            return Pricing(stripe=price_from_stripe(price))
        except UnsupportedPrice as error:
            notes.append(
                f"pair {pair.label}: its discrepancies are not valued, Stripe price "
                f"{price.get('id')} is not understood: {error}"
            )
            return Pricing(unsupported=True)
    wanted = {f.line_item_id for f in findings if f.kind is not Kind.UNBILLED_USAGE}
    unbilled = None
    if any(f.kind is Kind.UNBILLED_USAGE for f in findings):
        unbilled = load_unbilled_price(session=session, customer=pair.customer, meter=pair.meter)
    return Pricing(
        by_line_item={item.id: ledger.price_of(item) for item in ledger.items if item.id in wanted},
        unbilled=unbilled,
    )


@dataclass
class _HourlyFetcher:
    """Fetches hourly usage for the diagnosis through the pair's client, counting requests."""

    config: RunConfig
    pair: PairRef
    notes: list[str]
    requests: int = 0

    def __call__(
        self, spans: Sequence[tuple[datetime, datetime]]
    ) -> dict[datetime, Decimal] | HourlyFailed:
        values: dict[datetime, Decimal] = {}
        for start, end in spans:
            try:
                usage = fetch_hourly_usage(
                    self.config,
                    meter=self.pair.meter,
                    customer=self.pair.customer,
                    start=start,
                    end=end,
                )
            except StripeError as error:
                self.notes.append(
                    f"pair {self.pair.label}: hourly usage from {start:%Y-%m-%d %H}:00 UTC could "
                    f"not be fetched, a time-zone shift is not checked: {describe_error(error)}"
                )
                return HourlyFailed()
            values.update(usage.values)
            self.requests += usage.requests
        return values


def _already_recorded(context: RunContext, pairs: list[PairRef]) -> set[tuple[str, str]]:
    """Pairs this run already recorded OK (a retried task does not redo them)."""
    engine = get_engine(context.config.database)
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
        for note in counts["notes"]:
            logger.warning("%s", note)
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
