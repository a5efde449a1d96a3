"""What a discrepancy is worth: Stripe's quantity and the ledger's, priced in money.

Pure: no I/O, no Prefect, no clock, no database. The amount is a function of the
quantities and the price alone, so a price that changes re-values a row and nothing
else moves. The rules are docs/comparison.md's "Valuation rules"; where it is silent the rule is
written on the function that applies it.

Every product, sum and difference is computed in a local context wide enough to be
exact (``EXACT``, as in ``tasks.compare``); the one rounding is the last step, half-even
to ``PLACES`` decimal places of the currency's major unit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import (
    Decimal,
    Inexact,
    InvalidOperation,
    localcontext,
)
from typing import Any, Protocol

from models.canonical import EXACT, EXACT_DIGITS
from models.enums import DiscrepancyKind, Valuation
from models.money import currency_exponent

__all__ = [
    "NOT_VALUED",
    "PLACES",
    "LedgerLine",
    "LedgerPrice",
    "Price",
    "Tier",
    "UnsupportedPrice",
    "Valued",
    "charge",
    "currency_exponent",
    "ledger_price_for_unbilled",
    "ledger_price_of",
    "price_from_stripe",
    "price_to_stripe",
    "value_discrepancy",
]


#: Decimal places of the major unit an amount at stake is rounded to (half-even).
PLACES = 6


_ZERO = Decimal(0)

PER_UNIT = "per_unit"
TIERED = "tiered"
VOLUME = "volume"
GRADUATED = "graduated"
UP = "up"
DOWN = "down"

_BILLING_SCHEMES = (PER_UNIT, TIERED)
_TIERS_MODES = (VOLUME, GRADUATED)
_ROUNDS = (UP, DOWN)

_CURRENCY = re.compile(r"[a-z]{3}")
_DECIMAL_TEXT = re.compile(r"[0-9]+(\.[0-9]+)?")


class UnsupportedPrice(ValueError):
    """A Stripe price whose billing is not understood: its discrepancies are not valued."""


def _is_amount(value: object) -> bool:
    return isinstance(value, Decimal) and value.is_finite() and value >= 0


@dataclass(frozen=True, slots=True)
class Tier:
    """A tier of a tiered price: quantities up to ``up_to`` (``None``: no bound), in minor units."""

    up_to: Decimal | None
    unit_amount: Decimal
    flat_amount: Decimal


@dataclass(frozen=True, slots=True)
class Price:
    """A Stripe price, as much of it as the charge for a quantity needs (amounts in minor units).

    ``per_unit`` prices have ``unit_amount`` and no tiers, and may transform the quantity
    (``divide_by`` with ``round`` up or down); ``tiered`` prices have ``tiers_mode`` and
    tiers, the last one unbounded, and no transform (Stripe does not combine the two).
    Constructing one that breaks these rules raises ``UnsupportedPrice``; ``currency`` is
    kept lowercased.
    """

    id: str
    currency: str
    billing_scheme: str
    unit_amount: Decimal | None
    tiers_mode: str | None
    tiers: tuple[Tier, ...]
    divide_by: int | None
    round: str | None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise UnsupportedPrice(f"A Stripe price has no id (got {self.id!r}).")
        name = f"Stripe price {self.id!r}"
        currency = self.currency.lower() if isinstance(self.currency, str) else ""
        if not _CURRENCY.fullmatch(currency):
            raise UnsupportedPrice(
                f"{name} has currency {self.currency!r}, not a three-letter currency code."
            )
        object.__setattr__(self, "currency", currency)
        if self.billing_scheme == PER_UNIT:
            _check_per_unit(self, name)
        elif self.billing_scheme == TIERED:
            _check_tiered(self, name)
        else:
            raise UnsupportedPrice(
                f"{name} has billing_scheme {self.billing_scheme!r}, which is not understood "
                f"(only {PER_UNIT} and {TIERED} are)."
            )


def _check_per_unit(price: Price, name: str) -> None:
    if not _is_amount(price.unit_amount):
        raise UnsupportedPrice(
            f"{name} has unit amount {price.unit_amount!r}, not a non-negative decimal."
        )
    if price.tiers_mode is not None or price.tiers:
        raise UnsupportedPrice(f"{name} is per_unit but has tiers, which is not understood.")
    if (price.divide_by is None) != (price.round is None):
        raise UnsupportedPrice(
            f"{name} transforms its quantity with divide_by {price.divide_by!r} and round "
            f"{price.round!r}; both or neither are needed."
        )
    if price.divide_by is not None and (type(price.divide_by) is not int or price.divide_by < 1):
        raise UnsupportedPrice(
            f"{name} divides its quantity by {price.divide_by!r}, not a positive integer."
        )
    if price.round is not None and price.round not in _ROUNDS:
        raise UnsupportedPrice(
            f"{name} rounds its transformed quantity {price.round!r}, which is not understood "
            f"(only {UP} and {DOWN} are)."
        )


def _check_tiered(price: Price, name: str) -> None:
    if price.tiers_mode not in _TIERS_MODES:
        raise UnsupportedPrice(
            f"{name} has tiers_mode {price.tiers_mode!r}, which is not understood "
            f"(only {VOLUME} and {GRADUATED} are)."
        )
    if price.unit_amount is not None:
        raise UnsupportedPrice(f"{name} is tiered but has a unit amount, which is not understood.")
    if price.divide_by is not None or price.round is not None:
        raise UnsupportedPrice(
            f"{name} is tiered and transforms its quantity, which Stripe does not combine."
        )
    if not price.tiers:
        raise UnsupportedPrice(f"{name} is tiered but has no tiers (were they expanded?).")
    lower = _ZERO
    for index, tier in enumerate(price.tiers, start=1):
        if not isinstance(tier, Tier):
            raise UnsupportedPrice(f"{name} has tier {index} of type {type(tier).__name__}.")
        if not (_is_amount(tier.unit_amount) and _is_amount(tier.flat_amount)):
            raise UnsupportedPrice(
                f"{name} has tier {index} with amounts {tier.unit_amount!r} and "
                f"{tier.flat_amount!r}, not non-negative decimals."
            )
        last = index == len(price.tiers)
        if tier.up_to is None:
            if not last:
                raise UnsupportedPrice(
                    f"{name} has an unbounded tier {index} before its last tier."
                )
            continue
        up_to = tier.up_to
        if not (isinstance(up_to, Decimal) and up_to.is_finite() and up_to > 0) or (
            up_to != up_to.to_integral_value()
        ):
            raise UnsupportedPrice(
                f"{name} has tier {index} up to {up_to!r}, not a positive integer."
            )
        if last:
            raise UnsupportedPrice(
                f"{name} has tiers that end at {tier.up_to}, not with an unbounded tier."
            )
        if tier.up_to <= lower:
            raise UnsupportedPrice(
                f"{name} has tier {index} up to {tier.up_to}, not above the tier before it "
                f"({lower})."
            )
        lower = tier.up_to


# --- Stripe's price object ------------------------------------------------------------


def _number(name: str, field: str, value: object) -> Decimal:
    """A JSON number (``Decimal``, ``int`` or decimal string) as an exact ``Decimal``."""
    if isinstance(value, bool):
        number = None
    elif isinstance(value, Decimal):
        number = value
    elif isinstance(value, int) or (isinstance(value, str) and _DECIMAL_TEXT.fullmatch(value)):
        number = Decimal(value)
    else:
        number = None
    if number is None or not _is_amount(number):
        raise UnsupportedPrice(f"{name} has {field} {value!r}, not a non-negative decimal.")
    return number


def _amount(name: str, obj: Mapping[str, Any], field: str, where: str = "") -> Decimal:
    """``{field}_decimal``, else the integer ``field``, else 0 (a null amount is 0)."""
    for key in (f"{field}_decimal", field):
        value = obj.get(key)
        if value is not None:
            return _number(name, f"{where}{key}", value)
    return _ZERO


def _whole(name: str, field: str, value: object) -> int:
    """A positive JSON integer (``int``, integral ``Decimal`` or digits)."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        number = None
    elif isinstance(value, str):
        number = Decimal(value) if _DECIMAL_TEXT.fullmatch(value) else None
    else:
        number = Decimal(value)
    if (
        number is None
        or not number.is_finite()
        or number < 1
        or number != number.to_integral_value()
    ):
        raise UnsupportedPrice(f"{name} has {field} {value!r}, not a positive integer.")
    return int(number)


