"""The run summary finance reads: money per currency first, the largest discrepancies, causes."""

from __future__ import annotations

import json
import re
from datetime import date
from decimal import Decimal

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from meter_recon.cli import main
from models.tables import (
    DiscrepancyKind,
    DiscrepancyStatus,
    ReconciliationRun,
    RunStatus,
    Trigger,
)
from tasks import report as report_module
from tasks import summary as summary_module
from tasks.report import compact_period, render_json, render_markdown, render_terminal
from tasks.summary import CurrencyTotal, RunRows, build_summary, summarize
from tests.builders import customers_by_meters, discrepancy, new_run
from tests.finance import add, failed_pair, whole_and_paged


def run_cli(*args: str) -> int:
    return main(list(args))


def _summary(engine: Engine, run_id: int | None = None) -> str:
    with Session(engine) as session:
        return render_markdown(build_summary(session=session, run_id=run_id))


def _json(engine: Engine, run_id: int) -> dict[str, object]:
    with Session(engine) as session:
        return render_json(build_summary(session=session, run_id=run_id))


def _money_world(engine: Engine) -> int:
    run = new_run(engine)
    add(
        engine,
        discrepancy(run_id=run, customer="cus_A", line_item="a1", amount="12.5", currency="usd"),
        discrepancy(run_id=run, customer="cus_A", line_item="a2", amount="-2.25", currency="usd"),
        discrepancy(run_id=run, customer="cus_B", line_item="b1", amount="300", currency="jpy"),
        discrepancy(run_id=run, customer="cus_B", line_item="b2", cause="late_usage"),
        discrepancy(
            run_id=run,
            customer="cus_C",
            line_item="c1",
            amount="99",
            currency="usd",
            status=DiscrepancyStatus.RESOLVED,
        ),
    )
    return run


def test_totals_are_per_currency_with_not_billed_over_billed_and_not_valued(
    engine: Engine,
) -> None:
    report = _json(engine, _money_world(engine))
    assert report["totals"] == [
        {"currency": "jpy", "not_billed": "300", "over_billed": "0", "valued": 1},
        {"currency": "usd", "not_billed": "12.5", "over_billed": "-2.25", "valued": 2},
    ]
    assert report["not_valued"] == 1
    assert report["at_stake"] == 4


def test_the_markdown_leads_with_money_in_each_currency_own_decimals(engine: Engine) -> None:
    markdown = _summary(engine, _money_world(engine))
    money_at = markdown.index("## Money at stake")
    assert money_at < markdown.index("| pairs reconciled |")
    assert "| jpy | 300\u00a0jpy | 0\u00a0jpy | 1 |" in markdown
    assert "| usd | 12.50\u00a0usd | -2.25\u00a0usd | 2 |" in markdown
    assert "4 discrepancies found by this run are not resolved; 1 of them are not valued." in (
        markdown
    )


def test_top_rows_are_by_amount_then_difference_and_ties_by_identity_not_id(
    engine: Engine,
) -> None:
    run = new_run(engine)
    add(
        engine,
        discrepancy(run_id=run, customer="cus_Z", line_item="z", amount="5", currency="usd"),
        discrepancy(run_id=run, customer="cus_A", line_item="a", amount="-5", currency="usd"),
        discrepancy(run_id=run, customer="cus_M", line_item="m", amount="7", currency="eur"),
        discrepancy(run_id=run, customer="cus_B", line_item="b", stripe="1000", ledger="1"),
        discrepancy(run_id=run, customer="cus_C", line_item="c", stripe="10", ledger="1"),
    )
    top = _json(engine, run)["top"]
    assert isinstance(top, list)
    assert [row["customer"] for row in top] == ["cus_M", "cus_A", "cus_Z", "cus_B", "cus_C"]


def test_only_the_ten_largest_are_listed(engine: Engine) -> None:
    run = new_run(engine)
    add(
        engine,
        *(
            discrepancy(run_id=run, line_item=f"li_{n:02}", amount=str(n), currency="usd")
            for n in range(1, 13)
        ),
    )
    top = _json(engine, run)["top"]
    assert isinstance(top, list)
    assert [row["amount_at_stake"] for row in top] == [str(n) for n in range(12, 2, -1)]
    assert "### Top 10 by amount at stake" in _summary(engine, run)


