"""The internal ledger read by a query on another database, shaped unlike ours: other column
names, amounts in cents, a `voided` flag the query filters on. All or nothing, streamed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine
from sqlmodel import Session, col, select

import flows.reconcile as reconcile_module
import models.ledger_query as ledger_query_module
from flows.reconcile import reconcile_meters
from flows.windows import utc_today
from integrations.settings import get_settings
from meter_recon.cli import main
from models.engine import get_engine, session_scope
from models.enums import Ledger, LineItemSource
from models.ledger_query import LedgerSync, LedgerSyncFailed, sync_ledger_query
from models.tables import (
    DiscrepancyKind,
    InvoiceLineItem,
    ReconciliationRun,
    RunStatus,
    TrackedPair,
    Trigger,
)
from simulator import StripeSimulator
from tasks.report import render_markdown
from tasks.summary import build_summary
from tasks.sync_ledger import sync_ledger
from tests.builders import line_item
from tests.fixtures.db import fresh_database_url

# The company's own table: its names, its cents, its voided invoices.
_erp = sa.MetaData()


def billing_lines(backend: str) -> sa.Table:
    # SQLite would store a NUMERIC as a binary REAL: the exact units are text there.
    units = sa.Numeric(30, 6) if backend == "postgresql" else sa.String(40)
    return sa.Table(
        "billing_lines",
        sa.MetaData(),
        sa.Column("line_ref", sa.String(64), primary_key=True),
        sa.Column("invoice_ref", sa.String(64)),
        sa.Column("customer", sa.String(64)),
        sa.Column("meter", sa.String(64)),
        sa.Column("billed_from", sa.Date),
        sa.Column("billed_to", sa.Date),
        sa.Column("units", units),
        sa.Column("amount_cents", sa.Integer),
        sa.Column("currency_code", sa.String(3)),
        sa.Column("voided", sa.Boolean, nullable=False, default=False),
    )


_CENTS = {
    "postgresql": "amount_cents::numeric / 100",
    "sqlite": "printf('%d.%02d', amount_cents / 100, amount_cents % 100)",
}


def ledger_sql(backend: str, *, extra: str = "") -> str:
    """The query the docs show, for this database: cents to the major unit, voided left out."""
    return (
        "SELECT line_ref AS id, invoice_ref AS invoice_id, customer AS stripe_customer_id, "
        "meter AS meter_id, billed_from AS period_start, billed_to AS period_end, "
        f"units AS quantity, currency_code AS currency, {_CENTS[backend]} AS amount{extra} "
        "FROM billing_lines WHERE NOT voided ORDER BY line_ref"
    )


def erp_line(
    ref: str, *, units: str = "100", cents: int = 1234, voided: bool = False
) -> dict[str, Any]:
    return {
        "line_ref": ref,
        "invoice_ref": f"inv-{ref}",
        "customer": "cus_A",
        "meter": "mtr_api",
        "billed_from": date(2026, 10, 1),
        "billed_to": date(2026, 11, 1),
        "units": units,
        "amount_cents": cents,
        "currency_code": "usd",
        "voided": voided,
    }


@pytest.fixture
def erp_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """The company's database: not meter-recon's (another SQLite file, another PostgreSQL
    database), with its table."""
    directory = tmp_path / "erp"
    directory.mkdir()
    for url in fresh_database_url(backend, directory):
        billing_lines(backend).create(get_engine(url))
        yield url


def write_erp(url: str, backend: str, *lines: dict[str, Any]) -> None:
    table = billing_lines(backend)
    with get_engine(url).begin() as connection:
        connection.execute(table.delete())
        if lines:
            connection.execute(table.insert(), list(lines))


def sync(engine: Engine, url: str, query: str, **kwargs: Any) -> LedgerSync:
    return sync_ledger_query(engine=engine, source_url=url, query=query, **kwargs)


def items(engine: Engine) -> dict[str, InvoiceLineItem]:
    with Session(engine) as session:
        return {i.id: i for i in session.exec(select(InvoiceLineItem)).all()}


def test_the_query_fills_the_internal_ledger_exactly(
    engine: Engine, erp_url: str, backend: str
) -> None:
    write_erp(erp_url, backend, erp_line("A1", units="1234.5"), erp_line("A2", cents=5))
    done = sync(engine, erp_url, ledger_sql(backend))
    assert (done.rows, done.added, done.changed, done.withdrawn, done.pairs_added) == (
        2,
        2,
        0,
        0,
        1,
    )
    first = items(engine)["A1"]
    assert (first.ledger, first.source, first.withdrawn_at) == (
        Ledger.INTERNAL,
        LineItemSource.QUERY,
        None,
    )
    assert (first.invoice_id, first.period_start, first.period_end) == (
        "inv-A1",
        date(2026, 10, 1),
        date(2026, 11, 1),
    )
    assert (first.quantity, first.amount, first.currency) == (
        Decimal("1234.5"),
        Decimal("12.34"),
        "USD",
    )
    assert items(engine)["A2"].amount == Decimal("0.05")
    with Session(engine) as session:
        assert session.exec(select(TrackedPair.stripe_customer_id)).all() == ["cus_A"]


def test_a_sync_of_the_same_rows_changes_nothing_and_a_changed_row_is_counted(
    engine: Engine, erp_url: str, backend: str
) -> None:
    write_erp(erp_url, backend, erp_line("A1"), erp_line("A2"))
    sync(engine, erp_url, ledger_sql(backend))
    again = sync(engine, erp_url, ledger_sql(backend))
    assert (again.added, again.changed, again.withdrawn, again.restored) == (0, 0, 0, 0)
    write_erp(erp_url, backend, erp_line("A1", units="101"), erp_line("A2"))
    changed = sync(engine, erp_url, ledger_sql(backend))
    assert (changed.added, changed.changed) == (0, 1)
    assert items(engine)["A1"].quantity == Decimal(101)


def test_a_voided_invoice_is_withdrawn_and_comes_back_when_returned_again(
    engine: Engine, erp_url: str, backend: str
) -> None:
    write_erp(erp_url, backend, erp_line("A1"), erp_line("A2"))
    sync(engine, erp_url, ledger_sql(backend))
    write_erp(erp_url, backend, erp_line("A1"), erp_line("A2", voided=True))
    voided = sync(engine, erp_url, ledger_sql(backend))
    assert (voided.withdrawn, voided.restored) == (1, 0)
    assert items(engine)["A2"].withdrawn_at is not None
    assert items(engine)["A1"].withdrawn_at is None
    write_erp(erp_url, backend, erp_line("A1"), erp_line("A2"))
    back = sync(engine, erp_url, ledger_sql(backend))
    assert (back.withdrawn, back.restored) == (0, 1)
    assert items(engine)["A2"].withdrawn_at is None


def test_csv_line_items_are_never_withdrawn_by_the_query(
    engine: Engine, erp_url: str, backend: str
) -> None:
    with session_scope(engine) as session:
        session.add(line_item("li_csv"))
    write_erp(erp_url, backend, erp_line("A1"))
    done = sync(engine, erp_url, ledger_sql(backend))
    assert done.withdrawn == 0
    csv_item = items(engine)["li_csv"]
    assert (csv_item.source, csv_item.withdrawn_at) == (LineItemSource.CSV, None)


def test_the_rows_are_read_and_applied_in_batches(
    engine: Engine, erp_url: str, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_erp(erp_url, backend, *(erp_line(f"A{n:04d}") for n in range(1000)))
    sizes: list[int] = []
    apply = ledger_query_module._apply

    def counted(session: Session, batch: Any, *args: Any) -> Any:
        sizes.append(len(batch))
        return apply(session, batch, *args)

    monkeypatch.setattr(ledger_query_module, "_apply", counted)
    done = sync(engine, erp_url, ledger_sql(backend), batch_size=128)
    assert done.added == 1000
    assert max(sizes) == 128 and sum(sizes) == 1000 and len(sizes) == 8


# -- anything bad changes nothing ---------------------------------------------------------------

PASSWORD = "s3cret-Pa55"


def _bad(backend: str, erp_url: str, kind: str) -> tuple[str, str, str]:
    """(source URL, query, what the sentence says) for each kind of bad input."""
    good = ledger_sql(backend)
    # Row 2 starts at 05:00: a TIMESTAMP on PostgreSQL, ISO text on SQLite.
    late_start = (
        "CASE WHEN line_ref = 'A2' THEN '2026-10-01 05:00:00' ELSE billed_from END"
        if backend == "sqlite"
        else "CASE WHEN line_ref = 'A2' THEN timestamp '2026-10-01 05:00' "
        "ELSE billed_from::timestamp END"
    )
    floats = "CAST(units AS REAL)" if backend == "sqlite" else "CAST(units AS double precision)"
    return {
        "a time of day": (
            erp_url,
            good.replace("billed_from AS period_start", f"{late_start} AS period_start"),
            "row 2 (id A2), column period_start: 2026-10-01 05:00:00 is not 00:00 UTC",
        ),
        "a float column": (
            erp_url,
            good.replace("units AS quantity", f"{floats} AS quantity"),
            "column quantity holds binary floating-point numbers",
        ),
        "a missing column": (
            erp_url,
            good.replace("billed_to AS period_end", "billed_to AS ends"),
            "returns no column period_end",
        ),
        "an SQL error": (erp_url, good.replace("billing_lines", "no_such_table"), "failed"),
        "an unreachable database": (
            f"postgresql://meter:{PASSWORD}@127.0.0.1:1/ledger",
            good,
            "postgresql://meter:***@127.0.0.1:1/ledger",
        ),
    }[kind]


@pytest.mark.parametrize(
    "kind",
    [
        "a time of day",
        "a float column",
        "a missing column",
        "an SQL error",
        "an unreachable database",
    ],
)
def test_bad_input_changes_nothing_and_says_why_in_one_sentence(
    engine: Engine, erp_url: str, backend: str, kind: str
) -> None:
    write_erp(erp_url, backend, erp_line("A1"), erp_line("A2"))
    sync(engine, erp_url, ledger_sql(backend))
    write_erp(erp_url, backend, erp_line("A1", units="7"), erp_line("A2"))  # a change not applied
    before = {k: (v.quantity, v.withdrawn_at) for k, v in items(engine).items()}
    url, query, says = _bad(backend, erp_url, kind)
    with pytest.raises(LedgerSyncFailed) as failed:
        sync(engine, url, query)
    message = str(failed.value)
    assert says in message
    assert PASSWORD not in message and "\n" not in message and message.endswith(".")
    assert {k: (v.quantity, v.withdrawn_at) for k, v in items(engine).items()} == before


def test_an_empty_result_withdraws_nothing(engine: Engine, erp_url: str, backend: str) -> None:
    write_erp(erp_url, backend, erp_line("A1"))
    sync(engine, erp_url, ledger_sql(backend))
    write_erp(erp_url, backend)
    with pytest.raises(LedgerSyncFailed, match="no rows"):
        sync(engine, erp_url, ledger_sql(backend))
    assert items(engine)["A1"].withdrawn_at is None


# -- the command line ---------------------------------------------------------------------------


@pytest.fixture
def ledger_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    monkeypatch.delenv("METER_RECON_LEDGER_QUERY", raising=False)
    monkeypatch.delenv("METER_RECON_LEDGER_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def test_ledger_sync_says_what_it_did(
    database_url: str,
    erp_url: str,
    backend: str,
    tmp_path: Path,
    ledger_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    write_erp(erp_url, backend, erp_line("A1"), erp_line("A2"))
    query_file = tmp_path / "ledger.sql"
    query_file.write_text(ledger_sql(backend), encoding="utf-8")
    ledger_env.setenv("METER_RECON_LEDGER_QUERY", f"@{query_file}")
    ledger_env.setenv("METER_RECON_LEDGER_DATABASE_URL", erp_url)
    get_settings.cache_clear()
    assert main(["ledger", "sync", "--database-url", database_url]) == 0
    out = capsys.readouterr().out
    assert "2 line item(s) added, 0 changed, 0 withdrawn, 0 brought back" in out


def test_ledger_sync_without_a_query_or_with_a_bad_one_exits_2_with_one_sentence(
    database_url: str, ledger_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ledger", "sync", "--database-url", database_url]) == 2
    assert "No ledger query is set" in capsys.readouterr().err
    ledger_env.setenv("METER_RECON_LEDGER_QUERY", "SELECT nothing FROM nowhere")
    get_settings.cache_clear()
    assert main(["ledger", "sync", "--database-url", database_url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: The ledger query on ") and len(err.strip().splitlines()) == 1


# -- in the flow --------------------------------------------------------------------------------


@pytest.fixture
def fast_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        reconcile_module,
        "sync_ledger",
        sync_ledger.with_options(retry_delay_seconds=0.05, retry_jitter_factor=None),
    )


def test_a_run_with_the_query_set_syncs_the_ledger_first_then_reconciles_it(
    flow_env: StripeSimulator,
    engine: Engine,
    erp_url: str,
    backend: str,
    monkeypatch: pytest.MonkeyPatch,
    fast_sync: None,
) -> None:
    today = utc_today()
    start = today - timedelta(days=3)
    flow_env.add_meter("mtr_api", event_name="api_call", formula="sum")
    line = erp_line("A1", units="5") | {"billed_from": start, "billed_to": today}
    write_erp(erp_url, backend, line)
    monkeypatch.setenv("METER_RECON_LEDGER_QUERY", ledger_sql(backend))
    monkeypatch.setenv("METER_RECON_LEDGER_DATABASE_URL", erp_url)
    monkeypatch.setenv("METER_RECON_DISCOVER_PAIRS", "false")
    get_settings.cache_clear()
    summary = reconcile_meters(start=start, end=today, trigger=Trigger.MANUAL)
    assert (summary.status, summary.compared, summary.ledger_sync_error) == (
        RunStatus.COMPLETED.value,
        1,
        None,
    )
    with Session(engine) as session:
        run = session.exec(select(ReconciliationRun).order_by(col(ReconciliationRun.id))).all()[-1]
    assert run.counts["ledger_sync"]["added"] == 1
    assert run.counts["ledger_sync_error"] is None
    assert run.counts["by_kind"] == {DiscrepancyKind.MISSING_IN_STRIPE.value: 1}  # no usage


def test_a_run_whose_ledger_sync_fails_goes_on_and_says_why(
    flow_env: StripeSimulator,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    fast_sync: None,
) -> None:
    today = utc_today()
    flow_env.add_meter("mtr_api", event_name="api_call", formula="sum")
    monkeypatch.setenv("METER_RECON_LEDGER_QUERY", "SELECT id FROM billing_lines")
    monkeypatch.setenv(
        "METER_RECON_LEDGER_DATABASE_URL", f"postgresql://meter:{PASSWORD}@127.0.0.1:1/ledger"
    )
    monkeypatch.setenv("METER_RECON_DISCOVER_PAIRS", "false")
    get_settings.cache_clear()
    summary = reconcile_meters(start=today - timedelta(days=2), end=today, trigger=Trigger.MANUAL)
    assert summary.status == RunStatus.COMPLETED.value
    assert summary.ledger_sync_error is not None
    assert "postgresql://meter:***@127.0.0.1:1/ledger" in summary.ledger_sync_error
    with Session(engine) as session:
        report = render_markdown(build_summary(session=session, run_id=summary.run_id))
    assert "The ledger sync failed" in report
    assert PASSWORD not in report and PASSWORD not in str(summary)


def test_a_table_in_meter_recons_own_database_works_too(
    engine: Engine, database_url: str, backend: str
) -> None:
    billing_lines(backend).create(engine)
    write_erp(database_url, backend, erp_line("A1"), erp_line("A2", voided=True))
    done = sync(engine, database_url, ledger_sql(backend))
    assert (done.rows, done.added) == (1, 1)
    assert sorted(items(engine)) == ["A1"]