def _tier(name: str, index: int, raw: object) -> Tier:
    if not isinstance(raw, Mapping):
        raise UnsupportedPrice(f"{name} has tier {index} of type {type(raw).__name__}.")
    up_to = raw.get("up_to")
    return Tier(
        up_to=None if up_to is None else Decimal(_whole(name, f"tier {index} up_to", up_to)),
        unit_amount=_amount(name, raw, "unit_amount", f"tier {index} "),
        flat_amount=_amount(name, raw, "flat_amount", f"tier {index} "),
    )


def _transform(name: str, raw: object) -> tuple[int | None, str | None]:
    if raw is None:
        return None, None
    if not isinstance(raw, Mapping):
        raise UnsupportedPrice(f"{name} has transform_quantity {raw!r}, not an object.")
    rounding = raw.get("round")
    if rounding not in _ROUNDS:
        raise UnsupportedPrice(
            f"{name} rounds its transformed quantity {rounding!r}, which is not understood "
            f"(only {UP} and {DOWN} are)."
        )
    return _whole(name, "transform_quantity.divide_by", raw.get("divide_by")), str(rounding)


def price_from_stripe(obj: Mapping[str, Any]) -> Price:
    """The ``Price`` of a Stripe price object (JSON numbers as ``Decimal``, ``int`` or text).

    Raises ``UnsupportedPrice`` (one sentence naming the price) for a billing scheme,
    tiers mode, tier shape, transform or amount that is not understood; the caller logs
    it with the pair and leaves the pair's discrepancies not valued.
    """
    price_id = obj.get("id")
    if not isinstance(price_id, str) or not price_id:
        raise UnsupportedPrice(f"A Stripe price has no id (got {price_id!r}).")
    name = f"Stripe price {price_id!r}"
    currency = obj.get("currency")
    if not isinstance(currency, str):
        raise UnsupportedPrice(f"{name} has currency {currency!r}, not a currency code.")
    scheme = obj.get("billing_scheme")
    if scheme not in _BILLING_SCHEMES:
        raise UnsupportedPrice(
            f"{name} has billing_scheme {scheme!r}, which is not understood "
            f"(only {PER_UNIT} and {TIERED} are)."
        )
    divide_by, rounding = _transform(name, obj.get("transform_quantity"))
    raw_tiers = obj.get("tiers")
    if scheme == TIERED:
        if not isinstance(raw_tiers, list | tuple):
            raise UnsupportedPrice(f"{name} is tiered but has no tiers (were they expanded?).")
        tiers = tuple(_tier(name, index, raw) for index, raw in enumerate(raw_tiers, start=1))
        unit_amount = None
        if obj.get("unit_amount_decimal") is not None or obj.get("unit_amount") is not None:
            raise UnsupportedPrice(
                f"{name} is tiered but has a unit amount, which is not understood."
            )
    else:
        if raw_tiers:
            raise UnsupportedPrice(f"{name} is {scheme} but has tiers, which is not understood.")
        tiers = ()
        unit_amount = _amount(name, obj, "unit_amount")
    return Price(
        id=price_id,
        currency=currency,
        billing_scheme=scheme,
        unit_amount=unit_amount,
        tiers_mode=obj.get("tiers_mode"),
        tiers=tiers,
        divide_by=divide_by,
        round=rounding,
    )


