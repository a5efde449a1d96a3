"""What finance reads about a run: one summary, rendered as markdown (Prefect's UI, the
terminal) or JSON, and a table artifact of the open discrepancies.

`build_summary` gathers the data once; `summary_markdown` and `summary_json` only render it.
Money is never added across currencies: every total is per currency.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from sqlmodel import Session, col, select

from integrations.settings import get_settings
from models.discrepancies import as_record, list_discrepancies, money_record
from models.engine import get_engine
from models.errors import UserError
from models.money import currency_exponent
from models.runs import failed_pairs, get_run, ledger_sync_error
from models.tables import (
    DISCREPANCY_IDENTITY,
    Discrepancy,
    DiscrepancyStatus,
    ReconciliationRun,
)
from models.types import canonical_decimal

SUMMARY_KEY = "meter-recon-run-summary"
OPEN_KEY = "meter-recon-open-discrepancies"
TOP = 10
TOP_CUSTOMERS = 10
CHART_METERS = 12
NO_CAUSE = "none found"


class UnknownRun(UserError, LookupError):
    """A run id that names no run: one sentence for the user."""


@dataclass(frozen=True, slots=True)
class CurrencyTotal:
    """Per currency: the sum of positive amounts (not billed) and of negative ones."""

    currency: str
    not_billed: Decimal
    over_billed: Decimal
    count: int


@dataclass(frozen=True, slots=True)
class CustomerTotal:
    customer: str
    currency: str
    not_billed: Decimal
    over_billed: Decimal
    count: int


@dataclass(frozen=True, slots=True)
class MeterAmount:
    meter: str
    currency: str
    not_billed: Decimal
    over_billed: Decimal


@dataclass(frozen=True, slots=True)
class TopRow:
    id: int
    customer: str
    meter: str
    period_start: date
    period_end: date
    kind: str
    stripe_quantity: Decimal
    internal_quantity: Decimal | None
    difference: Decimal | None
    amount_at_stake: Decimal | None
    currency: str | None
    likely_cause: str | None
    status: str


@dataclass(frozen=True, slots=True)
class FailedPair:
    customer: str
    meter: str
    error: str


@dataclass(frozen=True, slots=True)
class RunSummary:
    """Everything the summary shows, gathered in one read of the database."""

    run_id: int
    status: str
    trigger: str
    window_start: date
    window_end: date
    flow_run_id: str | None
    error: str | None
    discovery_error: str | None
    pairs_total: int
    pairs_ok: int
    pairs_failed: int
    line_items_compared: int
    line_items_matched: int
    line_items_pending: int
    discrepancies_new: int
    discrepancies_reopened: int
    discrepancies_resolved: int
    discrepancies_settling: int
    requests: int
    open_by_kind: dict[str, int]
    at_stake: int
    totals: tuple[CurrencyTotal, ...]
    not_valued: int
    top: tuple[TopRow, ...]
    customers: tuple[CustomerTotal, ...]
    causes: tuple[tuple[str, int], ...]
    meters: tuple[MeterAmount, ...]
    failed: tuple[FailedPair, ...]
    ledger_sync_error: str | None = None


def _size(value: Decimal | None) -> Decimal:
    return abs(value) if value is not None else Decimal(-1)


def _identity(row: Discrepancy) -> tuple[str, ...]:
    return tuple(str(getattr(row, name)) for name in DISCREPANCY_IDENTITY)


def largest_first(rows: list[Discrepancy]) -> list[Discrepancy]:
    """By |amount at stake| (not valued last), then |difference|, then identity (not id)."""
    return sorted(
        rows, key=lambda r: (-_size(r.amount_at_stake), -_size(r.difference), _identity(r))
    )


def _split(amount: Decimal) -> tuple[Decimal, Decimal]:
    return (amount, Decimal(0)) if amount > 0 else (Decimal(0), amount)


def summarize_money(rows: list[Discrepancy]) -> tuple[CurrencyTotal, ...]:
    """Per currency (sorted), the not-billed and over-billed sums; not valued rows left out."""
    sums: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        if row.amount_at_stake is None or row.currency is None:
            continue
        positive, negative = _split(row.amount_at_stake)
        sums[row.currency][0] += positive
        sums[row.currency][1] += negative
        counts[row.currency] += 1
    return tuple(
        CurrencyTotal(currency=c, not_billed=s[0], over_billed=s[1], count=counts[c])
        for c, s in sorted(sums.items())
    )


def _by_customer(rows: list[Discrepancy]) -> tuple[CustomerTotal, ...]:
    sums: dict[tuple[str, str], list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for row in rows:
        if row.amount_at_stake is None or row.currency is None:
            continue
        key = (row.stripe_customer_id, row.currency)
        positive, negative = _split(row.amount_at_stake)
        sums[key][0] += positive
        sums[key][1] += negative
        counts[key] += 1
    ranked = sorted(sums.items(), key=lambda item: (-(item[1][0] - item[1][1]), item[0]))
    return tuple(
        CustomerTotal(
            customer=k[0], currency=k[1], not_billed=s[0], over_billed=s[1], count=counts[k]
        )
        for k, s in ranked[:TOP_CUSTOMERS]
    )


def _by_meter(rows: list[Discrepancy]) -> tuple[MeterAmount, ...]:
    sums: dict[tuple[str, str], list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for row in rows:
        if row.amount_at_stake is None or row.currency is None:
            continue
        positive, negative = _split(row.amount_at_stake)
        sums[(row.currency, row.meter_id)][0] += positive
        sums[(row.currency, row.meter_id)][1] += negative
    return tuple(
        MeterAmount(meter=k[1], currency=k[0], not_billed=s[0], over_billed=s[1])
        for k, s in sorted(sums.items())
    )


def _causes(rows: list[Discrepancy]) -> tuple[tuple[str, int], ...]:
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        counts[row.likely_cause or NO_CAUSE] += 1
    return tuple(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _top_row(row: Discrepancy) -> TopRow:
    assert row.id is not None
    return TopRow(
        id=row.id,
        customer=row.stripe_customer_id,
        meter=row.meter_id,
        period_start=row.period_start,
        period_end=row.period_end,
        kind=row.kind.value,
        stripe_quantity=row.stripe_quantity,
        internal_quantity=row.internal_quantity,
        difference=row.difference,
        amount_at_stake=row.amount_at_stake,
        currency=row.currency,
        likely_cause=row.likely_cause,
        status=row.status.value,
    )


def _latest_run_id(session: Session) -> int:
    latest = session.exec(
        select(ReconciliationRun.id).order_by(col(ReconciliationRun.id).desc()).limit(1)
    ).first()
    if latest is None:
        raise UnknownRun("There is no run yet; start one with `meter-recon run` or `nightly`.")
    return latest


def build_summary(*, session: Session, run_id: int | None = None) -> RunSummary:
    """The summary of run `run_id` (the latest when None): what it found that is not resolved."""
    run_id = _latest_run_id(session) if run_id is None else run_id
    try:
        run = get_run(session=session, run_id=run_id)
    except LookupError as missing:
        raise UnknownRun(f"There is no run with id {run_id}.") from missing
    rows = list(
        session.exec(
            select(Discrepancy).where(
                col(Discrepancy.first_seen_run) <= run_id,
                col(Discrepancy.last_seen_run) >= run_id,
                Discrepancy.status != DiscrepancyStatus.RESOLVED,
            )
        ).all()
    )
    failed = sorted(
        failed_pairs(session=session, run_id=run_id),
        key=lambda r: (r.stripe_customer_id, r.meter_id),
    )
    counts: dict[str, Any] = run.counts
    return RunSummary(
        run_id=run_id,
        status=run.status.value,
        trigger=run.trigger.value,
        window_start=run.window_start,
        window_end=run.window_end,
        flow_run_id=run.flow_run_id,
        error=run.error,
        discovery_error=run.discovery_error,
        ledger_sync_error=ledger_sync_error(run),
        pairs_total=run.pairs_total,
        pairs_ok=run.pairs_ok,
        pairs_failed=run.pairs_failed,
        line_items_compared=run.line_items_compared,
        line_items_matched=run.line_items_matched,
        line_items_pending=run.line_items_pending,
        discrepancies_new=run.discrepancies_new,
        discrepancies_reopened=run.discrepancies_reopened,
        discrepancies_resolved=run.discrepancies_resolved,
        discrepancies_settling=run.discrepancies_settling,
        requests=int(counts.get("requests", 0)),
        open_by_kind=dict(sorted(counts.get("by_kind", {}).items())),
        at_stake=len(rows),
        totals=summarize_money(rows),
        not_valued=sum(1 for r in rows if r.amount_at_stake is None or r.currency is None),
        top=tuple(_top_row(r) for r in largest_first(rows)[:TOP]),
        customers=_by_customer(rows),
        causes=_causes(rows),
        meters=_by_meter(rows),
        failed=tuple(
            FailedPair(customer=p.stripe_customer_id, meter=p.meter_id, error=p.error or "")
            for p in failed
        ),
    )


def money(amount: Decimal, currency: str) -> str:
    """An amount for people: the currency's own decimals, half-even, thousands separated."""
    places = currency_exponent(currency)
    return f"{amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN):,}"


