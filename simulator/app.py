"""The simulator's ASGI application: Stripe's billing meter endpoints, computed from raw events,
the billing side (subscriptions, subscription items, prices, meter event adjustments) and the
invoices of the data file (list, retrieve, lines), served as given.

Order of checks for every request, as Stripe does it: authentication (401), route (404),
rate limit (429, answered at once), then latency, injected faults (event summaries and the
billing side), parameter validation (400), the object (404), and the answer.

Stripe-side choices made here (documented, since Stripe's published spec and stripe-mock do
not fix them):

- 429 answers carry Stripe's `rate_limit` error body and a `Stripe-Rate-Limited-Reason`
  header; Stripe documents no `Retry-After` and sends no `Stripe-Should-Retry` on a plain
  rate limit, so neither is sent (set `rate_limit_retry_after` to add `Retry-After`).
- Validation messages follow Stripe's usual wording ("Missing required param: customer.",
  "Received unknown parameter: foo", "Invalid integer: abc"); the alignment and `limit`
  messages are ours, with Stripe's `type`/`param`/`code` fields.
- 401 messages never echo the presented key (stripe-mock echoes the whole header, Stripe a
  masked key): a simulator's logs must not be a way for keys to leak.
- Parameters the spec lists but the simulator does not implement (`automatic_tax`,
  `current_period_*`, `customer_account` and `test_clock` on subscriptions) are a 400 saying
  so, rather than silently ignored. Unknown `expand[]` paths are accepted and ignored.
- A subscription inlines its first 10 items (`items.has_more` beyond); the rest are listed by
  `GET /v1/subscription_items`. An unknown `subscription` there is a 404 `resource_missing`.
- An invoice inlines its first 10 lines (`lines.has_more` beyond); the rest are paged from
  `GET /v1/invoices/{id}/lines`. Invoices are listed newest `created` first, ties by id (the
  greater first). `due_date` and `customer_account` filters are a 400 saying they are not
  supported; `collection_method=send_invoice` matches nothing.
- A meter event adjustment cancels at once (`status: complete`); one naming no received event
  (identifier and event name) is a 400, since nothing could ever be cancelled by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qsl, unquote

from models.money import to_decimal
from simulator import invoice_wire, wire
from simulator.billing import SUBSCRIPTION_STATUSES, PriceRecord, SubscriptionRecord
from simulator.data import WINDOW_SECONDS, MeterRecord, SimulatorDataError
from simulator.faults import Fault
from simulator.invoices import INVOICE_STATUSES, InvoiceRecord
from simulator.state import SimulatorState

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Key under which the server's protocol puts the connection's transport into `scope["state"]`,
# so a `reset` fault can drop the connection without a response (see server.py).
TRANSPORT_STATE_KEY = "simulator.transport"
# ... and the `time.monotonic()` at which the request's bytes arrived.
ARRIVAL_STATE_KEY = "simulator.arrival"
DEFAULT_STRIPE_VERSION = "2026-10-28.endive"

MINUTE = 60
PAGE_LIMIT_MAX = 100
PAGE_LIMIT_DEFAULT = 10
_INTEGER = re.compile(r"-?\d+")

NO_KEY_MESSAGE = (
    "You did not provide an API key. You need to provide your API key in the Authorization "
    "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See "
    "https://stripe.com/docs/api#authentication for details, or we can help at "
    "https://support.stripe.com/."
)
# Stripe says "Invalid API Key provided: sk_test_****1234"; we do not echo any part of it.
INVALID_KEY_MESSAGE = "Invalid API Key provided."
LOCK_MESSAGE = (
    "This object cannot be accessed right now because another API request or Stripe process "
    "is currently accessing it. If you see this error intermittently, retry the request."
)
SERVER_ERROR_MESSAGE = "An unknown error occurred, please retry the request."
MALFORMED_BODY = b'{"object": "list", "data": [{"id": "mtrusg_'

SUMMARY_PARAMS = frozenset(
    {
        "customer",
        "end_time",
        "ending_before",
        "expand",
        "limit",
        "start_time",
        "starting_after",
        "value_grouping_window",
    }
)
METER_LIST_PARAMS = frozenset({"ending_before", "expand", "limit", "starting_after", "status"})
METER_GET_PARAMS = frozenset({"expand"})
METER_EVENT_PARAMS = frozenset({"event_name", "expand", "identifier", "payload", "timestamp"})
PAGING_PARAMS = frozenset({"ending_before", "expand", "limit", "starting_after"})
SUBSCRIPTION_LIST_PARAMS = PAGING_PARAMS | {
    "collection_method",
    "created",
    "customer",
    "price",
    "status",
}
SUBSCRIPTION_LIST_UNSUPPORTED = frozenset(
    {
        "automatic_tax",
        "current_period_end",
        "current_period_start",
        "customer_account",
        "test_clock",
    }
)
SUBSCRIPTION_ITEM_LIST_PARAMS = PAGING_PARAMS | {"subscription"}
PRICE_LIST_PARAMS = PAGING_PARAMS | {
    "active",
    "created",
    "currency",
    "lookup_keys",
    "product",
    "recurring",
    "type",
}
INVOICE_LIST_PARAMS = PAGING_PARAMS | {
    "collection_method",
    "created",
    "customer",
    "status",
    "subscription",
}
INVOICE_LIST_UNSUPPORTED = frozenset({"customer_account", "due_date"})
GET_PARAMS = frozenset({"expand"})
ADJUSTMENT_PARAMS = frozenset({"cancel", "event_name", "expand", "type"})
# Parameters sent as `name[key]=value` (deepObject), and arrays (`name[]`, `name[0]`).
NESTED_PARAMS = {
    "payload": None,
    "cancel": frozenset({"identifier"}),
    "created": frozenset({"gt", "gte", "lt", "lte"}),
    "recurring": frozenset({"interval", "meter", "usage_type"}),
}
ARRAY_PARAMS = frozenset({"expand", "lookup_keys"})
SUBSCRIPTION_STATUS_FILTERS = ("all", "ended", *SUBSCRIPTION_STATUSES)
# What `expand[]` must say, per endpoint, for a price's `tiers` to appear.
TIERS_EXPANSION = {
    "price_get": "tiers",
    "prices_list": "data.tiers",
    "subscription_get": "items.data.price.tiers",
    "subscriptions_list": "data.items.data.price.tiers",
    "subscription_items_list": "data.price.tiers",
}
# What `expand[]` must say, per endpoint, for a line's price to be the price object.
PRICE_EXPANSION = {
    "invoices_list": "data.lines.data.pricing.price_details.price",
    "invoice_get": "lines.data.pricing.price_details.price",
    "invoice_lines_list": "data.pricing.price_details.price",
}
INVOICE_KINDS = frozenset(PRICE_EXPANSION)
BILLING_KINDS = frozenset({*TIERS_EXPANSION, "meter_event_adjustments_post", *INVOICE_KINDS})


class ApiError(Exception):
    """An error answer: HTTP status and Stripe's error body."""

    def __init__(self, status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None):
        super().__init__(body["error"]["message"])
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


