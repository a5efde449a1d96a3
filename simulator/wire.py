"""Stripe's wire format: JSON bodies of meters, event summaries, lists and errors.

Shapes follow Stripe's OpenAPI schemas and what stripe-mock answered (copies in `tests/data/`).
Keys are in Stripe's usual order: `id`, `object`, then the rest alphabetically. Numbers that
are decimals are written from the `Decimal`'s text, never through a float.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from models.money import decimal_to_json
from simulator.billing import (
    INLINE_ITEMS,
    ItemRecord,
    PriceRecord,
    SubscriptionRecord,
    Tier,
)
from simulator.data import Bucket, MeterRecord, summary_id

CUSTOMER_PAYLOAD_KEY = "stripe_customer_id"
VALUE_PAYLOAD_KEY = "value"

RATE_LIMIT_MESSAGE = (
    "Request rate limit exceeded. You can learn more about rate limits here "
    "https://stripe.com/docs/rate-limits."
)


def dumps(value: object) -> bytes:
    """Compact JSON; `Decimal` becomes a JSON number with exactly its text."""
    return "".join(_encode(value)).encode()


def _encode(value: object) -> Sequence[str]:
    parts: list[str] = []
    _write(value, parts)
    return parts


def _write(value: object, out: list[str]) -> None:
    if isinstance(value, Decimal):
        out.append(decimal_to_json(value))
    elif isinstance(value, Mapping):
        out.append("{")
        for index, (key, item) in enumerate(value.items()):
            if index:
                out.append(",")
            out.append(json.dumps(str(key)))
            out.append(":")
            _write(item, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        out.append(json.dumps(value))


def request_id() -> str:
    """A fresh `req_…` id, like Stripe's `Request-Id` header."""
    return f"req_{secrets.token_hex(7)}"


def meter_object(meter: MeterRecord) -> dict[str, Any]:
    return {
        "id": meter.id,
        "object": "billing.meter",
        "created": meter.created,
        "customer_mapping": {"event_payload_key": CUSTOMER_PAYLOAD_KEY, "type": "by_id"},
        "default_aggregation": {"formula": meter.formula},
        "display_name": meter.display_name,
        "event_name": meter.event_name,
        "event_time_window": None,
        "livemode": False,
        "status": meter.status,
        "status_transitions": {
            "deactivated_at": meter.updated if meter.status == "inactive" else None
        },
        "updated": meter.updated,
        "value_settings": {"event_payload_key": VALUE_PAYLOAD_KEY},
    }


def summary_object(meter_id: str, customer: str, bucket: Bucket) -> dict[str, Any]:
    return {
        "id": summary_id(meter_id, customer, bucket.start_time, bucket.end_time),
        "object": "billing.meter_event_summary",
        "aggregated_value": bucket.value,
        "end_time": bucket.end_time,
        "livemode": False,
        "meter": meter_id,
        "start_time": bucket.start_time,
    }


def meter_event_object(
    *,
    event_name: str,
    identifier: str,
    payload: Mapping[str, str],
    timestamp: int,
    created: int,
) -> dict[str, Any]:
    return {
        "object": "billing.meter_event",
        "created": created,
        "event_name": event_name,
        "identifier": identifier,
        "livemode": False,
        "payload": dict(payload),
        "timestamp": timestamp,
    }


def _minor_units(value: Decimal | None) -> int | None:
    """Stripe's integer twin of a `*_decimal` amount: set only when the amount is whole."""
    if value is None or value != value.to_integral_value():
        return None
    return int(value)


def tier_object(tier: Tier) -> dict[str, Any]:
    return {
        "flat_amount": _minor_units(tier.flat_amount_decimal),
        "flat_amount_decimal": _decimal_text(tier.flat_amount_decimal),
        "unit_amount": _minor_units(tier.unit_amount_decimal),
        "unit_amount_decimal": _decimal_text(tier.unit_amount_decimal),
        "up_to": tier.up_to,
    }


def _decimal_text(value: Decimal | None) -> str | None:
    """A `*_decimal` amount as Stripe writes it: a decimal string (`"0.25"`), never a number."""
    return None if value is None else decimal_to_json(value)