def _text(value: Decimal) -> str:
    """An amount as an exact decimal string (no exponent), as Stripe writes ``*_decimal``.

    Amounts are never negative; ``copy_abs`` only turns a negative zero into ``0``."""
    return format(value.copy_abs(), "f")


def price_to_stripe(price: Price) -> dict[str, Any]:
    """The price as a JSON-safe Stripe price object (decimal strings), the inverse of
    ``price_from_stripe``: what the price cache stores and rebuilds the price from."""
    transform = (
        None if price.divide_by is None else {"divide_by": price.divide_by, "round": price.round}
    )
    tiers = (
        None
        if price.billing_scheme != TIERED
        else [
            {
                "up_to": None if tier.up_to is None else int(tier.up_to),
                "unit_amount_decimal": _text(tier.unit_amount),
                "flat_amount_decimal": _text(tier.flat_amount),
            }
            for tier in price.tiers
        ]
    )
    return {
        "id": price.id,
        "currency": price.currency,
        "billing_scheme": price.billing_scheme,
        "unit_amount_decimal": None if price.unit_amount is None else _text(price.unit_amount),
        "tiers_mode": price.tiers_mode,
        "tiers": tiers,
        "transform_quantity": transform,
    }


# --- Stripe's charge ------------------------------------------------------------------