def invalid(message: str, *, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, wire.error_body(message, param=param, code=code))


@dataclass(frozen=True, slots=True)
class Route:
    kind: str
    meter_id: str | None = None
    object_id: str | None = None


def route(method: str, raw_path: bytes) -> Route | None:
    """The endpoint a request is for, or None for a URL Stripe does not know."""
    segments = [unquote(part.decode("latin-1")) for part in raw_path.split(b"/")]
    if segments[:2] != ["", "v1"]:
        return None
    if segments[2:3] != ["billing"]:
        return _billing_route(method, segments[2:])
    rest = segments[3:]
    if method == "POST" and rest == ["meter_event_adjustments"]:
        return Route("meter_event_adjustments_post")
    if method == "GET" and rest == ["meters"]:
        return Route("meters_list")
    if method == "POST" and rest == ["meter_events"]:
        return Route("meter_events_post")
    if method == "GET" and len(rest) == 2 and rest[0] == "meters" and rest[1]:
        return Route("meter_get", rest[1])
    summaries = len(rest) == 3 and rest[0] == "meters" and rest[2] == "event_summaries"
    if method == "GET" and summaries and rest[1]:
        return Route("event_summaries", rest[1])
    return None


_LIST_ROUTES = {
    "invoices": "invoices_list",
    "subscriptions": "subscriptions_list",
    "subscription_items": "subscription_items_list",
    "prices": "prices_list",
}
_GET_ROUTES = {
    "subscriptions": "subscription_get",
    "prices": "price_get",
    "invoices": "invoice_get",
}


