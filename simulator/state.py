"""The simulator's knobs and shared state (read by the server thread, set by anyone)."""

from __future__ import annotations

import math
import random
from collections import deque

from simulator.data import SimulatorData
from simulator.faults import FaultInjector
from simulator.stats import SimulatorStats


class WindowCounter:
    """Server-side rate limit: at most `rate` accepted requests in any sliding second.

    Requests over it are refused (and not counted). Only the server's event loop calls it.
    """

    def __init__(self, rate: float, window: float = 1.0) -> None:
        if not rate > 0:
            raise ValueError(f"rate limit must be positive, got {rate!r}")
        self.rate = rate
        self.window = window
        self.capacity = max(1, math.floor(rate * window + 1e-9))
        self._accepted: deque[float] = deque()

    def try_accept(self, now: float) -> bool:
        accepted = self._accepted
        while accepted and accepted[0] <= now - self.window:
            accepted.popleft()
        if len(accepted) >= self.capacity:
            return False
        accepted.append(now)
        return True


class SimulatorState:
    """Everything a request handler reads. Knobs may be changed while the server runs."""

    def __init__(
        self,
        *,
        data: SimulatorData | None = None,
        api_key: str | None = None,
        latency: float = 0.0,
        jitter: float = 0.0,
        rate_limit: float | None = None,
        rate_limit_retry_after: float | None = None,
    ) -> None:
        self.data = data if data is not None else SimulatorData()
        self.api_key = api_key
        self.latency = latency
        self.jitter = jitter
        self.rate_limit = rate_limit
        # Stripe documents no `Retry-After` on 429; set this to send one anyway.
        self.rate_limit_retry_after = rate_limit_retry_after
        self.stats = SimulatorStats()
        self.faults = FaultInjector()
        self.rng = random.Random()

    @property
    def rate_limit(self) -> float | None:
        """Requests a second the server accepts (sliding one-second window); None: unlimited."""
        return self._rate_limit

    @rate_limit.setter
    def rate_limit(self, value: float | None) -> None:
        self._limiter = None if value is None else WindowCounter(value)
        self._rate_limit = value

    def accept(self, now: float) -> bool:
        """Whether the server-side rate limit lets a request arriving `now` through."""
        limiter = self._limiter
        return limiter is None or limiter.try_accept(now)

    def delay(self) -> float:
        """This request's latency: fixed part plus uniform jitter."""
        extra = self.rng.uniform(0.0, self.jitter) if self.jitter > 0 else 0.0
        return max(0.0, self.latency) + extra