def _require_decimal(value: object, name: str) -> Decimal:
    if not isinstance(value, Decimal):
        raise TypeError(f"{name} must be a Decimal, got {type(value).__name__}.")
    if not value.is_finite():
        raise ValueError(f"{name} must be a finite number, got {value}.")
    return value


def _exactly(what: str) -> ValueError:
    return ValueError(f"{what} needs more than {EXACT_DIGITS} significant digits to be exact.")


def charge(price: Price, quantity: Decimal) -> Decimal:
    """``V(q)``: what Stripe charges for ``quantity`` at ``price``, in minor units, exact.

    A quantity of 0 or less is charged 0 (Stripe bills a negative period total as 0).
    """
    _require_decimal(quantity, "quantity")
    try:
        with localcontext(EXACT):
            return _charge(price, quantity)
    except (Inexact, InvalidOperation) as exc:
        raise _exactly(f"The charge of {quantity} at {price.id}") from exc


def _charge(price: Price, quantity: Decimal) -> Decimal:
    """``charge`` without entering a context: the caller is inside ``EXACT``."""
    if quantity <= 0:
        return _ZERO
    if price.billing_scheme == PER_UNIT:
        assert price.unit_amount is not None  # Price guarantees it for per_unit
        units = quantity
        if price.divide_by is not None:
            units, rest = divmod(quantity, Decimal(price.divide_by))  # q > 0: a floor
            if rest and price.round == UP:
                units += 1
        return units * price.unit_amount
    if price.tiers_mode == VOLUME:
        tier = next(t for t in price.tiers if t.up_to is None or quantity <= t.up_to)
        return quantity * tier.unit_amount + tier.flat_amount
    total = _ZERO
    lower = _ZERO
    for tier in price.tiers:  # graduated: each tier charges the units inside its range
        if quantity <= lower:
            break
        upper = quantity if tier.up_to is None else min(quantity, tier.up_to)
        total += (upper - lower) * tier.unit_amount + tier.flat_amount
        lower = upper
    return total


def _rounded(numerator: Decimal, denominator: Decimal) -> Decimal:
    """``numerator / denominator`` rounded half-even to ``PLACES`` places: the one rounding.

    Inside ``EXACT``: the quotient is found by integer division of the scaled numerator,
    so the exact remainder decides the rounding (no intermediate quotient is rounded).
    """
    whole, rest = divmod(numerator.scaleb(PLACES), denominator)  # truncates toward 0
    twice, size = abs(rest) * 2, abs(denominator)
    if twice > size or (twice == size and whole % 2):
        whole += 1 if (numerator < 0) == (denominator < 0) else -1
    return abs(whole).scaleb(-PLACES) if not whole else whole.scaleb(-PLACES)


# --- The ledger's price ---------------------------------------------------------------


