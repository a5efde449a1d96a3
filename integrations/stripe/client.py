"""A small, thread-safe, rate-limited and retrying client for Stripe's billing meter endpoints,
for the subscriptions and prices that say what Stripe bills, and the invoices it billed."""

from __future__ import annotations

import logging
import platform
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import partial
from importlib import metadata
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypeVar
from urllib.parse import quote_plus, urlencode

import httpx
from pydantic import SecretStr

from integrations.stripe.errors import (
    StripeAPIError,
    StripeConnectionError,
    StripeError,
    api_error_class,
)
from integrations.stripe.models import (
    DailyUsage,
    EventSummary,
    HourlyUsage,
    Invoice,
    InvoiceLine,
    Malformed,
    Meter,
    Subscription,
    SubscriptionItem,
    UsageTotal,
)
from integrations.stripe.rate_limit import RateLimiter, shared_rate_limiter
from integrations.stripe.redaction import redact
from integrations.stripe.retry import backoff_seconds, retry_after_seconds, should_retry_status
from models.canonical import utc_midnight
from models.money import loads_exact, to_decimal

STRIPE_VERSION = "2026-10-28.endive"
"""The API version stripe-python 16.1.0 pins (`Stripe-Version`)."""

DEFAULT_API_BASE = "https://api.stripe.com"
PAGE_LIMIT = 100
SECONDS_PER_DAY = 86_400
SECONDS_PER_HOUR = 3_600
SECONDS_PER_MINUTE = 60
INVOICE_STATUSES = frozenset({"draft", "open", "paid", "uncollectible", "void"})

ValueGroupingWindow = Literal["day", "hour"]

logger = logging.getLogger("integrations.stripe")

T = TypeVar("T")
ItemT = TypeVar("ItemT")


class _MalformedBody(ValueError):
    """A 2xx response whose body is not what the endpoint returns."""


@dataclass
class _Call:
    """One public call: what the logs name it by, and how many attempts it made."""

    meter: str | None = None
    customer: str | None = None
    requests: int = 0


@dataclass(frozen=True)
class _Page(Generic[ItemT]):
    items: list[ItemT]
    has_more: bool
    last_id: str | None


def _user_agent() -> str:
    try:
        version = metadata.version("meter-recon")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    return (
        f"meter-recon/{version} httpx/{httpx.__version__} "
        f"{platform.python_implementation()}/{platform.python_version()}"
    )


def summaries_params(
    *,
    customer: str,
    start_time: int,
    end_time: int,
    value_grouping_window: ValueGroupingWindow | None,
    limit: int = PAGE_LIMIT,
    expand: Sequence[str] = (),
    starting_after: str | None = None,
) -> list[tuple[str, str]]:
    """The query parameters of an event-summaries request, in stripe-python's order.

    Order: customer, start_time, end_time, value_grouping_window, limit, expand[i], then
    starting_after (the cursor is appended last by the SDK's auto-pager).
    """
    pairs: list[tuple[str, str]] = [
        ("customer", customer),
        ("start_time", str(start_time)),
        ("end_time", str(end_time)),
    ]
    if value_grouping_window is not None:
        pairs.append(("value_grouping_window", value_grouping_window))
    pairs.append(("limit", str(limit)))
    pairs.extend((f"expand[{index}]", field) for index, field in enumerate(expand))
    if starting_after is not None:
        pairs.append(("starting_after", starting_after))
    return pairs


def summaries_query(
    *,
    customer: str,
    start_time: int,
    end_time: int,
    value_grouping_window: ValueGroupingWindow | None,
    limit: int = PAGE_LIMIT,
    expand: Sequence[str] = (),
    starting_after: str | None = None,
) -> str:
    """The query string of an event-summaries request, encoded exactly as stripe-python does
    (`urllib.parse.urlencode`, i.e. `quote_plus` escaping)."""
    return urlencode(
        summaries_params(
            customer=customer,
            start_time=start_time,
            end_time=end_time,
            value_grouping_window=value_grouping_window,
            limit=limit,
            expand=expand,
            starting_after=starting_after,
        )
    )


def summaries_path(meter_id: str) -> str:
    return f"/v1/billing/meters/{quote_plus(meter_id)}/event_summaries"


