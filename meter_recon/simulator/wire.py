"""Stripe's wire format: JSON bodies of meters, event summaries, lists and errors.

Shapes follow `shared/stripe/` (OpenAPI schemas and what stripe-mock answered). Keys are in
Stripe's usual order: `id`, `object`, then the rest alphabetically. Numbers that are decimals
are written from the `Decimal`'s text, never through a float.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from meter_recon.simulator.data import Bucket, MeterRecord, summary_id
from meter_recon.stripe.money import decimal_to_json

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
