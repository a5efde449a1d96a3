"""A nightly run that never happened is told by the next run: how long since one completed."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Engine
from sqlmodel import Session

from models.runs import last_completed_run
from models.tables import ReconciliationRun, RunStatus, Trigger
from tasks.alert import build_alert
from tasks.last_completed import KEY, elapsed_words, gap_line, gap_record, record_gap
from tasks.report import render_json, render_markdown
from tasks.summary import build_summary

NOW = datetime(2026, 12, 5, 7, 10, tzinfo=UTC)
LINE = "The last completed run finished 3 days 4 hours ago (run 41, 2026-12-02 03:10 UTC)."


def run(
    status: RunStatus, *, finished: datetime | None, id: int | None = None
) -> ReconciliationRun:
    return ReconciliationRun(
        id=id,
        window_start=date(2026, 11, 28),
        window_end=date(2026, 12, 1),
        trigger=Trigger.SCHEDULED,
        status=status,
        started_at=(finished or NOW) - timedelta(minutes=5),
        finished_at=finished,
    )


def add_runs(engine: Engine, *runs: ReconciliationRun) -> list[int]:
    with Session(engine) as session:
        session.add_all(runs)
        session.commit()
        return [r.id for r in runs if r.id is not None]


def test_three_days_four_hours_since_the_last_completed_run_is_one_line() -> None:
    last = run(RunStatus.COMPLETED, finished=datetime(2026, 12, 2, 3, 10, tzinfo=UTC), id=41)
    record = gap_record(last=last, started_at=NOW)
    assert record == {
        "run_id": 41,
        "finished_at": "2026-12-02T03:10:00+00:00",
        "seconds": (3 * 24 + 4) * 3600,
    }
    assert gap_line({KEY: record}) == LINE


def test_two_days_or_less_is_no_gap() -> None:
    last = run(RunStatus.COMPLETED, finished=NOW - timedelta(days=2), id=41)
    assert gap_record(last=last, started_at=NOW) is None


def test_no_completed_run_before_is_no_gap() -> None:
    assert gap_record(last=None, started_at=NOW) is None


def test_elapsed_time_is_said_in_days_and_hours() -> None:
    assert elapsed_words(86400 * 2 + 3600 + 59) == "2 days 1 hour"
    assert elapsed_words(86400 * 5) == "5 days"
    assert elapsed_words(86400 + 7200) == "1 day 2 hours"


def test_the_last_completed_run_counts_completed_with_errors_and_skips_failed_and_later(
    engine: Engine,
) -> None:
    older, with_errors, _failed, _running, _later = add_runs(
        engine,
        run(RunStatus.COMPLETED, finished=NOW - timedelta(days=6)),
        run(RunStatus.COMPLETED_WITH_ERRORS, finished=NOW - timedelta(days=4)),
        run(RunStatus.FAILED, finished=NOW - timedelta(days=1)),
        run(RunStatus.RUNNING, finished=None),
        run(RunStatus.COMPLETED, finished=NOW + timedelta(minutes=1)),
    )
    with Session(engine) as session:
        last = last_completed_run(session=session, before=NOW)
        assert last is not None and last.id == with_errors
        oldest = last_completed_run(session=session, before=NOW - timedelta(days=5))
        assert oldest is not None and oldest.id == older
        assert last_completed_run(session=session, before=NOW - timedelta(days=7)) is None


def test_a_run_starting_after_a_gap_keeps_it_in_its_counts_and_the_summary_shows_it(
    engine: Engine,
) -> None:
    (last_id,) = add_runs(engine, run(RunStatus.COMPLETED, finished=NOW - timedelta(days=3)))
    with Session(engine) as session:
        current = run(RunStatus.RUNNING, finished=None)
        current.started_at = NOW
        session.add(current)
        session.flush()
        line = record_gap(session=session, run=current)
        session.commit()
        current_id = current.id
    expected = (
        f"The last completed run finished 3 days ago (run {last_id}, "
        f"{NOW - timedelta(days=3):%Y-%m-%d %H:%M} UTC)."
    )
    assert line == expected
    with Session(engine) as session:
        assert session.get(ReconciliationRun, current_id).counts[KEY]["seconds"] == 3 * 86400  # type: ignore[union-attr]
        summary = build_summary(session=session, run_id=current_id)
    assert f"**No run completed for a while:** {expected}" in render_markdown(summary)
    assert render_json(summary)["run"]["last_completed"] == expected


def test_a_run_after_a_recent_completed_one_records_nothing(engine: Engine) -> None:
    add_runs(engine, run(RunStatus.COMPLETED, finished=NOW - timedelta(hours=30)))
    with Session(engine) as session:
        current = run(RunStatus.RUNNING, finished=None)
        current.started_at = NOW
        session.add(current)
        session.flush()
        assert record_gap(session=session, run=current) is None
        assert KEY not in current.counts
        summary = build_summary(session=session, run_id=current.id)
    assert "No run completed" not in render_markdown(summary)
    assert render_json(summary)["run"]["last_completed"] is None


def test_a_gap_is_alerted_first_even_when_nothing_else_is_new() -> None:
    current = run(RunStatus.COMPLETED, finished=NOW, id=42)
    seconds = (3 * 24 + 4) * 3600
    finished = "2026-12-02T03:10:00+00:00"
    current.counts = {KEY: {"run_id": 41, "finished_at": finished, "seconds": seconds}}
    message = build_alert(run=current, pending=[], failed=[])
    assert message is not None
    assert message.body.splitlines()[0] == LINE
    assert message.discrepancy_ids == ()


def test_without_a_gap_nothing_new_is_still_no_alert() -> None:
    assert (
        build_alert(run=run(RunStatus.COMPLETED, finished=NOW, id=42), pending=[], failed=[])
        is None
    )