def subscriptions_params(*, starting_after: str | None = None) -> list[tuple[str, str]]:
    """`GET /v1/subscriptions` of every status, in stripe-python's order (cursor last)."""
    pairs = [("status", "all"), ("limit", str(PAGE_LIMIT))]
    return pairs if starting_after is None else [*pairs, ("starting_after", starting_after)]


def subscription_items_params(
    subscription: str, *, starting_after: str | None = None
) -> list[tuple[str, str]]:
    """`GET /v1/subscription_items` of one subscription, in stripe-python's order."""
    pairs = [("subscription", subscription), ("limit", str(PAGE_LIMIT))]
    return pairs if starting_after is None else [*pairs, ("starting_after", starting_after)]


def price_target(price_id: str, *, expand_tiers: bool = False) -> str:
    """`GET /v1/prices/{id}`, with `expand[0]=tiers` encoded as stripe-python encodes it."""
    path = f"/v1/prices/{quote_plus(price_id)}"
    return f"{path}?{urlencode([('expand[0]', 'tiers')])}" if expand_tiers else path


def invoices_params(*, created_gte: int, customer: str | None = None) -> list[tuple[str, str]]:
    """`GET /v1/invoices` created at or after `created_gte`, in stripe-python's order for
    `{"customer": ..., "created": {"gte": ...}, "limit": 100}` (cursor appended last)."""
    pairs = [] if customer is None else [("customer", customer)]
    return [*pairs, ("created[gte]", str(created_gte)), ("limit", str(PAGE_LIMIT))]


def invoice_lines_path(invoice_id: str) -> str:
    """`GET /v1/invoices/{id}/lines`: the lines of one invoice beyond those inlined."""
    return f"/v1/invoices/{quote_plus(invoice_id)}/lines"


def _require(body: Mapping[str, Any], key: str, kind: type[T]) -> T:
    value = body.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _MalformedBody(f"field {key!r} is missing or not a {kind.__name__}")
    return value