def _billing_route(method: str, rest: list[str]) -> Route | None:
    if method != "GET" or not rest:
        return None
    if len(rest) == 1:
        kind = _LIST_ROUTES.get(rest[0])
        return None if kind is None else Route(kind)
    kind = _GET_ROUTES.get(rest[0])
    if len(rest) == 2 and kind is not None and rest[1]:
        return Route(kind, object_id=rest[1])
    if len(rest) == 3 and rest[0] == "invoices" and rest[1] and rest[2] == "lines":
        return Route("invoice_lines_list", object_id=rest[1])
    return None


def unknown_parameter(name: str) -> ApiError:
    return invalid(f"Received unknown parameter: {name}", param=name, code="parameter_unknown")


class Params:
    """Form-encoded parameters (query string or body), checked like Stripe checks them.

    `unsupported` names parameters Stripe knows that the simulator does not implement.
    """

    def __init__(
        self, text: str, allowed: frozenset[str], unsupported: frozenset[str] = frozenset()
    ) -> None:
        self.values: dict[str, str] = {}
        self.nested: dict[str, dict[str, str]] = {}
        self.arrays: dict[str, list[str]] = {}
        for key, value in parse_qsl(text, keep_blank_values=True):
            name, bracket, rest = key.partition("[")
            if name in unsupported:
                raise invalid(
                    f"The Stripe simulator does not support the parameter: {name}", param=name
                )
            if name not in allowed:
                raise unknown_parameter(name)
            if name in ARRAY_PARAMS:
                # `name`, `name[]` or `name[0]`, as the SDKs send them
                if bracket and not (rest == "]" or (rest.endswith("]") and rest[:-1].isdigit())):
                    raise unknown_parameter(key)
                self.arrays.setdefault(name, []).append(value)
            elif bracket:
                subkeys = NESTED_PARAMS.get(name, frozenset())
                subkey = rest[:-1]
                valid = rest.endswith("]") and subkey and "[" not in subkey
                if not valid or (subkeys is not None and subkey not in subkeys):
                    raise unknown_parameter(key)
                self.nested.setdefault(name, {})[subkey] = value
            else:
                self.values[name] = value

    def expands(self, path: str) -> bool:
        """Whether `expand[]` asks for `path`."""
        return path in self.arrays.get("expand", [])

    def boolean(self, name: str) -> bool | None:
        value = self.optional(name)
        if value is None:
            return None
        if value not in ("true", "false"):
            raise invalid(f"Invalid boolean: {value}", param=name, code="parameter_invalid_boolean")
        return value == "true"

    def created(self) -> Callable[[int], bool]:
        """The `created` filter: `created=T` or `created[gt|gte|lt|lte]=T`."""
        exact = self.optional("created")
        bounds = {
            key: self.integer(f"created[{key}]", value)
            for key, value in self.nested.get("created", {}).items()
        }
        at = None if exact is None else self.integer("created", exact)

        def keep(created: int) -> bool:
            return (
                (at is None or created == at)
                and created > bounds.get("gt", created - 1)
                and created >= bounds.get("gte", created)
                and created < bounds.get("lt", created + 1)
                and created <= bounds.get("lte", created)
            )

        return keep

    def optional(self, name: str) -> str | None:
        value = self.values.get(name)
        return value or None

    def required(self, name: str) -> str:
        if name not in self.values:
            raise invalid(f"Missing required param: {name}.", param=name, code="parameter_missing")
        value = self.values[name]
        if not value:
            raise invalid(
                f"You passed an empty string for '{name}'. We assume empty values are an "
                f"attempt to unset a parameter; however '{name}' cannot be unset. You should "
                f"remove '{name}' from your request or supply a non-empty value.",
                param=name,
                code="parameter_invalid_empty",
            )
        return value

    @staticmethod
    def integer(name: str, value: str) -> int:
        if not _INTEGER.fullmatch(value):
            raise invalid(f"Invalid integer: {value}", param=name, code="parameter_invalid_integer")
        return int(value)

    def limit(self) -> int:
        text = self.optional("limit")
        if text is None:
            return PAGE_LIMIT_DEFAULT
        limit = self.integer("limit", text)
        if limit < 1:
            raise invalid("This value must be greater than or equal to 1.", param="limit")
        if limit > PAGE_LIMIT_MAX:
            raise invalid(
                f"This value must be less than or equal to {PAGE_LIMIT_MAX}.", param="limit"
            )
        return limit

    def choice(self, name: str, options: tuple[str, ...]) -> str | None:
        value = self.optional(name)
        if value is not None and value not in options:
            raise invalid(f"Invalid {name}: must be one of {' or '.join(options)}", param=name)
        return value

    def cursors(self) -> tuple[str | None, str | None]:
        starting_after, ending_before = (
            self.optional("starting_after"),
            self.optional("ending_before"),
        )
        if starting_after and ending_before:
            raise invalid(
                "You may only specify one of these parameters: ending_before, starting_after."
            )
        return starting_after, ending_before


