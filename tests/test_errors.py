"""One user-error type: every error meant as one sentence for a person derives from
`UserError`, and the command line maps that base to a line on stderr and an exit code."""

from __future__ import annotations

import ast
from dataclasses import replace
from datetime import date
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console
from sqlalchemy import Engine

import meter_recon.errors
import models.errors
from flows.reconcile import RunOutcome
from flows.windows import BadWindow, check_window
from integrations.prefect_server import PrefectServerError
from meter_recon.cli import report_error
from meter_recon.demo import DemoError
from meter_recon.errors import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    EXIT_PAIRS_FAILED,
    BadInput,
    RunFailed,
    UserError,
)
from meter_recon.terminal import built_summary, print_run_summary
from models.discrepancies import AlreadyResolved, UnknownDiscrepancy
from tasks.fetch import MissingApiKey
from tests.builders import new_run
from tests.finance import add, discrepancy

ROOT = Path(__file__).resolve().parents[1]
#: Each one-sentence error, with the builtin base callers may still catch it by.
USER_ERRORS: list[tuple[type[Exception], type[Exception]]] = [
    (BadInput, UserError),
    (RunFailed, UserError),
    (BadWindow, ValueError),
    (DemoError, ValueError),
    (PrefectServerError, RuntimeError),
    (MissingApiKey, RuntimeError),
    (UnknownDiscrepancy, LookupError),
    (AlreadyResolved, ValueError),
]


def test_meter_recon_re_exports_the_models_base() -> None:
    assert meter_recon.errors.UserError is models.errors.UserError


@pytest.mark.parametrize(("error", "builtin"), USER_ERRORS)
def test_every_one_sentence_error_is_a_user_error(
    error: type[Exception], builtin: type[Exception]
) -> None:
    assert issubclass(error, UserError)
    assert issubclass(error, builtin)


@pytest.mark.parametrize(
    ("error", "line", "code"),
    [
        (BadInput("--from 'x' is not a date; use YYYY-MM-DD."), "error: --from", EXIT_BAD_INPUT),
        (UnknownDiscrepancy("There is no discrepancy with id 9."), "error: There", EXIT_BAD_INPUT),
        (MissingApiKey("No Stripe API key: set STRIPE_API_KEY."), "error: No", EXIT_BAD_INPUT),
        (PrefectServerError("Prefect's server did not start."), "error: Pre", EXIT_PAIRS_FAILED),
        (RunFailed("ConnectError: refused"), "run failed: ConnectError", EXIT_PAIRS_FAILED),
    ],
)
def test_the_cli_reports_a_user_error_as_one_line_and_its_exit_code(
    error: UserError, line: str, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert report_error(error) == code
    err = capsys.readouterr().err
    assert err.startswith(line)
    assert err.endswith(f"{error}\n") and err.count("\n") == 1


def test_a_message_with_brackets_is_printed_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    report_error(BadInput("The period [2026-11-01, 2026-11-03) is [bold]taken[/bold]."))
    assert capsys.readouterr().err == (
        "error: The period [2026-11-01, 2026-11-03) is [bold]taken[/bold].\n"
    )


@pytest.mark.parametrize(
    ("start", "end"),
    [(date(2026, 11, 5), date(2026, 11, 1)), (date(2026, 11, 5), date(2026, 11, 5))],
)
def test_window_messages_name_no_command_line_flag(start: date, end: date) -> None:
    """The flow raises them too, started from a deployment whose parameters are start/end."""
    with pytest.raises(BadWindow) as raised:
        check_window(start=start, end=end, today=date(2026, 11, 25))
    assert "--" not in str(raised.value)


def test_a_future_window_names_no_command_line_flag() -> None:
    with pytest.raises(BadWindow) as raised:
        check_window(start=date(2026, 11, 5), end=date(2026, 11, 30), today=date(2026, 11, 25))
    assert "--" not in str(raised.value)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    "path",
    sorted(
        p.relative_to(ROOT).as_posix()
        for package in ("meter_recon", "models", "integrations", "simulator", "tasks", "flows")
        for p in (ROOT / package).rglob("*.py")
        if p != ROOT / "meter_recon" / "cli.py"
    ),
)
def test_nothing_imports_the_command_line_back(path: str) -> None:
    """The CLI registers the demo and the simulator; they must not import it (no cycle)."""
    assert "meter_recon.cli" not in _imports(ROOT / path)


