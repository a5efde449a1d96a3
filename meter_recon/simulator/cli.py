"""`meter-recon simulate-stripe`: the Stripe simulator in the foreground."""

from __future__ import annotations

from pathlib import Path

from meter_recon.simulator.data import SimulatorData
from meter_recon.simulator.faults import parse_kinds
from meter_recon.simulator.server import serve_forever
from meter_recon.simulator.state import SimulatorState


def simulate_stripe(
    *,
    port: int = 12111,
    data: Path | None = None,
    api_key: str | None = None,
    latency: float = 0.0,
    jitter: float = 0.0,
    rate_limit: float | None = None,
    fault_rate: float = 0.0,
    faults: str = "500,503,reset,timeout,malformed",
    host: str = "127.0.0.1",
) -> None:
    """Serve Stripe's billing meter endpoints from seeded meter events, until Ctrl-C.

    Parameters
    ----------
    port
        TCP port to listen on (0 picks a free one).
    data
        JSON data file: {"meters": [...], "events": [...]} (see the README, "The Stripe simulator").
    api_key
        Accept only this key (else any key starting with sk_ or rk_).
    latency
        Seconds added to every answer.
    jitter
        Up to this many more seconds, uniformly random, per answer.
    rate_limit
        Requests a second accepted (sliding one-second window); more get a 429.
    fault_rate
        Fraction (0..1) of event-summaries requests that fail on purpose.
    faults
        Comma-separated fault kinds to draw from:
        409, 429, 500, 502, 503, reset, timeout, malformed.
    host
        Interface to listen on.
    """
    state = SimulatorState(
        data=SimulatorData.load(data) if data is not None else None,
        api_key=api_key,
        latency=latency,
        jitter=jitter,
        rate_limit=rate_limit,
    )
    if fault_rate:
        state.faults.set_random(fault_rate, parse_kinds(faults))
    serve_forever(state, host=host, port=port)
