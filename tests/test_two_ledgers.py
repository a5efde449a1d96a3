"""Two ledgers in one table: the internal comparison reads only its own, held line items; a
withdrawn line item's discrepancies resolve when its pair is re-run; finance filters by ledger."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from flows.windows import utc_today
from integrations.settings import get_settings
from meter_recon.cli import main
from models.discrepancies import COLUMNS, list_discrepancies
from models.engine import read_only, session_scope
from models.enums import Ledger, LineItemSource
from models.tables import Discrepancy, DiscrepancyKind, DiscrepancyStatus, InvoiceLineItem
from models.types import utcnow
from simulator import StripeSimulator
from tasks.compare import PairComparison
from tasks.load import load_ledger
from tasks.reconcile_pairs import PairRef, RunContext, reconcile_one
from tasks.run_config import RunConfig
from tests.builders import comparison, days, item, line_item, new_run
from tests.builders import discrepancy_rows as rows
from tests.builders import record_comparison as record
from tests.finance import add, discrepancy

CUSTOMER, METER = "cus_A", "mtr_api"
Kind = DiscrepancyKind


NOV_1_2 = ("2026-11-01", "2026-11-02")


def without(result: PairComparison, *withdrawn: str) -> PairComparison:
    """The comparison of a pair whose line items `withdrawn` were withdrawn (as the task
    passes them on from the pair's ledger)."""
    scope = replace(result.scope, withdrawn_line_item_ids=frozenset(withdrawn))
    return replace(result, scope=scope)


def withdraw(engine: Engine, *ids: str) -> None:
    table = InvoiceLineItem.__table__  # type: ignore[attr-defined]
    with session_scope(engine) as session:
        session.execute(sa.update(table).where(table.c.id.in_(ids)).values(withdrawn_at=utcnow()))


def loaded(engine: Engine) -> tuple[list[str], frozenset[str]]:
    with Session(read_only(engine)) as session:
        ledger = load_ledger(
            session=session,
            customer=CUSTOMER,
            meter=METER,
            start=date(2026, 10, 1),
            end=date(2026, 12, 1),
        )
    return sorted(i.id for i in ledger.items), ledger.withdrawn


def test_a_new_line_item_is_the_internal_ledgers_from_csv(engine: Engine) -> None:
    with session_scope(engine) as session:
        session.add(line_item("li_1"))
    with Session(engine) as session:
        stored = session.exec(select(InvoiceLineItem)).one()
    assert (stored.ledger, stored.source, stored.withdrawn_at) == (
        Ledger.INTERNAL,
        LineItemSource.CSV,
        None,
    )


def test_withdrawn_and_stripe_line_items_are_not_loaded_for_the_internal_comparison(
    engine: Engine,
) -> None:
    stripe_line = line_item("li_stripe")
    stripe_line.ledger = Ledger.STRIPE
    stripe_line.source = LineItemSource.STRIPE_INVOICE
    with session_scope(engine) as session:
        session.add_all([line_item("li_held"), line_item("li_voided"), stripe_line])
    withdraw(engine, "li_voided")
    assert loaded(engine) == (["li_held"], frozenset({"li_voided"}))


def test_the_same_id_in_both_ledgers_is_two_line_items(engine: Engine) -> None:
    theirs = line_item("li_1", quantity="7")
    theirs.ledger = Ledger.STRIPE
    with session_scope(engine) as session:
        session.add_all([line_item("li_1"), theirs])
    with Session(engine) as session:
        stored = session.exec(select(InvoiceLineItem).order_by(col(InvoiceLineItem.ledger))).all()
    assert [(i.ledger, i.quantity) for i in stored] == [
        (Ledger.INTERNAL, Decimal(100)),
        (Ledger.STRIPE, Decimal(7)),
    ]


def test_a_withdrawn_line_items_mismatch_is_resolved_when_its_pair_is_re_run(
    engine: Engine,
) -> None:
    first, second = new_run(engine), new_run(engine)
    record(engine, first, comparison(days({"2026-11-01": "7"}), item("li_1", *NOV_1_2, "5")))
    nothing_held = comparison(days({"2026-11-01": "7"}), window=("2026-11-02", "2026-11-04"))
    outcome = record(engine, second, without(nothing_held, "li_1"))
    [row] = rows(engine)
    assert outcome.resolved == 1
    assert (row.kind, row.status, row.resolved_run) == (
        Kind.QUANTITY_MISMATCH,
        DiscrepancyStatus.RESOLVED,
        second,
    )


def test_an_overlap_naming_a_withdrawn_line_item_is_resolved(engine: Engine) -> None:
    first, second = new_run(engine), new_run(engine)
    both = comparison(
        days({"2026-11-01": "5"}),
        item("li_1", *NOV_1_2, "5"),
        item("li_2", "2026-11-01", "2026-11-03", "5"),
    )
    record(engine, first, both)
    assert Kind.OVERLAPPING_LINE_ITEMS in {r.kind for r in rows(engine)}
    alone = comparison(days({"2026-11-01": "5"}), item("li_2", "2026-11-01", "2026-11-03", "5"))
    record(engine, second, without(alone, "li_1"))
    overlap = [r for r in rows(engine) if r.kind is Kind.OVERLAPPING_LINE_ITEMS]
    assert [r.status for r in overlap] == [DiscrepancyStatus.RESOLVED]


def test_the_internal_comparison_never_resolves_the_stripe_ledgers_discrepancies(
    engine: Engine,
) -> None:
    run = new_run(engine)
    theirs = discrepancy(run_id=run, start="2026-11-01", end="2026-11-02", line_item="li_1")
    theirs.ledger = Ledger.STRIPE
    [stripe_id] = add(engine, theirs)
    record(engine, run, comparison(days({"2026-11-01": "5"}), item("li_1", *NOV_1_2, "5")))
    with Session(engine) as session:
        stored = session.get(Discrepancy, stripe_id)
        assert stored is not None
        assert stored.status is DiscrepancyStatus.OPEN


# -- finance sees the ledger --------------------------------------------------------------------


def _both_ledgers(engine: Engine) -> tuple[int, int]:
    run = new_run(engine)
    ours = discrepancy(run_id=run, customer="cus_A")
    theirs = discrepancy(run_id=run, customer="cus_B")
    theirs.ledger = Ledger.STRIPE
    internal_id, stripe_id = add(engine, ours, theirs)
    return internal_id, stripe_id


def test_the_listing_names_each_discrepancys_ledger_last(
    database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    _both_ledgers(engine)
    assert main(["discrepancies", "--format", "json", "--database-url", database_url]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [list(r) for r in records] == [list(COLUMNS)] * 2
    assert COLUMNS[-1] == "ledger"
    assert [(r["customer"], r["ledger"]) for r in records] == [
        ("cus_A", "internal"),
        ("cus_B", "stripe"),
    ]


def test_discrepancies_filter_on_the_ledger(
    database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    _internal_id, stripe_id = _both_ledgers(engine)
    args = ["discrepancies", "--ledger", "stripe", "--format", "csv"]
    assert main([*args, "--database-url", database_url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith(",ledger")
    assert [line.split(",")[0] for line in lines[1:]] == [str(stripe_id)]
    assert main(["discrepancies", "--ledger", "erp", "--database-url", database_url]) == 2


def test_ack_by_ledger_acknowledges_only_that_ledgers_open_ones(
    database_url: str, engine: Engine
) -> None:
    internal_id, stripe_id = _both_ledgers(engine)
    args = ["ack", "--ledger", "internal", "--note", "ours", "--database-url", database_url]
    assert main(args) == 0
    with Session(engine) as session:
        statuses = {
            row.id: row.status
            for row in list_discrepancies(session=session, ledgers=[Ledger.INTERNAL, "stripe"])
        }
    assert statuses == {
        internal_id: DiscrepancyStatus.ACKNOWLEDGED,
        stripe_id: DiscrepancyStatus.OPEN,
    }


# -- the pair's task, end to end ----------------------------------------------------------------


def test_a_voided_line_item_stops_billing_its_days_and_its_mismatch_resolves(
    flow_env: StripeSimulator, engine: Engine
) -> None:
    today = utc_today()
    start, end = today - timedelta(days=4), today - timedelta(days=2)
    flow_env.add_meter(METER, event_name="api_call", formula="sum")
    for offset in range(2):
        flow_env.add_event("api_call", CUSTOMER, _noon(start + timedelta(days=offset)), "6")
    with session_scope(engine) as session:
        session.add(line_item("li_1", start=start.isoformat(), end=end.isoformat(), quantity="10"))
    pair = PairRef(customer=CUSTOMER, meter=METER, formula="sum")

    def run() -> None:
        context = RunContext(
            run_id=new_run(engine, start=start.isoformat(), end=end.isoformat()),
            window_start=start,
            window_end=end,
            today=today,
            config=RunConfig.of(get_settings()),
        )
        reconcile_one(context, pair)

    run()
    assert [(r.kind, r.status) for r in rows(engine)] == [
        (Kind.QUANTITY_MISMATCH, DiscrepancyStatus.OPEN)
    ]
    withdraw(engine, "li_1")
    run()
    with Session(engine) as session:
        still_open = [(r.kind, r.line_item_id) for r in list_discrepancies(session=session)]
    assert still_open == [(Kind.UNBILLED_USAGE, ""), (Kind.UNBILLED_USAGE, "")]
    mismatch = [r for r in rows(engine) if r.kind is Kind.QUANTITY_MISMATCH]
    assert [r.status for r in mismatch] == [DiscrepancyStatus.RESOLVED]


def _noon(day: date) -> int:
    return int(datetime.combine(day, time(12), UTC).timestamp())