def compact_period(start: date, end: date) -> str:
    """`2026-11-01 → 12-01`: the end (exclusive) without what it shares with the start."""
    if start.year != end.year:
        return f"{start} → {end}"
    return f"{start} → {end:%m-%d}"


def _amount_cell(amount: Decimal | None, currency: str | None) -> str:
    if amount is None or currency is None:
        return "not valued"
    return f"{money(amount, currency)} {currency}"


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
    if s.error:
        lines += [f"**The run failed:** {_cell(s.error)}", ""]
    if s.discovery_error:
        lines += [
            f"**Discovery of pairs and prices from Stripe failed:** {_cell(s.discovery_error)}",
            "",
        ]
    if s.ledger_sync_error:
        lines += [
            "**The ledger sync failed; the ledger as it was was used:** "
            f"{_cell(s.ledger_sync_error)}",
            "",
        ]
    return lines


def _money_section(s: RunSummary) -> list[str]:
    lines = ["## Money at stake", ""]
    if s.totals:
        lines += ["| currency | not billed | over-billed | valued |", "|---|---:|---:|---:|"]
        lines += [
            f"| {t.currency} | {money(t.not_billed, t.currency)} | "
            f"{money(t.over_billed, t.currency)} | {t.count} |"
            for t in s.totals
        ]
        lines.append("")
    lines.append(
        f"{s.at_stake} discrepancies found by this run are not resolved; "
        f"{s.not_valued} of them are not valued."
    )
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


