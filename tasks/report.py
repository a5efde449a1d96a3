"""What finance reads about a run: the one built summary (`tasks/summary.py`) rendered as
markdown (Prefect's UI, `meter-recon report`), JSON (tools) or terminal lines, and a table
artifact of the open discrepancies.

Renderers only render: every number comes from the `RunSummary` built once; every amount a
person reads goes through `models.money.format_money`; JSON keeps the exact decimals.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import date
from decimal import Decimal
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import SecretStr
from sqlmodel import Session, col

from models.discrepancies import as_record, money_record, rows_in_customer_order
from models.engine import get_engine
from models.enums import Ledger
from models.money import format_money
from models.tables import Discrepancy, DiscrepancyStatus
from models.types import canonical_decimal
from tasks.summary import (
    INTERNAL_LEDGER_EMPTY,
    CurrencyTotal,
    InvoiceSyncCounts,
    LedgerPart,
    MeterAmount,
    RunSummary,
    Smallest,
    TopRow,
    build_summary,
    largest_key,
)

SUMMARY_KEY = "meter-recon-run-summary"
OPEN_KEY = "meter-recon-open-discrepancies"
TABLE_ROWS = 1000  # rows of the open-discrepancies table, largest amounts first
TABLE_PAGE = 2000  # rows read at a time to find them
OPEN_STATUSES = (DiscrepancyStatus.OPEN, DiscrepancyStatus.ACKNOWLEDGED)
CHART_METERS = 12


def compact_period(start: date, end: date) -> str:
    """`2026-11-01 → 12-01`: the end (exclusive) without what it shares with the start."""
    if start.year != end.year:
        return f"{start} → {end}"
    return f"{start} → {end:%m-%d}"


def _amount_cell(amount: Decimal | None, currency: str | None) -> str:
    """An amount in a table cell, on one line (`12.50 usd` never wraps before its code)."""
    if amount is None or currency is None:
        return _unbroken("not valued")
    return _unbroken(format_money(amount, currency))


def _number(value: Decimal | None) -> str:
    return "-" if value is None else canonical_decimal(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _overview(s: RunSummary) -> list[str]:
    lines = [
        f"# meter-recon run {s.run_id}: {s.status}",
        "",
        f"Window **{s.window_start} .. {s.window_end}** (UTC days, end exclusive), "
        f"trigger `{s.trigger}`.",
        "",
    ]
    if s.last_completed:
        lines += [f"**No run completed for a while:** {s.last_completed}", ""]
    if s.error:
        lines += [f"**The run failed:** {_cell(s.error)}", ""]
    if s.discovery_error:
        lines += [
            f"**Discovery of pairs and prices from Stripe failed:** {_cell(s.discovery_error)}",
            "",
        ]
    if s.invoice_sync_error:
        lines += [
            "**Reading Stripe's invoices failed** (the stripe ledger holds the line items "
            f"already read): {_cell(s.invoice_sync_error)}",
            "",
        ]
    if s.internal_ledger_empty:
        lines += [f"**Note:** {INTERNAL_LEDGER_EMPTY}.", ""]
    if s.ledger_sync_error:
        lines += [
            "**The ledger sync failed; the ledger as it was was used:** "
            f"{_cell(s.ledger_sync_error)}",
            "",
        ]
    return lines


def _money_section(s: RunSummary) -> list[str]:
    """The money, each ledger apart: amounts against two bills are never added together."""
    lines = [
        "## Money at stake",
        "",
        f"{s.at_stake} discrepancies found by this run are not resolved; "
        f"{s.not_valued} of them are not valued.",
    ]
    for part in s.ledgers:
        lines += _ledger_section(part)
    return lines


def _ledger_section(part: LedgerPart) -> list[str]:
    """One ledger's part: its money per currency, what it compared, its top lines, and (for
    Stripe's invoices) the customers no subscription bills."""
    lines = ["", f"## {part.title}", ""]
    if part.totals:
        lines += [
            f"| currency | {part.positive} | {part.negative} | valued |",
            "|---|---:|---:|---:|",
        ]
        lines += [
            f"| {t.currency} | {_amount_cell(t.not_billed, t.currency)} | "
            f"{_amount_cell(t.over_billed, t.currency)} | {t.count} |"
            for t in part.totals
        ]
        lines.append("")
    lines.append(
        f"{part.at_stake} not resolved, {part.not_valued} not valued; line items compared "
        f"{part.compared}, matched {part.matched}, pending {part.pending}."
    )
    lines += _top_lines(part)
    if part.not_subscribed:
        lines += ["", "### Customers no subscription bills", ""]
        lines += [
            f"- {customer} / {meter}: Stripe will never invoice this usage"
            for customer, meter in part.not_subscribed
        ]
    return lines


