"""The simulator's data: meters, raw meter events, Stripe's aggregation of them, and the
billing side (prices, subscriptions, event adjustments) and the invoices Stripe finalized.

Events are indexed per (event_name, customer), sorted by timestamp, so answering one
event-summaries request costs a binary search plus the events in range, whatever the number
of customers. The data-file format is the architecture doc's: `{"meters": [...],
"events": [...], "prices": [...], "subscriptions": [...], "adjustments": [...],
"invoices": [...]}`, every key optional.
"""

from __future__ import annotations

import hashlib
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any, Literal, TypeVar

from models.money import loads_exact, to_decimal
from simulator.billing import (
    ItemRecord,
    PriceRecord,
    SubscriptionRecord,
    parse_adjustment,
    parse_price,
    parse_subscription,
)
from simulator.billing import SimulatorDataError as SimulatorDataError
from simulator.invoices import InvoiceRecord, parse_invoice

FORMULAS = ("count", "last", "sum")
STATUSES = ("active", "inactive")
WINDOW_SECONDS = {"day": 86_400, "hour": 3_600}
DEFAULT_CREATED = (
    1_735_689_600  # 2025-01-01T00:00:00Z; meter i of a file is created i seconds later
)
# Aggregation precision: far beyond anything a meter holds, so sums are exact.
_SUM_PRECISION = 200

Window = Literal["day", "hour"]
_Record = TypeVar("_Record", PriceRecord, SubscriptionRecord)
DATA_FILE_KEYS = ("meters", "events", "prices", "subscriptions", "adjustments", "invoices")


@dataclass(frozen=True, slots=True)
class MeterRecord:
    """A meter as the simulator serves it."""

    id: str
    display_name: str
    event_name: str
    formula: str
    status: str
    created: int
    updated: int


@dataclass(frozen=True, slots=True)
class Bucket:
    """One aggregated bucket `[start_time, end_time)` of a customer's events."""

    start_time: int
    end_time: int
    value: Decimal
    events: int


@dataclass(slots=True)
class _Series:
    """One (event_name, customer)'s events, in timestamp order (ties in arrival order)."""

    timestamps: list[int] = field(default_factory=list)
    values: list[Decimal] = field(default_factory=list)
    identifiers: list[str | None] = field(default_factory=list)

    def insert(self, timestamp: int, value: Decimal, identifier: str | None) -> None:
        index = bisect_right(self.timestamps, timestamp)
        self.timestamps.insert(index, timestamp)
        self.values.insert(index, value)
        self.identifiers.insert(index, identifier)

    def remove(self, timestamp: int, identifier: str) -> None:
        """Drop the event with `identifier` (at `timestamp`)."""
        low = bisect_left(self.timestamps, timestamp)
        high = bisect_right(self.timestamps, timestamp)
        index = self.identifiers.index(identifier, low, high)
        del self.timestamps[index], self.values[index], self.identifiers[index]


def summary_id(meter_id: str, customer: str, start_time: int, end_time: int) -> str:
    """A stable `mtrusg_…` id for one bucket of one customer on one meter."""
    digest = hashlib.blake2b(
        f"{meter_id}\x00{customer}\x00{start_time}\x00{end_time}".encode(), digest_size=12
    ).hexdigest()
    return f"mtrusg_{digest}"


def aggregate(formula: str, values: list[Decimal]) -> Decimal:
    """Stripe's aggregation of a bucket's event values, in event order."""
    if formula == "count":
        return Decimal(len(values))
    if formula == "last":
        return values[-1]
    with localcontext() as context:
        context.prec = _SUM_PRECISION
        return sum(values, Decimal(0))


def _text(raw: Mapping[str, Any], key: str, where: str, *, default: str | None = None) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or not value:
        raise SimulatorDataError(f"{where}: {key!r} must be a non-empty string")
    return value


def _integer(raw: Mapping[str, Any], key: str, where: str, *, default: int | None = None) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SimulatorDataError(f"{where}: {key!r} must be an integer (Unix seconds)")
    return value