def _top_section(s: RunSummary) -> list[str]:
    if not s.top:
        return []
    lines = [
        "",
        f"## Top {len(s.top)} by amount at stake",
        "",
        "| # | customer / meter | period | kind | Stripe / ledger | amount | likely cause |",
        "|---:|---|---|---|---:|---:|---|",
    ]
    for r in s.top:
        period = _unbroken_period(r.period_start, r.period_end)
        lines.append(
            f"| {r.id} | {r.customer} / {r.meter} | {period} | {_words(r.kind)} "
            f"| {_number(r.stripe_quantity)} / {_number(r.internal_quantity)} "
            f"| {_unbroken(_amount_cell(r.amount_at_stake, r.currency))} "
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
        "| customer | currency | not billed | over-billed | discrepancies |",
        "|---|---|---:|---:|---:|",
    ]
    lines += [
        f"| {c.customer} | {c.currency} | {money(c.not_billed, c.currency)} | "
        f"{money(c.over_billed, c.currency)} | {c.count} |"
        for c in s.customers
    ]
    return lines


def _causes_section(s: RunSummary) -> list[str]:
    if not s.causes:
        return []
    lines = ["", "## Likely causes", "", "| likely cause | discrepancies |", "|---|---:|"]
    lines += [f"| {_words(cause)} | {n} |" for cause, n in s.causes]
    return lines


def _chart(title: str, currency: str, bars: list[tuple[str, Decimal]]) -> list[str]:
    names = ", ".join('"' + meter.replace('"', "'") + '"' for meter, _ in bars)
    numbers = ", ".join(canonical_decimal(value) for _, value in bars)
    return [
        "",
        "```mermaid",
        # Narrower than mermaid's 700 px default, so the chart fits the UI's content column.
        '%%{init: {"xyChart": {"width": 560, "height": 320}}}%%',
        "xychart-beta",
        f'    title "{title}"',
        f"    x-axis [{names}]",
        # From 0, or mermaid starts the axis at the smallest bar, which then looks like none.
        f'    y-axis "{currency}" 0 --> {canonical_decimal(max(v for _, v in bars))}',
        f"    bar [{numbers}]",
        "```",
    ]


def _largest_bars(values: dict[str, Decimal]) -> list[tuple[str, Decimal]]:
    bars = sorted(((m, v) for m, v in values.items() if v > 0), key=lambda b: (-b[1], b[0]))
    return bars[:CHART_METERS]


def _chart_section(s: RunSummary) -> list[str]:
    """Per currency, one bar chart of not billed and one of over-billed (both non-negative):
    mermaid draws negative bars badly."""
    if not s.meters:
        return []
    lines = ["", "## Amount at stake per meter"]
    for currency in sorted({m.currency for m in s.meters}):
        of_currency = [m for m in s.meters if m.currency == currency]
        for label, values in (
            ("not billed", {m.meter: m.not_billed for m in of_currency}),
            ("over-billed", {m.meter: -m.over_billed for m in of_currency}),
        ):
            bars = _largest_bars(values)
            if bars:
                lines += _chart(f"{label}, {currency}, per meter", currency, bars)
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


def summary_markdown(summary: RunSummary) -> str:
    """The summary as Prefect's UI shows it: money first, tables narrow enough for its column."""
    lines = [
        *_overview(summary),
        *_money_section(summary),
        *_top_section(summary),
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


def summary_json(summary: RunSummary) -> dict[str, Any]:
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
            "ledger_sync_error": summary.ledger_sync_error,
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
        },
        "at_stake": summary.at_stake,
        "not_valued": summary.not_valued,
        "totals": [
            {
                "currency": t.currency,
                "not_billed": canonical_decimal(t.not_billed),
                "over_billed": canonical_decimal(t.over_billed),
                "valued": t.count,
            }
            for t in summary.totals
        ],
        "top": [
            {
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
            }
            for r in summary.top
        ],
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


@task(name="publish-report", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def publish_report(run_id: int) -> str:
    """Markdown summary and a table of open discrepancies, keyed so the UI keeps their history."""
    engine = get_engine(get_settings().database_url)
    with Session(engine) as session:
        markdown = summary_markdown(build_summary(session=session, run_id=run_id))
        open_rows = [
            {**as_record(r), **money_record(r)} for r in list_discrepancies(session=session)
        ]
    create_markdown_artifact(
        markdown=markdown, key=SUMMARY_KEY, description=f"meter-recon run {run_id}"
    )
    create_table_artifact(
        table=open_rows or [{"status": "no open discrepancies"}],
        key=OPEN_KEY,
        description=f"Open and acknowledged discrepancies after run {run_id}",
    )
    return markdown
