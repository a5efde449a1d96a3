"""Database failures as one sentence a user can act on: what is wrong, with the URL's password
masked, and what to do. The command line and the flow both translate through here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import exc
from sqlalchemy.engine import make_url

from models.errors import UserError

UPGRADE = "run `meter-recon db upgrade`"
_SUPPORTED = ("sqlite", "postgresql")
_MISSING_TABLE = ("no such table", "no such column")


class DatabaseProblem(UserError):
    """The database cannot be used as it is; the message names it (redacted) and the fix."""


class DatabaseUnreachable(DatabaseProblem):
    """No connection: the server is down, the URL is wrong, or the SQLite folder is missing."""


class SchemaNotCurrent(DatabaseProblem):
    """The database has no schema yet, or an older one than this code: `db upgrade` fixes it."""


class BadDatabaseUrl(DatabaseProblem):
    """The URL cannot be parsed, or names a database meter-recon does not support."""


def shown_url(url: str) -> str:
    """The URL as messages show it: password masked; an unparsable one is not echoed at all."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except exc.ArgumentError:
        return "(unparsable, not shown)"


def check_url(url: str) -> None:
    """Refuse a URL that is not SQLite or PostgreSQL before SQLAlchemy tries a driver for it."""
    try:
        backend = make_url(url).get_backend_name()
    except exc.ArgumentError:
        raise BadDatabaseUrl(
            "The database URL cannot be parsed: give one like "
            "sqlite:///meter_recon.db or postgresql://user:password@host:5432/name."
        ) from None
    if backend not in _SUPPORTED:
        raise BadDatabaseUrl(
            f"The database URL {shown_url(url)} is for {backend}, which meter-recon does not "
            "support: use sqlite:///... or postgresql://...."
        )


def translate(error: BaseException, *, url: str) -> DatabaseProblem | None:
    """The user's sentence for a database failure; None when `error` is no such failure."""
    if isinstance(error, DatabaseProblem):
        return error
    if isinstance(error, exc.ArgumentError | exc.NoSuchModuleError):
        try:
            check_url(url)
        except BadDatabaseUrl as bad:
            return bad
        return None
    if not isinstance(error, exc.DBAPIError):
        return None
    reason = _reason(error, url)
    if any(marker in reason.lower() for marker in _MISSING_TABLE) or _is_undefined_table(error):
        return SchemaNotCurrent(
            f"The database {shown_url(url)} lacks meter-recon's tables ({reason}): {UPGRADE}."
        )
    if not isinstance(error, exc.OperationalError | exc.InterfaceError) and not (
        error.connection_invalidated
    ):
        return None
    return DatabaseUnreachable(f"{cannot_use(url, reason)}.")


def cannot_use(url: str, reason: str) -> str:
    """The sentence that a database cannot be used, with the fix that fits the backend."""
    shown = shown_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and "locked" in reason:
        return (
            f"The SQLite database {shown} stayed locked ({reason}): another process is writing "
            "to it; try again when it is done, or use PostgreSQL for concurrent runs"
        )
    if parsed.get_backend_name() == "sqlite":
        folder = Path(parsed.database or ".").expanduser().parent
        return (
            f"Cannot open the SQLite database {shown} ({reason}): check that the folder "
            f"{folder} exists and is writable"
        )
    return (
        f"Cannot reach the database {shown} ({reason}): check the database URL "
        "(METER_RECON_DATABASE_URL) and that the server is running"
    )


def _reason(error: exc.DBAPIError, url: str) -> str:
    """The driver's own words, one line, without the URL's password."""
    text = str(error.orig) if error.orig is not None else str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else type(error).__name__
    first = first.rpartition(" failed: ")[2] if " failed: " in first else first
    first = first.removeprefix("FATAL:").strip()
    try:
        password = make_url(url).password
    except exc.ArgumentError:
        password = None
    return first.replace(str(password), "***") if password else first


def _is_undefined_table(error: exc.DBAPIError) -> bool:
    """PostgreSQL's "relation does not exist" (SQLSTATE 42P01) or a missing column (42703)."""
    return getattr(error.orig, "sqlstate", None) in ("42P01", "42703")


@contextmanager
def database_errors(url: str) -> Iterator[None]:
    """Within it, a database failure leaves as its `DatabaseProblem` sentence."""
    try:
        yield
    except (exc.SQLAlchemyError, DatabaseProblem) as error:
        problem = translate(error, url=url)
        if problem is None or problem is error:
            raise
        raise problem from error
