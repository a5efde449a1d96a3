"""The simulator's billing side: prices and subscriptions, as the data file gives them.

Records hold exactly what the data file says (amounts as `Decimal`, in the currency's minor
unit); the wire module turns them into full Stripe objects. Validation happens here, once, so
that a bad entry is refused with one sentence naming it, before the server starts.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

BILLING_SCHEMES = ("per_unit", "tiered")
TIERS_MODES = ("graduated", "volume")
ROUNDINGS = ("down", "up")
USAGE_TYPES = ("licensed", "metered")
SUBSCRIPTION_STATUSES = (
    "active",
    "canceled",
    "incomplete",
    "incomplete_expired",
    "past_due",
    "paused",
    "trialing",
    "unpaid",
)
# Stripe accepts at most 12 decimal places in a `*_decimal` amount.
MAX_AMOUNT_PLACES = 12
DEFAULT_PRICE_CREATED = 1_735_689_600  # 2025-01-01T00:00:00Z; price i is created i seconds later
# Stripe inlines a subscription's first items; the rest are paged from /v1/subscription_items.
INLINE_ITEMS = 10

PRICE_KEYS = frozenset(
    {
        "id",
        "currency",
        "meter",
        "billing_scheme",
        "unit_amount_decimal",
        "tiers_mode",
        "tiers",
        "transform_quantity",
        "usage_type",
        "active",
        "created",
        "product",
        "nickname",
        "lookup_key",
    }
)
TIER_KEYS = frozenset({"up_to", "unit_amount_decimal", "flat_amount_decimal"})
SUBSCRIPTION_KEYS = frozenset(
    {"id", "customer", "status", "created", "items", "ended_at", "canceled_at"}
)
ITEM_KEYS = frozenset(
    {"id", "price", "current_period_start", "current_period_end", "quantity", "created"}
)
ADJUSTMENT_KEYS = frozenset({"event_name", "identifier"})


class SimulatorDataError(ValueError):
    """The data file (or a meter, event, price, subscription or adjustment) is not valid."""


@dataclass(frozen=True, slots=True)
class Tier:
    """One price tier; `up_to` None is the last, open-ended tier (Stripe's `inf`)."""

    up_to: int | None
    unit_amount_decimal: Decimal | None
    flat_amount_decimal: Decimal | None


@dataclass(frozen=True, slots=True)
class TransformQuantity:
    divide_by: int
    round: str


@dataclass(frozen=True, slots=True)
class PriceRecord:
    """A recurring price as the simulator serves it."""

    id: str
    currency: str
    meter: str | None
    usage_type: str
    billing_scheme: str
    unit_amount_decimal: Decimal | None
    tiers_mode: str | None
    tiers: tuple[Tier, ...]
    transform_quantity: TransformQuantity | None
    active: bool
    created: int
    product: str
    nickname: str | None
    lookup_key: str | None


@dataclass(frozen=True, slots=True)
class ItemRecord:
    """One subscription item: a price billed from `current_period_start` to `_end`."""

    id: str
    subscription: str
    price: PriceRecord
    current_period_start: int
    current_period_end: int
    quantity: int | None
    created: int


@dataclass(frozen=True, slots=True)
class SubscriptionRecord:
    """A subscription and its items, in the data file's order."""

    id: str
    customer: str
    status: str
    created: int
    items: tuple[ItemRecord, ...]
    ended_at: int | None
    canceled_at: int | None

    @property
    def currency(self) -> str:
        return self.items[0].price.currency


@dataclass(frozen=True, slots=True)
class AdjustmentRecord:
    """A cancellation of the meter event with `identifier` (and `event_name`)."""

    event_name: str
    identifier: str


# -- field readers -------------------------------------------------------------------------------


def _check_keys(raw: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise SimulatorDataError(f"{where} has unknown keys: {', '.join(map(str, unknown))}")


def _mapping(raw: object, where: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise SimulatorDataError(f"{where} must be an object")
    return raw


def _text(raw: Mapping[str, Any], key: str, where: str, *, default: str | None = None) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or not value:
        raise SimulatorDataError(f"{where}: {key!r} must be a non-empty string")
    return value


def _optional_text(raw: Mapping[str, Any], key: str, where: str) -> str | None:
    if raw.get(key) is None:
        return None
    return _text(raw, key, where)


def _integer(raw: Mapping[str, Any], key: str, where: str, *, default: int | None = None) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SimulatorDataError(f"{where}: {key!r} must be an integer")
    return value


def _optional_integer(raw: Mapping[str, Any], key: str, where: str) -> int | None:
    if raw.get(key) is None:
        return None
    return _integer(raw, key, where)


def _choice(
    raw: Mapping[str, Any], key: str, options: tuple[str, ...], where: str, *, default: str
) -> str:
    value = raw.get(key, default)
    if value not in options:
        raise SimulatorDataError(f"{where}: {key!r} must be one of {', '.join(options)}")
    return str(value)


def amount(value: object, what: str) -> Decimal:
    """A Stripe `*_decimal` amount: a non-negative decimal (string or number), <= 12 places."""
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise SimulatorDataError(f"{what} must be a decimal string, got {value!r}")
    try:
        result = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except ArithmeticError:
        raise SimulatorDataError(f"{what} must be a decimal string, got {value!r}") from None
    if not result.is_finite() or result < 0:
        raise SimulatorDataError(f"{what} must be a finite, non-negative amount, got {value!r}")
    exponent = result.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > MAX_AMOUNT_PLACES:
        raise SimulatorDataError(f"{what} has more than {MAX_AMOUNT_PLACES} decimal places")
    return result


def _optional_amount(raw: Mapping[str, Any], key: str, where: str) -> Decimal | None:
    if raw.get(key) is None:
        return None
    return amount(raw[key], f"{where}: {key!r}")


def one_month_later(timestamp: int) -> int:
    """The same instant one calendar month later (clamped to the month's last day), as Stripe
    advances a monthly billing period."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return int(moment.replace(year=year, month=month, day=day).timestamp())


# -- prices --------------------------------------------------------------------------------------


def _tiers(raw: object, where: str) -> tuple[Tier, ...]:
    if not isinstance(raw, list) or not raw:
        raise SimulatorDataError(f"{where} is tiered but has no tiers")
    tiers: list[Tier] = []
    previous = 0
    for index, entry in enumerate(raw):
        at = f"{where}: tiers[{index}]"
        tier = _mapping(entry, at)
        _check_keys(tier, TIER_KEYS, at)
        up_to = _optional_integer(tier, "up_to", at) if "up_to" in tier else -1
        last = index == len(raw) - 1
        if up_to == -1:
            raise SimulatorDataError(f"{at}: 'up_to' is required (null for the last tier)")
        if last and up_to is not None:
            raise SimulatorDataError(f"{at}: the last tier's 'up_to' must be null (no upper bound)")
        if not last and (up_to is None or up_to <= previous):
            raise SimulatorDataError(f"{at}: 'up_to' must be an integer above the previous tier's")
        unit = _optional_amount(tier, "unit_amount_decimal", at)
        flat = _optional_amount(tier, "flat_amount_decimal", at)
        if unit is None and flat is None:
            raise SimulatorDataError(f"{at} needs a unit_amount_decimal or a flat_amount_decimal")
        tiers.append(Tier(up_to=up_to, unit_amount_decimal=unit, flat_amount_decimal=flat))
        previous = up_to or previous
    return tuple(tiers)


def _transform(raw: object, where: str) -> TransformQuantity:
    at = f"{where}: transform_quantity"
    transform = _mapping(raw, at)
    _check_keys(transform, frozenset({"divide_by", "round"}), at)
    divide_by = _integer(transform, "divide_by", at)
    if divide_by < 1:
        raise SimulatorDataError(f"{at}: 'divide_by' must be a positive integer")
    return TransformQuantity(
        divide_by=divide_by, round=_choice(transform, "round", ROUNDINGS, at, default="")
    )


def parse_price(
    raw: object, where: str, *, meters: frozenset[str] | None, index: int = 0
) -> PriceRecord:
    """A data-file price; `meters` are the known meter ids (None: do not check)."""
    price = _mapping(raw, where)
    price_id = _text(price, "id", where)
    where = f"{where} ({price_id})"
    _check_keys(price, PRICE_KEYS, where)
    currency = _text(price, "currency", where)
    if len(currency) != 3 or not currency.isalpha() or not currency.islower():
        raise SimulatorDataError(f"{where}: 'currency' must be 3 lowercase letters, like usd")
    usage_type = _choice(price, "usage_type", USAGE_TYPES, where, default="metered")
    meter = _optional_text(price, "meter", where)
    if usage_type == "metered" and meter is None:
        raise SimulatorDataError(f"{where} is metered but names no meter")
    if usage_type == "licensed" and meter is not None:
        raise SimulatorDataError(f"{where} is licensed and cannot name a meter")
    if meter is not None and meters is not None and meter not in meters:
        raise SimulatorDataError(f"{where} names an unknown meter {meter!r}")
    scheme = _choice(price, "billing_scheme", BILLING_SCHEMES, where, default="per_unit")
    unit = _optional_amount(price, "unit_amount_decimal", where)
    tiers: tuple[Tier, ...] = ()
    transform = None
    if price.get("transform_quantity") is not None:
        transform = _transform(price["transform_quantity"], where)
    if scheme == "per_unit":
        if unit is None:
            raise SimulatorDataError(f"{where} is per_unit but has no unit_amount_decimal")
        if price.get("tiers") is not None or price.get("tiers_mode") is not None:
            raise SimulatorDataError(f"{where} is per_unit and cannot have tiers or tiers_mode")
        tiers_mode = None
    else:
        if unit is not None:
            raise SimulatorDataError(f"{where} is tiered and cannot have a unit_amount_decimal")
        if transform is not None:
            raise SimulatorDataError(f"{where} is tiered and cannot have a transform_quantity")
        tiers = _tiers(price.get("tiers"), where)
        tiers_mode = _choice(price, "tiers_mode", TIERS_MODES, where, default="")
    active = price.get("active", True)
    if not isinstance(active, bool):
        raise SimulatorDataError(f"{where}: 'active' must be true or false")
    return PriceRecord(
        id=price_id,
        currency=currency,
        meter=meter,
        usage_type=usage_type,
        billing_scheme=scheme,
        unit_amount_decimal=unit,
        tiers_mode=tiers_mode,
        tiers=tiers,
        transform_quantity=transform,
        active=active,
        created=_integer(price, "created", where, default=DEFAULT_PRICE_CREATED + index),
        product=_text(price, "product", where, default=f"prod_{price_id.removeprefix('price_')}"),
        nickname=_optional_text(price, "nickname", where),
        lookup_key=_optional_text(price, "lookup_key", where),
    )


# -- subscriptions -------------------------------------------------------------------------------


def _item(
    raw: object,
    where: str,
    *,
    subscription: str,
    created: int,
    prices: Mapping[str, PriceRecord],
) -> ItemRecord:
    item = _mapping(raw, where)
    item_id = _text(item, "id", where)
    where = f"{where} ({item_id})"
    _check_keys(item, ITEM_KEYS, where)
    price_id = _text(item, "price", where)
    price = prices.get(price_id)
    if price is None:
        raise SimulatorDataError(f"{where} names an unknown price {price_id!r}")
    start = _integer(item, "current_period_start", where, default=created)
    end = _integer(item, "current_period_end", where, default=one_month_later(start))
    if end <= start:
        raise SimulatorDataError(f"{where}: current_period_end must be after current_period_start")
    quantity = _optional_integer(item, "quantity", where)
    if price.usage_type == "metered" and quantity is not None:
        raise SimulatorDataError(f"{where} bills a metered price and cannot have a quantity")
    if price.usage_type == "licensed" and quantity is None:
        quantity = 1
    return ItemRecord(
        id=item_id,
        subscription=subscription,
        price=price,
        current_period_start=start,
        current_period_end=end,
        quantity=quantity,
        created=_integer(item, "created", where, default=created),
    )


def parse_subscription(
    raw: object, where: str, *, prices: Mapping[str, PriceRecord]
) -> SubscriptionRecord:
    """A data-file subscription; every item must name one of `prices`."""
    subscription = _mapping(raw, where)
    subscription_id = _text(subscription, "id", where)
    where = f"{where} ({subscription_id})"
    _check_keys(subscription, SUBSCRIPTION_KEYS, where)
    created = _integer(subscription, "created", where)
    raw_items = subscription.get("items")
    if not isinstance(raw_items, list) or not raw_items:
        raise SimulatorDataError(f"{where} needs a non-empty 'items' array")
    items = tuple(
        _item(
            raw,
            f"{where}: items[{index}]",
            subscription=subscription_id,
            created=created,
            prices=prices,
        )
        for index, raw in enumerate(raw_items)
    )
    if len({item.price.currency for item in items}) > 1:
        raise SimulatorDataError(f"{where} mixes prices of different currencies")
    return SubscriptionRecord(
        id=subscription_id,
        customer=_text(subscription, "customer", where),
        status=_choice(subscription, "status", SUBSCRIPTION_STATUSES, where, default="active"),
        created=created,
        items=items,
        ended_at=_optional_integer(subscription, "ended_at", where),
        canceled_at=_optional_integer(subscription, "canceled_at", where),
    )


def parse_adjustment(raw: object, where: str) -> AdjustmentRecord:
    adjustment = _mapping(raw, where)
    _check_keys(adjustment, ADJUSTMENT_KEYS, where)
    return AdjustmentRecord(
        event_name=_text(adjustment, "event_name", where),
        identifier=_text(adjustment, "identifier", where),
    )