def test_a_top_row_is_compact_with_period_numbers_amount_and_cause(engine: Engine) -> None:
    run = new_run(engine)
    [row_id] = add(
        engine,
        discrepancy(
            run_id=run,
            start="2026-11-01",
            end="2026-12-01",
            stripe="120.5",
            ledger="100",
            amount="20.5",
            currency="usd",
            cause="late_usage",
        ),
    )
    markdown = _summary(engine, run)
    assert (
        f"| {row_id} | cus_A / mtr_api | 2026\u201111\u201101\u00a0→\u00a012\u201101 "
        "| quantity mismatch | 120.5 / 100 | 20.50\u00a0usd | late usage |"
    ) in markdown
    header = next(line for line in markdown.splitlines() if line.startswith("| # |"))
    assert header.count("|") - 1 == 7


def test_top_customers_are_ranked_by_amount_per_currency(engine: Engine) -> None:
    customers = _json(engine, _money_world(engine))["customers"]
    assert customers == [
        {
            "customer": "cus_B",
            "currency": "jpy",
            "not_billed": "300",
            "over_billed": "0",
            "discrepancies": 1,
        },
        {
            "customer": "cus_A",
            "currency": "usd",
            "not_billed": "12.5",
            "over_billed": "-2.25",
            "discrepancies": 2,
        },
    ]


def test_top_customers_show_money_with_its_currency_code(engine: Engine) -> None:
    markdown = _summary(engine, _money_world(engine))
    assert "| customer | not billed | over-billed | discrepancies |" in markdown
    assert "| cus_B | 300\u00a0jpy | 0\u00a0jpy | 1 |" in markdown
    assert "| cus_A | 12.50\u00a0usd | -2.25\u00a0usd | 2 |" in markdown


def test_the_terminal_shows_money_per_currency_as_stripe_bills_it(engine: Engine) -> None:
    run = new_run(engine)
    add(
        engine,
        discrepancy(run_id=run, line_item="1", amount="1.5", currency="usd"),
        discrepancy(run_id=run, line_item="2", amount="-0.255", currency="usd"),
        discrepancy(run_id=run, line_item="3", amount="-3600.5", currency="jpy"),
        discrepancy(run_id=run, line_item="4", amount="2.5", currency="kwd"),
        discrepancy(run_id=run, line_item="5", cause="wrong_meter"),
    )
    with Session(engine) as session:
        lines = render_terminal(build_summary(session=session, run_id=run))
    assert lines == [
        f"money at stake in the 5 discrepancies of run {run} not resolved, per currency:",
        "  0 jpy not billed, -3,600 jpy over-billed (1 valued)",
        "  2.500 kwd not billed, 0.000 kwd over-billed (1 valued)",
        "  1.50 usd not billed, -0.26 usd over-billed (2 valued)",
        "  not valued: 1",
    ]


def test_the_summary_is_aggregated_from_the_rows_without_the_database() -> None:
    run = ReconciliationRun(
        id=3,
        window_start=date(2026, 11, 1),
        window_end=date(2026, 11, 4),
        trigger=Trigger.MANUAL,
        status=RunStatus.COMPLETED,
        counts={"requests": 9, "by_kind": {"quantity_mismatch": 2}},
    )
    rows = [
        discrepancy(run_id=3, line_item="1", amount="12.5", currency="usd"),
        discrepancy(run_id=3, line_item="2", amount="-2.25", currency="usd"),
        discrepancy(run_id=3, line_item="3"),
    ]
    for number, row in enumerate(rows, start=1):
        row.id = number
    summary = summarize(RunRows(run=run, rows=rows, failed=[]))
    assert (summary.run_id, summary.requests, summary.at_stake, summary.not_valued) == (3, 9, 3, 1)
    assert summary.totals == (
        CurrencyTotal(
            currency="usd", not_billed=Decimal("12.5"), over_billed=Decimal("-2.25"), count=2
        ),
    )
    assert [row.id for row in summary.top] == [1, 2, 3]


