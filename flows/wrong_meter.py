"""Rule 6 of the likely causes, across pairs: usage reported to (or billed on) another meter.

Each pair's task decides rules 1-5 alone; only after the fan-out can a run see that one
customer's difference on one meter is the opposite of its difference on another over the
same period. This step reads the run's rows still without a cause and names the others.
"""

from __future__ import annotations

from collections.abc import Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from sqlalchemy import Engine

from models.discrepancies import UNCAUSED_PAGE, set_causes, uncaused_by_customer
from models.engine import get_engine, session_scope
from models.enums import LikelyCause
from models.tables import Discrepancy
from tasks.compare import Tolerance
from tasks.diagnose import WrongMeterCandidate, wrong_meter
from tasks.reconcile_pairs import RunContext


def candidates_of(rows: Sequence[Discrepancy]) -> list[WrongMeterCandidate[int]]:
    """The rows as rule 6 reads them: keyed by id, the meter named by its id."""
    found: list[WrongMeterCandidate[int]] = []
    for row in rows:
        assert row.id is not None
        assert row.difference is not None
        found.append(
            WrongMeterCandidate(
                key=row.id,
                customer=row.stripe_customer_id,
                meter=row.meter_id,
                period_start=row.period_start,
                period_end=row.period_end,
                difference=row.difference,
            )
        )
    return found


def wrong_meter_causes(
    rows: Sequence[Discrepancy], *, tolerance: Tolerance
) -> dict[int, tuple[LikelyCause, str]]:
    """Each row another meter's row explains: its cause and the detail naming that meter."""
    diagnoses = wrong_meter(candidates=candidates_of(rows), tolerance=tolerance)
    return {
        key: (diagnosis.cause, diagnosis.detail)
        for key, diagnosis in diagnoses.items()
        if diagnosis.cause is not None and diagnosis.detail is not None
    }


def diagnose_run(
    *, engine: Engine, run_id: int, tolerance: Tolerance, page_size: int = UNCAUSED_PAGE
) -> int:
    """Give rule 6's cause to the run's rows it fits, in one transaction, a customer at a
    time (the rows of one customer are all rule 6 compares); returns how many."""
    found = 0
    with session_scope(engine) as session:
        for rows in uncaused_by_customer(session=session, run_id=run_id, page_size=page_size):
            causes = wrong_meter_causes(rows, tolerance=tolerance)
            set_causes(session=session, causes=causes)
            found += len(causes)
    return found


@task(name="diagnose-wrong-meter", retries=2, retry_delay_seconds=[1, 5], cache_policy=NO_CACHE)
def diagnose_wrong_meter(context: RunContext) -> int:
    """Rule 6 for this run, after its pairs are recorded; returns how many rows it named."""
    found = diagnose_run(
        engine=get_engine(context.config.database),
        run_id=context.run_id,
        tolerance=context.tolerance,
    )
    if found:
        get_run_logger().info("%d discrepancies likely on the wrong meter", found)
    return found
