"""Finance triages from Prefect's UI: acknowledge discrepancies, or take that back.

The `triage` deployment's parameter form is a list of ids, a select (the action) and a
text box (the note); all ids change together or none does.
"""

from __future__ import annotations

from enum import StrEnum

from prefect import flow
from prefect.logging import get_run_logger

from integrations.settings import get_settings
from models.discrepancies import acknowledge_many, reopen_many
from models.engine import get_engine, session_scope


class TriageAction(StrEnum):
    """What finance does with the discrepancies given (a select in the UI's form)."""

    ACKNOWLEDGE = "acknowledge"
    REOPEN = "reopen"


@flow(name="triage-discrepancies", log_prints=False, validate_parameters=True)
def triage_discrepancies(ids: list[int], action: TriageAction, note: str) -> int:
    """Acknowledge (seen, explained) or re-open the discrepancies `ids`, with a note.

    An unknown or resolved id fails the run and changes nothing. Returns how many changed.
    """
    logger = get_run_logger()
    database_url = get_settings().database_url
    if not ids:
        raise ValueError("Give at least one discrepancy id.")
    change = acknowledge_many if action is TriageAction.ACKNOWLEDGE else reopen_many
    with session_scope(get_engine(database_url)) as session:
        rows = change(session=session, ids=ids, note=note)
        changed = [row.id for row in rows]
    logger.info("%s: %s (%s)", action.value, ", ".join(map(str, changed)), note)
    return len(changed)
