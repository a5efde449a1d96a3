"""The reconciliation flow: nightly and manual runs are this one flow with other parameters."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context
from prefect.logging import get_run_logger
from pydantic import SecretStr
from sqlmodel import Session

from flows.fanout import FanOut, Plan
from flows.history import TaskRuns, wait_for_history
from flows.hooks import alert_run_ended
from flows.task_runners import (
    RunnerStart,
    in_flight_for,
    pairs_per_task_for,
    started_task_runner,
)
from flows.windows import check_window, nightly_window, utc_today
from flows.wrong_meter import diagnose_wrong_meter
from integrations.settings import (
    LedgerQueryUnreadable,
    TaskRunnerKind,
    get_settings,
    read_ledger_query,
)
from integrations.stripe.local_share import describe_local_limit
from integrations.stripe.prefect_limit import ensure_limit, plan_for
from models.db_errors import database_errors
from models.engine import get_engine, read_only, session_scope
from models.enums import Ledger
from models.ledger import ledger_has_line_items
from models.ledger_query import LedgerSyncFailed
from models.meters import cached_formulas, upsert_meters
from models.pairs import count_pairs, pair_pages
from models.runs import (
    complete_run,
    fail_stale_runs,
    finish_run,
    get_run,
    heartbeat,
    ledger_sync_error,
    ok_pairs,
    record_discovery,
    record_invoice_sync,
    record_ledger_sync,
    record_ledgers,
    start_run,
)
from models.tables import PairStatus, ReconciliationRun, RunStatus, Trigger
from models.types import utcnow
from tasks.alert import alert_finance
from tasks.discover import discover_pairs
from tasks.fetch import (
    MissingApiKey,
    fetch_meters,
    key_refused,
    retry_unless_key_refused,
    stripe_client,
)
from tasks.last_completed import record_gap
from tasks.reconcile_pairs import PairRef, RunContext, describe_error, reconcile_pairs
from tasks.record import PairStats, record_pair_result
from tasks.report import publish_report
from tasks.run_config import LOCAL_CLUSTER_WORKERS, RunConfig
from tasks.summary import INTERNAL_LEDGER_EMPTY
from tasks.sync_invoices import sync_stripe_invoices
from tasks.sync_ledger import sync_ledger

HEARTBEAT_SECONDS = 10.0
PAGE_SIZE = 1000  # tracked pairs read at a time


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What a run did; the CLI prints it and chooses its exit code from `status`."""

    run_id: int
    status: str
    window_start: date
    window_end: date
    pairs_total: int
    pairs_ok: int
    pairs_failed: int
    compared: int
    matched: int
    pending: int
    new: int
    reopened: int
    resolved: int
    alerted: int
    requests: int
    task_runs_recorded: int
    task_runs_expected: int
    settling: int = 0  # recorded, not alerted until their period settles
    discovered: int | None = None  # pairs Stripe bills (None: discovery off or failed)
    discovered_added: int = 0  # of which newly tracked
    discovery_error: str | None = None
    ledger_sync_error: str | None = None  # why the ledger query could not be applied

    @classmethod
    def of(
        cls,
        run: ReconciliationRun,
        *,
        alerted: int,
        task_runs_recorded: int,
        task_runs_expected: int,
    ) -> RunOutcome:
        """The finished run's record, plus what only the flow knows."""
        assert run.id is not None
        discovery = run.counts.get("discovery") or {}
        return cls(
            run_id=run.id,
            status=run.status.value,
            window_start=run.window_start,
            window_end=run.window_end,
            pairs_total=run.pairs_total,
            pairs_ok=run.pairs_ok,
            pairs_failed=run.pairs_failed,
            compared=run.line_items_compared,
            matched=run.line_items_matched,
            pending=run.line_items_pending,
            new=run.discrepancies_new,
            reopened=run.discrepancies_reopened,
            resolved=run.discrepancies_resolved,
            alerted=alerted,
            requests=int(run.counts.get("requests", 0)),
            task_runs_recorded=task_runs_recorded,
            task_runs_expected=task_runs_expected,
            settling=run.discrepancies_settling,
            discovered=None if run.discovery_error or not discovery else discovery.get("pairs"),
            discovered_added=int(discovery.get("added", 0)),
            discovery_error=run.discovery_error,
            ledger_sync_error=ledger_sync_error(run),
        )


