"""A small, hand-computed world: Stripe usage, a ledger, and the discrepancies they must give."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from flows.windows import utc_today
from models.keys import DiscrepancyKey
from models.ledger import import_line_items
from models.pairs import track_by_hand
from models.tables import Discrepancy, DiscrepancyKind
from simulator import StripeSimulator

Kind = DiscrepancyKind


class Expected(NamedTuple):
    """A discrepancy as a run must leave it: its key, and its numbers."""

    key: DiscrepancyKey
    stripe_quantity: Decimal
    internal_quantity: Decimal | None
    difference: Decimal | None


def noon(day: date, minute: int = 0) -> int:
    return int(datetime(day.year, day.month, day.day, 12, minute, tzinfo=UTC).timestamp())


@dataclass(frozen=True)
class World:
    simulator: StripeSimulator
    today: date
    start: date
    end: date
    expected: frozenset[Expected]
    pairs: int
    compared: int
    matched: int
    pending: int


def build_world(simulator: StripeSimulator, engine: Engine, directory: Path) -> World:
    """Seed the simulator and the ledger; return what a run over the last 3 days must find."""
    today = utc_today()
    d1, d2, d3 = (today - timedelta(days=n) for n in (3, 2, 1))
    simulator.add_meter("mtr_api", event_name="api_call", formula="sum")
    simulator.add_meter("mtr_jobs", event_name="job_run", formula="count")
    simulator.add_meter("mtr_seats", event_name="seat_count", formula="last")
    events = [
        ("api_call", "cus_match", d1, "1.5"),
        ("api_call", "cus_match", d2, "2.25"),
        *(("api_call", "cus_match", d3, "0.1") for _ in range(3)),
        ("api_call", "cus_mismatch", d1, "10"),
        ("api_call", "cus_mismatch", d2, "5"),
        ("api_call", "cus_unbilled", d2, "7"),
        ("api_call", "cus_overlap", d1, "1"),
        ("api_call", "cus_overlap", d2, "1"),
        ("api_call", "cus_overlap", d3, "1"),
        ("api_call", "cus_pending", d1, "1"),
        *(("job_run", "cus_jobs", d1, "1") for _ in range(3)),
        *(("job_run", "cus_jobs", d2, "9") for _ in range(2)),
        ("seat_count", "cus_seats", d1, "10"),
    ]
    for minute, (event, customer, day, value) in enumerate(events):
        simulator.add_event(event, customer, noon(day, minute % 50), value)
    simulator.add_event("seat_count", "cus_seats", noon(d3, 1), "12")
    simulator.add_event("seat_count", "cus_seats", noon(d3, 2), "8")

    rows = [
        ("li_match", "cus_match", "mtr_api", d1, today, "4.05"),
        ("li_mismatch", "cus_mismatch", "mtr_api", d1, today, "14"),
        ("li_missing", "cus_missing", "mtr_api", d1, today, "3"),
        ("li_ov_a", "cus_overlap", "mtr_api", d1, d3, "2"),
        ("li_ov_b", "cus_overlap", "mtr_api", d2, today, "2"),
        ("li_jobs", "cus_jobs", "mtr_jobs", d1, today, "4"),
        ("li_seats", "cus_seats", "mtr_seats", d1, today, "12"),
        ("li_pending", "cus_pending", "mtr_api", d1, today + timedelta(days=5), "100"),
    ]
    ledger = directory / "ledger.csv"
    ledger.write_text(
        "id,invoice_id,stripe_customer_id,meter_id,period_start,period_end,quantity\n"
        + "".join(f"{i},in_{i},{c},{m},{s},{e},{q}\n" for i, c, m, s, e, q in rows),
        encoding="utf-8",
    )
    import_line_items(engine=engine, path=ledger)
    with Session(engine) as session:
        track_by_hand(session=session, customer="cus_unbilled", meter="mtr_api")
        session.commit()

    def q(text: str) -> Decimal:
        return Decimal(text)

    expected = {
        Expected(
            DiscrepancyKey(
                "cus_mismatch", "mtr_api", Kind.QUANTITY_MISMATCH, d1, today, "li_mismatch"
            ),
            q("15"),
            q("14"),
            q("1"),
        ),
        Expected(
            DiscrepancyKey(
                "cus_missing", "mtr_api", Kind.MISSING_IN_STRIPE, d1, today, "li_missing"
            ),
            q("0"),
            q("3"),
            q("-3"),
        ),
        Expected(
            DiscrepancyKey("cus_unbilled", "mtr_api", Kind.UNBILLED_USAGE, d2, d3),
            q("7"),
            q("0"),
            q("7"),
        ),
        Expected(
            DiscrepancyKey(
                "cus_overlap", "mtr_api", Kind.OVERLAPPING_LINE_ITEMS, d2, d3, "li_ov_b", "li_ov_a"
            ),
            q("1"),
            None,
            None,
        ),
        Expected(
            DiscrepancyKey("cus_jobs", "mtr_jobs", Kind.QUANTITY_MISMATCH, d1, today, "li_jobs"),
            q("5"),
            q("4"),
            q("1"),
        ),
        Expected(
            DiscrepancyKey("cus_seats", "mtr_seats", Kind.QUANTITY_MISMATCH, d1, today, "li_seats"),
            q("8"),
            q("12"),
            q("-4"),
        ),
    }
    return World(
        simulator=simulator,
        today=today,
        start=d1,
        end=today,
        expected=frozenset(expected),
        pairs=8,
        compared=7,
        matched=3,
        pending=1,
    )


def found(engine: Engine, *, status: str | None = None) -> frozenset[Expected]:
    """The discrepancies in the database, in the shape of `World.expected`."""
    with Session(engine) as session:
        statement = select(Discrepancy).order_by(col(Discrepancy.id))
        rows = session.exec(statement).all()
    return frozenset(
        Expected(
            DiscrepancyKey.from_mapping(r.model_dump()),
            r.stripe_quantity,
            r.internal_quantity,
            r.difference,
        )
        for r in rows
        if status is None or r.status.value == status
    )
