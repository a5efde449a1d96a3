"""The simulator's invoices, as the data file gives them: what Stripe finalized, served as is.

The simulator never computes an invoice: a demo or a test writes what Stripe would have
invoiced (and may post late events or adjustments after). Validation happens here, once, so a
bad entry is refused with one sentence naming it before the server starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from simulator.billing import (
    ItemRecord,
    PriceRecord,
    SimulatorDataError,
    SubscriptionRecord,
)

INVOICE_STATUSES = ("draft", "open", "paid", "uncollectible", "void")
# Stripe inlines an invoice's first lines; the rest are paged from /v1/invoices/{id}/lines.
INLINE_LINES = 10
INVOICE_REQUIRED = (
    "id",
    "customer",
    "status",
    "created",
    "currency",
    "period_start",
    "period_end",
    "lines",
)
INVOICE_KEYS = frozenset(
    {
        *INVOICE_REQUIRED,
        "subscription",
        "finalized_at",
        "paid_at",
        "voided_at",
        "marked_uncollectible_at",
        "number",
    }
)
LINE_REQUIRED = ("id", "subscription_item", "price", "period", "quantity_decimal", "amount")
LINE_KEYS = frozenset({*LINE_REQUIRED, "proration", "description"})


@dataclass(frozen=True, slots=True)
class InvoiceLineRecord:
    """One invoice line: a subscription item's price over `[period_start, period_end]`."""

    id: str
    invoice: str
    item: ItemRecord
    price: PriceRecord
    period_start: int
    period_end: int
    quantity_decimal: Decimal
    amount: int
    proration: bool
    description: str | None


@dataclass(frozen=True, slots=True)
class InvoiceRecord:
    """An invoice and its lines, in the data file's order; amounts in the minor unit."""

    id: str
    customer: str
    subscription: str | None
    status: str
    created: int
    currency: str
    period_start: int
    period_end: int
    finalized_at: int | None
    paid_at: int | None
    voided_at: int | None
    marked_uncollectible_at: int | None
    number: str | None
    lines: tuple[InvoiceLineRecord, ...]

    @property
    def total(self) -> int:
        return sum(line.amount for line in self.lines)


def _require(raw: Mapping[str, Any], keys: tuple[str, ...], where: str) -> None:
    missing = [key for key in keys if key not in raw]
    if missing:
        raise SimulatorDataError(f"{where} is missing the required key {missing[0]!r}")