@task(
    name="refresh-meters",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=retry_unless_key_refused,
    cache_policy=NO_CACHE,
)
def refresh_meters(config: RunConfig) -> dict[str, str]:
    """Cache Stripe's meter configuration; the formula decides how days add up."""
    meters = fetch_meters(config)
    with session_scope(get_engine(config.database)) as session:
        upsert_meters(session=session, meters=meters)
    return {m.id: m.formula for m in meters}


class _Heartbeat:
    """Keeps `heartbeat_at` fresh so a later run can tell this one from a killed one."""

    def __init__(self, run_id: int, config: RunConfig) -> None:
        self._run_id = run_id
        self._config = config
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, name="meter-recon-heartbeat", daemon=True
        )

    def _beat(self) -> None:
        engine = get_engine(self._config.database)
        interval = min(HEARTBEAT_SECONDS, self._config.stale_after_seconds / 4)
        while not self._stop.wait(interval):
            try:
                with session_scope(engine) as session:
                    heartbeat(session=session, run_id=self._run_id)
            except Exception:  # noqa: S112  a missed beat is retried at the next one
                continue

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def resolve_window(
    *, start: date | None, end: date | None, lookback_days: int, today: date
) -> tuple[date, date]:
    if start is None and end is None:
        return nightly_window(today=today, lookback_days=lookback_days)
    if start is None or end is None:
        raise ValueError("Give both start and end, or neither for the nightly window.")
    return check_window(start=start, end=end, today=today)


@flow(
    name="meter-recon",
    log_prints=False,
    validate_parameters=True,
    on_failure=[alert_run_ended],
    on_crashed=[alert_run_ended],
)
def reconcile_meters(
    start: date | None = None,
    end: date | None = None,
    customers: list[str] | None = None,
    meters: list[str] | None = None,
    lookback_days: int | None = None,
    trigger: Trigger = Trigger.SCHEDULED,
    database_url: SecretStr | None = None,
    config: RunConfig | None = None,
) -> RunOutcome:
    """Reconcile Stripe's metered usage with the ledger over UTC days [start, end).

    Without start and end: the last `lookback_days` complete days (the nightly window).
    The run's configuration is `config` when its caller read the settings already (the
    command line, the demo), else the settings read here, once; `database_url` (a secret:
    Prefect stores it masked) points the run at another database. The fan-out's task runner
    is the configuration's (`flows.task_runners.task_runner_for`), whatever the flow's own.
    """
    logger = get_run_logger()
    config = (config or RunConfig.of(get_settings())).using_database(database_url)
    today = utc_today()
    window_start, window_end = resolve_window(
        start=start, end=end, lookback_days=lookback_days or config.lookback_days, today=today
    )
    engine = get_engine(config.database)
    flow_run = get_run_context().flow_run  # type: ignore[union-attr]
    parameters: dict[str, Any] = {
        "start": window_start.isoformat(),
        "end": window_end.isoformat(),
        "customers": customers or [],
        "meters": meters or [],
        "lookback_days": lookback_days,
        "max_workers": config.max_workers,
        "task_runner": config.task_runner.value,
        "config": config.recorded(),
    }
    with session_scope(engine) as session:
        stale = fail_stale_runs(
            session=session, stale_after=timedelta(seconds=config.stale_after_seconds)
        )
        run = start_run(
            session=session,
            window_start=window_start,
            window_end=window_end,
            trigger=trigger,
            parameters=parameters,
            flow_run_id=str(flow_run.id) if flow_run else None,
        )
        gap = record_gap(session=session, run=run)
    run_id = run.id
    assert run_id is not None
    if gap:
        logger.warning(gap)
    if stale:
        logger.warning("marked stale run(s) %s as failed", ", ".join(map(str, stale)))
    logger.info("run %d: window %s..%s (%s)", run_id, window_start, window_end, trigger.value)
    try:
        with _Heartbeat(run_id, config):
            return _run(
                config,
                run_id=run_id,
                parameters=parameters,
                window=(window_start, window_end),
                today=today,
                customers=customers or [],
                meters=meters or [],
                flow_run_id=flow_run.id if flow_run else None,
            )
    except BaseException as error:
        # A database lost mid-run (here or in marking the run failed) leaves as one sentence.
        with database_errors(config.database):
            with session_scope(engine) as session:
                finish_run(
                    session=session,
                    run_id=run_id,
                    status=RunStatus.FAILED,
                    values={},
                    error=describe_error(error),
                )
            raise


