from __future__ import annotations

from datetime import date

import pytest

from flows.windows import BadWindow, check_window, nightly_window

TODAY = date(2026, 11, 25)


def test_the_nightly_window_is_the_last_complete_days() -> None:
    assert nightly_window(today=TODAY, lookback_days=3) == (date(2026, 11, 22), TODAY)


def test_a_window_may_end_today() -> None:
    assert check_window(start=date(2026, 11, 1), end=TODAY, today=TODAY) == (
        date(2026, 11, 1),
        TODAY,
    )


@pytest.mark.parametrize(
    ("start", "end", "words"),
    [
        (date(2026, 11, 5), date(2026, 11, 1), "reversed"),
        (date(2026, 11, 5), date(2026, 11, 5), "empty"),
        (date(2026, 11, 5), date(2026, 11, 26), "ends after today"),
    ],
)
def test_bad_windows_are_refused_in_one_sentence(start: date, end: date, words: str) -> None:
    with pytest.raises(BadWindow, match=words) as raised:
        check_window(start=start, end=end, today=TODAY)
    message = str(raised.value)
    assert message.endswith(".")
    assert message.count(". ") == 0


def test_a_refusal_names_the_bounds_as_the_caller_calls_them() -> None:
    with pytest.raises(BadWindow) as raised:
        check_window(start=TODAY, end=TODAY, today=TODAY, start_name="--from", end_name="--to")
    assert str(raised.value).startswith("The window is empty: --to 2026-11-25 equals --from")
