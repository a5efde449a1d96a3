from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlmodel import SQLModel

from models.engine import get_engine
from models.migrate import current_revision, head_revision, upgrade

TABLES = {
    "invoice_line_item",
    "tracked_pair",
    "meter",
    "usage_snapshot",
    "reconciliation_run",
    "pair_result",
    "discrepancy",
}


def test_upgrade_creates_every_table_on_an_empty_database(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    names = set(inspect(get_engine(empty_database_url)).get_table_names())
    assert names >= TABLES
    assert current_revision(empty_database_url) == head_revision(empty_database_url)


def test_upgrade_twice_is_a_no_op(database_url: str) -> None:
    before = current_revision(database_url)
    upgrade(database_url)
    assert current_revision(database_url) == before


def test_migrations_match_the_models(database_url: str) -> None:
    with get_engine(database_url).connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        assert compare_metadata(context, SQLModel.metadata) == []
