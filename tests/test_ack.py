"""`meter-recon ack`: several ids, or every open discrepancy matching filters, all or none."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from meter_recon.cli import main
from models.tables import DiscrepancyKind, DiscrepancyStatus
from tests.builders import discrepancy, new_run
from tests.finance import add, seed_discrepancies, statuses

OPEN = (DiscrepancyStatus.OPEN, None)


def run_cli(*args: str) -> int:
    return main(list(args))


def test_ack_of_several_ids_acknowledges_each_and_says_how_many(
    database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = seed_discrepancies(engine, new_run(engine))
    code = run_cli(
        "ack", str(ids[0]), str(ids[2]), "--note", "CN-12", "--database-url", database_url
    )
    assert code == 0
    assert capsys.readouterr().out.splitlines()[-1] == "2 discrepancy(ies) acknowledged"
    with Session(engine) as session:
        acked = (DiscrepancyStatus.ACKNOWLEDGED, "CN-12")
        assert statuses(session, ids) == [acked, OPEN, acked]


def test_ack_with_an_unknown_id_among_several_exits_2_and_changes_nothing(
    database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = seed_discrepancies(engine, new_run(engine))
    code = run_cli("ack", str(ids[0]), "999999", "--note", "x", "--database-url", database_url)
    assert code == 2
    assert capsys.readouterr().err.strip() == "error: There is no discrepancy with id 999999."
    with Session(engine) as session:
        assert statuses(session, ids) == [OPEN] * 3


def _mixed(engine: Engine) -> list[int]:
    run = new_run(engine)
    return add(
        engine,
        discrepancy(run_id=run, customer="cus_A", line_item="li_1", cause="late_usage"),
        discrepancy(run_id=run, customer="cus_A", line_item="li_2", cause="unit_scale"),
        discrepancy(
            run_id=run,
            customer="cus_A",
            line_item="",
            kind=DiscrepancyKind.UNBILLED_USAGE,
            ledger=None,
        ),
        discrepancy(run_id=run, customer="cus_B", line_item="li_3", cause="late_usage"),
        discrepancy(run_id=run, customer="cus_A", meter="mtr_jobs", line_item="li_4"),
    )


@pytest.mark.parametrize(
    ("filters", "acknowledged"),
    [
        (["--customer", "cus_A"], [0, 1, 2, 4]),
        (["--customer", "cus_A", "--meter", "mtr_api"], [0, 1, 2]),
        (["--kind", "unbilled_usage"], [2]),
        (["--cause", "late_usage"], [0, 3]),
        (["--customer", "cus_A", "--cause", "late_usage", "--cause", "unit_scale"], [0, 1]),
    ],
)
def test_ack_by_filters_acknowledges_every_open_one_matching_all_of_them(
    database_url: str,
    engine: Engine,
    capsys: pytest.CaptureFixture[str],
    filters: list[str],
    acknowledged: list[int],
) -> None:
    ids = _mixed(engine)
    assert run_cli("ack", *filters, "--note", "batch", "--database-url", database_url) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"{len(acknowledged)} discrepancy(ies) acknowledged"
    with Session(engine) as session:
        assert statuses(session, ids) == [
            (DiscrepancyStatus.ACKNOWLEDGED, "batch") if i in acknowledged else OPEN
            for i in range(len(ids))
        ]


def test_ack_by_filters_leaves_acknowledged_and_resolved_ones_as_they_are(
    database_url: str, engine: Engine
) -> None:
    run = new_run(engine)
    ids = add(
        engine,
        discrepancy(run_id=run, line_item="li_1", status=DiscrepancyStatus.RESOLVED),
        discrepancy(run_id=run, line_item="li_2", status=DiscrepancyStatus.ACKNOWLEDGED),
    )
    assert run_cli("ack", "--customer", "cus_A", "--note", "n", "--database-url", database_url) == 0
    with Session(engine) as session:
        assert statuses(session, ids) == [
            (DiscrepancyStatus.RESOLVED, None),
            (DiscrepancyStatus.ACKNOWLEDGED, None),
        ]


@pytest.mark.parametrize(
    "args",
    [
        ["--note", "x"],
        ["1", "--customer", "cus_A", "--note", "x"],
        ["--kind", "nonsense", "--note", "x"],
    ],
)
def test_ack_without_a_target_or_with_both_or_a_bad_kind_exits_2(
    database_url: str, args: list[str]
) -> None:
    assert run_cli("ack", *args, "--database-url", database_url) == 2
