"""Progress of a run's fan-out, for whoever is watching (a terminal bar, or log lines)."""

from __future__ import annotations

import threading
from collections.abc import Callable

Listener = Callable[[int, int], None]

_listener: Listener | None = None
_lock = threading.Lock()


def set_listener(listener: Listener | None) -> None:
    global _listener
    with _lock:
        _listener = listener


def report(done: int, total: int) -> None:
    with _lock:
        listener = _listener
    if listener is not None:
        listener(done, total)
