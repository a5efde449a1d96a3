"""Prefect artifacts for finance: the run's summary and the open discrepancies."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from sqlmodel import Session, col, select

from meter_recon.settings import get_settings
from models.discrepancies import as_record, list_discrepancies
from models.engine import get_engine
from models.runs import failed_pairs, get_run
from models.tables import Discrepancy, PairResult, ReconciliationRun

SUMMARY_KEY = "meter-recon-run-summary"
OPEN_KEY = "meter-recon-open-discrepancies"
TOP = 10


def summary_markdown(
    *, run: ReconciliationRun, failed: list[PairResult], top: list[Discrepancy]
) -> str:
    counts: dict[str, Any] = run.counts
    by_kind = counts.get("by_kind", {})
    lines = [
        f"# meter-recon run {run.id}: {run.status.value}",
        "",
        f"Window **{run.window_start} .. {run.window_end}** (UTC days, end exclusive), "
        f"trigger `{run.trigger.value}`.",
        "",
        "| | |",
        "|---|---:|",
        f"| pairs reconciled | {run.pairs_ok} of {run.pairs_total} |",
        f"| pairs failed | {run.pairs_failed} |",
        f"| line items compared | {run.line_items_compared} |",
        f"| line items matched | {run.line_items_matched} |",
        f"| line items pending (period not closed) | {run.line_items_pending} |",
        f"| discrepancies new | {run.discrepancies_new} |",
        f"| discrepancies re-opened | {run.discrepancies_reopened} |",
        f"| discrepancies resolved | {run.discrepancies_resolved} |",
        f"| Stripe requests | {counts.get('requests', 0)} |",
        "",
        "## Open after this run, by kind",
        "",
        "| kind | count |",
        "|---|---:|",
        *(f"| {kind} | {n} |" for kind, n in sorted(by_kind.items())),
    ]
    if not by_kind:
        lines.append("| (none) | 0 |")
    if top:
        lines += [
            "",
            f"## Top {len(top)} differences by size",
            "",
            "| id | customer | meter | period | kind | Stripe | ledger | difference |",
            "|---:|---|---|---|---|---:|---:|---:|",
        ]
        for row in top:
            record = as_record(row)
            lines.append(
                f"| {record['id']} | {record['customer']} | {record['meter']} | "
                f"{record['period_start']}..{record['period_end']} | {record['kind']} | "
                f"{record['stripe_quantity']} | {record['internal_quantity'] or ''} | "
                f"{record['difference'] or ''} |"
            )
    if failed:
        lines += ["", "## Failed pairs", "", "| customer | meter | error |", "|---|---|---|"]
        lines += [f"| {p.stripe_customer_id} | {p.meter_id} | {p.error} |" for p in failed]
    return "\n".join(lines) + "\n"


@task(name="publish-report", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def publish_report(run_id: int) -> str:
    """Markdown summary and a table of open discrepancies, keyed so the UI keeps their history."""
    engine = get_engine(get_settings().database_url)
    with Session(engine) as session:
        run = get_run(session=session, run_id=run_id)
        failed = failed_pairs(session=session, run_id=run_id)
        seen = session.exec(
            select(Discrepancy).where(
                Discrepancy.last_seen_run == run_id, col(Discrepancy.difference).is_not(None)
            )
        ).all()
        top = sorted(seen, key=lambda r: (-abs(r.difference or Decimal(0)), r.id or 0))[:TOP]
        open_rows = [as_record(r) for r in list_discrepancies(session=session)]
        markdown = summary_markdown(run=run, failed=failed, top=top)
    create_markdown_artifact(
        markdown=markdown, key=SUMMARY_KEY, description=f"meter-recon run {run_id}"
    )
    create_table_artifact(
        table=open_rows or [{"status": "no open discrepancies"}],
        key=OPEN_KEY,
        description=f"Open and acknowledged discrepancies after run {run_id}",
    )
    return markdown
