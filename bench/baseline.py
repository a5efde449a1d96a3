"""The same work done the way a user would by hand: a loop over the official `stripe` SDK.

Reads the ledger with one SQL query, asks Stripe (the simulator) for each pair's daily usage
one pair after another with `stripe.StripeClient`, then compares totals in plain Python.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

import stripe
from sqlalchemy import create_engine, text

from bench.dataset import Seeded, midnight


@dataclass(frozen=True, slots=True)
class BaselineResult:
    pairs: int
    seconds: float
    pairs_with_differences: int


def run_baseline(
    seeded: Seeded, *, database_url: str, api_base: str, api_key: str
) -> BaselineResult:
    started = time.perf_counter()
    engine = create_engine(database_url)
    ledger: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    with engine.connect() as connection:
        pairs = [
            (str(customer), str(meter))
            for customer, meter in connection.execute(
                text("SELECT stripe_customer_id, meter_id FROM tracked_pair ORDER BY 1, 2")
            )
        ]
        for customer, meter, quantity in connection.execute(
            text(
                "SELECT stripe_customer_id, meter_id, quantity FROM invoice_line_item "
                "WHERE period_start < :end AND period_end > :start"
            ),
            {"start": seeded.window_start, "end": seeded.window_end},
        ):
            ledger[(str(customer), str(meter))] += Decimal(str(quantity))
    engine.dispose()

    client = stripe.StripeClient(api_key, base_addresses={"api": api_base})
    formulas = {m.id: m.default_aggregation.formula for m in client.v1.billing.meters.list()}
    start_time, end_time = midnight(seeded.window_start), midnight(seeded.window_end)
    usage: dict[tuple[str, str], dict[date, Decimal]] = {}
    for customer, meter in pairs:
        days: dict[date, Decimal] = {}
        summaries = client.v1.billing.meters.event_summaries.list(
            meter,
            params={
                "customer": customer,
                "start_time": start_time,
                "end_time": end_time,
                "value_grouping_window": "day",
                "limit": 100,
            },
        )
        for summary in summaries.auto_paging_iter():
            day = datetime.fromtimestamp(summary.start_time, UTC).date()
            days[day] = Decimal(str(summary.aggregated_value))
        usage[(customer, meter)] = days

    different = 0
    for pair in pairs:
        days = usage[pair]
        if formulas.get(pair[1]) == "last":
            stripe_total = days[max(days)] if days else Decimal(0)
        else:
            stripe_total = sum(days.values(), Decimal(0))
        if abs(stripe_total - ledger.get(pair, Decimal(0))) > Decimal("0.000001"):
            different += 1
    return BaselineResult(
        pairs=len(pairs),
        seconds=time.perf_counter() - started,
        pairs_with_differences=different,
    )
