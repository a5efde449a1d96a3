"""Schema migrations (Alembic) behind `meter-recon db upgrade`."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

from models.db_errors import (
    UPGRADE,
    DatabaseUnreachable,
    SchemaNotCurrent,
    cannot_use,
    check_url,
    database_errors,
    shown_url,
)
from models.engine import get_engine, normalize_url

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser interpolation would choke on '%' in passwords.
    config.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    """Bring the schema at `url` to the newest revision; a no-op when it is already there."""
    engine = get_engine(url)
    with engine.begin() as connection:
        config = alembic_config(url)
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def current_revision(url: str) -> str | None:
    with get_engine(url).connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def require_current_schema(url: str) -> None:
    """Refuse a database that is missing, unreachable, or not at the newest revision."""
    check_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database or "").expanduser()
        if not path.parent.is_dir():
            raise DatabaseUnreachable(f"{cannot_use(url, 'no such folder')}.")
        if not path.exists():  # connecting would create an empty file
            raise SchemaNotCurrent(f"The database {shown_url(url)} does not exist yet: {UPGRADE}.")
    with database_errors(url):
        current = current_revision(url)
    head = head_revision(url)
    if current == head:
        return
    if current is None:
        raise SchemaNotCurrent(f"The database {shown_url(url)} has no schema yet: {UPGRADE}.")
    known = {
        script.revision
        for script in ScriptDirectory.from_config(alembic_config(url)).walk_revisions()
    }
    if current not in known:
        raise SchemaNotCurrent(
            f"The database {shown_url(url)} is at revision {current}, newer than this "
            "meter-recon knows: upgrade meter-recon."
        )
    raise SchemaNotCurrent(
        f"The database {shown_url(url)} is at revision {current}, behind the newest "
        f"({head}): {UPGRADE}."
    )