def _counts_section(s: RunSummary) -> list[str]:
    return [
        "",
        "| | |",
        "|---|---:|",
        f"| pairs reconciled | {s.pairs_ok} of {s.pairs_total} |",
        f"| pairs failed | {s.pairs_failed} |",
        f"| line items compared | {s.line_items_compared} |",
        f"| line items matched | {s.line_items_matched} |",
        f"| line items pending (period not closed) | {s.line_items_pending} |",
        f"| discrepancies new | {s.discrepancies_new} |",
        f"| discrepancies re-opened | {s.discrepancies_reopened} |",
        f"| discrepancies resolved | {s.discrepancies_resolved} |",
        f"| discrepancies settling (not alerted yet) | {s.discrepancies_settling} |",
        f"| Stripe requests | {s.requests} |",
        *_invoice_sync_rows(s.invoice_sync),
    ]


def _invoice_sync_rows(sync: InvoiceSyncCounts | None) -> list[str]:
    """The invoice sync's counts, as rows of the counts table (none when it did not run)."""
    if sync is None:
        return []
    return [
        f"| Stripe invoices read | {sync.invoices} |",
        f"| Stripe line items read (added, changed, withdrawn) | {sync.line_items} "
        f"({sync.added}, {sync.changed}, {sync.withdrawn}) |",
        f"| Stripe invoices or lines skipped as malformed | {sync.malformed} |",
        f"| Stripe requests of the invoice sync | {sync.requests} |",
    ]


def _words(name: str | None) -> str:
    """An enum value as words (`late_usage` -> `late usage`): a narrow column can wrap it."""
    return "-" if not name else name.replace("_", " ")


def _unbroken(text: str) -> str:
    """Text a browser keeps on one line: non-breaking spaces (a minus sign stays a minus)."""
    return text.replace(" ", "\u00a0")


def _unbroken_period(start: date, end: date) -> str:
    """The compact period on one line: its hyphens non-breaking too."""
    return _unbroken(compact_period(start, end).replace("-", "\u2011"))


def _top_lines(part: LedgerPart) -> list[str]:
    if not part.top:
        return []
    billed = "invoiced" if part.ledger == Ledger.STRIPE else "ledger"
    lines = [
        "",
        f"### Top {len(part.top)} by amount at stake",
        "",
        f"| # | customer / meter | period | kind | Stripe / {billed} | amount | likely cause |",
        "|---:|---|---|---|---:|---:|---|",
    ]
    for r in part.top:
        period = _unbroken_period(r.period_start, r.period_end)
        lines.append(
            f"| {r.id} | {r.customer} / {r.meter} | {period} | {_words(r.kind)} "
            f"| {_number(r.stripe_quantity)} / {_number(r.internal_quantity)} "
            f"| {_amount_cell(r.amount_at_stake, r.currency)} "
            f"| {_words(r.likely_cause)} |"
        )
    return lines


def _customers_section(s: RunSummary) -> list[str]:
    if not s.customers:
        return []
    lines = [
        "",
        "## Top customers by amount",
        "",
        "| customer | not billed | over-billed | discrepancies |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {c.customer} | {_amount_cell(c.not_billed, c.currency)} | "
        f"{_amount_cell(c.over_billed, c.currency)} | {c.count} |"
        for c in s.customers
    ]
    return lines


def _causes_section(s: RunSummary) -> list[str]:
    if not s.causes:
        return []
    lines = ["", "## Likely causes", "", "| likely cause | discrepancies |", "|---|---:|"]
    lines += [f"| {_words(cause)} | {n} |" for cause, n in s.causes]
    return lines


def _chart(currency: str, meters: list[MeterAmount]) -> list[str]:
    """Both series as non-negative bars (mermaid draws negative bars badly). Mermaid draws a
    chart's bar series over each other, not side by side, so the first series is each meter's
    total and the over-billed one is drawn on it: a stacked bar, over-billed the lower part."""
    names = ", ".join('"' + m.meter.replace('"', "'") + '"' for m in meters)
    totals = [m.not_billed - m.over_billed for m in meters]
    over = ", ".join(canonical_decimal(-m.over_billed) for m in meters)
    return [
        "",
        "```mermaid",
        # Narrower than mermaid's 700 px default, so the chart fits the UI's content column.
        '%%{init: {"xyChart": {"width": 560, "height": 320}}}%%',
        "xychart-beta",
        f'    title "{currency} per meter: not billed (upper part), over-billed (lower part)"',
        f"    x-axis [{names}]",
        # From 0, or mermaid starts the axis at the smallest bar, which then looks like none.
        f'    y-axis "{currency}" 0 --> {canonical_decimal(max(totals))}',
        f"    bar [{', '.join(canonical_decimal(t) for t in totals)}]",
        f"    bar [{over}]",
        "```",
    ]


