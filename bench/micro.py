"""Micro-benchmarks: the pure comparison, and recording on SQLite and PostgreSQL."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from models.engine import dispose_engines, get_engine
from models.migrate import upgrade
from tasks.compare import Formula, LineItem, PairComparison, Window, compare_pair
from tasks.record import PairStats, record_pair

WINDOW_DAYS = 35  # the period-close window: the longest a nightly deployment compares
TODAY = date(2026, 11, 5)


@dataclass(frozen=True, slots=True)
class MicroResult:
    name: str
    units: int
    unit: str
    seconds: float

    @property
    def per_second(self) -> float:
        return self.units / self.seconds if self.seconds else 0.0


def _pair_input(index: int) -> tuple[dict[date, Decimal], list[LineItem]]:
    """35 days of usage billed by 5 weekly line items; every other item is off by one."""
    start = TODAY - timedelta(days=WINDOW_DAYS)
    daily = {
        start + timedelta(days=d): Decimal(10 + (index + d) % 50) + Decimal("0.5")
        for d in range(WINDOW_DAYS)
    }
    items = []
    for week in range(WINDOW_DAYS // 7):
        first = start + timedelta(days=7 * week)
        total = sum((daily[first + timedelta(days=d)] for d in range(7)), Decimal(0))
        items.append(
            LineItem(
                id=f"li_{index}_{week}",
                period_start=first,
                period_end=first + timedelta(days=7),
                quantity=total + (1 if (index + week) % 2 else 0),
            )
        )
    return daily, items


def bench_compare(pairs: int) -> MicroResult:
    window = Window(TODAY - timedelta(days=WINDOW_DAYS), TODAY)
    inputs = [_pair_input(i) for i in range(pairs)]
    started = time.perf_counter()
    compared = 0
    for daily, items in inputs:
        result = compare_pair(
            daily=daily, line_items=items, window=window, today=TODAY, formula=Formula.SUM
        )
        compared += result.compared
    return MicroResult("compare (pure)", compared, "line items", time.perf_counter() - started)


def _comparisons(pairs: int) -> list[tuple[str, dict[date, Decimal], PairComparison]]:
    window = Window(TODAY - timedelta(days=WINDOW_DAYS), TODAY)
    out = []
    for index in range(pairs):
        daily, items = _pair_input(index)
        result = compare_pair(
            daily=daily, line_items=items, window=window, today=TODAY, formula=Formula.SUM
        )
        out.append((f"cus_micro{index:06d}", daily, result))
    return out


def _new_run(database_url: str) -> int:
    from models.engine import session_scope
    from models.tables import ReconciliationRun, RunStatus, Trigger

    with session_scope(get_engine(database_url)) as session:
        run = ReconciliationRun(
            window_start=TODAY - timedelta(days=WINDOW_DAYS),
            window_end=TODAY,
            trigger=Trigger.MANUAL,
            status=RunStatus.RUNNING,
        )
        session.add(run)
        session.flush()
        assert run.id is not None
        return run.id


def record_throughput(database_url: str, pairs: int, label: str) -> MicroResult:
    """Discrepancies recorded per second: each pair in its own transaction, as a task does."""
    upgrade(database_url)
    engine = get_engine(database_url)
    run_id = _new_run(database_url)
    work = _comparisons(pairs)
    fetched = (TODAY - timedelta(days=WINDOW_DAYS), TODAY)
    started = time.perf_counter()
    findings = 0
    for customer, daily, comparison in work:
        record_pair(
            engine=engine,
            run_id=run_id,
            customer=customer,
            meter="mtr_micro",
            comparison=comparison,
            daily=daily,
            fetched=fetched,
            stats=PairStats(requests=1, duration_ms=0),
        )
        findings += len(comparison.findings)
    seconds = time.perf_counter() - started
    dispose_engines()
    return MicroResult(f"record ({label})", findings, "discrepancies", seconds)


def sqlite_record(tmp: Path, pairs: int) -> MicroResult:
    return record_throughput(f"sqlite:///{tmp / 'micro.db'}", pairs, "SQLite")


def postgres_record(base_url: str, pairs: int) -> MicroResult | str:
    """On a throwaway database next to `base_url`; a reason string when PostgreSQL is down."""
    name = f"meter_recon_bench_{uuid.uuid4().hex[:10]}"
    admin = make_url(base_url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        return f"PostgreSQL not reachable ({type(exc).__name__})"
    url = make_url(base_url).set(database=name).render_as_string(hide_password=False)
    try:
        return record_throughput(url, pairs, "PostgreSQL")
    finally:
        dispose_engines()
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