def _check_keys(raw: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise SimulatorDataError(f"{where} has unknown keys: {', '.join(map(str, unknown))}")


def _mapping(raw: object, where: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise SimulatorDataError(f"{where} must be an object")
    return raw


def _text(raw: Mapping[str, Any], key: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise SimulatorDataError(f"{where}: {key!r} must be a non-empty string")
    return value


def _optional_text(raw: Mapping[str, Any], key: str, where: str) -> str | None:
    return None if raw.get(key) is None else _text(raw, key, where)


def _integer(raw: Mapping[str, Any], key: str, where: str, *, what: str = "Unix seconds") -> int:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SimulatorDataError(f"{where}: {key!r} must be an integer ({what})")
    return value


def _optional_integer(raw: Mapping[str, Any], key: str, where: str) -> int | None:
    return None if raw.get(key) is None else _integer(raw, key, where)


def _quantity(raw: Mapping[str, Any], where: str) -> Decimal:
    value = raw.get("quantity_decimal")
    problem = f"{where}: 'quantity_decimal' must be a non-negative decimal string, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise SimulatorDataError(problem)
    try:
        quantity = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except ArithmeticError:
        raise SimulatorDataError(problem) from None
    if not quantity.is_finite() or quantity < 0:
        raise SimulatorDataError(problem)
    return quantity


def _line(
    raw: object,
    where: str,
    *,
    invoice: str,
    subscription: str | None,
    currency: str,
    prices: Mapping[str, PriceRecord],
    items: Mapping[str, ItemRecord],
) -> InvoiceLineRecord:
    line = _mapping(raw, where)
    line_id = _text(line, "id", where)
    where = f"{where} ({line_id})"
    _check_keys(line, LINE_KEYS, where)
    _require(line, LINE_REQUIRED, where)
    price_id = _text(line, "price", where)
    price = prices.get(price_id)
    if price is None:
        raise SimulatorDataError(f"{where} names an unknown price {price_id!r}")
    if price.currency != currency:
        raise SimulatorDataError(
            f"{where}: its price {price_id!r} is in {price.currency}, the invoice in {currency}"
        )
    item_id = _text(line, "subscription_item", where)
    item = items.get(item_id)
    if item is None:
        raise SimulatorDataError(f"{where} names an unknown subscription item {item_id!r}")
    if subscription is not None and item.subscription != subscription:
        raise SimulatorDataError(
            f"{where}: subscription item {item_id!r} belongs to {item.subscription!r}, "
            f"not to the invoice's subscription {subscription!r}"
        )
    period = _mapping(line["period"], f"{where}: period")
    _check_keys(period, frozenset({"start", "end"}), f"{where}: period")
    _require(period, ("start", "end"), f"{where}: period")
    start = _integer(period, "start", f"{where}: period")
    end = _integer(period, "end", f"{where}: period")
    if end < start:
        raise SimulatorDataError(f"{where}: its period ends before it starts")
    proration = line.get("proration", False)
    if not isinstance(proration, bool):
        raise SimulatorDataError(f"{where}: 'proration' must be true or false")
    return InvoiceLineRecord(
        id=line_id,
        invoice=invoice,
        item=item,
        price=price,
        period_start=start,
        period_end=end,
        quantity_decimal=_quantity(line, where),
        amount=_integer(line, "amount", where, what="in the currency's minor unit"),
        proration=proration,
        description=_optional_text(line, "description", where),
    )


def _transitions(invoice: Mapping[str, Any], status: str, where: str) -> dict[str, int | None]:
    """`finalized_at` and the time of the status reached, which defaults to `finalized_at`."""
    finalized_at = _optional_integer(invoice, "finalized_at", where)
    if status == "draft":
        if finalized_at is not None:
            raise SimulatorDataError(f"{where} is a draft and cannot have a 'finalized_at'")
    elif finalized_at is None:
        raise SimulatorDataError(f"{where} is {status} and needs a 'finalized_at'")
    times: dict[str, int | None] = {"finalized_at": finalized_at}
    for key, reached in (
        ("paid_at", "paid"),
        ("voided_at", "void"),
        ("marked_uncollectible_at", "uncollectible"),
    ):
        at = _optional_integer(invoice, key, where)
        if at is not None and status != reached:
            raise SimulatorDataError(f"{where} is {status} and cannot have a {key!r}")
        times[key] = (finalized_at if at is None else at) if status == reached else None
    return times


def parse_invoice(
    raw: object,
    where: str,
    *,
    prices: Mapping[str, PriceRecord],
    subscriptions: Mapping[str, SubscriptionRecord],
    items: Mapping[str, ItemRecord],
) -> InvoiceRecord:
    """A data-file invoice; its lines must name prices and subscription items of the file."""
    invoice = _mapping(raw, where)
    invoice_id = _text(invoice, "id", where)
    where = f"{where} ({invoice_id})"
    _check_keys(invoice, INVOICE_KEYS, where)
    _require(invoice, INVOICE_REQUIRED, where)
    status = invoice["status"]
    if status not in INVOICE_STATUSES:
        raise SimulatorDataError(
            f"{where}: 'status' must be one of {', '.join(INVOICE_STATUSES)}, got {status!r}"
        )
    customer = _text(invoice, "customer", where)
    currency = _text(invoice, "currency", where)
    if len(currency) != 3 or not currency.isalpha() or not currency.islower():
        raise SimulatorDataError(f"{where}: 'currency' must be 3 lowercase letters, like usd")
    subscription_id = _optional_text(invoice, "subscription", where)
    if subscription_id is not None:
        subscription = subscriptions.get(subscription_id)
        if subscription is None:
            raise SimulatorDataError(f"{where} names an unknown subscription {subscription_id!r}")
        if subscription.customer != customer:
            raise SimulatorDataError(
                f"{where}: subscription {subscription_id!r} is {subscription.customer}'s, "
                f"not {customer}'s"
            )
    period_start = _integer(invoice, "period_start", where)
    period_end = _integer(invoice, "period_end", where)
    if period_end < period_start:
        raise SimulatorDataError(f"{where}: its period ends before it starts")
    times = _transitions(invoice, status, where)
    raw_lines = invoice["lines"]
    if not isinstance(raw_lines, list):
        raise SimulatorDataError(f"{where}: 'lines' must be an array")
    lines = tuple(
        _line(
            entry,
            f"{where}: lines[{index}]",
            invoice=invoice_id,
            subscription=subscription_id,
            currency=currency,
            prices=prices,
            items=items,
        )
        for index, entry in enumerate(raw_lines)
    )
    return InvoiceRecord(
        id=invoice_id,
        customer=customer,
        subscription=subscription_id,
        status=status,
        created=_integer(invoice, "created", where),
        currency=currency,
        period_start=period_start,
        period_end=period_end,
        finalized_at=times["finalized_at"],
        paid_at=times["paid_at"],
        voided_at=times["voided_at"],
        marked_uncollectible_at=times["marked_uncollectible_at"],
        number=_optional_text(invoice, "number", where),
        lines=lines,
    )