def _largest_meters(meters: list[MeterAmount]) -> list[MeterAmount]:
    """The meters with the most money at stake either way, largest first; none at zero."""
    ranked = sorted(
        (m for m in meters if m.not_billed or m.over_billed),
        key=lambda m: (-(m.not_billed - m.over_billed), m.meter),
    )
    return ranked[:CHART_METERS]


def _chart_section(s: RunSummary) -> list[str]:
    """Per currency, one chart: not billed and over-billed per meter."""
    if not s.meters:
        return []
    lines = ["", "## Amount at stake per meter"]
    for currency in sorted({m.currency for m in s.meters}):
        meters = _largest_meters([m for m in s.meters if m.currency == currency])
        if meters:
            lines += _chart(currency, meters)
    return lines


def _kinds_section(s: RunSummary) -> list[str]:
    lines = ["", "## Open after this run, by kind", "", "| kind | count |", "|---|---:|"]
    lines += [f"| {kind} | {n} |" for kind, n in s.open_by_kind.items()]
    if not s.open_by_kind:
        lines.append("| (none) | 0 |")
    return lines


def _failed_section(s: RunSummary) -> list[str]:
    if not s.failed:
        return []
    lines = ["", "## Failed pairs", "", "| customer | meter | error |", "|---|---|---|"]
    lines += [f"| {p.customer} | {p.meter} | {_cell(p.error)} |" for p in s.failed]
    return lines


def render_markdown(summary: RunSummary) -> str:
    """The summary as Prefect's UI shows it: money first, tables narrow enough for its column."""
    lines = [
        *_overview(summary),
        *_money_section(summary),
        *_customers_section(summary),
        *_causes_section(summary),
        *_chart_section(summary),
        *_counts_section(summary),
        *_kinds_section(summary),
        *_failed_section(summary),
    ]
    return "\n".join(lines) + "\n"


def _decimal(value: Decimal | None) -> str | None:
    return None if value is None else canonical_decimal(value)


def _top_json(r: TopRow) -> dict[str, Any]:
    return {
        "id": r.id,
        "customer": r.customer,
        "meter": r.meter,
        "period_start": r.period_start.isoformat(),
        "period_end": r.period_end.isoformat(),
        "kind": r.kind,
        "stripe_quantity": canonical_decimal(r.stripe_quantity),
        "internal_quantity": _decimal(r.internal_quantity),
        "difference": _decimal(r.difference),
        "amount_at_stake": _decimal(r.amount_at_stake),
        "currency": r.currency,
        "likely_cause": r.likely_cause,
        "status": r.status,
        "ledger": r.ledger,
    }


def _totals_json(totals: tuple[CurrencyTotal, ...]) -> list[dict[str, Any]]:
    return [
        {
            "currency": t.currency,
            "not_billed": canonical_decimal(t.not_billed),
            "over_billed": canonical_decimal(t.over_billed),
            "valued": t.count,
        }
        for t in totals
    ]


def _ledger_json(part: LedgerPart) -> dict[str, Any]:
    """One ledger's part; `not_billed` is what was metered and not billed (by that ledger)."""
    return {
        "ledger": part.ledger,
        "title": part.title,
        "line_items_compared": part.compared,
        "line_items_matched": part.matched,
        "line_items_pending": part.pending,
        "at_stake": part.at_stake,
        "not_valued": part.not_valued,
        "totals": _totals_json(part.totals),
        "top": [_top_json(r) for r in part.top],
        "not_subscribed": [
            {"customer": customer, "meter": meter} for customer, meter in part.not_subscribed
        ],
    }