def test_a_summary_read_a_page_at_a_time_is_the_summary_of_one_read(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Customers whose rows straddle pages of 2 rows: each customer is totalled once, whole.
    run = new_run(engine)
    rows = customers_by_meters(
        run_id=run,
        customers=["cus_A", "cus_B", "cus_C", "cus_D"],
        meters=["mtr_api", "mtr_seats", "mtr_storage"],
        amount=lambda number, meter: f"{number}.{len(meter)}",
    )
    add(engine, *rows)
    whole, paged = whole_and_paged(
        engine,
        lambda session: build_summary(session=session, run_id=run),
        pages_of=(summary_module, "ROWS_PAGE"),
        monkeypatch=monkeypatch,
    )
    assert paged == whole
    assert [(c.customer, c.count) for c in paged.customers][:2] == [("cus_D", 3), ("cus_C", 3)]
    assert paged.at_stake == 12


def test_causes_are_counted_with_the_rows_without_one(engine: Engine) -> None:
    run = new_run(engine)
    add(
        engine,
        discrepancy(run_id=run, line_item="1", cause="late_usage"),
        discrepancy(run_id=run, line_item="2", cause="late_usage"),
        discrepancy(run_id=run, line_item="3", cause="unit_scale"),
        discrepancy(run_id=run, line_item="4"),
    )
    assert _json(engine, run)["causes"] == [
        {"likely_cause": "late_usage", "discrepancies": 2},
        {"likely_cause": "none found", "discrepancies": 1},
        {"likely_cause": "unit_scale", "discrepancies": 1},
    ]


def test_failed_pairs_and_a_failed_discovery_are_listed(engine: Engine) -> None:
    run = new_run(engine)
    failed_pair(engine, run_id=run, customer="cus_X", meter="mtr_api", error="HTTP 503")
    with Session(engine) as session:
        row = session.get(ReconciliationRun, run)
        assert row is not None
        row.discovery_error = "Stripe answered 401 to GET /v1/subscriptions"
        session.add(row)
        session.commit()
    markdown = _summary(engine, run)
    assert "| cus_X | mtr_api | HTTP 503 |" in markdown
    assert (
        "**Discovery of pairs and prices from Stripe failed:** "
        "Stripe answered 401 to GET /v1/subscriptions"
    ) in markdown


def _charts(markdown: str) -> list[str]:
    """The charts, without the size directive each one starts with."""
    blocks = re.findall(r"```mermaid\n(.*?)```", markdown, flags=re.S)
    assert all(b.startswith('%%{init: {"xyChart": {"width": 560') for b in blocks)
    return [b.split("\n", 1)[1] for b in blocks]


def test_one_chart_per_currency_stacks_over_billed_under_not_billed_per_meter(
    engine: Engine,
) -> None:
    run = new_run(engine)
    add(
        engine,
        discrepancy(run_id=run, line_item="1", amount="12.5", currency="usd"),
        discrepancy(run_id=run, line_item="2", amount="-4", currency="usd"),
        discrepancy(run_id=run, line_item="3", meter="mtr_jobs", amount="3", currency="usd"),
        discrepancy(run_id=run, line_item="4", amount="-300", currency="jpy"),
    )
    charts = _charts(_summary(engine, run))
    assert charts == [
        "xychart-beta\n"
        '    title "jpy per meter: not billed (upper part), over-billed (lower part)"\n'
        '    x-axis ["mtr_api"]\n'
        '    y-axis "jpy" 0 --> 300\n'
        "    bar [300]\n"
        "    bar [300]\n",
        "xychart-beta\n"
        '    title "usd per meter: not billed (upper part), over-billed (lower part)"\n'
        '    x-axis ["mtr_api", "mtr_jobs"]\n'
        '    y-axis "usd" 0 --> 16.5\n'
        "    bar [16.5, 3]\n"
        "    bar [4, 0]\n",
    ]


def test_the_chart_keeps_the_twelve_meters_with_the_most_money_either_way(
    engine: Engine,
) -> None:
    run = new_run(engine)
    add(
        engine,
        *(
            discrepancy(run_id=run, meter=f"mtr_{n:02}", amount=str(-n), currency="eur")
            for n in range(1, 15)
        ),
        discrepancy(run_id=run, meter="mtr_zero", amount="0", currency="eur"),
    )
    [chart] = _charts(_summary(engine, run))
    meters = [f'"mtr_{n:02}"' for n in range(14, 2, -1)]
    assert f"    x-axis [{', '.join(meters)}]\n" in chart
    # Nothing not billed: each total is its over-billed part, both series the same bars.
    assert chart.count("    bar [14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3]\n") == 2


def test_no_chart_when_nothing_is_valued(engine: Engine) -> None:
    run = new_run(engine)
    add(engine, discrepancy(run_id=run))
    assert _charts(_summary(engine, run)) == []


@pytest.mark.parametrize(
    ("start", "end", "text"),
    [
        (date(2026, 11, 1), date(2026, 12, 1), "2026-11-01 → 12-01"),
        (date(2026, 12, 1), date(2027, 1, 1), "2026-12-01 → 2027-01-01"),
    ],
)
def test_a_period_is_compact(start: date, end: date, text: str) -> None:
    assert compact_period(start, end) == text


def test_report_prints_the_latest_run_summary_by_default(
    database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    new_run(engine)
    latest = _money_world(engine)
    assert run_cli("report", "--database-url", database_url) == 0
    assert capsys.readouterr().out == _summary(engine, latest)


def test_report_of_a_given_run_as_json(
    database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    first = _money_world(engine)
    new_run(engine)
    assert (
        run_cli("report", "--run", str(first), "--format", "json", "--database-url", database_url)
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["run"]["id"] == first
    assert report == json.loads(json.dumps(_json(engine, first)))


def test_report_of_an_unknown_run_exits_2_with_one_sentence(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("report", "--run", "42", "--database-url", database_url) == 2
    assert capsys.readouterr().err.strip() == "error: There is no run with id 42."


def test_report_without_any_run_exits_2(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("report", "--database-url", database_url) == 2
    assert capsys.readouterr().err.strip().startswith("error: There is no run yet")


def test_a_negative_amount_keeps_its_minus_sign(engine: Engine) -> None:
    run = new_run(engine)
    add(engine, discrepancy(run_id=run, amount="-20", currency="usd"))
    assert "| -20.00\u00a0usd |" in _summary(engine, run)


def test_an_unbilled_day_is_listed_without_ledger_numbers(engine: Engine) -> None:
    run = new_run(engine)
    add(
        engine,
        discrepancy(
            run_id=run,
            kind=DiscrepancyKind.UNBILLED_USAGE,
            line_item="",
            start="2026-11-02",
            end="2026-11-03",
            stripe="7",
            ledger=None,
        ),
    )
    assert (
        "| 2026\u201111\u201102\u00a0→\u00a011\u201103 | unbilled usage | 7 / - "
        "| not\u00a0valued | - |"
    ) in _summary(engine, run)


def test_the_open_table_lists_the_largest_open_and_acknowledged_and_counts_them_all(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = new_run(engine)
    open_, acknowledged, resolved = (
        DiscrepancyStatus.OPEN,
        DiscrepancyStatus.ACKNOWLEDGED,
        DiscrepancyStatus.RESOLVED,
    )
    rows = [("cus_A", "5", open_), ("cus_B", "-90", open_), ("cus_C", "40", acknowledged)]
    rows += [("cus_D", "7", open_), ("cus_E", "500", resolved)]
    add(
        engine,
        *(
            discrepancy(run_id=run, customer=c, line_item=c, amount=a, currency="usd", status=st)
            for c, a, st in rows
        ),
    )
    monkeypatch.setattr(report_module, "TABLE_ROWS", 2)
    monkeypatch.setattr(report_module, "TABLE_PAGE", 2)  # several pages
    with Session(engine) as session:
        rows, count = report_module.largest_open(session=session)
    assert [row["customer"] for row in rows] == ["cus_B", "cus_C"]
    assert count == 4  # every open and acknowledged one, the resolved one left out
