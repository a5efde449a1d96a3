"""Micro-benchmarks: the pure comparison, the pure valuation and diagnosis of a pair's
findings, and recording on SQLite and PostgreSQL."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from decimal import Decimal
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from models.engine import dispose_engines, get_engine
from models.migrate import upgrade
from tasks.assess import HourlyFetch, Pricing, assess_findings
from tasks.compare import (
    DEFAULT_TOLERANCE,
    Finding,
    Formula,
    LineItem,
    PairComparison,
    Window,
    compare_pair,
)
from tasks.record import PairStats, record_pair
from tasks.value import price_from_stripe

WINDOW_DAYS = 35  # the period-close window: the longest a nightly deployment compares
TODAY = date(2026, 11, 5)


@dataclass(frozen=True, slots=True)
class MicroResult:
    name: str
    units: int
    unit: str
    seconds: float
    note: str = ""

    @property
    def per_second(self) -> float:
        return self.units / self.seconds if self.seconds else 0.0

    @property
    def ms_per_unit(self) -> float:
        return self.seconds * 1000 / self.units if self.units else 0.0


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


#: What each weekly line item of the diagnosis benchmark bills, in turn: right; one unit
#: more (rules 1-2 do not fit, so rule 3 reads the hourly buckets, and nothing fits); the
#: week without its last day (rule 2, period_off_by_one, no request); twice the usage
#: (rule 3 first, then rule 4, duplicated_usage); the usage of 1,000 times over (unit_scale).
_WEEK_ERRORS = ("right", "plus_one", "last_day_missed", "doubled", "scaled")
_STRIPE_PRICE = {
    "id": "price_micro",
    "currency": "usd",
    "billing_scheme": "tiered",
    "tiers_mode": "graduated",
    "tiers": [
        {"up_to": 100, "unit_amount_decimal": "12.5", "flat_amount_decimal": None},
        {"up_to": None, "unit_amount_decimal": "9", "flat_amount_decimal": "100"},
    ],
}


def _diagnosis_input(
    index: int,
) -> tuple[dict[date, Decimal], list[Finding], dict[datetime, Decimal]]:
    """A pair's 35 days, the findings of its 5 weekly line items, and its hourly buckets
    (each day's usage at 01:00 and 02:00 UTC, as the bench's events arrive)."""
    start = TODAY - timedelta(days=WINDOW_DAYS)
    daily = {
        start + timedelta(days=d): Decimal(10 + (index + d) % 50) + Decimal("0.5")
        for d in range(WINDOW_DAYS)
    }
    items = []
    for week in range(WINDOW_DAYS // 7):
        first = start + timedelta(days=7 * week)
        days = [daily[first + timedelta(days=d)] for d in range(7)]
        total = sum(days, Decimal(0))
        error = _WEEK_ERRORS[(index + week) % len(_WEEK_ERRORS)]
        quantity = {
            "right": total,
            "plus_one": total + 1,
            "last_day_missed": total - days[-1],
            "doubled": total * 2,
            "scaled": total * 1000,
        }[error]
        items.append(
            LineItem(
                id=f"li_{index}_{week}",
                period_start=first,
                period_end=first + timedelta(days=7),
                quantity=quantity,
            )
        )
    window = Window(start, TODAY)
    comparison = compare_pair(
        daily=daily, line_items=items, window=window, today=TODAY, formula=Formula.SUM
    )
    hourly: dict[datetime, Decimal] = {}
    for day, value in daily.items():
        midnight = datetime.combine(day, clock(0), tzinfo=UTC)
        hourly[midnight + timedelta(hours=1)] = value / 2
        hourly[midnight + timedelta(hours=2)] = value / 2
    return daily, list(comparison.findings), hourly


def bench_assess(pairs: int) -> MicroResult:
    """Valuation and diagnosis of each pair's findings (`tasks.assess`), CPU only: the
    hourly buckets are at hand, as if fetched; the rules and the money are all computed."""
    inputs = [_diagnosis_input(i) for i in range(pairs)]
    pricing = Pricing(stripe=price_from_stripe(_STRIPE_PRICE))
    now = datetime.combine(TODAY, clock(6), tzinfo=UTC)
    hourly_asks = 0
    causes: dict[str, int] = {}
    findings = 0

    def counted(hourly: dict[datetime, Decimal]) -> HourlyFetch:
        def fetch(spans: Sequence[tuple[datetime, datetime]]) -> Mapping[datetime, Decimal]:
            nonlocal hourly_asks
            hourly_asks += 1
            return hourly

        return fetch

    started = time.process_time()
    for daily, found, hourly in inputs:
        assessed = assess_findings(
            findings=found,
            pricing=pricing,
            formula=Formula.SUM,
            daily=daily,
            first_known=daily,
            tolerance=DEFAULT_TOLERANCE,
            today=TODAY,
            now=now,
            diagnose_hourly=True,
            fetch_hourly=counted(hourly),
            settle_hours=0,
        )
        findings += len(found)
        for one in assessed:
            name = one.likely_cause.value if one.likely_cause else "none"
            causes[name] = causes.get(name, 0) + 1
    seconds = time.process_time() - started
    spread = ", ".join(f"{name} {count:,}" for name, count in sorted(causes.items()))
    note = (
        f"{findings:,} findings ({findings / pairs:.0f} a pair: {spread}); "
        f"{hourly_asks:,} needed hourly buckets ({2 * hourly_asks:,} requests in a run)"
    )
    return MicroResult("assess: value + diagnose (pure, CPU)", pairs, "pairs", seconds, note)


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


class PostgresUnreachable(Exception):
    """No PostgreSQL server answers at the bench's URL."""


@contextmanager
def throwaway_postgres(base_url: str) -> Iterator[str]:
    """A new, empty database next to `base_url`, dropped afterwards; its URL."""
    name = f"meter_recon_bench_{uuid.uuid4().hex[:10]}"
    admin = make_url(base_url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        raise PostgresUnreachable(f"PostgreSQL not reachable ({type(exc).__name__})") from exc
    try:
        yield make_url(base_url).set(database=name).render_as_string(hide_password=False)
    finally:
        dispose_engines()
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def ensure_postgres_database(base_url: str, name: str) -> str:
    """The URL of database `name` next to `base_url`, created if missing (kept across runs,
    as the bench's Prefect home is)."""
    admin = make_url(base_url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as connection:
            found = connection.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if found is None:
                connection.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        raise PostgresUnreachable(f"PostgreSQL not reachable ({type(exc).__name__})") from exc
    return make_url(base_url).set(database=name).render_as_string(hide_password=False)


def postgres_record(base_url: str, pairs: int) -> MicroResult | str:
    """On a throwaway database next to `base_url`; a reason string when PostgreSQL is down."""
    try:
        with throwaway_postgres(base_url) as url:
            return record_throughput(url, pairs, "PostgreSQL")
    except PostgresUnreachable as exc:
        return str(exc)
