"""The re-open rule is written twice: in SQL (what the database stores, so racing runs agree)
and in Python (what the run counts and alerts about). One test runs both over every row of
docs/comparison.md's lifecycle table, on every database, so the two cannot drift apart; another
reads that table from the page, so the page and these rows cannot drift apart either.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from models.tables import Discrepancy, DiscrepancyStatus
from tasks.compare import PairComparison
from tasks.record import RecordOutcome
from tests.builders import comparison, days, item, new_run
from tests.builders import record_comparison as record

OPEN, ACKNOWLEDGED, RESOLVED = (
    DiscrepancyStatus.OPEN,
    DiscrepancyStatus.ACKNOWLEDGED,
    DiscrepancyStatus.RESOLVED,
)
ALERTED_AT = datetime.fromisoformat("2026-11-02T08:00:00+00:00")
PAGE = Path(__file__).resolve().parents[1] / "docs" / "comparison.md"

# The difference as first recorded (Stripe 7, ledger 5), seen again with other numbers
# (Stripe 8), and gone (Stripe 5: the line item matches).
FIRST = comparison(days({"2026-11-01": "7"}), item("li_1", "2026-11-01", "2026-11-02", "5"))
OTHER_NUMBERS = comparison(days({"2026-11-01": "8"}), item("li_1", "2026-11-01", "2026-11-02", "5"))
GONE = comparison(days({"2026-11-01": "5"}), item("li_1", "2026-11-01", "2026-11-02", "5"))


@dataclass(frozen=True)
class Row:
    """One row of docs/comparison.md's lifecycle table, and how the run counts it."""

    sees: str
    before: DiscrepancyStatus | None
    result: PairComparison
    after: DiscrepancyStatus
    counted_as: str
    reopens: bool


LIFECYCLE = [
    Row("a new difference", None, FIRST, OPEN, "new", reopens=False),
    Row("the same difference again", OPEN, FIRST, OPEN, "unchanged", reopens=False),
    Row("the same difference again, numbers updated", OPEN, OTHER_NUMBERS, OPEN, "updated", False),
    Row("it no longer holds", OPEN, GONE, RESOLVED, "resolved", reopens=False),
    Row("it no longer holds", ACKNOWLEDGED, GONE, RESOLVED, "resolved", reopens=False),
    Row("it holds again", RESOLVED, FIRST, OPEN, "reopened", reopens=True),
    Row("it holds again, with other numbers", RESOLVED, OTHER_NUMBERS, OPEN, "reopened", True),
    Row("it holds with other numbers", ACKNOWLEDGED, OTHER_NUMBERS, OPEN, "reopened", True),
    Row("it holds with the same numbers", ACKNOWLEDGED, FIRST, ACKNOWLEDGED, "unchanged", False),
]


def put_in_state(engine: Engine, status: DiscrepancyStatus, *, run_id: int) -> None:
    """The stored discrepancy as finance left it: alerted, and in `status`."""
    with Session(engine) as session:
        row = session.exec(select(Discrepancy)).one()
        row.status = status
        row.alerted_at = ALERTED_AT
        row.resolved_run = run_id if status is RESOLVED else None
        session.add(row)
        session.commit()


def stored(engine: Engine) -> Discrepancy:
    with Session(engine) as session:
        return session.exec(select(Discrepancy)).one()


@pytest.mark.parametrize("row", LIFECYCLE, ids=lambda r: f"{r.before or 'none'}: {r.sees}")
def test_the_database_and_the_counts_follow_the_lifecycle_table(engine: Engine, row: Row) -> None:
    first, second = new_run(engine), new_run(engine)
    if row.before is not None:
        record(engine, first, FIRST)
        put_in_state(engine, row.before, run_id=first)

    outcome = record(engine, second, row.result)
    after = stored(engine)

    assert after.status is row.after  # the SQL rule
    assert outcome == RecordOutcome(**{row.counted_as: 1})  # the Python rule
    reopened_by_sql = row.before in (RESOLVED, ACKNOWLEDGED) and after.status is OPEN
    reopened_by_python = outcome.reopened == 1
    assert reopened_by_sql is reopened_by_python is row.reopens
    if row.before is None or row.reopens:
        assert after.alerted_at is None  # to be alerted (again)
        assert after.resolved_run is None
    else:
        assert after.alerted_at == ALERTED_AT  # not alerted again
    if row.after is RESOLVED:
        assert after.resolved_run == second
    else:
        assert after.last_seen_run == second


def documented_transitions() -> set[tuple[str, DiscrepancyStatus | None, DiscrepancyStatus]]:
    """(what the run sees, before, after) for each status a row of the page's table names."""
    text = PAGE.read_text(encoding="utf-8")
    section = text.split("\n## Lifecycle\n", 1)[1].split("\n## ", 1)[0]
    found = set()
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] in ("what the run sees", "---"):
            continue
        sees = re.sub(r"\s*\(.*\)", "", cells[0])
        befores = [DiscrepancyStatus(w) for w in re.findall(r"[a-z]+", cells[1])] or [None]
        after = DiscrepancyStatus(re.findall(r"open|acknowledged|resolved", cells[2])[0])
        found |= {(sees, before, after) for before in befores}
    return found


def test_every_row_of_the_pages_lifecycle_table_is_run_here() -> None:
    documented = documented_transitions()
    run_here = {(r.sees, r.before, r.after) for r in LIFECYCLE}
    assert documented, "docs/comparison.md has no lifecycle table under '## Lifecycle'"
    for sees, before, after in documented:
        assert any(s.startswith(sees) and b == before and a == after for s, b, a in run_here), (
            f"the page's row {sees!r} ({before} -> {after}) is not one of LIFECYCLE"
        )
    assert {(b, a) for _, b, a in run_here} == {(b, a) for _, b, a in documented}
