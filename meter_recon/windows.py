"""Reconciliation windows: UTC days `[start, end)`, never past today."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from meter_recon.errors import UserError


class BadWindow(UserError, ValueError):
    """A window that cannot be reconciled; its message is one sentence for the user."""


def utc_today() -> date:
    return datetime.now(UTC).date()


def nightly_window(*, today: date, lookback_days: int) -> tuple[date, date]:
    """The last `lookback_days` complete UTC days."""
    return today - timedelta(days=lookback_days), today


def check_window(*, start: date, end: date, today: date) -> tuple[date, date]:
    """Reject empty, reversed and future windows, each with one sentence."""
    if end < start:
        raise BadWindow(f"The window is reversed: its end {end} is before its start {start}.")
    if end == start:
        raise BadWindow(
            f"The window is empty: its end {end} equals its start {start} (the end is exclusive)."
        )
    if end > today:
        raise BadWindow(
            f"The window ends after today ({today}, UTC): the last complete day is "
            f"{today - timedelta(days=1)}, so its end can be {today} at the latest."
        )
    return start, end
