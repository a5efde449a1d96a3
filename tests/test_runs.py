"""The run-record queries the flow and its tasks share: one definition each."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from models.engine import session_scope
from models.runs import complete_run, failed_pairs, get_run, ok_pairs
from models.tables import PairStatus, RunStatus
from tasks.record import PairStats, record_pair_result
from tests.builders import new_run


def record(
    engine: Engine, run_id: int, customer: str, status: PairStatus, meter: str = "m"
) -> None:
    with session_scope(engine) as session:
        record_pair_result(
            session=session,
            run_id=run_id,
            customer=customer,
            meter=meter,
            status=status,
            stats=PairStats(requests=2, duration_ms=1),
            error="boom" if status is PairStatus.FETCH_FAILED else None,
        )


def test_get_run_returns_the_record(engine: Engine) -> None:
    run_id = new_run(engine)
    with Session(engine) as session:
        assert get_run(session=session, run_id=run_id).id == run_id


def test_get_run_of_an_unknown_run_raises_lookup_error(engine: Engine) -> None:
    with Session(engine) as session, pytest.raises(LookupError, match="run 999 does not exist"):
        get_run(session=session, run_id=999)


def test_ok_pairs_are_the_run_s_pairs_recorded_ok(engine: Engine) -> None:
    run_id, other_run = new_run(engine), new_run(engine)
    record(engine, run_id, "cus_a", PairStatus.OK)
    record(engine, run_id, "cus_b", PairStatus.FETCH_FAILED)
    record(engine, other_run, "cus_c", PairStatus.OK)
    with Session(engine) as session:
        assert ok_pairs(session=session, run_id=run_id) == {("cus_a", "m")}


def test_ok_pairs_can_be_narrowed_to_some_customers(engine: Engine) -> None:
    run_id = new_run(engine)
    record(engine, run_id, "cus_a", PairStatus.OK)
    record(engine, run_id, "cus_b", PairStatus.OK, meter="m2")
    with Session(engine) as session:
        assert ok_pairs(session=session, run_id=run_id, customers=["cus_b"]) == {("cus_b", "m2")}
        assert ok_pairs(session=session, run_id=run_id, customers=[]) == set()


def test_failed_pairs_are_the_run_s_fetch_failures_in_recorded_order(engine: Engine) -> None:
    run_id, other_run = new_run(engine), new_run(engine)
    record(engine, run_id, "cus_z", PairStatus.FETCH_FAILED)
    record(engine, run_id, "cus_ok", PairStatus.OK)
    record(engine, run_id, "cus_a", PairStatus.FETCH_FAILED)
    record(engine, other_run, "cus_b", PairStatus.FETCH_FAILED)
    with Session(engine) as session:
        failed = failed_pairs(session=session, run_id=run_id)
    assert [(p.stripe_customer_id, p.error) for p in failed] == [
        ("cus_z", "boom"),
        ("cus_a", "boom"),
    ]


def test_complete_run_writes_the_pair_results_totals(engine: Engine) -> None:
    run_id = new_run(engine)
    record(engine, run_id, "cus_a", PairStatus.OK)
    record(engine, run_id, "cus_b", PairStatus.OK)
    record(engine, run_id, "cus_c", PairStatus.FETCH_FAILED)
    with session_scope(engine) as session:
        complete_run(session=session, run_id=run_id, pairs_total=4, parameters={"x": 1})
    with Session(engine) as session:
        run = get_run(session=session, run_id=run_id)
    assert run.status is RunStatus.COMPLETED_WITH_ERRORS
    assert (run.pairs_total, run.pairs_ok, run.pairs_failed) == (4, 2, 1)
    assert run.counts["requests"] == 6
    assert run.parameters == {"x": 1}
    assert run.finished_at is not None


def test_complete_run_without_failures_is_completed(engine: Engine) -> None:
    run_id = new_run(engine)
    record(engine, run_id, "cus_a", PairStatus.OK)
    with session_scope(engine) as session:
        run = complete_run(session=session, run_id=run_id, pairs_total=1, parameters={})
        assert run.status is RunStatus.COMPLETED
