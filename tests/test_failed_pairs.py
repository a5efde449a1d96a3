"""record-failed-pairs: every failed pair of a slice is written in one transaction."""

from __future__ import annotations

from datetime import date
from typing import Any, cast

import pytest
import sqlalchemy as sa
from prefect import flow
from sqlalchemy import Engine, event
from sqlmodel import Session

from flows.reconcile import record_failed_pairs
from integrations.settings import get_settings
from models.engine import session_scope
from models.runs import failed_pairs, ok_pairs
from models.tables import PairStatus
from tasks.reconcile_pairs import PairRef, RunContext
from tasks.record import PairStats, record_pair_result
from tasks.run_config import RunConfig
from tests.builders import new_run

pytestmark = pytest.mark.usefixtures("flow_env")


@flow
def record_once(context: RunContext, failures: list[tuple[PairRef, str]]) -> int:
    """The task as the flow runs it, without retries."""
    return record_failed_pairs.with_options(retries=0)(context, failures)


def context_for(run_id: int) -> RunContext:
    return RunContext(
        run_id=run_id,
        window_start=date(2026, 11, 1),
        window_end=date(2026, 11, 4),
        today=date(2026, 11, 5),
        config=RunConfig.of(get_settings()),
    )


def pair(customer: str) -> PairRef:
    return PairRef(customer=customer, meter="mtr_api", formula="sum")


def test_all_failed_pairs_are_recorded_in_one_transaction(engine: Engine) -> None:
    run_id = new_run(engine)
    failures = [(pair(f"cus_{n}"), f"APIError: {n}") for n in range(5)]
    commits: list[Any] = []

    def count(connection: Any) -> None:
        commits.append(connection)

    event.listen(engine, "commit", count)
    try:
        assert record_once(context_for(run_id), failures) == 5
    finally:
        event.remove(engine, "commit", count)
    assert len(commits) == 1
    with Session(engine) as session:
        recorded = failed_pairs(session=session, run_id=run_id)
    assert [(p.stripe_customer_id, p.error) for p in recorded] == [
        (f"cus_{n}", f"APIError: {n}") for n in range(5)
    ]


def test_a_failure_part_way_writes_none_of_the_failed_pairs(engine: Engine) -> None:
    run_id = new_run(engine)
    no_customer = PairRef(customer=cast(str, None), meter="mtr_api", formula="sum")
    failures = [(pair("cus_a"), "first"), (no_customer, "second"), (pair("cus_c"), "third")]
    with pytest.raises(sa.exc.IntegrityError):
        record_once(context_for(run_id), failures)
    with Session(engine) as session:
        assert failed_pairs(session=session, run_id=run_id) == []


def test_a_pair_recorded_ok_in_the_run_is_not_marked_failed(engine: Engine) -> None:
    run_id = new_run(engine)
    with session_scope(engine) as session:
        record_pair_result(
            session=session,
            run_id=run_id,
            customer="cus_ok",
            meter="mtr_api",
            status=PairStatus.OK,
            stats=PairStats(requests=1, duration_ms=1),
        )
    failures = [(pair("cus_ok"), "late"), (pair("cus_bad"), "APIError: 500")]
    assert record_once(context_for(run_id), failures) == 1
    with Session(engine) as session:
        assert ok_pairs(session=session, run_id=run_id) == {("cus_ok", "mtr_api")}
        assert [p.stripe_customer_id for p in failed_pairs(session=session, run_id=run_id)] == [
            "cus_bad"
        ]
