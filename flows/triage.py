"""Finance triages from Prefect's UI: acknowledge discrepancies, or take that back.

The `triage` deployment's parameter form is a list of ids, a select (the action), a text
box (the note) and optional filters; all ids change together or none does. With no id and
some filters, every open discrepancy matching all of them is acknowledged (as `ack` does).
"""

from __future__ import annotations

from enum import StrEnum

from prefect import flow
from prefect.logging import get_run_logger

from integrations.settings import get_settings
from models.discrepancies import acknowledge_many, acknowledge_matching, reopen_many
from models.engine import get_engine, session_scope
from models.enums import DiscrepancyKind, Ledger, LikelyCause


class TriageAction(StrEnum):
    """What finance does with the discrepancies given (a select in the UI's form)."""

    ACKNOWLEDGE = "acknowledge"
    REOPEN = "reopen"


@flow(name="triage-discrepancies", log_prints=False, validate_parameters=True)
def triage_discrepancies(
    ids: list[int],
    action: TriageAction,
    note: str,
    ledger: Ledger | None = None,
    customer: str | None = None,
    meter: str | None = None,
    kind: DiscrepancyKind | None = None,
    cause: LikelyCause | None = None,
) -> int:
    """Acknowledge (seen, explained) or re-open the discrepancies `ids`, with a note; or,
    with no id, acknowledge every open discrepancy matching all the filters given.

    An unknown or resolved id fails the run and changes nothing. Returns how many changed.
    """
    logger = get_run_logger()
    database_url = get_settings().database_url
    filtered = any((ledger, customer, meter, kind, cause))
    if bool(ids) == filtered:
        raise ValueError("Give discrepancy ids, or filters (ledger, customer, meter, kind, cause).")
    if filtered and action is not TriageAction.ACKNOWLEDGE:
        raise ValueError("Filters acknowledge; to re-open, give the discrepancy ids.")
    with session_scope(get_engine(database_url)) as session:
        if filtered:
            rows = acknowledge_matching(
                session=session,
                note=note,
                ledgers=[ledger] if ledger else [],
                customers=[customer] if customer else [],
                meters=[meter] if meter else [],
                kinds=[kind] if kind else [],
                causes=[cause] if cause else [],
            )
        else:
            change = acknowledge_many if action is TriageAction.ACKNOWLEDGE else reopen_many
            rows = change(session=session, ids=ids, note=note)
        changed = [row.id for row in rows]
    logger.info("%s: %s (%s)", action.value, ", ".join(map(str, changed)) or "none", note)
    return len(changed)
