"""Reconciliation windows: UTC days `[start, end)`, never past today."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from models.errors import UserError


class BadWindow(UserError, ValueError):
    """A window that cannot be reconciled; its message is one sentence for the user."""


def utc_today() -> date:
    return datetime.now(UTC).date()


def nightly_window(*, today: date, lookback_days: int) -> tuple[date, date]:
    """The last `lookback_days` complete UTC days."""
    return today - timedelta(days=lookback_days), today


def check_window(
    *, start: date, end: date, today: date, start_name: str = "start", end_name: str = "end"
) -> tuple[date, date]:
    """Reject empty, reversed and future windows, each with one sentence.

    The sentence names the bounds as the caller calls them: a flow's parameters by default,
    the command line its flags (`start_name="--start"`).
    """
    if end < start:
        raise BadWindow(f"The window is reversed: {end_name} {end} is before {start_name} {start}.")
    if end == start:
        raise BadWindow(
            f"The window is empty: {end_name} {end} equals {start_name} {start} "
            "(the end is exclusive)."
        )
    if end > today:
        raise BadWindow(
            f"The window ends after today ({today}, UTC): the last complete day is "
            f"{today - timedelta(days=1)}, so {end_name} can be {today} at the latest."
        )
    return start, end