def render_json(summary: RunSummary) -> dict[str, Any]:
    """The summary for tools: decimals as exact strings, dates ISO, periods end-exclusive."""
    return {
        "run": {
            "id": summary.run_id,
            "status": summary.status,
            "trigger": summary.trigger,
            "window_start": summary.window_start.isoformat(),
            "window_end": summary.window_end.isoformat(),
            "flow_run_id": summary.flow_run_id,
            "error": summary.error,
            "discovery_error": summary.discovery_error,
            "invoice_sync_error": summary.invoice_sync_error,
            "ledger_sync_error": summary.ledger_sync_error,
            "last_completed": summary.last_completed,
            "internal_ledger_empty": summary.internal_ledger_empty,
        },
        "counts": {
            "pairs_total": summary.pairs_total,
            "pairs_ok": summary.pairs_ok,
            "pairs_failed": summary.pairs_failed,
            "line_items_compared": summary.line_items_compared,
            "line_items_matched": summary.line_items_matched,
            "line_items_pending": summary.line_items_pending,
            "discrepancies_new": summary.discrepancies_new,
            "discrepancies_reopened": summary.discrepancies_reopened,
            "discrepancies_resolved": summary.discrepancies_resolved,
            "discrepancies_settling": summary.discrepancies_settling,
            "requests": summary.requests,
            "open_by_kind": summary.open_by_kind,
            "invoice_sync": None if summary.invoice_sync is None else asdict(summary.invoice_sync),
        },
        "at_stake": summary.at_stake,
        "not_valued": summary.not_valued,
        "totals": _totals_json(summary.totals),
        "top": [_top_json(r) for r in summary.top],
        "ledgers": [_ledger_json(part) for part in summary.ledgers],
        "customers": [
            {
                "customer": c.customer,
                "currency": c.currency,
                "not_billed": canonical_decimal(c.not_billed),
                "over_billed": canonical_decimal(c.over_billed),
                "discrepancies": c.count,
            }
            for c in summary.customers
        ],
        "causes": [{"likely_cause": cause, "discrepancies": n} for cause, n in summary.causes],
        "meters": [
            {
                "meter": m.meter,
                "currency": m.currency,
                "not_billed": canonical_decimal(m.not_billed),
                "over_billed": canonical_decimal(m.over_billed),
            }
            for m in summary.meters
        ],
        "failed_pairs": [
            {"customer": p.customer, "meter": p.meter, "error": p.error} for p in summary.failed
        ],
    }


def render_terminal(summary: RunSummary) -> list[str]:
    """The money at stake per currency, as plain lines for a terminal (never one total)."""
    lines = [
        f"money at stake in the {summary.at_stake} discrepancies of run {summary.run_id} "
        "not resolved, per currency:"
    ]
    lines += [
        f"  {format_money(t.not_billed, t.currency)} not billed, "
        f"{format_money(t.over_billed, t.currency)} over-billed ({t.count} valued)"
        for t in summary.totals
    ]
    lines.append(f"  not valued: {summary.not_valued}")
    if summary.invoice_sync_error:
        lines.append(f"invoice sync failed: {summary.invoice_sync_error}")
    if len(summary.ledgers) > 1 or summary.internal_ledger_empty:
        for part in summary.ledgers:
            amounts = [
                f"{format_money(t.not_billed, t.currency)} {part.positive}, "
                f"{format_money(t.over_billed, t.currency)} {part.negative}"
                for t in part.totals
            ]
            said = "; ".join(amounts) or "nothing valued"
            lines.append(f"  {part.title[0].lower()}{part.title[1:]}: {said}")
    if summary.internal_ledger_empty:
        lines.append(f"  {INTERNAL_LEDGER_EMPTY}")
    return lines


@task(name="publish-report", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def publish_report(run_id: int, database_url: SecretStr) -> str:
    """Markdown summary and a table of open discrepancies, keyed so the UI keeps their history."""
    engine = get_engine(database_url.get_secret_value())
    with Session(engine) as session:
        markdown = render_markdown(build_summary(session=session, run_id=run_id))
        open_rows, open_count = largest_open(session=session)
    create_markdown_artifact(
        markdown=markdown, key=SUMMARY_KEY, description=f"meter-recon run {run_id}"
    )
    description = f"Open and acknowledged discrepancies after run {run_id}"
    if open_count > len(open_rows):
        description += (
            f": the {len(open_rows):,} with the most money at stake, of {open_count:,} "
            "(`meter-recon discrepancies` lists them all)"
        )
    create_table_artifact(
        table=open_rows or [{"status": "no open discrepancies"}],
        key=OPEN_KEY,
        description=description,
    )
    return markdown


def largest_open(*, session: Session) -> tuple[list[dict[str, Any]], int]:
    """The open and acknowledged discrepancies with the most money at stake, largest first
    (at most `TABLE_ROWS`: a table finance reads, and one request to Prefect's API, not every
    row of a large account), and how many there are in all."""
    largest: Smallest[Discrepancy] = Smallest(TABLE_ROWS, largest_key)
    count = 0
    for row in rows_in_customer_order(
        session=session,
        where=[col(Discrepancy.status).in_(OPEN_STATUSES)],
        page_size=TABLE_PAGE,
    ):
        largest.add(row)
        count += 1
    return [{**as_record(r), **money_record(r)} for r in largest.result()], count