def _run(
    config: RunConfig,
    *,
    run_id: int,
    parameters: dict[str, Any],
    window: tuple[date, date],
    today: date,
    customers: list[str],
    meters: list[str],
    flow_run_id: Any,
) -> RunOutcome:
    """The run's steps, in order; each names what it does."""
    tasks = TaskRuns()
    if config.ledger_query:
        _sync_ledger(tasks, config, run_id)
    _share_rate_limit(config)
    with started_task_runner(config) as fan_out_runner:  # a Dask cluster starts meanwhile
        formulas = _meters(tasks, config)
        if config.discover_pairs:
            _discover(tasks, config, run_id)
        if Ledger.STRIPE in config.ledgers:
            _sync_invoices(tasks, config, run_id, since=window[0], customers=customers)
        context = RunContext(
            run_id=run_id,
            window_start=window[0],
            window_end=window[1],
            today=today,
            config=config,
            now=utcnow(),
            internal_ledger_empty=_internal_ledger_empty(config, run_id),
        )
        plan = _plan(config, customers=customers, meters=meters, formulas=formulas)
        pairs_total = _fan_out(
            tasks,
            context,
            plan,
            fan_out_runner,
            customers=customers,
            meters=meters,
            formulas=formulas,
        )
    tasks.call(diagnose_wrong_meter, context).result()
    _finish(
        config,
        run_id,
        pairs_total=pairs_total,
        parameters={**parameters, "pairs_per_task": plan.pairs_per_task},
    )
    tasks.call(publish_report, run_id, config.database_url).result()
    alerted = _alert(tasks, config, run_id)
    recorded = _history(flow_run_id, tasks)
    return _summary(config, run_id, alerted=alerted, recorded=recorded, expected=tasks.started)


def _share_rate_limit(config: RunConfig) -> None:
    """The workers of a Dask cluster elsewhere share Stripe's rate limit through a Prefect
    GCL: create it (or bring it to this run's rate) before any task asks Stripe for anything.
    A local cluster's workers share one window on the machine (or, without POSIX file locks,
    keep to fixed shares) and need nothing."""
    if config.task_runner is not TaskRunnerKind.DASK:
        return
    rate = config.max_requests_per_second
    if config.dask_address:
        plan = plan_for(rate)
        ensure_limit(plan)
        get_run_logger().info("Stripe rate limit shared through Prefect: %s", plan)
        return
    get_run_logger().info(
        "Stripe rate limit shared by the %d local workers %s",
        LOCAL_CLUSTER_WORKERS,
        describe_local_limit(rate, processes=LOCAL_CLUSTER_WORKERS),
    )


def _meters(tasks: TaskRuns, config: RunConfig) -> dict[str, str]:
    """Each meter's formula: from Stripe, else the cached configuration, else the error."""
    refreshed = tasks.call(refresh_meters, config)
    if refreshed.is_completed():
        return refreshed.result()
    _stop_if_key_refused(refreshed.result(raise_on_failure=False))
    with Session(get_engine(config.database)) as session:
        formulas = cached_formulas(session=session)
    if not formulas:
        refreshed.result()  # raises: no meters from Stripe and none cached
    get_run_logger().warning("could not refresh meters from Stripe; using the cached configuration")
    return formulas


def _sync_ledger(tasks: TaskRuns, config: RunConfig, run_id: int) -> None:
    """Read the internal ledger from its query first; a sync that fails changes nothing and
    leaves the run going with the ledger as it was (said in its log, record, report, alert)."""
    synced: dict[str, int] | None = None
    error: str | None = None
    try:
        query = read_ledger_query(config.ledger_query)
    except LedgerQueryUnreadable as unreadable:
        error = str(unreadable)
    else:
        assert query is not None
        state = tasks.call(sync_ledger, query, config.ledger_source, config.database)
        if state.is_completed():
            synced = state.result()
        else:
            failure = state.result(raise_on_failure=False)
            error = (
                str(failure)
                if isinstance(failure, LedgerSyncFailed)
                else describe_error(
                    failure
                    if isinstance(failure, BaseException)
                    else RuntimeError(f"sync-ledger ended {state.type.value}")
                )
            )
    if error:
        get_run_logger().warning(
            "ledger sync failed; going on with the ledger as it was: %s", error
        )
    with session_scope(get_engine(config.database)) as session:
        record_ledger_sync(session=session, run_id=run_id, synced=synced, error=error)


