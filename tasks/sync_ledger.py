"""The `sync-ledger` task: the internal ledger read by your query, first in a run."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from models.engine import get_engine, redact_url
from models.ledger_query import LedgerSync, LedgerSyncFailed, sync_ledger_query


def _worth_retrying(_task: Any, _task_run: Any, state: Any) -> bool:
    """Retry a database that could not be reached; a bad row or bad SQL fails the same again."""
    try:
        state.result()
    except LedgerSyncFailed as error:
        return error.transient
    except Exception:
        return True
    return False


def describe_sync(sync: LedgerSync) -> str:
    """What a sync did, in one line (the log and `meter-recon ledger sync` say it)."""
    return (
        f"{sync.rows} row(s) read: {sync.added} line item(s) added, {sync.changed} changed, "
        f"{sync.withdrawn} withdrawn, {sync.restored} brought back; "
        f"{sync.pairs_added} new pair(s) tracked"
    )


@task(
    name="sync-ledger",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=_worth_retrying,
    cache_policy=NO_CACHE,
    persist_result=False,
)
def sync_ledger(query: str, source_url: str, target_url: str) -> dict[str, int]:
    """Make the internal ledger what `query` returns on `source_url`, or change nothing."""
    logger = get_run_logger()
    logger.info("syncing the internal ledger from the query on %s", redact_url(source_url))
    sync = sync_ledger_query(engine=get_engine(target_url), source_url=source_url, query=query)
    logger.info("ledger sync: %s", describe_sync(sync))
    return sync.as_counts()


__all__ = ["describe_sync", "sync_ledger"]
