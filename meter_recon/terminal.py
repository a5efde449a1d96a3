"""What the commands print about a run, shared by `meter-recon run`, `nightly` and `demo`.

Here rather than in `meter_recon.cli` so the demo can use it without importing the command
line that registers the demo.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from rich.console import Console

from integrations.prefect_server import PrefectServerError
from integrations.settings import Settings
from meter_recon.errors import EXIT_OK, EXIT_PAIRS_FAILED, RunFailed

if TYPE_CHECKING:
    from flows.reconcile import RunSummary

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def execute_or_fail(
    *,
    console: Console,
    settings: Settings,
    start: date | None,
    end: date | None,
    customers: list[str],
    meters: list[str],
    manual: bool,
) -> RunSummary:
    """Run the flow with its progress on `console`; a failed flow becomes one `RunFailed`.

    Prefect's server failing to start stays a `PrefectServerError`: it says what to fix.
    """
    from flows.reconcile import RunSummary
    from meter_recon.launch import execute, progress_display

    with progress_display(console):
        try:
            summary = execute(
                settings=settings,
                start=start,
                end=end,
                customers=customers,
                meters=meters,
                manual=manual,
            )
        except PrefectServerError:
            raise
        except Exception as exc:
            from tasks.reconcile_pairs import describe_error

            raise RunFailed(describe_error(exc)) from exc
    assert isinstance(summary, RunSummary)
    return summary


def discovery_line(summary: RunSummary) -> str:
    """What the run learned from Stripe's subscriptions, or why it could not."""
    if summary.discovery_error:
        return f"discovery failed: {summary.discovery_error} (cached pairs and prices used)"
    if summary.discovered is None:
        return "discovery: off"
    return (
        f"discovery: {summary.discovered} billed pair(s) found, "
        f"{summary.discovered_added} newly tracked"
    )


def print_run_summary(console: Console, summary: RunSummary) -> int:
    """The run's numbers in a few plain lines; the exit code its status means."""
    console.print(
        f"run {summary.run_id} {summary.status}: window {summary.window_start}.."
        f"{summary.window_end} (end exclusive)\n"
        f"  pairs: {summary.pairs_ok} reconciled, {summary.pairs_failed} failed, "
        f"{summary.pairs_total} tracked\n"
        f"  line items: {summary.compared} compared, {summary.matched} matched, "
        f"{summary.pending} pending (period not closed yet)\n"
        f"  discrepancies: {summary.new} new, {summary.reopened} re-opened, "
        f"{summary.resolved} resolved; {summary.alerted} alerted, {summary.settling} settling\n"
        f"  {discovery_line(summary)}\n"
        + (
            f"  ledger sync failed: {summary.ledger_sync_error} (the ledger as it was used)\n"
            if summary.ledger_sync_error
            else ""
        )
        + f"  Stripe requests: {summary.requests}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    return EXIT_OK if summary.status == "completed" else EXIT_PAIRS_FAILED
