"""The one sentence finance gets when a run fails or crashes as a whole."""

from __future__ import annotations

from datetime import date

from tasks.failure_alert import failure_alert, without_database_password
from tests.fixtures.prefect import LEAK_CANARY_KEY

DATABASE_URL = "postgresql://recon:hunter2pw@db.internal:5432/recon"
FLOW_RUN_ID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


def alert(**overrides: object) -> tuple[str, str]:
    arguments: dict[str, object] = {
        "ended": "failed",
        "run_id": 41,
        "flow_run_name": "crafty-fox",
        "flow_run_id": FLOW_RUN_ID,
        "window": (date(2026, 11, 30), date(2026, 12, 3)),
        "reason": "Flow run encountered an exception: RuntimeError: meters unavailable",
        "database_url": DATABASE_URL,
        "ui_url": None,
    }
    arguments.update(overrides)
    message = failure_alert(**arguments)  # type: ignore[arg-type]
    assert message.discrepancy_ids == ()
    return message.title, message.body


def test_the_sentence_names_our_run_its_window_and_the_reason() -> None:
    title, body = alert()
    assert title == "meter-recon run 41 failed"
    assert body == (
        "meter-recon run 41 over 2026-11-30..2026-12-03 (UTC days, end exclusive) failed: "
        "Flow run encountered an exception: RuntimeError: meters unavailable."
    )


def test_a_run_that_never_started_is_named_by_its_flow_run() -> None:
    title, body = alert(run_id=None, ended="crashed")
    assert title == f"meter-recon flow run crafty-fox ({FLOW_RUN_ID}) crashed"
    assert body.startswith(f"meter-recon flow run crafty-fox ({FLOW_RUN_ID}) over 2026-11-30")


def test_the_sentence_links_to_the_flow_run_when_the_ui_url_is_known() -> None:
    _, body = alert(ui_url="http://prefect.internal:4200/")
    assert body.endswith(f"; flow run: http://prefect.internal:4200/runs/flow-run/{FLOW_RUN_ID}.")
    assert "\n" not in body


def test_a_reason_on_several_lines_stays_one_sentence() -> None:
    _, body = alert(reason="Traceback:\n  line one\n  line two.")
    assert "\n" not in body
    assert "failed: Traceback: line one line two." in body


def test_no_reason_says_so() -> None:
    _, body = alert(reason=None)
    assert body.endswith("failed: no reason given.")


def test_a_stripe_key_in_the_reason_is_redacted() -> None:
    _, body = alert(reason=f"401 Invalid API Key provided: {LEAK_CANARY_KEY}")
    assert LEAK_CANARY_KEY not in body
    assert "[REDACTED]" in body


def test_the_database_url_appears_without_its_password() -> None:
    title, body = alert(reason=f"could not connect to {DATABASE_URL}: refused (hunter2pw)")
    assert "hunter2pw" not in body + title
    assert "postgresql://recon:***@db.internal:5432/recon" in body


def test_a_database_url_without_a_password_is_left_as_it_is() -> None:
    text = "sqlite:///meter_recon.db is locked"
    assert without_database_password(text, "sqlite:///meter_recon.db") == text
