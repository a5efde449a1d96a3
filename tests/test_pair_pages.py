"""Tracked pairs read a page at a time (keyset pagination), as a run of any size reads them."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Engine
from sqlmodel import Session

from models.engine import session_scope
from models.pairs import count_pairs, list_pairs, pair_pages, pairs_after, track_from_ledger
from models.tables import TrackedPair


def track(engine: Engine, pairs: list[tuple[str, str]]) -> None:
    with session_scope(engine) as session:
        track_from_ledger(session=session, pairs=pairs)


def keys(pairs: Iterable[TrackedPair]) -> list[tuple[str, str]]:
    return [(p.stripe_customer_id, p.meter_id) for p in pairs]


GRID = [(f"cus_{c}", f"mtr_{m}") for c in "abcd" for m in "xyz"]


def test_pages_hold_every_pair_once_in_list_order(engine: Engine) -> None:
    track(engine, GRID)
    with Session(engine) as session:
        listed = keys(list_pairs(session=session))
    for size in (1, 2, 5, 12, 13, 100):
        pages = list(pair_pages(engine=engine, page_size=size))
        assert [p for page in pages for p in keys(page)] == listed
        assert all(len(page) <= size for page in pages)
        assert all(pages)


def test_a_page_continues_after_the_last_pair_of_the_previous_one(engine: Engine) -> None:
    track(engine, GRID)
    with Session(engine) as session:
        page = pairs_after(session=session, after=("cus_b", "mtr_y"), limit=3)
    assert keys(page) == [("cus_b", "mtr_z"), ("cus_c", "mtr_x"), ("cus_c", "mtr_y")]


def test_pages_keep_the_customer_and_meter_filters(engine: Engine) -> None:
    track(engine, GRID)
    pages = pair_pages(engine=engine, page_size=2, customers=["cus_a", "cus_d"], meters=["mtr_z"])
    assert [p for page in pages for p in keys(page)] == [
        ("cus_a", "mtr_z"),
        ("cus_d", "mtr_z"),
    ]


def test_count_pairs_counts_what_list_pairs_returns(engine: Engine) -> None:
    track(engine, GRID)
    with Session(engine) as session:
        assert count_pairs(session=session) == len(GRID)
        assert count_pairs(session=session, meters=["mtr_x", "mtr_y"]) == 8
        assert count_pairs(session=session, customers=["cus_b"], meters=["mtr_x"]) == 1


def test_no_tracked_pairs_is_no_page(engine: Engine) -> None:
    assert list(pair_pages(engine=engine, page_size=10)) == []
