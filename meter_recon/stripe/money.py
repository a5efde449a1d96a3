"""Exact decimal handling for Stripe's JSON: numbers go straight from text to `Decimal`."""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
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
