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
from models.tables import DiscrepancyKind, DiscrepancyStatus, ReconciliationRun
from tasks.report import build_summary, compact_period, money, summary_json, summary_markdown
from tests.builders import discrepancy, new_run
from tests.finance import add, failed_pair


def run_cli(*args: str) -> int:
    return main(list(args))


def _summary(engine: Engine, run_id: int | None = None) -> str:
    with Session(engine) as session:
        return summary_markdown(build_summary(session=session, run_id=run_id))


def _json(engine: Engine, run_id: int) -> dict[str, object]:
    with Session(engine) as session:
        return summary_json(build_summary(session=session, run_id=run_id))


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
    assert "| jpy | 300 | 0 | 1 |" in markdown
    assert "| usd | 12.50 | -2.25 | 2 |" in markdown
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
    assert "## Top 10 by amount at stake" in _summary(engine, run)


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


def test_the_chart_shows_not_billed_and_over_billed_apart_per_currency(engine: Engine) -> None:
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
        'xychart-beta\n    title "over-billed, jpy, per meter"\n    x-axis ["mtr_api"]\n'
        '    y-axis "jpy" 0 --> 300\n    bar [300]\n',
        'xychart-beta\n    title "not billed, usd, per meter"\n'
        '    x-axis ["mtr_api", "mtr_jobs"]\n    y-axis "usd" 0 --> 12.5\n    bar [12.5, 3]\n',
        'xychart-beta\n    title "over-billed, usd, per meter"\n    x-axis ["mtr_api"]\n'
        '    y-axis "usd" 0 --> 4\n    bar [4]\n',
    ]


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


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        ("1234.565", "usd", "1,234.56"),
        ("1234.5", "jpy", "1,234"),
        ("-0.0005", "kwd", "-0.000"),
    ],
)
def test_money_is_shown_in_the_currency_own_decimals_half_even(
    amount: str, currency: str, text: str
) -> None:
    assert money(Decimal(amount), currency) == text


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
