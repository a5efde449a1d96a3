"""Triage from Prefect's UI: the flow acknowledges or re-opens the ids it is given, all or none."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from flows.triage import TriageAction, triage_discrepancies
from models.enums import Ledger
from models.tables import Discrepancy, DiscrepancyStatus
from tests.builders import discrepancy, new_run
from tests.finance import add, seed_discrepancies, statuses


@pytest.fixture
def triage_env(prefect_server: str, database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("METER_RECON_DATABASE_URL", database_url)
    return database_url


def test_acknowledge_marks_every_id_with_the_note(triage_env: str, engine: Engine) -> None:
    ids = seed_discrepancies(engine, new_run(engine))
    assert triage_discrepancies(ids=ids[:2], action=TriageAction.ACKNOWLEDGE, note="CN-7") == 2
    with Session(engine) as session:
        assert statuses(session, ids) == [
            (DiscrepancyStatus.ACKNOWLEDGED, "CN-7"),
            (DiscrepancyStatus.ACKNOWLEDGED, "CN-7"),
            (DiscrepancyStatus.OPEN, None),
        ]


def test_reopen_takes_an_acknowledgement_back(triage_env: str, engine: Engine) -> None:
    ids = seed_discrepancies(engine, new_run(engine))
    triage_discrepancies(ids=ids, action=TriageAction.ACKNOWLEDGE, note="seen")
    assert triage_discrepancies(ids=[ids[1]], action="reopen", note="not explained") == 1  # type: ignore[arg-type]
    with Session(engine) as session:
        assert statuses(session, ids)[1] == (DiscrepancyStatus.OPEN, "not explained")


def test_an_unknown_id_fails_the_run_and_changes_nothing(triage_env: str, engine: Engine) -> None:
    ids = seed_discrepancies(engine, new_run(engine))
    with pytest.raises(LookupError, match="There is no discrepancy with id 999999"):
        triage_discrepancies(ids=[ids[0], 999999], action=TriageAction.ACKNOWLEDGE, note="x")
    with Session(engine) as session:
        assert statuses(session, ids)[0] == (DiscrepancyStatus.OPEN, None)


def test_a_resolved_id_fails_the_run_and_changes_nothing(triage_env: str, engine: Engine) -> None:
    ids = seed_discrepancies(engine, new_run(engine))
    with Session(engine) as session:
        row = session.get(Discrepancy, ids[2])
        assert row is not None
        row.status = DiscrepancyStatus.RESOLVED
        session.add(row)
        session.commit()
    with pytest.raises(ValueError, match=f"Discrepancy {ids[2]} was resolved"):
        triage_discrepancies(ids=ids, action=TriageAction.ACKNOWLEDGE, note="x")
    with Session(engine) as session:
        assert statuses(session, ids)[:2] == [(DiscrepancyStatus.OPEN, None)] * 2


def test_filters_without_ids_acknowledge_every_open_one_that_matches(
    triage_env: str, engine: Engine
) -> None:
    run_id = new_run(engine)
    internal = seed_discrepancies(engine, run_id)
    on_stripe = discrepancy(run_id=run_id, customer="cus_S", line_item="il_1")
    on_stripe.ledger = Ledger.STRIPE
    (stripe_id,) = add(engine, on_stripe)
    changed = triage_discrepancies(
        ids=[], action=TriageAction.ACKNOWLEDGE, note="invoiced next period", ledger=Ledger.STRIPE
    )
    assert changed == 1
    with Session(engine) as session:
        assert statuses(session, [stripe_id]) == [
            (DiscrepancyStatus.ACKNOWLEDGED, "invoiced next period")
        ]
        assert statuses(session, internal) == [(DiscrepancyStatus.OPEN, None)] * 3


def test_ids_and_filters_together_change_nothing(triage_env: str, engine: Engine) -> None:
    ids = seed_discrepancies(engine, new_run(engine))
    with pytest.raises(ValueError, match="Give discrepancy ids, or filters"):
        triage_discrepancies(
            ids=ids[:1], action=TriageAction.ACKNOWLEDGE, note="x", customer="cus_0"
        )
    with Session(engine) as session:
        assert statuses(session, ids) == [(DiscrepancyStatus.OPEN, None)] * 3


def test_filters_do_not_reopen(triage_env: str, engine: Engine) -> None:
    seed_discrepancies(engine, new_run(engine))
    with pytest.raises(ValueError, match="to re-open, give the discrepancy ids"):
        triage_discrepancies(ids=[], action=TriageAction.REOPEN, note="x", customer="cus_0")
