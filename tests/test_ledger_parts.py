"""What finance sees per ledger: the summary, `report` and the alert give "Against your
ledger" and "Against Stripe's invoices" each their own part, never adding the two."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from models.enums import Ledger
from models.runs import get_run
from models.tables import Discrepancy, DiscrepancyKind
from tasks.alert import pending_alert
from tasks.report import render_json, render_markdown, render_terminal
from tasks.summary import build_summary
from tests.builders import new_run
from tests.finance import add, discrepancy

Kind = DiscrepancyKind


def theirs(row: Discrepancy) -> Discrepancy:
    row.ledger = Ledger.STRIPE
    return row


def counted(engine: Engine, run_id: int, **counts: Any) -> None:
    with Session(engine) as session:
        run = get_run(session=session, run_id=run_id)
        run.counts = {**run.counts, **counts}
        session.add(run)
        session.commit()


def both_ledgers(engine: Engine) -> int:
    """A run that compared both ledgers: one row against ours, three against Stripe's."""
    run = new_run(engine)
    counted(
        engine,
        run,
        ledgers=["internal", "stripe"],
        stripe={"compared": 4, "matched": 2, "pending": 1},
    )
    add(
        engine,
        discrepancy(run_id=run, customer="cus_A", amount="10", currency="usd"),
        theirs(
            discrepancy(
                run_id=run, customer="cus_B", line_item="il_1", amount="2.5", currency="usd"
            )
        ),
        theirs(
            discrepancy(
                run_id=run,
                customer="cus_C",
                line_item="il_2",
                stripe="90",
                amount="-5",
                currency="usd",
                cause="cancelled_usage",
            )
        ),
        theirs(
            discrepancy(
                run_id=run,
                customer="cus_D",
                kind=Kind.UNBILLED_USAGE,
                line_item="",
                start="2026-11-01",
                end="2026-11-02",
                stripe="4",
                ledger="0",
                cause="not_subscribed",
            )
        ),
    )
    return run


def markdown(engine: Engine, run_id: int) -> str:
    with Session(engine) as session:
        return render_markdown(build_summary(session=session, run_id=run_id))


def section(text: str, title: str) -> str:
    """The markdown from `## title` to the next `## ` heading."""
    after = text.split(f"\n## {title}\n", 1)[1]
    return after.split("\n## ", 1)[0]


def test_each_ledger_has_its_own_money_per_currency(engine: Engine) -> None:
    text = markdown(engine, both_ledgers(engine))
    ours = section(text, "Against your ledger")
    assert "| currency | not billed | over-billed | valued |" in ours
    assert "| usd | 10.00\u00a0usd | 0.00\u00a0usd | 1 |" in ours
    stripe = section(text, "Against Stripe's invoices")
    assert (
        "| currency | metered but not invoiced | invoiced beyond what the meter now counts "
        "| valued |"
    ) in stripe
    assert "| usd | 2.50\u00a0usd | -5.00\u00a0usd | 2 |" in stripe
    assert "3 not resolved, 1 not valued; line items compared 4, matched 2, pending 1." in stripe


def test_each_ledger_lists_its_own_top_lines(engine: Engine) -> None:
    text = markdown(engine, both_ledgers(engine))
    ours, stripe = section(text, "Against your ledger"), section(text, "Against Stripe's invoices")
    assert "| Stripe / ledger |" in ours and "cus_A / mtr_api" in ours
    assert "cus_B" not in ours
    assert "### Top 3 by amount at stake" in stripe and "| Stripe / invoiced |" in stripe
    assert all(f"cus_{c} / mtr_api" in stripe for c in "BCD")


def test_stripes_part_names_the_customers_no_subscription_bills(engine: Engine) -> None:
    stripe = section(markdown(engine, both_ledgers(engine)), "Against Stripe's invoices")
    assert "### Customers no subscription bills" in stripe
    assert "- cus_D / mtr_api: Stripe will never invoice this usage" in stripe


def test_the_json_report_has_a_part_per_ledger(engine: Engine) -> None:
    run = both_ledgers(engine)
    with Session(engine) as session:
        report = render_json(build_summary(session=session, run_id=run))
    parts = {part["ledger"]: part for part in report["ledgers"]}
    assert list(parts) == ["internal", "stripe"]
    assert parts["stripe"]["totals"] == [
        {"currency": "usd", "not_billed": "2.5", "over_billed": "-5", "valued": 2}
    ]
    assert parts["stripe"]["not_subscribed"] == [{"customer": "cus_D", "meter": "mtr_api"}]
    assert (parts["stripe"]["line_items_compared"], parts["internal"]["at_stake"]) == (4, 1)
    assert {row["ledger"] for row in report["top"]} == {"internal", "stripe"}


def test_a_run_that_left_the_empty_internal_ledger_out_says_so(engine: Engine) -> None:
    run = new_run(engine)
    counted(engine, run, ledgers=["stripe"], internal_ledger_empty=True)
    text = markdown(engine, run)
    assert (
        "**Note:** the internal ledger holds no line item: compared against Stripe's "
        "invoices only." in text
    )
    assert "## Against Stripe's invoices" in text
    assert "## Against your ledger" not in text
    with Session(engine) as session:
        lines = render_terminal(build_summary(session=session, run_id=run))
    assert lines[-1].endswith("compared against Stripe's invoices only")


def test_a_run_of_the_internal_ledger_alone_shows_only_its_part(engine: Engine) -> None:
    run = new_run(engine)
    add(engine, discrepancy(run_id=run, amount="10", currency="usd"))
    text = markdown(engine, run)
    assert "## Against your ledger" in text
    assert "Against Stripe's invoices" not in text


def test_the_alert_says_each_lines_ledger_and_never_adds_the_two(engine: Engine) -> None:
    run = both_ledgers(engine)
    with Session(engine) as session:
        alert = pending_alert(session=session, run_id=run)
    assert alert is not None
    assert alert.title.endswith(
        "; against your ledger: 10.00 usd not billed; against Stripe's invoices: "
        "2.50 usd metered but not invoiced / -5.00 usd invoiced beyond what the meter now counts"
    )
    lines = alert.body.splitlines()
    [ours] = [line for line in lines if "cus_A / mtr_api" in line]
    assert ours.startswith("- NEW quantity_mismatch #")
    assert "Stripe 120, ledger 100" in ours and "10.00 usd not billed" in ours
    [cancelled] = [line for line in lines if "cus_C / mtr_api" in line]
    assert cancelled.startswith("- NEW (against Stripe's invoices) quantity_mismatch #")
    assert "Stripe 90, invoiced 100" in cancelled
    assert "-5.00 usd invoiced beyond what the meter now counts; likely cancelled_usage" in (
        cancelled
    )
