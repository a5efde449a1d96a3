"""The engine: how transactions of one process share a database."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlmodel import Session, select

from models.engine import read_only, session_scope
from models.tables import InvoiceLineItem
from tests.builders import line_item

WAIT = 20.0  # far longer than any of these steps takes; a hang fails instead of blocking CI


@contextmanager
def writer_holding_a_transaction(engine: Engine) -> Iterator[None]:
    """Another thread inside `session_scope`, having written, until the block ends."""
    wrote, release = threading.Event(), threading.Event()

    def write() -> None:
        with session_scope(engine) as session:
            session.add(line_item("li_writer"))
            session.flush()
            wrote.set()
            release.wait(WAIT)

    thread = threading.Thread(target=write)
    thread.start()
    try:
        assert wrote.wait(WAIT)
        yield
    finally:
        release.set()
        thread.join(WAIT)


def in_thread(work: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def test_a_read_only_session_reads_while_a_writer_holds_its_transaction(engine: Engine) -> None:
    seen: list[int] = []

    def read() -> None:
        with Session(read_only(engine)) as session:
            seen.append(len(session.exec(select(InvoiceLineItem)).all()))

    with writer_holding_a_transaction(engine):
        reader = in_thread(read)
        reader.join(WAIT)
        assert not reader.is_alive()
        assert seen == [0]  # the writer's row is not committed yet


def test_a_second_writer_queues_on_sqlite_and_goes_ahead_on_postgresql(engine: Engine) -> None:
    def write() -> None:
        with session_scope(engine) as session:
            session.add(line_item("li_second"))

    with writer_holding_a_transaction(engine):
        second = in_thread(write)
        if engine.dialect.name == "sqlite":  # one writer at a time: it waits its turn
            second.join(0.5)
            assert second.is_alive()
        else:  # row locks only: another row is written at once
            second.join(WAIT)
            assert not second.is_alive()
    second.join(WAIT)
    assert not second.is_alive()
    with Session(read_only(engine)) as session:
        ids = sorted(row.id for row in session.exec(select(InvoiceLineItem)))
    assert ids == ["li_second", "li_writer"]


def test_read_only_is_one_engine_per_engine(engine: Engine) -> None:
    assert read_only(engine) is read_only(engine)
    assert read_only(engine).url == engine.url
