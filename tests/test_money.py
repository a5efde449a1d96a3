"""Money as people read it: the currency's minor unit, half-even, thousands separated, the code."""

from __future__ import annotations

from decimal import Decimal

import pytest

from models.money import format_money


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        pytest.param("2.35278", "usd", "2.35 usd", id="cents-rounded-down"),
        pytest.param("2.355", "usd", "2.36 usd", id="tie-to-even-up"),
        pytest.param("2.345", "usd", "2.34 usd", id="tie-to-even-down"),
        pytest.param("12.5", "usd", "12.50 usd", id="padded-to-cents"),
        pytest.param("0", "usd", "0.00 usd", id="zero"),
        pytest.param("-1234.567", "eur", "-1,234.57 eur", id="negative-thousands"),
        pytest.param("-1234.565", "eur", "-1,234.56 eur", id="negative-tie-to-even"),
        pytest.param("-0.004", "usd", "0.00 usd", id="no-negative-zero"),
        pytest.param("4419.956", "jpy", "4,420 jpy", id="zero-decimal"),
        pytest.param("0.5", "jpy", "0 jpy", id="zero-decimal-tie-down"),
        pytest.param("1.5", "jpy", "2 jpy", id="zero-decimal-tie-up"),
        pytest.param("-3600", "krw", "-3,600 krw", id="zero-decimal-negative"),
        pytest.param("2.5", "kwd", "2.500 kwd", id="three-decimal-padded"),
        pytest.param("1.0005", "bhd", "1.000 bhd", id="three-decimal-tie-to-even"),
        pytest.param("1234.0015", "kwd", "1,234.002 kwd", id="three-decimal-tie-up"),
        pytest.param("1E+3", "usd", "1,000.00 usd", id="exponent-notation"),
        pytest.param(
            "123456789012345678901234567890.125",
            "usd",
            "123,456,789,012,345,678,901,234,567,890.12 usd",
            id="more-digits-than-the-context",
        ),
        pytest.param("4419.956", "JPY", "4,420 jpy", id="uppercase-code"),
        pytest.param("7", "KWD", "7.000 kwd", id="uppercase-three-decimal"),
    ],
)
def test_an_amount_is_shown_in_the_currency_minor_unit(
    amount: str, currency: str, text: str
) -> None:
    assert format_money(Decimal(amount), currency) == text


@pytest.mark.parametrize("amount", ["NaN", "Infinity", "-Infinity"])
def test_a_non_finite_amount_is_not_money(amount: str) -> None:
    with pytest.raises(ValueError, match="as money"):
        format_money(Decimal(amount), "usd")
