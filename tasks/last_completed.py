"""A nightly run that never happened (a process killed outright runs no hook, a worker that
is down starts nothing) is told by the next run that starts: how long since one completed."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session

from models.runs import last_completed_run
from models.tables import ReconciliationRun

GAP = timedelta(days=2)  # nightly runs: more than two days without one completing is news
KEY = "last_completed"  # where the run's counts keep the gap


def gap_record(*, last: ReconciliationRun | None, started_at: datetime) -> dict[str, Any] | None:
    """What the run's counts keep when the last completed run finished over `GAP` before it."""
    if last is None or last.finished_at is None:
        return None
    elapsed = started_at - last.finished_at
    if elapsed <= GAP:
        return None
    return {
        "run_id": last.id,
        "finished_at": last.finished_at.isoformat(),
        "seconds": int(elapsed.total_seconds()),
    }


def record_gap(*, session: Session, run: ReconciliationRun) -> str | None:
    """Keep in `run.counts` how long ago the last completed run finished, when over `GAP`;
    returns the line that tells it (None: no gap)."""
    last = last_completed_run(session=session, before=run.started_at)
    gap = gap_record(last=last, started_at=run.started_at)
    if gap is not None:
        run.counts = {**run.counts, KEY: gap}
        session.add(run)
        session.flush()
    return gap_line(run.counts)


def _plural(count: int, unit: str) -> str:
    return f"{count} {unit}{'' if count == 1 else 's'}"


def elapsed_words(seconds: int) -> str:
    """`3 days 4 hours`: days and hours, the precision a missed nightly run needs."""
    days, rest = divmod(seconds, 86400)
    hours = rest // 3600
    words = [_plural(days, "day")] if days else []
    if hours or not days:
        words.append(_plural(hours, "hour"))
    return " ".join(words)


def gap_line(counts: dict[str, Any]) -> str | None:
    """One line for the summary and the alert, or None when no gap was recorded."""
    gap = counts.get(KEY)
    if not gap:
        return None
    finished = datetime.fromisoformat(gap["finished_at"])
    return (
        f"The last completed run finished {elapsed_words(int(gap['seconds']))} ago "
        f"(run {gap['run_id']}, {finished:%Y-%m-%d %H:%M} UTC)."
    )
