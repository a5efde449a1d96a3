"""Client-side rate limiting shared by every thread of a process."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol, runtime_checkable

# Extra spacing added by `shared_rate_limiter`. A request that starts on time here reaches the
# server some milliseconds later (thread wake-up, the GIL, garbage-collection pauses of up to
# ~100 ms, the network), and not every request by the same delay; the server counts arrivals.
# The margin costs its share of every second; an arrival that still overflows the server's
# window costs one retried request. Measured by the bench (3,000 pairs, 100/s, 16 threads): a
# 50 ms margin gave 2-12 429s and a fan-out of 1.07-1.09x the bound, 20 ms gave 27-32 429s (1 %)
# and 1.04-1.06x, 10 ms 42 and no further gain. 20 ms is the cheapest sum.
DEFAULT_MARGIN_SECONDS = 0.02


@runtime_checkable
class RateLimiter(Protocol):
    """Blocks the caller until one more request may start."""

    def acquire(self) -> None: ...


class SlidingWindowRateLimiter:
    """At most `rate` request starts in any window of `period` seconds, bursts included.

    It remembers when the last `capacity` requests (capacity = `rate x period`, at least one)
    were let through. The next one may start once the oldest of them is `period + margin`
    seconds old. Waiting callers are served first come, first served: they queue on a
    condition, and only the one at the head sleeps (outside any lock) until its start time.
    A start is recorded when it is granted, at the clock's current time, not when it was
    planned: a thread that wakes late (a stalled process, a busy CPU) cannot let a backlog
    of overdue requests through at once. A fractional rate below one per `period` spaces
    single requests `1 / rate` apart.
    """

    def __init__(
        self,
        rate: float,
        period: float = 1.0,
        *,
        margin: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not rate > 0 or math.isinf(rate):
            raise ValueError(f"rate must be a positive number, got {rate!r}")
        if not period > 0:
            raise ValueError(f"period must be positive, got {period!r}")
        if margin < 0:
            raise ValueError(f"margin cannot be negative, got {margin!r}")
        self.rate = rate
        self.period = period
        capacity = math.floor(rate * period + 1e-9)
        if capacity >= 1:
            self.capacity = capacity
            self.window = period + margin
        else:
            self.capacity = 1
            self.window = 1.0 / rate + margin
        self._clock = clock
        self._sleep = sleep
        self._starts: deque[float] = deque(maxlen=self.capacity)
        self._turn = threading.Condition()
        self._issued = 0
        self._serving = 0

    def _try_start(self, now: float) -> float | None:
        """Record a start at `now` (None), or say how long to wait before trying again."""
        starts = self._starts
        if len(starts) == self.capacity:
            ready_at = starts[0] + self.window
            if now < ready_at:
                return ready_at - now
        starts.append(now)  # bounded deque: drops the oldest remembered start
        return None

    def acquire(self) -> None:
        with self._turn:
            ticket = self._issued
            self._issued += 1
            while ticket != self._serving:
                self._turn.wait()
        # Head of the queue: only this thread touches the starts until it hands over.
        try:
            while (delay := self._try_start(self._clock())) is not None:
                self._sleep(delay)
        finally:
            with self._turn:
                self._serving += 1
                self._turn.notify_all()

    def __repr__(self) -> str:
        return (
            f"SlidingWindowRateLimiter(rate={self.rate!r}, period={self.period!r}, "
            f"capacity={self.capacity}, window={self.window!r})"
        )


_shared: dict[tuple[float, float], SlidingWindowRateLimiter] = {}
_shared_lock = threading.Lock()


def shared_rate_limiter(
    rate: float, *, margin: float = DEFAULT_MARGIN_SECONDS
) -> SlidingWindowRateLimiter:
    """The process-wide limiter for `rate` requests a second (one per distinct rate).

    Every caller asking for the same rate (and margin) gets the same limiter, so all the
    `StripeClient`s and threads of a process share one budget.
    """
    with _shared_lock:
        limiter = _shared.get((rate, margin))
        if limiter is None:
            limiter = SlidingWindowRateLimiter(rate, 1.0, margin=margin)
            _shared[(rate, margin)] = limiter
        return limiter
