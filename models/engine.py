"""One engine per database URL, configured for concurrent writers on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlmodel import Session

from models.db_errors import check_url

_engines: dict[str, Engine] = {}
_lock = threading.Lock()
# SQLite has one writer at a time. Writers of this process queue on a lock of their own, which
# hands over the moment a transaction ends; waiting in SQLite's busy handler instead means
# sleeping in steps of up to 100 ms. Other processes still meet at SQLite's lock.
_sqlite_writers: weakref.WeakKeyDictionary[Engine, threading.RLock] = weakref.WeakKeyDictionary()
_readers: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()
_READ_ONLY = "meter_recon_read_only"


def normalize_url(url: str) -> str:
    """Route plain `postgresql://` URLs to psycopg 3, the driver this project ships."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def redact_url(url: str) -> str:
    """A URL fit for logs and messages: the password masked."""
    return make_url(url).render_as_string(hide_password=True)


def _configure_sqlite(engine: Engine) -> None:
    # pysqlite's own transaction handling defers BEGIN and upgrades locks lazily, which
    # deadlocks two writers; take the write lock up front and let SQLite wait for it. Reads
    # (`read_only`) begin deferred: under WAL they never wait for a writer.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        read_only = conn.get_execution_options().get(_READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def make_engine(url: str) -> Engine:
    """A new engine for `url`; prefer `get_engine`, which shares one per process.

    A URL that is not SQLite or PostgreSQL is refused here, as one sentence (`BadDatabaseUrl`),
    before SQLAlchemy looks for a driver this project does not ship.
    """
    check_url(url)
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        _configure_sqlite(engine)
        _sqlite_writers[engine] = threading.RLock()
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=30)


def get_engine(url: str) -> Engine:
    """The process-wide engine for `url`."""
    key = normalize_url(url)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = make_engine(key)
        return engine


def dispose_engines() -> None:
    """Close every pooled connection (tests, and processes that fork)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def read_only(engine: Engine) -> Engine:
    """The same engine for transactions that only read (on SQLite they skip the write lock)."""
    with _lock:
        reader = _readers.get(engine)
        if reader is None:
            reader = _readers[engine] = engine.execution_options(**{_READ_ONLY: True})
        return reader


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session whose work is committed on success and rolled back on any error."""
    writer = _sqlite_writers.get(engine)
    with (
        writer if writer is not None else nullcontext(),
        Session(engine, expire_on_commit=False) as session,
    ):
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