def _discover(tasks: TaskRuns, config: RunConfig, run_id: int) -> None:
    """Track the pairs Stripe bills and cache their prices; a discovery that fails after its
    retries leaves the run going on the cached pairs and prices (it is not a failed pair)."""
    found, error, requests = _step_it_can_go_on_without(
        tasks, config, discover_pairs, config, what="discovery", left="the cached pairs and prices"
    )
    with session_scope(get_engine(config.database)) as session:
        record_discovery(
            session=session,
            run_id=run_id,
            requests=requests,
            found=None
            if found is None
            else {
                "pairs": found.pairs,
                "added": found.added,
                "items": found.items,
                "prices": found.prices,
            },
            error=error,
        )


def _sync_invoices(
    tasks: TaskRuns, config: RunConfig, run_id: int, *, since: date, customers: list[str]
) -> None:
    """Bring what Stripe invoiced since the window's start into the `stripe` ledger; a sync
    that fails after its retries leaves the run going with the line items already stored."""
    found, error, requests = _step_it_can_go_on_without(
        tasks,
        config,
        sync_stripe_invoices,
        config,
        since,
        tuple(customers),
        what="invoice sync",
        left="the Stripe line items already stored",
    )
    with session_scope(get_engine(config.database)) as session:
        record_invoice_sync(
            session=session,
            run_id=run_id,
            requests=requests,
            found=None if found is None else found.counts(),
            error=error,
        )


def _step_it_can_go_on_without(
    tasks: TaskRuns, config: RunConfig, task: Any, *args: Any, what: str, left: str
) -> tuple[Any, str | None, int]:
    """Run a step whose failure after its retries the run survives: its result, or why it
    failed in one line (a refused key still ends the run), and its Stripe requests.

    They are counted around the task and its retries: the flow makes no other request
    meanwhile (the meters are refreshed, the fan-out has not started).
    """
    before = _requests_made(config)
    state = tasks.call(task, *args)
    requests = _requests_made(config) - before
    if state.is_completed():
        return state.result(), None, requests
    failure = state.result(raise_on_failure=False)
    if not isinstance(failure, BaseException):
        failure = RuntimeError(f"{task.name} ended {state.type.value}")
    _stop_if_key_refused(failure)
    error = describe_error(failure)
    get_run_logger().warning("%s failed; going on with %s: %s", what, left, error)
    return None, error, requests


def _stop_if_key_refused(failure: object) -> None:
    """A key Stripe refuses fails every request: the run ends now, not after every pair."""
    refused = key_refused(failure)
    if refused is not None:
        raise refused


def _internal_ledger_empty(config: RunConfig, run_id: int) -> bool:
    """Whether the internal ledger is left out of this run: it holds no line item at all
    while Stripe's invoices are compared (a Stripe-only user would see every day unbilled).
    Decided once, said once in the log and kept with the run for its summary."""
    engine = get_engine(config.database)
    empty = False
    if Ledger.INTERNAL in config.ledgers and Ledger.STRIPE in config.ledgers:
        with Session(read_only(engine)) as session:
            empty = not ledger_has_line_items(session=session, ledger=Ledger.INTERNAL)
    ledgers = [name for name in config.ledgers if not (empty and name == Ledger.INTERNAL)]
    with session_scope(engine) as session:
        record_ledgers(session=session, run_id=run_id, ledgers=ledgers, internal_empty=empty)
    if empty:
        get_run_logger().info(INTERNAL_LEDGER_EMPTY)
    return empty


def _requests_made(config: RunConfig) -> int:
    """HTTP attempts of the process's Stripe client so far (0 without a key: none made)."""
    try:
        return stripe_client(config).requests_made
    except MissingApiKey:
        return 0


def _plan(
    config: RunConfig, *, customers: list[str], meters: list[str], formulas: dict[str, str]
) -> Plan:
    """Pairs per task for this run's size, from counts (no pair is loaded to decide)."""
    known = [m for m in meters if m in formulas] if meters else list(formulas)
    with Session(read_only(get_engine(config.database))) as session:
        total = count_pairs(session=session, customers=customers, meters=meters)
        runnable = count_pairs(session=session, customers=customers, meters=known) if known else 0
    return Plan(
        pairs_total=total,
        runnable=runnable,
        pairs_per_task=pairs_per_task_for(config, runnable),
        in_flight=in_flight_for(config),
    )