def paginate(
    items: list[dict[str, Any]],
    *,
    limit: int,
    starting_after: str | None,
    ending_before: str | None,
    object_name: str,
) -> tuple[list[dict[str, Any]], bool]:
    """One page of `items` (already in list order) and whether more lie beyond it."""
    cursor = starting_after or ending_before
    if cursor is None:
        return items[:limit], len(items) > limit
    index = next((i for i, item in enumerate(items) if item["id"] == cursor), None)
    if index is None:
        param = "starting_after" if starting_after else "ending_before"
        raise invalid(f"No such {object_name}: '{cursor}'", param=param, code="resource_missing")
    if starting_after:
        after = items[index + 1 :]
        return after[:limit], len(after) > limit
    before = items[:index]
    return before[-limit:], len(before) > limit


class HasId(Protocol):
    @property
    def id(self) -> str: ...


RecordT = TypeVar("RecordT", bound=HasId)


def paginate_records(
    records: list[RecordT],
    *,
    limit: int,
    starting_after: str | None,
    ending_before: str | None,
    object_name: str,
) -> tuple[list[RecordT], bool]:
    """`paginate` over records, so only the page served is turned into wire objects (a list
    of N objects paged through would otherwise cost O(N^2))."""
    by_id = [{"id": record.id, "record": record} for record in records]
    page, has_more = paginate(
        by_id,
        limit=limit,
        starting_after=starting_after,
        ending_before=ending_before,
        object_name=object_name,
    )
    return [entry["record"] for entry in page], has_more


def no_such(what: str, object_id: str, *, param: str = "id") -> ApiError:
    return ApiError(
        404, wire.error_body(f"No such {what}: '{object_id}'", param=param, code="resource_missing")
    )


def no_such_meter(meter_id: str) -> ApiError:
    return ApiError(
        404,
        wire.error_body(
            f"No such billing meter: '{meter_id}'", param="id", code="resource_missing"
        ),
    )