def _object(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _MalformedBody(f"{what} is not a JSON object")
    return value


def parse_meter(raw: object) -> Meter:
    body = _object(raw, "meter")
    aggregation = _object(body.get("default_aggregation"), "default_aggregation")
    return Meter(
        id=_require(body, "id", str),
        display_name=_require(body, "display_name", str),
        event_name=_require(body, "event_name", str),
        formula=_require(aggregation, "formula", str),
        status=_require(body, "status", str),
    )


def parse_event_summary(raw: object) -> EventSummary:
    body = _object(raw, "event summary")
    value = body.get("aggregated_value")
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise _MalformedBody("field 'aggregated_value' is missing or not a number")
    return EventSummary(
        id=_require(body, "id", str),
        meter=_require(body, "meter", str),
        start_time=_require(body, "start_time", int),
        end_time=_require(body, "end_time", int),
        aggregated_value=to_decimal(value),
    )


def _optional_int(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _MalformedBody(f"field {key!r} is not an integer")
    return value


def _expandable_id(body: Mapping[str, Any], key: str) -> str:
    """An id field Stripe may send expanded (an object with an `id`)."""
    value = body.get(key)
    if isinstance(value, dict):
        return _require(value, "id", str)
    return _require(body, key, str)


def parse_price(raw: object) -> Mapping[str, Any]:
    """A `price` object, kept as Stripe sent it (a plain dict, so results pickle across
    workers), once it is seen to be one."""
    body = _object(raw, "price")
    if body.get("object") != "price":
        raise _MalformedBody("response is not a price object")
    _require(body, "id", str)
    return body


def parse_subscription_item(raw: object) -> SubscriptionItem:
    body = _object(raw, "subscription item")
    return SubscriptionItem(
        id=_require(body, "id", str),
        subscription=_require(body, "subscription", str),
        price=parse_price(body.get("price")),
        current_period_start=_optional_int(body, "current_period_start"),
        current_period_end=_optional_int(body, "current_period_end"),
    )


@dataclass(frozen=True)
class _SubscriptionPage:
    """A subscription as listed: its inline items, and whether Stripe holds more of them."""

    subscription: Subscription
    more_items: bool


def parse_listed_subscription(raw: object) -> _SubscriptionPage:
    body = _object(raw, "subscription")
    items = _parse_page(body.get("items"), parse_subscription_item)
    subscription = Subscription(
        id=_require(body, "id", str),
        customer=_expandable_id(body, "customer"),
        status=_require(body, "status", str),
        created=_require(body, "created", int),
        items=tuple(items.items),
    )
    return _SubscriptionPage(subscription=subscription, more_items=items.has_more)


_CURRENCY_CODE = re.compile(r"[a-z]{3}")


def _malformed(what: str, raw: object, invoice: str | None, exc: ValueError) -> Malformed:
    """What could not be read, named by its id when it has one."""
    body = raw if isinstance(raw, dict) else {}
    own = body["id"] if isinstance(body.get("id"), str) else "?"
    return Malformed(
        object=what, id=own, invoice=own if invoice is None else invoice, reason=str(exc)
    )


def _sub_object(body: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    value = body.get(key)
    return value if isinstance(value, dict) else None


def _line_price(body: Mapping[str, Any]) -> str | None:
    """`pricing.price_details.price` (an id, or the expanded price); `None` without pricing."""
    pricing = body.get("pricing")
    if pricing is None:
        return None
    pricing = _object(pricing, "pricing")
    if pricing.get("type") != "price_details":
        return None
    details = _object(pricing.get("price_details"), "pricing.price_details")
    try:
        return _expandable_id(details, "price")
    except _MalformedBody:
        raise _MalformedBody("its price (pricing.price_details.price) cannot be read") from None


def _line_quantity(body: Mapping[str, Any]) -> Decimal:
    for key in ("quantity_decimal", "quantity"):
        value = body.get(key)
        if value is not None:
            try:
                return to_decimal(value)
            except ValueError:
                raise _MalformedBody(f"field {key!r} is not a decimal number") from None
    return Decimal(0)


def _parse_line(invoice_id: str, raw: object) -> InvoiceLine:
    body = _object(raw, "line item")
    period = _object(body.get("period"), "period")
    parent = _sub_object(body, "parent") or {}
    item_details = _sub_object(parent, "subscription_item_details")
    own_details = _sub_object(parent, str(parent.get("type"))) or item_details or {}
    subscription_item = item_details.get("subscription_item") if item_details else None
    start, end = _require(period, "start", int), _require(period, "end", int)
    if end < start:
        raise _MalformedBody(f"its period ends ({end}) before it starts ({start})")
    return InvoiceLine(
        id=_require(body, "id", str),
        invoice_id=invoice_id,
        subscription_item=subscription_item if isinstance(subscription_item, str) else None,
        price_id=_line_price(body),
        period_start=start,
        period_end=end,
        quantity=_line_quantity(body),
        amount=_require(body, "amount", int),
        proration=own_details.get("proration") is True,
    )


def parse_invoice_line(invoice_id: str, raw: object) -> InvoiceLine | Malformed:
    """A line of invoice `invoice_id`, or why it cannot be read."""
    try:
        return _parse_line(invoice_id, raw)
    except ValueError as exc:
        return _malformed("line_item", raw, invoice_id, exc)


def _invoice_subscription(body: Mapping[str, Any]) -> str | None:
    parent = _sub_object(body, "parent") or {}
    details = _sub_object(parent, "subscription_details")
    return None if details is None else _expandable_id(details, "subscription")


def _parse_invoice(raw: object) -> Invoice:
    body = _object(raw, "invoice")
    invoice_id = _require(body, "id", str)
    status = body.get("status")
    if status not in INVOICE_STATUSES:
        raise _MalformedBody(f"status {status!r} is not one of {sorted(INVOICE_STATUSES)}")
    currency = body.get("currency")
    if not isinstance(currency, str) or not _CURRENCY_CODE.fullmatch(currency):
        raise _MalformedBody(f"currency {currency!r} is not a currency code")
    transitions = _sub_object(body, "status_transitions") or {}
    lines = _parse_page(body.get("lines"), partial(parse_invoice_line, invoice_id))
    return Invoice(
        id=invoice_id,
        customer=_expandable_id(body, "customer"),
        subscription=_invoice_subscription(body),
        status=str(status),
        created=_require(body, "created", int),
        finalized_at=_optional_int(transitions, "finalized_at"),
        currency=currency,
        period_start=_require(body, "period_start", int),
        period_end=_require(body, "period_end", int),
        inline_lines=tuple(lines.items),
        more_lines=lines.has_more,
    )


def parse_listed_invoice(raw: object) -> Invoice | Malformed:
    """A listed invoice with its inline lines, or why it cannot be read."""
    try:
        return _parse_invoice(raw)
    except ValueError as exc:
        return _malformed("invoice", raw, None, exc)


def _parse_page(raw: object, parse_item: Callable[[object], ItemT]) -> _Page[ItemT]:
    body = _object(raw, "list")
    if body.get("object") != "list":
        raise _MalformedBody("response is not a list object")
    data = body.get("data")
    has_more = body.get("has_more")
    if not isinstance(data, list) or not isinstance(has_more, bool):
        raise _MalformedBody("list without 'data' array or 'has_more' boolean")
    items = [parse_item(item) for item in data]
    last_id = _require(_object(data[-1], "list item"), "id", str) if data else None
    if has_more and last_id is None:
        raise _MalformedBody("list says has_more but holds no data")
    return _Page(items=items, has_more=has_more, last_id=last_id)


class StripeClient:
    """Stripe's billing meter endpoints over one pooled `httpx.Client`.

    Thread-safe: one instance is meant to be shared by every thread of a process. Every HTTP
    attempt (retries included) first takes a slot from the rate limiter: `rate_limiter` when
    given (then `max_requests_per_second` is unused), else the process-wide limiter for
    `max_requests_per_second` (`shared_rate_limiter`).

    Retries follow stripe-python's rule extended to 429 (see `retry.py`), with full-jitter
    exponential backoff (`backoff_base`, `backoff_cap`) and `Retry-After` as a floor, for at
    most `max_attempts` attempts and `max_retry_seconds` seconds per request.
    """

    def __init__(
        self,
        *,
        api_key: SecretStr | str,
        api_base: str = DEFAULT_API_BASE,
        stripe_version: str = STRIPE_VERSION,
        max_requests_per_second: float = 20.0,
        rate_limiter: RateLimiter | None = None,
        max_attempts: int = 8,
        max_retry_seconds: float = 120.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 8.0,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        secret = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        if not secret:
            raise ValueError("a Stripe API key is required")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._api_key = SecretStr(secret)
        self.api_base = api_base.rstrip("/")
        self.stripe_version = stripe_version
        self.max_attempts = max_attempts
        self.max_retry_seconds = max_retry_seconds
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.rate_limiter: RateLimiter = (
            rate_limiter
            if rate_limiter is not None
            else shared_rate_limiter(max_requests_per_second)
        )
        self._requests_made = 0
        self._counter_lock = threading.Lock()
        self._http = httpx.Client(
            base_url=self.api_base,
            headers={
                "Stripe-Version": stripe_version,
                "User-Agent": _user_agent(),
                "Accept": "application/json",
            },
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            transport=transport,
            follow_redirects=False,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"StripeClient(api_base={self.api_base!r}, stripe_version={self.stripe_version!r})"

    @property
    def requests_made(self) -> int:
        """HTTP attempts made by this client so far, retries included."""
        with self._counter_lock:
            return self._requests_made

    # -- endpoints ---------------------------------------------------------------------------

    def list_meters(self) -> list[Meter]:
        """Every billing meter of the account (all pages)."""
        items, _ = self._list_all(
            "/v1/billing/meters", [("limit", str(PAGE_LIMIT))], _Call(), parse_meter
        )
        return items

    def get_meter(self, meter_id: str) -> Meter:
        """One billing meter."""
        return self._get_json(
            f"/v1/billing/meters/{quote_plus(meter_id)}", _Call(meter=meter_id), parse_meter
        )

    def event_summaries(
        self,
        *,
        meter_id: str,
        customer: str,
        start_time: int,
        end_time: int,
        value_grouping_window: ValueGroupingWindow | None = "day",
    ) -> list[EventSummary]:
        """Every event summary of `customer` on `meter_id` in `[start_time, end_time)`."""
        summaries, _ = self._summaries(
            meter_id=meter_id,
            customer=customer,
            start_time=start_time,
            end_time=end_time,
            value_grouping_window=value_grouping_window,
        )
        return summaries

    def daily_usage(self, *, meter_id: str, customer: str, start: date, end: date) -> DailyUsage:
        """Usage per UTC day in `[start, end)`: each daily bucket's `start_time` day -> value.

        Days without a bucket are absent. Bucket order is irrelevant; a bucket that is not a
        whole UTC day inside the range, or a day given twice, is a malformed answer.
        """
        if end < start:
            raise ValueError(f"end {end} is before start {start}")
        if start == end:
            return DailyUsage(values={}, requests=0)
        buckets, requests = self._buckets(
            meter_id=meter_id,
            customer=customer,
            start_time=utc_midnight(start),
            end_time=utc_midnight(end),
            window="day",
        )
        values = {
            start + timedelta(days=offset // SECONDS_PER_DAY): value
            for offset, value in buckets.items()
        }
        return DailyUsage(values=values, requests=requests)

    def hourly_usage(
        self, *, meter_id: str, customer: str, start: datetime, end: datetime
    ) -> HourlyUsage:
        """Usage per UTC hour in `[start, end)` (whole hours): each hour with a bucket -> value.

        The likely-cause diagnosis asks for it around a line item's boundaries.
        """
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("hourly usage needs timezone-aware UTC datetimes")
        if end < start:
            raise ValueError(f"end {end} is before start {start}")
        start_time, end_time = int(start.timestamp()), int(end.timestamp())
        if start_time % SECONDS_PER_HOUR or end_time % SECONDS_PER_HOUR:
            raise ValueError(f"hourly usage is asked for whole hours, not [{start}, {end})")
        if start_time == end_time:
            return HourlyUsage(values={}, requests=0)
        buckets, requests = self._buckets(
            meter_id=meter_id,
            customer=customer,
            start_time=start_time,
            end_time=end_time,
            window="hour",
        )
        values = {
            datetime.fromtimestamp(start_time + offset, UTC): value
            for offset, value in buckets.items()
        }
        return HourlyUsage(values=values, requests=requests)

    def subscriptions(self) -> list[Subscription]:
        """Every subscription of the account, of every status, each with all its items."""
        return list(self.iter_subscriptions())

    def iter_subscriptions(self) -> Iterator[Subscription]:
        """Every subscription, one page in memory at a time (an account may have 100,000s).

        Pages `GET /v1/subscriptions?status=all&limit=100`; a subscription whose inline items
        say `has_more` has them all listed by `GET /v1/subscription_items`.
        """
        pages = self._pages(
            "/v1/subscriptions", subscriptions_params(), _Call(), parse_listed_subscription
        )
        for page in pages:
            for entry in page:
                subscription = entry.subscription
                if entry.more_items:
                    items, _ = self._list_all(
                        "/v1/subscription_items",
                        subscription_items_params(subscription.id),
                        _Call(),
                        parse_subscription_item,
                    )
                    subscription = replace(subscription, items=tuple(items))
                yield subscription

    def get_price(self, price_id: str, *, expand_tiers: bool = False) -> Mapping[str, Any]:
        """One price, as Stripe sent it; a tiered price's `tiers` come only with `expand_tiers`."""
        return self._get_json(
            price_target(price_id, expand_tiers=expand_tiers), _Call(), parse_price
        )

    def invoices(
        self, *, created_gte: int, customer: str | None = None
    ) -> Iterator[Invoice | Malformed]:
        """Every invoice created at or after `created_gte` (of `customer` when given), one page
        in memory at a time; one that cannot be read is yielded as `Malformed`, not raised.

        Pages `GET /v1/invoices?created[gte]=T&limit=100`; `invoice_lines` gives each one's
        lines.
        """
        params = invoices_params(created_gte=created_gte, customer=customer)
        call = _Call(customer=customer)
        for page in self._pages("/v1/invoices", params, call, parse_listed_invoice):
            yield from page

    def invoice_lines(self, invoice: Invoice) -> Iterator[InvoiceLine | Malformed]:
        """Every line of `invoice`: those inlined, then (only when Stripe holds more, and only as
        they are used) the rest from `GET /v1/invoices/{id}/lines?limit=100`."""
        yield from invoice.inline_lines
        if not invoice.more_lines or not invoice.inline_lines:
            return
        pages = self._pages(
            invoice_lines_path(invoice.id),
            [("limit", str(PAGE_LIMIT))],
            _Call(customer=invoice.customer),
            partial(parse_invoice_line, invoice.id),
            starting_after=invoice.inline_lines[-1].id,
        )
        for page in pages:
            yield from page

    def usage_total(
        self, *, meter: str, customer: str, start_time: int, end_time: int
    ) -> UsageTotal:
        """Usage of `customer` on `meter` over one range, as one summary (none: 0).

        Both ends are rounded down to the minute, as Stripe requires; the total says which
        range it covers. An empty range (after rounding) makes no request.
        """
        start = start_time - start_time % SECONDS_PER_MINUTE
        end = end_time - end_time % SECONDS_PER_MINUTE
        if end <= start:
            return UsageTotal(value=Decimal(0), start_time=start, end_time=end, requests=0)
        summaries, requests = self._summaries(
            meter_id=meter,
            customer=customer,
            start_time=start,
            end_time=end,
            value_grouping_window=None,
        )
        if len(summaries) > 1:
            raise StripeConnectionError(
                f"Stripe returned {len(summaries)} summaries for one range without a grouping "
                f"window (meter {meter}, customer {customer})"
            )
        value = summaries[0].aggregated_value if summaries else Decimal(0)
        return UsageTotal(value=value, start_time=start, end_time=end, requests=requests)

    # -- plumbing ----------------------------------------------------------------------------

    def _buckets(
        self,
        *,
        meter_id: str,
        customer: str,
        start_time: int,
        end_time: int,
        window: ValueGroupingWindow,
    ) -> tuple[dict[int, Decimal], int]:
        """Each bucket's offset from `start_time` -> value; a misaligned or repeated bucket is a
        malformed answer."""
        summaries, requests = self._summaries(
            meter_id=meter_id,
            customer=customer,
            start_time=start_time,
            end_time=end_time,
            value_grouping_window=window,
        )
        unit = SECONDS_PER_DAY if window == "day" else SECONDS_PER_HOUR
        what = "a UTC day" if window == "day" else "a whole UTC hour"
        values: dict[int, Decimal] = {}
        for summary in summaries:
            offset = summary.start_time - start_time
            if offset % unit or not start_time <= summary.start_time < end_time:
                raise StripeConnectionError(
                    f"Stripe returned a bucket starting at {summary.start_time}, not {what} in "
                    f"[{start_time}, {end_time}) (meter {meter_id}, customer {customer})"
                )
            if offset in values:
                raise StripeConnectionError(
                    f"Stripe returned two buckets starting at {summary.start_time} "
                    f"(meter {meter_id}, customer {customer})"
                )
            values[offset] = summary.aggregated_value
        return values, requests

    def _summaries(
        self,
        *,
        meter_id: str,
        customer: str,
        start_time: int,
        end_time: int,
        value_grouping_window: ValueGroupingWindow | None,
    ) -> tuple[list[EventSummary], int]:
        pairs = summaries_params(
            customer=customer,
            start_time=start_time,
            end_time=end_time,
            value_grouping_window=value_grouping_window,
        )
        call = _Call(meter=meter_id, customer=customer)
        return self._list_all(summaries_path(meter_id), pairs, call, parse_event_summary)

    def _list_all(
        self,
        path: str,
        pairs: list[tuple[str, str]],
        call: _Call,
        parse_item: Callable[[object], ItemT],
    ) -> tuple[list[ItemT], int]:
        items = [item for page in self._pages(path, pairs, call, parse_item) for item in page]
        return items, call.requests

    def _pages(
        self,
        path: str,
        pairs: list[tuple[str, str]],
        call: _Call,
        parse_item: Callable[[object], ItemT],
        starting_after: str | None = None,
    ) -> Iterator[list[ItemT]]:
        """Each page's items, asked for only when the one before is used (from the item after
        `starting_after` when given)."""
        while True:
            page_pairs = (
                pairs if starting_after is None else [*pairs, ("starting_after", starting_after)]
            )
            page = self._get_json(
                f"{path}?{urlencode(page_pairs)}",
                call,
                lambda body: _parse_page(body, parse_item),
            )
            yield page.items
            if not page.has_more:
                return
            starting_after = page.last_id

    def _count_attempt(self, call: _Call) -> None:
        call.requests += 1
        with self._counter_lock:
            self._requests_made += 1

    def _get_json(self, target: str, call: _Call, parse: Callable[[Any], T]) -> T:
        """GET `target` with rate limiting and retries; `parse` turns the JSON into a result."""
        secret = self._api_key.get_secret_value()
        headers = {"Authorization": f"Bearer {secret}"}
        started = time.monotonic()
        attempt = 0
        while True:
            # Built before waiting for a slot, so the request leaves as soon as it gets one.
            request = self._http.build_request("GET", target, headers=headers)
            self.rate_limiter.acquire()
            attempt += 1
            self._count_attempt(call)
            retry_after: float | None = None
            failure: StripeError
            try:
                response = self._http.send(request)
            except httpx.UnsupportedProtocol as exc:
                raise StripeConnectionError(
                    redact(f"Cannot reach Stripe at {self.api_base}: {exc}", secret)
                ) from None
            except httpx.RequestError as exc:
                reason = type(exc).__name__
                failure = StripeConnectionError(
                    redact(f"Could not reach Stripe: {reason}: {exc}", secret), should_retry=True
                )
            else:
                request_id = response.headers.get("request-id")
                if response.is_success:
                    try:
                        return parse(loads_exact(response.content))
                    except (ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
                        reason = "malformed body"
                        failure = StripeConnectionError(
                            redact(f"Stripe sent a malformed response body: {exc}", secret),
                            status=response.status_code,
                            request_id=request_id,
                            should_retry=True,
                        )
                else:
                    reason = f"HTTP {response.status_code}"
                    failure = self._api_error(response, secret)
                    retry_after = retry_after_seconds(response.headers)
            if not failure.should_retry:
                raise failure
            if attempt >= self.max_attempts:
                raise _exhausted(failure, attempt)
            delay = backoff_seconds(
                attempt - 1, base=self.backoff_base, cap=self.backoff_cap, retry_after=retry_after
            )
            if time.monotonic() - started + delay > self.max_retry_seconds:
                raise _exhausted(failure, attempt)
            logger.warning(
                "Stripe request failed (%s); retry %d of %d in %.2fs [meter=%s customer=%s]",
                reason,
                attempt,
                self.max_attempts - 1,
                delay,
                call.meter or "-",
                call.customer or "-",
                extra={
                    "stripe_meter": call.meter,
                    "stripe_customer": call.customer,
                    "stripe_attempt": attempt,
                    "stripe_reason": reason,
                },
            )
            time.sleep(delay)

    @staticmethod
    def _api_error(response: httpx.Response, secret: str) -> StripeAPIError:
        status = response.status_code
        request_id = response.headers.get("request-id")
        error_type = code = param = None
        message = f"Stripe answered HTTP {status}"
        try:
            body = loads_exact(response.content)
        except (ValueError, UnicodeDecodeError):
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            error_type = error.get("type") if isinstance(error.get("type"), str) else None
            code = error.get("code") if isinstance(error.get("code"), str) else None
            param = error.get("param") if isinstance(error.get("param"), str) else None
            if isinstance(error.get("message"), str):
                message = f"{message}: {error['message']}"
        return api_error_class(status)(
            redact(message, secret),
            status=status,
            type=error_type,
            code=code,
            param=param,
            request_id=request_id,
            should_retry=should_retry_status(status, response.headers),
        )


def _exhausted(failure: StripeError, attempts: int) -> StripeError:
    """`failure`, re-raised as the final error after `attempts` attempts."""
    return type(failure)(
        f"{failure.message} (gave up after {attempts} attempt{'s' if attempts != 1 else ''})",
        status=failure.status,
        type=failure.type,
        code=failure.code,
        param=failure.param,
        request_id=failure.request_id,
        should_retry=failure.should_retry,
    )
