"""Money facts shared by every floor: exact decimals from Stripe's JSON (numbers go straight
from text to `Decimal`) and each currency's minor unit, as Stripe counts it."""

from __future__ import annotations

import json
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation, localcontext
from typing import Any


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite JSON number {name!r}")


def loads_exact(text: str | bytes) -> Any:
    """Parse JSON with every non-integer number as an exact `Decimal` (integers stay `int`).

    `NaN` / `Infinity` are rejected: they are not JSON, and never a quantity.
    """
    return json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)


def to_decimal(value: object) -> Decimal:
    """A finite `Decimal` from an `int`, a `Decimal` or decimal text; never from a float."""
    if isinstance(value, bool):
        raise ValueError(f"not a decimal number: {value!r}")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"not a decimal number: {value!r}") from None
    else:
        raise ValueError(f"not a decimal number: {value!r}")
    if not result.is_finite():
        raise ValueError(f"not a finite decimal number: {value!r}")
    return result


def decimal_to_json(value: Decimal) -> str:
    """The JSON number text of a finite `Decimal`, exactly (`12.5` stays `12.5`)."""
    if not value.is_finite():
        raise ValueError(f"cannot write {value!r} as a JSON number")
    text = str(value)
    if "E" in text or "e" in text:
        text = format(value, "f")
    return text


#: Stripe's zero-decimal currencies: an amount of 1 is one whole unit.
ZERO_DECIMAL_CURRENCIES = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd"}
    | {"vuv", "xaf", "xof", "xpf"}
)
#: Stripe's three-decimal currencies: an amount of 1000 is one whole unit.
THREE_DECIMAL_CURRENCIES = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})


def currency_exponent(currency: str) -> int:
    """Decimal places of the currency's minor unit, as Stripe counts them (0, 3, else 2)."""
    code = currency.lower()
    if code in ZERO_DECIMAL_CURRENCIES:
        return 0
    if code in THREE_DECIMAL_CURRENCIES:
        return 3
    return 2


def format_money(amount: Decimal, currency: str) -> str:
    """An amount as a person reads it on an invoice: the currency's minor unit, rounded
    half-even, thousands separated, the lowercase code after it (`-1,234.57 eur`)."""
    if not amount.is_finite():
        raise ValueError(f"cannot show {amount!r} as money")
    places = currency_exponent(currency)
    with localcontext() as context:
        # Enough digits for any amount: quantize never fails for want of precision.
        context.prec = max(context.prec, amount.adjusted() + places + 2)
        rounded = amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
    if rounded.is_zero():
        rounded = rounded.copy_abs()  # -0.004 usd rounds to 0.00 usd, not -0.00
    return f"{rounded:,f} {currency.lower()}"