class SimulatorApp:
    """ASGI 3 application serving the billing meter endpoints from a `SimulatorState`."""

    def __init__(self, state: SimulatorState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        arrived = scope.get("state", {}).get(ARRIVAL_STATE_KEY) or time.monotonic()
        state = self.state
        method: str = scope["method"]
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        query: str = scope.get("query_string", b"").decode("latin-1")
        found = route(method, raw_path)
        target = f"{method} {raw_path.decode('latin-1')}" + (f"?{query}" if query else "")
        state.stats.record_arrival(arrived, target, found.kind if found else "unknown_route")

        headers = {
            key.decode("latin-1").lower(): value.decode("latin-1")
            for key, value in scope.get("headers", [])
        }
        common = {
            "request-id": wire.request_id(),
            "stripe-version": headers.get("stripe-version") or DEFAULT_STRIPE_VERSION,
        }

        try:
            self._authenticate(headers.get("authorization"))
        except ApiError as error:
            state.stats.count("unauthorized")
            await _reply(send, error.status, error.body, common)
            return
        if found is None:
            path = unquote(raw_path.decode("latin-1"))
            body = wire.error_body(f"Unrecognized request URL ({method}: {path}).")
            state.stats.count("errors")
            await _reply(send, 404, body, common)
            return
        if not state.accept(arrived):
            state.stats.count("rate_limited")
            extra = {"stripe-rate-limited-reason": "global-rate"}
            if state.rate_limit_retry_after is not None:
                extra["retry-after"] = _seconds_text(state.rate_limit_retry_after)
            body = wire.error_body(wire.RATE_LIMIT_MESSAGE, code="rate_limit")
            await _reply(send, 429, body, {**common, **extra})
            return
        state.stats.record_start(arrived)

        delay = state.delay()
        if delay > 0:
            await asyncio.sleep(delay)

        form = ""
        if method == "POST":
            received = await _read_body(receive)
            if received is None:
                return  # the client went away
            form = received.decode("latin-1")

        if found.kind == "event_summaries" or found.kind in BILLING_KINDS:
            customer = dict(parse_qsl(query, keep_blank_values=True)).get("customer") or None
            if customer is not None and found.kind == "event_summaries":
                state.stats.record_customer(customer)
            fault = state.faults.next_fault(customer, endpoint=found.kind)
            if fault is not None:
                state.stats.count("faults")
                await self._fault(fault, scope, receive, send, common, found, query, form)
                return

        await self._answer(send, found, query, form, common)

    async def _answer(
        self, send: Send, found: Route, query: str, form: str, common: dict[str, str]
    ) -> None:
        try:
            body = self._dispatch(found, query, form)
        except ApiError as error:
            self.state.stats.count("errors")
            await _reply(send, error.status, error.body, {**common, **error.headers})
            return
        await _reply(send, 200, body, common)

    def _authenticate(self, authorization: str | None) -> None:
        if not authorization or not authorization.strip():
            raise ApiError(401, wire.error_body(NO_KEY_MESSAGE))
        scheme, _, key = authorization.strip().partition(" ")
        key = key.strip()
        valid = (
            scheme.lower() == "bearer"
            and key.startswith(("sk_", "rk_"))
            and (self.state.api_key is None or key == self.state.api_key)
        )
        if not valid:
            raise ApiError(401, wire.error_body(INVALID_KEY_MESSAGE))

    def _dispatch(self, found: Route, query: str, form: str) -> dict[str, Any]:
        if found.kind in BILLING_KINDS:
            return self._billing(found, query, form)
        if found.kind == "event_summaries":
            assert found.meter_id is not None
            return self._event_summaries(found.meter_id, query)
        if found.kind == "meters_list":
            return self._meters_list(query)
        if found.kind == "meter_get":
            assert found.meter_id is not None
            Params(query, METER_GET_PARAMS)
            meter = self.state.data.meter(found.meter_id)
            if meter is None:
                raise no_such_meter(found.meter_id)
            return wire.meter_object(meter)
        if query:
            Params(query, frozenset())
        return self._meter_event(form)

    def _event_summaries(self, meter_id: str, query: str) -> dict[str, Any]:
        params = Params(query, SUMMARY_PARAMS)
        customer = params.required("customer")
        start_time = params.integer("start_time", params.required("start_time"))
        end_time = params.integer("end_time", params.required("end_time"))
        window = params.choice("value_grouping_window", ("day", "hour"))
        limit = params.limit()
        starting_after, ending_before = params.cursors()
        _check_alignment(start_time, end_time, window)
        meter = self.state.data.meter(meter_id)
        if meter is None:
            raise no_such_meter(meter_id)
        buckets = self.state.data.buckets(
            meter,
            customer,
            start_time,
            end_time,
            "day" if window == "day" else "hour" if window == "hour" else None,
        )
        items = [wire.summary_object(meter.id, customer, bucket) for bucket in buckets]
        page, has_more = paginate(
            items,
            limit=limit,
            starting_after=starting_after,
            ending_before=ending_before,
            object_name="billing meter event summary",
        )
        return wire.list_object(
            page, has_more=has_more, url=f"/v1/billing/meters/{meter_id}/event_summaries"
        )

    def _meters_list(self, query: str) -> dict[str, Any]:
        params = Params(query, METER_LIST_PARAMS)
        status = params.choice("status", ("active", "inactive"))
        limit = params.limit()
        starting_after, ending_before = params.cursors()
        meters: list[MeterRecord] = self.state.data.meters(status)
        page, has_more = paginate(
            [wire.meter_object(meter) for meter in meters],
            limit=limit,
            starting_after=starting_after,
            ending_before=ending_before,
            object_name="billing meter",
        )
        return wire.list_object(page, has_more=has_more, url="/v1/billing/meters")

    def _meter_event(self, form: str) -> dict[str, Any]:
        params = Params(form, METER_EVENT_PARAMS)
        event_name = params.required("event_name")
        payload = params.nested.get("payload")
        if not payload:
            raise invalid(
                "Missing required param: payload.", param="payload", code="parameter_missing"
            )
        for key in (wire.CUSTOMER_PAYLOAD_KEY, wire.VALUE_PAYLOAD_KEY):
            if not payload.get(key):
                raise invalid(
                    f"Missing required param: payload[{key}].",
                    param=f"payload[{key}]",
                    code="parameter_missing",
                )
        try:
            value: Decimal = to_decimal(payload[wire.VALUE_PAYLOAD_KEY])
        except ValueError:
            raise invalid(
                f"Invalid decimal: {payload[wire.VALUE_PAYLOAD_KEY]}",
                param=f"payload[{wire.VALUE_PAYLOAD_KEY}]",
            ) from None
        now = int(time.time())
        timestamp_text = params.optional("timestamp")
        timestamp = now if timestamp_text is None else params.integer("timestamp", timestamp_text)
        identifier = params.optional("identifier") or str(uuid.uuid4())
        try:
            self.state.data.add_event(
                event_name=event_name,
                customer=payload[wire.CUSTOMER_PAYLOAD_KEY],
                timestamp=timestamp,
                value=value,
                identifier=identifier,
            )
        except SimulatorDataError as exc:
            raise invalid(str(exc)) from None
        return wire.meter_event_object(
            event_name=event_name,
            identifier=identifier,
            payload=payload,
            timestamp=timestamp,
            created=now,
        )

    # -- the billing side ------------------------------------------------------------------------

    def _billing(self, found: Route, query: str, form: str) -> dict[str, Any]:
        kind = found.kind
        if kind == "meter_event_adjustments_post":
            if query:
                Params(query, frozenset())
            return self._adjustment(form)
        if kind == "subscriptions_list":
            return self._subscriptions_list(query)
        if kind == "subscription_items_list":
            return self._subscription_items_list(query)
        if kind == "prices_list":
            return self._prices_list(query)
        if kind in INVOICE_KINDS:
            return self._invoices(found, query)
        params = Params(query, GET_PARAMS)
        tiers = params.expands(TIERS_EXPANSION[kind])
        object_id = found.object_id
        assert object_id is not None
        if kind == "price_get":
            price = self.state.data.price(object_id)
            if price is None:
                raise no_such("price", object_id)
            return wire.price_object(price, tiers=tiers)
        subscription = self.state.data.subscription(object_id)
        if subscription is None:
            raise no_such("subscription", object_id)
        return wire.subscription_object(subscription, tiers=tiers)

    def _subscriptions_list(self, query: str) -> dict[str, Any]:
        params = Params(query, SUBSCRIPTION_LIST_PARAMS, SUBSCRIPTION_LIST_UNSUPPORTED)
        status = params.choice("status", SUBSCRIPTION_STATUS_FILTERS)
        customer, price = params.optional("customer"), params.optional("price")
        collection = params.choice("collection_method", ("charge_automatically", "send_invoice"))
        created = params.created()
        limit = params.limit()
        starting_after, ending_before = params.cursors()
        tiers = params.expands(TIERS_EXPANSION["subscriptions_list"])

        def keep(subscription: SubscriptionRecord) -> bool:
            return (
                _status_matches(subscription.status, status)
                and customer in (None, subscription.customer)
                and (price is None or any(item.price.id == price for item in subscription.items))
                and collection in (None, "charge_automatically")
                and created(subscription.created)
            )

        page, has_more = paginate_records(
            [
                subscription
                for subscription in self.state.data.subscriptions()
                if keep(subscription)
            ],
            limit=limit,
            starting_after=starting_after,
            ending_before=ending_before,
            object_name="subscription",
        )
        objects = [wire.subscription_object(subscription, tiers=tiers) for subscription in page]
        return wire.list_object(objects, has_more=has_more, url="/v1/subscriptions")

    def _subscription_items_list(self, query: str) -> dict[str, Any]:
        params = Params(query, SUBSCRIPTION_ITEM_LIST_PARAMS)
        subscription_id = params.required("subscription")
        limit = params.limit()
        starting_after, ending_before = params.cursors()
        tiers = params.expands(TIERS_EXPANSION["subscription_items_list"])
        subscription = self.state.data.subscription(subscription_id)
        if subscription is None:
            raise no_such("subscription", subscription_id, param="subscription")
        page, has_more = paginate(
            [wire.subscription_item_object(item, tiers=tiers) for item in subscription.items],
            limit=limit,
            starting_after=starting_after,
            ending_before=ending_before,
            object_name="subscription item",
        )
        return wire.list_object(page, has_more=has_more, url="/v1/subscription_items")

    def _prices_list(self, query: str) -> dict[str, Any]:
        params = Params(query, PRICE_LIST_PARAMS)
        active = params.boolean("active")
        currency = params.optional("currency")
        product = params.optional("product")
        price_type = params.choice("type", ("one_time", "recurring"))
        lookup_keys = params.arrays.get("lookup_keys")
        recurring = params.nested.get("recurring", {})
        for name, options in (
            ("interval", ("day", "month", "week", "year")),
            ("usage_type", ("licensed", "metered")),
        ):
            if name in recurring and recurring[name] not in options:
                raise invalid(
                    f"Invalid recurring[{name}]: must be one of {' or '.join(options)}",
                    param=f"recurring[{name}]",
                )
        created = params.created()
        limit = params.limit()
        starting_after, ending_before = params.cursors()
        tiers = params.expands(TIERS_EXPANSION["prices_list"])

        def keep(price: PriceRecord) -> bool:
            return (
                price.active == (True if active is None else active)
                and currency in (None, price.currency)
                and product in (None, price.product)
                and price_type in (None, "recurring")
                and (lookup_keys is None or price.lookup_key in lookup_keys)
                and recurring.get("interval") in (None, "month")
                and recurring.get("meter") in (None, price.meter)
                and recurring.get("usage_type") in (None, price.usage_type)
                and created(price.created)
            )

        page, has_more = paginate_records(
            [price for price in self.state.data.prices() if keep(price)],
            limit=limit,
            starting_after=starting_after,
            ending_before=ending_before,
            object_name="price",
        )
        objects = [wire.price_object(price, tiers=tiers) for price in page]
        return wire.list_object(objects, has_more=has_more, url="/v1/prices")

    def _invoices(self, found: Route, query: str) -> dict[str, Any]:
        if found.kind == "invoices_list":
            return self._invoices_list(query)
        object_id = found.object_id
        assert object_id is not None
        if found.kind == "invoice_get":
            params = Params(query, GET_PARAMS)
            invoice = self._invoice(object_id, param="id")
            return invoice_wire.invoice_object(
                invoice, expand_price=params.expands(PRICE_EXPANSION["invoice_get"])
            )
        params = Params(query, PAGING_PARAMS)
        limit = params.limit()
        starting_after, ending_before = params.cursors()
        invoice = self._invoice(object_id, param="invoice")
        page, has_more = paginate_records(
            list(invoice.lines),
            limit=limit,
            starting_after=starting_after,
            ending_before=ending_before,
            object_name="invoice line item",
        )
        return invoice_wire.lines_list(
            invoice.id,
            page,
            has_more=has_more,
            expand_price=params.expands(PRICE_EXPANSION["invoice_lines_list"]),
        )

    def _invoice(self, invoice_id: str, *, param: str) -> InvoiceRecord:
        invoice = self.state.data.invoice(invoice_id)
        if invoice is None:
            raise no_such("invoice", invoice_id, param=param)
        return invoice

    def _invoices_list(self, query: str) -> dict[str, Any]:
        params = Params(query, INVOICE_LIST_PARAMS, INVOICE_LIST_UNSUPPORTED)
        status = params.choice("status", INVOICE_STATUSES)
        customer, subscription = params.optional("customer"), params.optional("subscription")
        collection = params.choice("collection_method", ("charge_automatically", "send_invoice"))
        created = params.created()
        limit = params.limit()
        starting_after, ending_before = params.cursors()
        expand_price = params.expands(PRICE_EXPANSION["invoices_list"])

        def keep(invoice: InvoiceRecord) -> bool:
            return (
                status in (None, invoice.status)
                and customer in (None, invoice.customer)
                and subscription in (None, invoice.subscription)
                and collection in (None, "charge_automatically")
                and created(invoice.created)
            )

        page, has_more = paginate_records(
            [invoice for invoice in self.state.data.invoices() if keep(invoice)],
            limit=limit,
            starting_after=starting_after,
            ending_before=ending_before,
            object_name="invoice",
        )
        objects = [
            invoice_wire.invoice_object(invoice, expand_price=expand_price) for invoice in page
        ]
        return wire.list_object(objects, has_more=has_more, url="/v1/invoices")

    def _adjustment(self, form: str) -> dict[str, Any]:
        params = Params(form, ADJUSTMENT_PARAMS)
        event_name = params.required("event_name")
        if params.choice("type", ("cancel",)) is None:
            params.required("type")
        identifier = params.nested.get("cancel", {}).get("identifier")
        if not identifier:
            raise invalid(
                "Missing required param: cancel[identifier].",
                param="cancel[identifier]",
                code="parameter_missing",
            )
        if not self.state.data.cancel_event(event_name=event_name, identifier=identifier):
            raise invalid(
                f"No meter event with identifier '{identifier}' and event name "
                f"'{event_name}' to cancel.",
                param="cancel[identifier]",
                code="resource_missing",
            )
        return wire.meter_event_adjustment_object(event_name=event_name, identifier=identifier)

    async def _fault(
        self,
        fault: Fault,
        scope: Scope,
        receive: Receive,
        send: Send,
        common: dict[str, str],
        found: Route,
        query: str,
        form: str,
    ) -> None:
        if fault.kind == "reset":
            await _reset(scope, receive)
        elif fault.kind == "timeout":
            delay = fault.delay if fault.delay is not None else self.state.faults.timeout_delay
            if not await _disconnected_within(receive, delay):
                await self._answer(send, found, query, form, common)
        elif fault.kind == "malformed":
            await _send_raw(send, 200, MALFORMED_BODY, common)
        else:
            status = fault.status
            assert status is not None
            extra: dict[str, str] = {}
            if status == 429:
                body = wire.error_body(wire.RATE_LIMIT_MESSAGE, code="rate_limit")
                extra["stripe-rate-limited-reason"] = "global-rate"
            elif status == 409:
                body = wire.error_body(LOCK_MESSAGE, code="lock_timeout")
            else:
                body = wire.error_body(SERVER_ERROR_MESSAGE, type="api_error")
            if fault.should_retry is not None:
                extra["stripe-should-retry"] = "true" if fault.should_retry else "false"
            if fault.retry_after is not None:
                extra["retry-after"] = _seconds_text(fault.retry_after)
            await _reply(send, status, body, {**common, **extra})


def _status_matches(status: str, wanted: str | None) -> bool:
    """Stripe's `status` filter: by default every status but `canceled`; `ended` is canceled
    or incomplete_expired; `all` is every status."""
    if wanted is None:
        return status != "canceled"
    if wanted == "all":
        return True
    if wanted == "ended":
        return status in ("canceled", "incomplete_expired")
    return status == wanted


def _check_alignment(start_time: int, end_time: int, window: str | None) -> None:
    if window is None:
        unit, what = MINUTE, "minute boundaries"
    elif window == "hour":
        unit, what = WINDOW_SECONDS["hour"], "hour boundaries (e.g., 00:00, 01:00, ..., 23:00)"
    else:
        unit, what = WINDOW_SECONDS["day"], "UTC day boundaries (00:00 UTC)"
    suffix = f" when value_grouping_window is {window}" if window else ""
    for name, value in (("start_time", start_time), ("end_time", end_time)):
        if value % unit:
            raise invalid(f"{name} must be aligned with {what}{suffix}.", param=name)
    if start_time >= end_time:
        raise invalid("start_time must be before end_time.", param="start_time")


def _seconds_text(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


async def _reply(send: Send, status: int, body: dict[str, Any], headers: Mapping[str, str]) -> None:
    await _send_raw(send, status, wire.dumps(body), headers)


async def _send_raw(send: Send, status: int, body: bytes, headers: Mapping[str, str]) -> None:
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((key.encode("latin-1"), value.encode("latin-1")) for key, value in headers.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _disconnected_within(receive: Receive, seconds: float) -> bool:
    """Hold the request up to `seconds`; True when the client hung up meanwhile."""
    try:
        await asyncio.wait_for(_wait_disconnect(receive), timeout=seconds)
    except TimeoutError:
        return False
    return True


async def _reset(scope: Scope, receive: Receive) -> None:
    """Drop the connection without a byte of response (TCP RST where the OS allows it)."""
    transport = scope.get("state", {}).get(TRANSPORT_STATE_KEY)
    if transport is None:
        raise RuntimeError("connection reset fault needs the simulator's server protocol")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Without SO_LINGER a plain close still ends the connection without a response.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    await _disconnected_within(receive, 1.0)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