def _fan_out(
    tasks: TaskRuns,
    context: RunContext,
    plan: Plan,
    started: RunnerStart,
    *,
    customers: list[str],
    meters: list[str],
    formulas: dict[str, str],
) -> int:
    """Reconcile every tracked pair, a slice in flight at a time, on the task runner the run's
    configuration names; returns how many pairs were read."""
    config = context.config
    get_run_logger().info(
        "reconciling %d pair(s) in %d task(s) on %s, at most %d in flight",
        plan.runnable,
        plan.tasks,
        config.task_runner.value,
        plan.in_flight,
    )
    pages = pair_pages(
        engine=get_engine(config.database),
        page_size=PAGE_SIZE,
        customers=customers,
        meters=meters,
    )
    fan_out = FanOut(
        tasks=tasks,
        context=context,
        plan=plan,
        reconcile=reconcile_pairs,
        record_failures=record_failed_pairs,
    )
    tasks.runner = started.runner()
    try:
        return fan_out.run(pages, formulas)
    finally:
        tasks.runner = None


def _finish(
    config: RunConfig, run_id: int, *, pairs_total: int, parameters: dict[str, Any]
) -> None:
    with session_scope(get_engine(config.database)) as session:
        complete_run(session=session, run_id=run_id, pairs_total=pairs_total, parameters=parameters)


def _alert(tasks: TaskRuns, config: RunConfig, run_id: int) -> int:
    """How many discrepancies finance was alerted of; an undelivered alert waits for next run."""
    state = tasks.call(alert_finance, run_id, config)
    if state.is_completed():
        return int(state.result())
    get_run_logger().error("alert not delivered; the next run will send it again")
    return 0


def _history(flow_run_id: Any, tasks: TaskRuns) -> int:
    """Wait until Prefect's history holds every task run this flow run started."""
    if not flow_run_id:
        return 0
    return wait_for_history(flow_run_id, expected=tasks.started, timeout=60 + tasks.started / 50)


def _summary(
    config: RunConfig, run_id: int, *, alerted: int, recorded: int, expected: int
) -> RunOutcome:
    with Session(get_engine(config.database)) as session:
        summary = RunOutcome.of(
            get_run(session=session, run_id=run_id),
            alerted=alerted,
            task_runs_recorded=recorded,
            task_runs_expected=expected,
        )
    get_run_logger().info(
        "run %d %s: %d of %d pairs reconciled, %d failed; %d new, %d re-opened, %d resolved, "
        "%d settling%s",
        run_id,
        summary.status,
        summary.pairs_ok,
        summary.pairs_total,
        summary.pairs_failed,
        summary.new,
        summary.reopened,
        summary.resolved,
        summary.settling,
        ("; discovery failed" if summary.discovery_error else "")
        + ("; ledger sync failed" if summary.ledger_sync_error else ""),
    )
    return summary


@task(
    name="record-failed-pairs",
    retries=3,
    retry_delay_seconds=[1, 5, 15],
    cache_policy=NO_CACHE,
)
def record_failed_pairs(context: RunContext, failures: list[tuple[PairRef, str]]) -> int:
    """Pairs not recorded OK in this run become `fetch_failed`, all in one transaction (a
    failure part-way writes none, and the retry records them all); nothing else changes."""
    logger = get_run_logger()
    engine = get_engine(context.config.database)
    with session_scope(engine) as session:
        ok = ok_pairs(
            session=session, run_id=context.run_id, customers=(p.customer for p, _ in failures)
        )
        failed = [
            (pair, error) for pair, error in failures if (pair.customer, pair.meter) not in ok
        ]
        for pair, error in failed:
            record_pair_result(
                session=session,
                run_id=context.run_id,
                customer=pair.customer,
                meter=pair.meter,
                status=PairStatus.FETCH_FAILED,
                stats=PairStats(requests=0, duration_ms=0),
                error=error,
            )
    for pair, error in failed:
        logger.warning("pair %s not reconciled: %s", pair.label, error)
    return len(failed)
