"""The bench's marginal cost per request, read off arrival times."""

from __future__ import annotations

import pytest

from bench.steady import idle_seconds, seconds_per_request


def test_steady_arrivals_give_their_spacing_whatever_the_ramp_and_tail() -> None:
    ramp = [0.0, 0.5, 0.9]  # a slow start
    steady = [1.0 + 0.01 * n for n in range(1_000)]  # 100 a second
    tail = [20.0, 25.0]  # stragglers
    assert seconds_per_request(ramp + steady + tail) == pytest.approx(0.01)


def test_order_does_not_matter() -> None:
    arrivals = [0.02 * n for n in range(100)]
    assert seconds_per_request(list(reversed(arrivals))) == pytest.approx(0.02)


def test_too_few_arrivals_tell_nothing() -> None:
    assert seconds_per_request([0.0, 1.0, 2.0]) is None


def test_stalls_are_the_gaps_of_more_than_half_a_second() -> None:
    arrivals = [0.0, 0.1, 0.2, 1.2, 1.3, 4.3, 4.4]  # stalls of 1.0 s and 3.0 s
    assert idle_seconds(arrivals) == pytest.approx((4.0, 2))
    assert idle_seconds([0.0, 0.4, 0.8]) == (0.0, 0)