def price_object(price: PriceRecord, *, tiers: bool = False) -> dict[str, Any]:
    """A `price`; its `tiers` only when expanded (Stripe leaves the key out otherwise)."""
    transform = price.transform_quantity
    body: dict[str, Any] = {
        "id": price.id,
        "object": "price",
        "active": price.active,
        "billing_scheme": price.billing_scheme,
        "created": price.created,
        "currency": price.currency,
        "custom_unit_amount": None,
        "livemode": False,
        "lookup_key": price.lookup_key,
        "metadata": {},
        "nickname": price.nickname,
        "product": price.product,
        "recurring": {
            "interval": "month",
            "interval_count": 1,
            "meter": price.meter,
            "usage_type": price.usage_type,
        },
        "tax_behavior": "unspecified",
    }
    if tiers and price.billing_scheme == "tiered":
        body["tiers"] = [tier_object(tier) for tier in price.tiers]
    body.update(
        {
            "tiers_mode": price.tiers_mode,
            "transform_quantity": (
                None
                if transform is None
                else {"divide_by": transform.divide_by, "round": transform.round}
            ),
            "type": "recurring",
            "unit_amount": _minor_units(price.unit_amount_decimal),
            "unit_amount_decimal": _decimal_text(price.unit_amount_decimal),
        }
    )
    return body


def subscription_item_object(item: ItemRecord, *, tiers: bool = False) -> dict[str, Any]:
    """A `subscription_item`; a metered item has no `quantity` key (it is not nullable)."""
    body: dict[str, Any] = {
        "id": item.id,
        "object": "subscription_item",
        "billing_thresholds": None,
        "created": item.created,
        "current_period_end": item.current_period_end,
        "current_period_start": item.current_period_start,
        "discounts": [],
        "metadata": {},
        "price": price_object(item.price, tiers=tiers),
    }
    if item.quantity is not None:
        body["quantity"] = item.quantity
    body["subscription"] = item.subscription
    body["tax_rates"] = []
    return body


def subscription_items_url(subscription_id: str) -> str:
    return f"/v1/subscription_items?subscription={subscription_id}"


def subscription_object(subscription: SubscriptionRecord, *, tiers: bool = False) -> dict[str, Any]:
    """A `subscription`, its first items inline (`items.has_more` when there are more)."""
    inline = subscription.items[:INLINE_ITEMS]
    canceled = subscription.canceled_at is not None
    return {
        "id": subscription.id,
        "object": "subscription",
        "application": None,
        "application_fee_percent": None,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
        "billing_cycle_anchor": subscription.items[0].current_period_start,
        "billing_cycle_anchor_config": None,
        "billing_mode": {"flexible": None, "type": "classic"},
        "billing_schedules": [],
        "billing_thresholds": None,
        "cancel_at": None,
        "cancel_at_period_end": False,
        "canceled_at": subscription.canceled_at,
        "cancellation_details": {
            "comment": None,
            "feedback": None,
            "reason": "cancellation_requested" if canceled else None,
        },
        "collection_method": "charge_automatically",
        "created": subscription.created,
        "currency": subscription.currency,
        "customer": subscription.customer,
        "customer_account": None,
        "days_until_due": None,
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": [],
        "description": None,
        "discounts": [],
        "ended_at": subscription.ended_at,
        "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
        "items": list_object(
            [subscription_item_object(item, tiers=tiers) for item in inline],
            has_more=len(subscription.items) > len(inline),
            url=subscription_items_url(subscription.id),
        ),
        "latest_invoice": None,
        "livemode": False,
        "managed_payments": None,
        "metadata": {},
        "next_pending_invoice_item_invoice": None,
        "on_behalf_of": None,
        "pause_collection": None,
        "payment_settings": {
            "payment_method_options": None,
            "payment_method_types": None,
            "save_default_payment_method": "off",
        },
        "pending_invoice_item_interval": None,
        "pending_setup_intent": None,
        "pending_update": None,
        "schedule": None,
        "start_date": subscription.created,
        "status": subscription.status,
        "test_clock": None,
        "transfer_data": None,
        "trial_end": None,
        "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
        "trial_start": None,
    }


def meter_event_adjustment_object(*, event_name: str, identifier: str) -> dict[str, Any]:
    return {
        "object": "billing.meter_event_adjustment",
        "cancel": {"identifier": identifier},
        "event_name": event_name,
        "livemode": False,
        "status": "complete",
        "type": "cancel",
    }


def list_object(data: list[dict[str, Any]], *, has_more: bool, url: str) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


def error_body(
    message: str,
    *,
    type: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
) -> dict[str, Any]:
    """Stripe's error envelope (`error` schema): `{"error": {...}}`, optional keys only when set."""
    error: dict[str, Any] = {}
    if code is not None:
        error["code"] = code
        error["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
    error["message"] = message
    if param is not None:
        error["param"] = param
    error["type"] = type
    return {"error": error}