def _summary(status: str) -> RunOutcome:
    return RunOutcome(
        run_id=7,
        status=status,
        window_start=date(2026, 11, 1),
        window_end=date(2026, 11, 4),
        pairs_total=3,
        pairs_ok=2,
        pairs_failed=1,
        compared=10,
        matched=8,
        pending=1,
        new=1,
        reopened=0,
        resolved=2,
        alerted=1,
        requests=12,
        task_runs_recorded=3,
        task_runs_expected=3,
    )


@pytest.mark.parametrize(
    ("status", "code"),
    [("completed", EXIT_OK), ("completed_with_errors", EXIT_PAIRS_FAILED), ("failed", 1)],
)
def test_the_run_summary_exit_code_follows_the_status(status: str, code: int) -> None:
    assert print_run_summary(Console(file=StringIO()), _summary(status)) == code


def test_the_run_summary_prints_every_count() -> None:
    buffer = StringIO()
    print_run_summary(Console(file=buffer, width=60), _summary("completed_with_errors"))
    assert buffer.getvalue().splitlines() == [
        "run 7 completed_with_errors: window 2026-11-01..2026-11-04 (end exclusive)",
        "  pairs: 2 reconciled, 1 failed, 3 tracked",
        "  line items: 10 compared, 8 matched, 1 pending (period not closed yet)",
        "  discrepancies: 1 new, 0 re-opened, 2 resolved; 1 alerted, 0 settling",
        "  discovery: off",
        "  Stripe requests: 12",
    ]


def test_the_run_summary_says_what_discovery_found() -> None:
    buffer = StringIO()
    summary = replace(_summary("completed"), settling=2, discovered=5, discovered_added=1)
    print_run_summary(Console(file=buffer, width=200), summary)
    lines = buffer.getvalue().splitlines()
    assert "  discrepancies: 1 new, 0 re-opened, 2 resolved; 1 alerted, 2 settling" in lines
    assert "  discovery: 5 billed pair(s) found, 1 newly tracked" in lines


def test_the_run_summary_says_discovery_failed_and_why() -> None:
    buffer = StringIO()
    error = "StripeUnavailable: Stripe answered 503 after 5 attempts"
    print_run_summary(
        Console(file=buffer, width=200), replace(_summary("completed"), discovery_error=error)
    )
    assert f"  discovery failed: {error} (cached pairs and prices used)" in (
        buffer.getvalue().splitlines()
    )


def test_the_run_summary_ends_with_the_money_the_report_built(
    database_url: str, engine: Engine
) -> None:
    run = new_run(engine)
    add(
        engine,
        discrepancy(run_id=run, line_item="1", amount="4419.956", currency="jpy"),
        discrepancy(run_id=run, line_item="2", amount="-2.35278", currency="usd"),
    )
    buffer = StringIO()
    outcome = replace(_summary("completed"), run_id=run)
    print_run_summary(Console(file=buffer, width=200), outcome, built_summary(database_url, run))
    assert buffer.getvalue().splitlines()[-4:] == [
        f"  money at stake in the 2 discrepancies of run {run} not resolved, per currency:",
        "    4,420 jpy not billed, 0 jpy over-billed (1 valued)",
        "    0.00 usd not billed, -2.35 usd over-billed (1 valued)",
        "    not valued: 0",
    ]


def _failing_execute(error: BaseException) -> object:
    def execute(**_: object) -> object:
        raise error

    return execute


def test_a_failed_flow_is_one_run_failed_sentence_without_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import meter_recon.launch
    from integrations.settings import Settings
    from meter_recon.terminal import execute_or_fail

    failure = ConnectionError("refused\n  with sk_test_abcdefghijklmnop in the text")
    monkeypatch.setattr(meter_recon.launch, "execute", _failing_execute(failure))
    with pytest.raises(RunFailed) as raised:
        execute_or_fail(
            console=Console(file=StringIO()),
            settings=Settings(),
            start=None,
            end=None,
            customers=[],
            meters=[],
            manual=False,
        )
    message = str(raised.value)
    assert message.startswith("ConnectionError: refused with ")
    assert "sk_test_abcdefghijklmnop" not in message and "\n" not in message
    assert raised.value.__cause__ is failure


def test_a_prefect_server_that_did_not_start_is_not_a_failed_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import meter_recon.launch
    from integrations.settings import Settings
    from meter_recon.terminal import execute_or_fail

    failure = PrefectServerError("Prefect's embedded server did not answer.")
    monkeypatch.setattr(meter_recon.launch, "execute", _failing_execute(failure))
    with pytest.raises(PrefectServerError) as raised:
        execute_or_fail(
            console=Console(file=StringIO()),
            settings=Settings(),
            start=None,
            end=None,
            customers=[],
            meters=[],
            manual=False,
        )
    assert raised.value is failure