class LedgerLine(Protocol):
    """What valuation reads of a ledger line item (``InvoiceLineItem`` has it all)."""

    @property
    def id(self) -> str: ...
    @property
    def period_end(self) -> date: ...
    @property
    def quantity(self) -> Decimal: ...
    @property
    def amount(self) -> Decimal | None: ...
    @property
    def currency(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class LedgerPrice:
    """One line item's own price: ``amount`` for ``quantity`` units.

    ``amount`` is in the line item's ``currency`` and already in its major unit (the
    ledger's amounts are not Stripe's minor units); the unit price is
    ``amount / quantity``, so ``quantity`` is never zero. ``currency`` is kept lowercased.
    """

    amount: Decimal
    quantity: Decimal
    currency: str

    def __post_init__(self) -> None:
        _require_decimal(self.amount, "ledger amount")
        if not _require_decimal(self.quantity, "ledger quantity"):
            raise ValueError("A ledger price needs a non-zero quantity (its unit price divides).")
        currency = self.currency.lower() if isinstance(self.currency, str) else ""
        if not _CURRENCY.fullmatch(currency):
            raise ValueError(
                f"A ledger price needs a three-letter currency code, got {self.currency!r}."
            )
        object.__setattr__(self, "currency", currency)


def ledger_price_of(item: LedgerLine) -> LedgerPrice | None:
    """The line item's own price, or ``None`` when it lacks an amount, a currency (three
    letters) or a non-zero quantity."""
    amount, currency, quantity = item.amount, item.currency, item.quantity
    if amount is None or not amount.is_finite() or not isinstance(currency, str):
        return None
    if not _CURRENCY.fullmatch(currency.lower()) or not quantity.is_finite() or not quantity:
        return None
    return LedgerPrice(amount=amount, quantity=quantity, currency=currency)


def ledger_price_for_unbilled(items: Iterable[LedgerLine]) -> LedgerPrice | None:
    """The price of a pair's unbilled days: that of its line item with the latest
    ``period_end`` among those with an amount, a currency and a non-zero quantity.

    Two such items ending on the same day are told apart by the greater id, so the answer
    does not depend on the order the items come in.
    """
    priced = [
        (item.period_end, item.id, price)
        for item in items
        if (price := ledger_price_of(item)) is not None
    ]
    if not priced:
        return None
    return max(priced, key=lambda entry: (entry[0], entry[1]))[2]


# --- A discrepancy's amount at stake ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Valued:
    """A discrepancy's ``amount_at_stake`` (major unit of ``currency``) and how it was priced;
    all three ``None`` when it is not valued."""

    amount_at_stake: Decimal | None
    currency: str | None
    valuation: Valuation | None


NOT_VALUED = Valued(None, None, None)


def value_discrepancy(
    *,
    kind: DiscrepancyKind,
    stripe_quantity: Decimal,
    internal_quantity: Decimal | None,
    price: Price | None,
    ledger_price: LedgerPrice | None,
) -> Valued:
    """What Stripe's quantity is worth minus what the ledger's is worth (positive: usage
    not billed; negative: billed beyond usage).

    ``price`` is the pair's Stripe price and takes precedence; ``ledger_price`` is the
    discrepancy's line item's (for ``unbilled_usage``, ``ledger_price_for_unbilled``'s).
    ``quantity_mismatch`` and ``missing_in_stripe`` value ``S`` against ``I``;
    ``unbilled_usage`` values the day's ``S`` against 0 (``internal_quantity`` is 0 or
    ``None``); ``overlapping_line_items`` is valued ``-(S x unit price)`` with a
    ``per_unit`` Stripe price without a transform, or with the ledger price when there is
    no Stripe price; with any other Stripe price it is not valued (a tiered or transformed
    price has no one unit price, and the Stripe price is the one that bills).
    """
    kind = DiscrepancyKind(kind)
    stripe = _require_decimal(stripe_quantity, "stripe_quantity")
    internal: Decimal | None
    if kind is DiscrepancyKind.OVERLAPPING_LINE_ITEMS:
        internal = None
    elif kind is DiscrepancyKind.UNBILLED_USAGE:
        billed = internal_quantity
        if billed is not None and _require_decimal(billed, "internal_quantity"):
            raise ValueError(
                f"An unbilled_usage discrepancy bills nothing, got internal quantity "
                f"{internal_quantity}."
            )
        internal = _ZERO
    else:
        if internal_quantity is None:
            raise ValueError(f"A {kind} discrepancy needs its internal quantity.")
        internal = _require_decimal(internal_quantity, "internal_quantity")
    try:
        with localcontext(EXACT):
            return _value(stripe, internal, price, ledger_price)
    except (Inexact, InvalidOperation) as exc:
        raise _exactly(f"The amount at stake of a {kind} discrepancy") from exc


def _value(
    stripe: Decimal,
    internal: Decimal | None,
    price: Price | None,
    ledger_price: LedgerPrice | None,
) -> Valued:
    """``value_discrepancy`` inside ``EXACT``; ``internal`` is ``None`` for an overlap."""
    if price is not None:
        minor_unit = Decimal(10) ** currency_exponent(price.currency)
        if internal is not None:
            stake = _charge(price, stripe) - _charge(price, internal)
        elif price.billing_scheme == PER_UNIT and price.divide_by is None:
            assert price.unit_amount is not None  # Price guarantees it for per_unit
            stake = -(stripe * price.unit_amount)
        else:
            return NOT_VALUED
        return Valued(_rounded(stake, minor_unit), price.currency, Valuation.STRIPE_PRICE)
    if ledger_price is not None:
        gap = -stripe if internal is None else stripe - internal
        return Valued(
            _rounded(gap * ledger_price.amount, ledger_price.quantity),
            ledger_price.currency,
            Valuation.LEDGER_PRICE,
        )
    return NOT_VALUED
