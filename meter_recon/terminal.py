"""What the commands print about a run, shared by `meter-recon run`, `nightly` and `demo`.

Here rather than in `meter_recon.cli` so the demo can use it without importing the command
line that registers the demo.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from rich.console import Console

from integrations.settings import Settings
from meter_recon.errors import EXIT_OK, EXIT_PAIRS_FAILED, RunFailed, UserError

if TYPE_CHECKING:
    from flows.reconcile import RunOutcome
    from tasks.summary import RunSummary

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def execute_or_fail(
    *,
    console: Console,
    settings: Settings,
    database_url: str | None = None,
    start: date | None,
    end: date | None,
    customers: list[str],
    meters: list[str],
    manual: bool,
) -> RunOutcome:
    """Run the flow with its progress on `console`; a failed flow becomes one `RunFailed`.

    `settings` are the run's (the command's, or the demo's own); `database_url` the
    command line's `--database-url`, if given.

    A `UserError` stays itself, since it says what to fix (Prefect's server did not start,
    Stripe refused the key), and so does a database failure, as its `DatabaseProblem`.
    """
    from flows.reconcile import RunOutcome
    from meter_recon.launch import execute, progress_display

    with progress_display(console):
        try:
            summary = execute(
                settings=settings,
                database_url=database_url,
                start=start,
                end=end,
                customers=customers,
                meters=meters,
                manual=manual,
            )
        except UserError:
            raise  # already one sentence: a refused key, a lost database, Prefect's server
        except Exception as exc:
            from models.db_errors import translate
            from tasks.reconcile_pairs import describe_error

            problem = translate(exc, url=database_url or settings.database_url)
            if problem is not None:
                raise problem from exc
            raise RunFailed(describe_error(exc)) from exc
    assert isinstance(summary, RunOutcome)
    return summary


def discovery_line(outcome: RunOutcome) -> str:
    """What the run learned from Stripe's subscriptions, or why it could not."""
    if outcome.discovery_error:
        return f"discovery failed: {outcome.discovery_error} (cached pairs and prices used)"
    if outcome.discovered is None:
        return "discovery: off"
    return (
        f"discovery: {outcome.discovered} billed pair(s) found, "
        f"{outcome.discovered_added} newly tracked"
    )


def built_summary(database_url: str, run_id: int) -> RunSummary:
    """The run's summary as `meter-recon report` builds it, for the terminal to render."""
    from models.engine import get_engine, session_scope
    from tasks.summary import build_summary

    with session_scope(get_engine(database_url)) as session:
        return build_summary(session=session, run_id=run_id)


def print_run_summary(
    console: Console, outcome: RunOutcome, report: RunSummary | None = None
) -> int:
    """The run's numbers in a few plain lines, then the money of its built `report` when
    given; the exit code its status means."""
    from tasks.report import render_terminal

    money = [f"  {line}" for line in render_terminal(report)] if report is not None else []
    console.print(
        f"run {outcome.run_id} {outcome.status}: window {outcome.window_start}.."
        f"{outcome.window_end} (end exclusive)\n"
        f"  pairs: {outcome.pairs_ok} reconciled, {outcome.pairs_failed} failed, "
        f"{outcome.pairs_total} tracked\n"
        f"  line items: {outcome.compared} compared, {outcome.matched} matched, "
        f"{outcome.pending} pending (period not closed yet)\n"
        f"  discrepancies: {outcome.new} new, {outcome.reopened} re-opened, "
        f"{outcome.resolved} resolved; {outcome.alerted} alerted, {outcome.settling} settling\n"
        f"  {discovery_line(outcome)}\n"
        + (
            f"  ledger sync failed: {outcome.ledger_sync_error} (the ledger as it was used)\n"
            if outcome.ledger_sync_error
            else ""
        )
        + f"  Stripe requests: {outcome.requests}"
        + "".join(f"\n{line}" for line in money),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    return EXIT_OK if outcome.status == "completed" else EXIT_PAIRS_FAILED
