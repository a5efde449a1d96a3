"""`meter-recon simulate-stripe`: the Stripe simulator in the foreground."""

from __future__ import annotations

import sys
from pathlib import Path

from simulator.data import SimulatorData, SimulatorDataError
from simulator.faults import parse_kinds
from simulator.server import serve_forever
from simulator.state import SimulatorState


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
    """Serve Stripe's billing meter and billing-side endpoints from a data file, until Ctrl-C.

    A data file that cannot be read or is not valid ends the command with exit code 2 and one
    sentence naming the entry at fault.

    Parameters
    ----------
    port
        TCP port to listen on (0 picks a free one).
    data
        JSON data file: {"meters", "events", "prices", "subscriptions", "adjustments",
        "invoices"}, each an optional array (see docs/development.md, "The Stripe simulator").
    api_key
        Accept only this key (else any key starting with sk_ or rk_).
    latency
        Seconds added to every answer.
    jitter
        Up to this many more seconds, uniformly random, per answer.
    rate_limit
        Requests a second accepted (sliding one-second window); more get a 429.
    fault_rate
        Fraction (0..1) of event-summaries, billing-side and invoice requests that fail on
        purpose.
    faults
        Comma-separated fault kinds to draw from:
        409, 429, 500, 502, 503, reset, timeout, malformed.
    host
        Interface to listen on.
    """
    state = SimulatorState(
        data=load_data_file(data) if data is not None else None,
        api_key=api_key,
        latency=latency,
        jitter=jitter,
        rate_limit=rate_limit,
    )
    if fault_rate:
        state.faults.set_random(fault_rate, parse_kinds(faults))
    serve_forever(state, host=host, port=port)


def load_data_file(path: Path) -> SimulatorData:
    """The data file's data; a file that cannot be used exits 2 with one sentence (stderr)."""
    try:
        return SimulatorData.load(path)
    except SimulatorDataError as exc:
        problem = str(exc)
    except OSError as exc:
        problem = exc.strerror or type(exc).__name__
    except UnicodeDecodeError:
        problem = "it is not UTF-8 text"
    print(f"error: the data file {path} cannot be used: {problem.rstrip('.')}.", file=sys.stderr)
    raise SystemExit(2)