class SimulatorData:
    """Meters and meter events; safe to read and extend from several threads."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._meters: dict[str, MeterRecord] = {}
        self._series: dict[tuple[str, str], _Series] = {}
        self._identifiers: set[str] = set()
        # identifier -> (event_name, customer, timestamp) of a kept event, to cancel it.
        self._kept: dict[str, tuple[str, str, int]] = {}
        self._canceled: set[str] = set()
        self._prices: dict[str, PriceRecord] = {}
        self._subscriptions: dict[str, SubscriptionRecord] = {}
        self._items: dict[str, ItemRecord] = {}
        self._invoices: dict[str, InvoiceRecord] = {}
        self._invoice_order: list[InvoiceRecord] | None = None  # sorted once per change
        self._line_ids: set[str] = set()
        self.event_count = 0
        self.duplicates_ignored = 0
        self.events_canceled = 0

    # -- loading -----------------------------------------------------------------------------

    @classmethod
    def from_mapping(cls, raw: object) -> SimulatorData:
        """Data from the parsed data-file JSON (decimal values as `Decimal`, str or int)."""
        if not isinstance(raw, Mapping):
            raise SimulatorDataError("the data file must hold a JSON object")
        unknown = set(raw) - set(DATA_FILE_KEYS)
        if unknown:
            raise SimulatorDataError(
                f"unknown top-level keys: {', '.join(sorted(map(str, unknown)))} "
                f"(known: {', '.join(DATA_FILE_KEYS)})"
            )
        for key in DATA_FILE_KEYS:
            if not isinstance(raw.get(key, []), list):
                raise SimulatorDataError(f"{key!r} must be an array")
        meters, events = raw.get("meters", []), raw.get("events", [])
        data = cls()
        for index, meter in enumerate(meters):
            where = f"meters[{index}]"
            if not isinstance(meter, Mapping):
                raise SimulatorDataError(f"{where}: must be an object")
            meter_id = _text(meter, "id", where)
            data.add_meter(
                id=meter_id,
                display_name=_text(meter, "display_name", where, default=meter_id),
                event_name=_text(meter, "event_name", where),
                formula=_text(meter, "formula", where, default="sum"),
                status=_text(meter, "status", where, default="active"),
                created=_integer(meter, "created", where, default=DEFAULT_CREATED + index),
                updated=meter.get("updated"),
            )
        data.add_events(events)
        data._load_billing(raw)
        return data

    def _load_billing(self, raw: Mapping[str, Any]) -> None:
        meters = frozenset(self._meters)
        for index, price in enumerate(raw.get("prices", [])):
            self._add_price(parse_price(price, f"prices[{index}]", meters=meters, index=index))
        for index, subscription in enumerate(raw.get("subscriptions", [])):
            where = f"subscriptions[{index}]"
            with self._lock:
                prices = dict(self._prices)
            self._add_subscription(parse_subscription(subscription, where, prices=prices))
        for index, adjustment in enumerate(raw.get("adjustments", [])):
            where = f"adjustments[{index}]"
            record = parse_adjustment(adjustment, where)
            if not self.cancel_event(event_name=record.event_name, identifier=record.identifier):
                raise SimulatorDataError(
                    f"{where}: no event {record.identifier!r} of event name "
                    f"{record.event_name!r} to cancel"
                )
        for index, invoice in enumerate(raw.get("invoices", [])):
            parsed = self._parse_invoice(invoice, f"invoices[{index}]")
            self._add_invoice(parsed, f"invoices[{index}] ({parsed.id})")

    @classmethod
    def from_json(cls, text: str | bytes) -> SimulatorData:
        """Data from data-file text; JSON numbers are read as decimals from their text."""
        try:
            raw = loads_exact(text)
        except ValueError as exc:
            raise SimulatorDataError(f"not valid JSON: {exc}") from None
        return cls.from_mapping(raw)

    @classmethod
    def load(cls, path: Path | str) -> SimulatorData:
        """Data from a data file."""
        return cls.from_json(Path(path).read_bytes())

    # -- writing -----------------------------------------------------------------------------

    def add_meter(
        self,
        *,
        id: str,
        event_name: str,
        display_name: str | None = None,
        formula: str = "sum",
        status: str = "active",
        created: int | None = None,
        updated: object = None,
    ) -> MeterRecord:
        """Add a meter; ids are unique."""
        where = f"meter {id!r}"
        if formula not in FORMULAS:
            raise SimulatorDataError(f"{where}: formula must be one of {', '.join(FORMULAS)}")
        if status not in STATUSES:
            raise SimulatorDataError(f"{where}: status must be one of {', '.join(STATUSES)}")
        with self._lock:
            if id in self._meters:
                raise SimulatorDataError(f"{where}: a meter with this id already exists")
            created_at = DEFAULT_CREATED + len(self._meters) if created is None else created
            if updated is None:
                updated_at = created_at
            elif isinstance(updated, int) and not isinstance(updated, bool):
                updated_at = updated
            else:
                raise SimulatorDataError(f"{where}: 'updated' must be an integer")
            record = MeterRecord(
                id=id,
                display_name=display_name or id,
                event_name=event_name,
                formula=formula,
                status=status,
                created=created_at,
                updated=updated_at,
            )
            self._meters[id] = record
            return record

    def add_event(
        self,
        *,
        event_name: str,
        customer: str,
        timestamp: int,
        value: Decimal | str | int = 1,
        identifier: str | None = None,
    ) -> bool:
        """Record one meter event; False when its identifier was already seen (then ignored)."""
        if isinstance(timestamp, bool) or not isinstance(timestamp, int):
            raise SimulatorDataError(f"event timestamp must be an integer, got {timestamp!r}")
        try:
            amount = to_decimal(value)
        except ValueError as exc:
            raise SimulatorDataError(f"event value: {exc}") from None
        with self._lock:
            if identifier is not None:
                if identifier in self._identifiers:
                    self.duplicates_ignored += 1
                    return False
                self._identifiers.add(identifier)
                self._kept[identifier] = (event_name, customer, timestamp)
            key = (event_name, customer)
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = _Series()
            series.insert(timestamp, amount, identifier)
            self.event_count += 1
            return True

    def cancel_event(self, *, event_name: str, identifier: str) -> bool:
        """Cancel the event with `identifier` and `event_name` (a meter event adjustment).

        False when no such event was received. Cancelling twice is no error; the identifier
        stays seen, so the event cannot be sent again.
        """
        with self._lock:
            if identifier in self._canceled:
                return self._kept[identifier][0] == event_name
            kept = self._kept.get(identifier)
            if kept is None or kept[0] != event_name:
                return False
            _, customer, timestamp = kept
            self._series[(event_name, customer)].remove(timestamp, identifier)
            self._canceled.add(identifier)
            self.event_count -= 1
            self.events_canceled += 1
            return True

    def add_price(self, price: Mapping[str, Any]) -> PriceRecord:
        """Add a price given as a data-file entry (its meter must exist)."""
        with self._lock:
            index, meters = len(self._prices), frozenset(self._meters)
        where = f"price {price.get('id')!r}"
        return self._add_price(parse_price(price, where, meters=meters, index=index))

    def add_subscription(self, subscription: Mapping[str, Any]) -> SubscriptionRecord:
        """Add a subscription given as a data-file entry (its prices must exist)."""
        with self._lock:
            prices = dict(self._prices)
        where = f"subscription {subscription.get('id')!r}"
        return self._add_subscription(parse_subscription(subscription, where, prices=prices))

    def add_invoice(self, invoice: Mapping[str, Any]) -> InvoiceRecord:
        """Add an invoice given as a data-file entry (its prices and items must exist)."""
        record = self._parse_invoice(invoice, f"invoice {invoice.get('id')!r}")
        return self._add_invoice(record, f"invoice {record.id!r}")

    def _parse_invoice(self, invoice: object, where: str) -> InvoiceRecord:
        with self._lock:  # parsing reads the records in place: no copy per invoice
            return parse_invoice(
                invoice,
                where,
                prices=self._prices,
                subscriptions=self._subscriptions,
                items=self._items,
            )

    def _add_invoice(self, record: InvoiceRecord, where: str) -> InvoiceRecord:
        with self._lock:
            if record.id in self._invoices:
                raise SimulatorDataError(f"{where}: an invoice with this id already exists")
            seen: set[str] = set()
            for line in record.lines:
                if line.id in self._line_ids or line.id in seen:
                    raise SimulatorDataError(f"{where}: invoice line {line.id!r} already exists")
                seen.add(line.id)
            self._invoices[record.id] = record
            self._invoice_order = None
            self._line_ids.update(seen)
        return record

    def _add_price(self, record: PriceRecord) -> PriceRecord:
        with self._lock:
            if record.id in self._prices:
                raise SimulatorDataError(
                    f"price {record.id!r}: a price with this id already exists"
                )
            self._prices[record.id] = record
        return record

    def _add_subscription(self, record: SubscriptionRecord) -> SubscriptionRecord:
        with self._lock:
            if record.id in self._subscriptions:
                raise SimulatorDataError(
                    f"subscription {record.id!r}: a subscription with this id already exists"
                )
            ids = [item.id for item in record.items]
            repeated = sorted({i for i in ids if i in self._items or ids.count(i) > 1})
            if repeated:
                raise SimulatorDataError(
                    f"subscription {record.id!r}: subscription item {repeated[0]!r} already exists"
                )
            self._subscriptions[record.id] = record
            self._items.update((item.id, item) for item in record.items)
        return record

    def add_events(self, events: Iterable[object]) -> int:
        """Add data-file event objects in order; returns how many were kept."""
        kept = 0
        for index, event in enumerate(events):
            where = f"events[{index}]"
            if not isinstance(event, Mapping):
                raise SimulatorDataError(f"{where}: must be an object")
            identifier = event.get("identifier")
            if identifier is not None and (not isinstance(identifier, str) or not identifier):
                raise SimulatorDataError(f"{where}: 'identifier' must be a non-empty string")
            value = event.get("value", 1)
            if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
                raise SimulatorDataError(f"{where}: 'value' must be a decimal string or number")
            try:
                kept += self.add_event(
                    event_name=_text(event, "event_name", where),
                    customer=_text(event, "customer", where),
                    timestamp=_integer(event, "timestamp", where),
                    value=value,
                    identifier=identifier,
                )
            except SimulatorDataError as exc:
                raise SimulatorDataError(f"{where}: {exc}") from None
        return kept

    # -- reading -----------------------------------------------------------------------------

    def price(self, price_id: str) -> PriceRecord | None:
        with self._lock:
            return self._prices.get(price_id)

    def prices(self) -> list[PriceRecord]:
        """Every price, newest created first (ties: the later added first)."""
        with self._lock:
            return _newest_first(list(self._prices.values()))

    def subscription(self, subscription_id: str) -> SubscriptionRecord | None:
        with self._lock:
            return self._subscriptions.get(subscription_id)

    def subscriptions(self) -> list[SubscriptionRecord]:
        """Every subscription, newest created first (ties: the later added first)."""
        with self._lock:
            return _newest_first(list(self._subscriptions.values()))

    def invoice(self, invoice_id: str) -> InvoiceRecord | None:
        with self._lock:
            return self._invoices.get(invoice_id)

    def invoices(self) -> list[InvoiceRecord]:
        """Every invoice, newest created first (ties: the greater id first)."""
        with self._lock:
            if self._invoice_order is None:
                self._invoice_order = sorted(
                    self._invoices.values(),
                    key=lambda record: (record.created, record.id),
                    reverse=True,
                )
            return list(self._invoice_order)

    def meter(self, meter_id: str) -> MeterRecord | None:
        with self._lock:
            return self._meters.get(meter_id)

    def meters(self, status: str | None = None) -> list[MeterRecord]:
        """Meters, newest created first (as Stripe lists them), optionally of one status."""
        with self._lock:
            ordered = list(self._meters.values())
        ranked = sorted(enumerate(ordered), key=lambda item: (item[1].created, item[0]))
        return [meter for _, meter in reversed(ranked) if status is None or meter.status == status]

    def buckets(
        self,
        meter: MeterRecord,
        customer: str,
        start_time: int,
        end_time: int,
        window: Window | None,
    ) -> list[Bucket]:
        """The customer's non-empty buckets of `meter` in `[start_time, end_time)`, newest first.

        With a window, buckets are aligned UTC days or hours; without one, a single bucket
        spans the whole range.
        """
        with self._lock:
            series = self._series.get((meter.event_name, customer))
            if series is None:
                return []
            low = bisect_left(series.timestamps, start_time)
            high = bisect_left(series.timestamps, end_time)
            timestamps = series.timestamps[low:high]
            values = series.values[low:high]
        if not timestamps:
            return []
        if window is None:
            return [Bucket(start_time, end_time, aggregate(meter.formula, values), len(values))]
        size = WINDOW_SECONDS[window]
        buckets: list[Bucket] = []
        group_start = timestamps[0] - timestamps[0] % size
        group: list[Decimal] = []
        for timestamp, value in zip(timestamps, values, strict=True):
            bucket_start = timestamp - timestamp % size
            if bucket_start != group_start:
                buckets.append(
                    Bucket(
                        group_start, group_start + size, aggregate(meter.formula, group), len(group)
                    )
                )
                group_start, group = bucket_start, []
            group.append(value)
        buckets.append(
            Bucket(group_start, group_start + size, aggregate(meter.formula, group), len(group))
        )
        buckets.reverse()
        return buckets


def _newest_first(records: list[_Record]) -> list[_Record]:
    ranked = sorted(enumerate(records), key=lambda item: (item[1].created, item[0]))
    return [record for _, record in reversed(ranked)]
