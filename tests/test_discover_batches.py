"""Discovery holds one batch, not the account: the database says which billed pairs are new.

Each batch of subscription items is written with its pairs in one statement that inserts the
pairs not tracked yet and returns them; the billed pairs are counted by the database at the
end. So what a discovery finds cannot depend on how its items were cut into batches.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, event
from sqlmodel import Session, select

from models.pairs import track_by_hand, track_from_ledger
from models.tables import PairSource, TrackedPair
from models.tables import SubscriptionItem as CachedItem
from simulator import StripeSimulator
from tasks.discover import Discovery, discover
from tasks.fetch import close_clients, configure_clients
from tasks.run_config import RunConfig

CREATED = 1_759_276_800  # 2025-10-01
METERS = ("mtr_a", "mtr_b", "mtr_c", "mtr_d")
CUSTOMERS = 30  # one subscription of 4 metered items each, as the bench seeds them


@pytest.fixture
def config(simulator: StripeSimulator, database_url: str) -> Iterator[RunConfig]:
    """The run's configuration pointed at the simulator and the test database."""
    configure_clients(backoff_base=0.005, backoff_cap=0.05, timeout=5.0, max_retry_seconds=20.0)
    yield RunConfig(
        database_url=SecretStr(database_url),
        stripe_api_key=SecretStr("sk_test_discover_batches"),
        stripe_api_base=simulator.url,
        max_requests_per_second=1000.0,
    )
    configure_clients()
    close_clients()


def customer(n: int) -> str:
    return f"cus_{n:03}"


def seed(simulator: StripeSimulator) -> None:
    """30 customers billing 4 meters each; the last also on a later subscription billing a
    pair it already has (the same pair twice, in another batch), and one subscription that
    never billed (ignored)."""
    for n, meter in enumerate(METERS):
        simulator.add_meter(meter, event_name=f"event_{meter}")
        simulator.add_price(
            id=f"price_{meter}",
            currency="usd",
            meter=meter,
            billing_scheme="per_unit",
            unit_amount_decimal=str(n + 1),
        )
    for n in range(CUSTOMERS):
        simulator.add_subscription(
            id=f"sub_{n:03}",
            customer=customer(n),
            status="active",
            created=CREATED + n,
            items=[{"id": f"si_{n:03}_{m}", "price": f"price_{m}"} for m in METERS],
        )
    simulator.add_subscription(
        id="sub_again",
        customer=customer(CUSTOMERS - 1),
        status="active",
        created=CREATED + 1000,
        items=[{"id": "si_again", "price": "price_mtr_a"}],
    )
    simulator.add_subscription(
        id="sub_never",
        customer="cus_never",
        status="incomplete_expired",
        created=CREATED,
        items=[{"id": "si_never", "price": "price_mtr_a"}],
    )


BILLED = sorted((customer(n), meter) for n in range(CUSTOMERS) for meter in METERS)


def tracked(engine: Engine) -> list[tuple[str, str, PairSource]]:
    with Session(engine) as session:
        rows = session.exec(select(TrackedPair)).all()
    return sorted((p.stripe_customer_id, p.meter_id, p.source) for p in rows)


@pytest.mark.parametrize("batch", [1, 7, 1000])
def test_what_discovery_finds_does_not_depend_on_how_its_items_are_batched(
    simulator: StripeSimulator,
    config: RunConfig,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    batch: int,
) -> None:
    monkeypatch.setattr("tasks.discover.ITEM_BATCH", batch)
    seed(simulator)
    announced: list[tuple[str, str]] = []
    found = discover(config, on_tracked=announced.extend)
    assert (found.added, found.pairs, found.items, found.prices) == (120, 120, 121, 4)
    assert sorted(announced) == BILLED  # each new pair announced once, in whichever batch
    assert tracked(engine) == [(c, m, PairSource.STRIPE) for c, m in BILLED]


def test_a_pair_already_tracked_keeps_its_source_and_bounds_and_is_not_announced(
    simulator: StripeSimulator, config: RunConfig, engine: Engine
) -> None:
    seed(simulator)
    with Session(engine) as session:
        track_by_hand(
            session=session,
            customer=customer(3),
            meter="mtr_b",
            active_from=date(2025, 11, 1),
            active_to=date(2026, 2, 1),
        )
        track_from_ledger(session=session, pairs=[(customer(4), "mtr_c")])
        session.commit()
    announced: list[tuple[str, str]] = []
    found = discover(config, on_tracked=announced.extend)
    assert (found.added, found.pairs) == (118, 120)
    assert (customer(3), "mtr_b") not in announced
    assert (customer(4), "mtr_c") not in announced
    with Session(engine) as session:
        by_hand = session.exec(
            select(TrackedPair).where(TrackedPair.stripe_customer_id == customer(3))
        ).all()
        from_ledger = session.exec(
            select(TrackedPair).where(
                TrackedPair.stripe_customer_id == customer(4), TrackedPair.meter_id == "mtr_c"
            )
        ).one()
    pair = next(p for p in by_hand if p.meter_id == "mtr_b")
    assert (pair.source, pair.active_from, pair.active_to) == (
        PairSource.MANUAL,
        date(2025, 11, 1),
        date(2026, 2, 1),
    )
    assert from_ledger.source is PairSource.LEDGER


def test_two_discoveries_at_once_track_each_pair_once(
    simulator: StripeSimulator,
    config: RunConfig,
    engine: Engine,
    backend: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if backend != "postgresql":
        pytest.skip("concurrent writers are PostgreSQL's case: SQLite takes one at a time")
    monkeypatch.setattr("tasks.discover.ITEM_BATCH", 8)  # 16 batches each, interleaved
    seed(simulator)
    start = threading.Barrier(2)
    results: list[Discovery] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            start.wait()
            results.append(discover(config))
        except BaseException as error:  # reported by the test, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sum(found.added for found in results) == 120  # each pair added by one of them
    assert [found.pairs for found in results] == [120, 120]
    assert tracked(engine) == [(c, m, PairSource.STRIPE) for c, m in BILLED]
    with Session(engine) as session:  # neither made the other forget the items both listed
        assert len(session.exec(select(CachedItem.id)).all()) == 121


def test_discovery_issues_statements_per_batch_not_per_pair(
    simulator: StripeSimulator,
    config: RunConfig,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("tasks.discover.ITEM_BATCH", 8)  # two subscriptions a batch
    seed(simulator)
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine, "before_cursor_execute", count)
    try:
        found = discover(config)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    item_upserts = [s for s in statements if "INSERT INTO subscription_item" in s]
    pair_inserts = [s for s in statements if "INSERT INTO tracked_pair" in s]
    assert found.pairs == 120
    assert 15 <= len(pair_inserts) == len(item_upserts) <= 16  # 121 items, 8 or 9 a batch
    # Per batch its items and its pairs (and the driver's BEGIN where it sends one); at the
    # end prices, stale items and the count: never one statement per pair.
    assert len(statements) <= 3 * len(pair_inserts) + 6, statements
