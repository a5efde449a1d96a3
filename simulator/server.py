"""Running the simulator: uvicorn on a real socket, in a background thread or the foreground."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from decimal import Decimal
from types import TracebackType
from typing import Any, Self

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from simulator.app import ARRIVAL_STATE_KEY, TRANSPORT_STATE_KEY, SimulatorApp
from simulator.billing import PriceRecord, SubscriptionRecord
from simulator.data import MeterRecord, SimulatorData
from simulator.faults import FaultInjector
from simulator.invoices import InvoiceRecord
from simulator.state import SimulatorState
from simulator.stats import SimulatorStats

logger = logging.getLogger("simulator")

_STARTUP_TIMEOUT = 10.0


class _TransportH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, also handing each request its connection's transport.

    uvicorn copies `app_state` into `scope["state"]` for every request; putting the transport
    there lets the app drop a connection without answering (the `reset` fault), which plain
    ASGI cannot express (an app that raises or returns without answering gets a 500). The time
    the request's bytes arrived goes there too.
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.app_state = {**self.app_state, TRANSPORT_STATE_KEY: transport}

    def data_received(self, data: bytes) -> None:
        # A request's arrival is when its bytes reach the event loop, before parsing and before
        # its task waits its turn on the loop: the rate limit and the stats count that instant.
        self.app_state[ARRIVAL_STATE_KEY] = time.monotonic()
        super().data_received(data)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=2048)


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def build_server(state: SimulatorState, *, log_config: Any = None) -> uvicorn.Server:
    config = uvicorn.Config(
        SimulatorApp(state),
        http=_TransportH11Protocol,
        loop="asyncio",
        ws="none",
        lifespan="off",
        log_config=log_config,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=1,
        server_header=False,
        date_header=True,
    )
    return uvicorn.Server(config)


class StripeSimulator:
    """A Stripe simulator on a real socket, for tests, benchmarks and demos.

    Use it as a context manager (or `start()` / `stop()`): uvicorn serves it from a background
    thread at `.url`. Knobs (`latency`, `jitter`, `rate_limit`, `api_key`) can be changed while
    it runs; `.faults` injects faults, `.stats` counts what it saw.
    """

    def __init__(
        self,
        *,
        data: SimulatorData | None = None,
        api_key: str | None = None,
        latency: float = 0.0,
        jitter: float = 0.0,
        rate_limit: float | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
    ) -> None:
        self.state = SimulatorState(
            data=data, api_key=api_key, latency=latency, jitter=jitter, rate_limit=rate_limit
        )
        self.host = host
        self.port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None

    # -- knobs -------------------------------------------------------------------------------

    @property
    def data(self) -> SimulatorData:
        return self.state.data

    @data.setter
    def data(self, value: SimulatorData) -> None:
        self.state.data = value

    @property
    def stats(self) -> SimulatorStats:
        return self.state.stats

    @property
    def faults(self) -> FaultInjector:
        return self.state.faults

    @property
    def api_key(self) -> str | None:
        return self.state.api_key

    @api_key.setter
    def api_key(self, value: str | None) -> None:
        self.state.api_key = value

    @property
    def latency(self) -> float:
        return self.state.latency

    @latency.setter
    def latency(self, value: float) -> None:
        self.state.latency = value

    @property
    def jitter(self) -> float:
        return self.state.jitter

    @jitter.setter
    def jitter(self, value: float) -> None:
        self.state.jitter = value

    @property
    def rate_limit(self) -> float | None:
        return self.state.rate_limit

    @rate_limit.setter
    def rate_limit(self, value: float | None) -> None:
        self.state.rate_limit = value

    @property
    def rate_limit_retry_after(self) -> float | None:
        return self.state.rate_limit_retry_after

    @rate_limit_retry_after.setter
    def rate_limit_retry_after(self, value: float | None) -> None:
        self.state.rate_limit_retry_after = value

    def add_meter(
        self,
        id: str,
        *,
        event_name: str | None = None,
        formula: str = "sum",
        display_name: str | None = None,
        status: str = "active",
        created: int | None = None,
    ) -> MeterRecord:
        """Add a meter (event name defaults to the id)."""
        return self.state.data.add_meter(
            id=id,
            event_name=event_name or id,
            display_name=display_name,
            formula=formula,
            status=status,
            created=created,
        )

    def add_event(
        self,
        event_name: str,
        customer: str,
        timestamp: int,
        value: Decimal | str | int = 1,
        *,
        identifier: str | None = None,
    ) -> bool:
        """Add one raw meter event; False when its identifier was already seen."""
        return self.state.data.add_event(
            event_name=event_name,
            customer=customer,
            timestamp=timestamp,
            value=value,
            identifier=identifier,
        )

    def add_price(self, **price: Any) -> PriceRecord:
        """Add a price, given as the data file's `prices` entry (its meter must exist)."""
        return self.state.data.add_price(price)

    def add_subscription(self, **subscription: Any) -> SubscriptionRecord:
        """Add a subscription, given as the data file's `subscriptions` entry."""
        return self.state.data.add_subscription(subscription)

    def add_invoice(self, **invoice: Any) -> InvoiceRecord:
        """Add an invoice, given as the data file's `invoices` entry (served as given)."""
        return self.state.data.add_invoice(invoice)

    def cancel_event(self, event_name: str, identifier: str) -> bool:
        """Cancel a received meter event (as an adjustment does); False when there is none."""
        return self.state.data.cancel_event(event_name=event_name, identifier=identifier)

    def reset_stats(self) -> None:
        self.state.stats.reset()

    def reset(self, data: SimulatorData | None = None) -> None:
        """Back to a fresh simulator on the same socket: new data, no knobs, faults or stats."""
        state = self.state
        state.data = data if data is not None else SimulatorData()
        state.api_key = None
        state.latency = 0.0
        state.jitter = 0.0
        state.rate_limit = None
        state.rate_limit_retry_after = None
        state.faults.clear()
        state.stats.reset()

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, e.g. `http://127.0.0.1:54321` (only while running)."""
        if self._url is None:
            raise RuntimeError("the simulator is not running")
        return self._url

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("the simulator is already running")
        sock = bind_socket(self.host, self.port)
        server = build_server(self.state)
        thread = threading.Thread(
            target=server.run,
            kwargs={"sockets": [sock]},
            name=f"stripe-simulator-{sock.getsockname()[1]}",
            daemon=True,
        )
        thread.start()
        deadline = time.monotonic() + _STARTUP_TIMEOUT
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                thread.join(timeout=5)
                sock.close()
                raise RuntimeError("the Stripe simulator did not start")
            time.sleep(0.005)
        self._server, self._thread, self._url = server, thread, url_of(sock)
        self.port = sock.getsockname()[1]
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout=10)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout=5)
        self._server = self._thread = None
        self._url = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self._url or "not running"
        return f"StripeSimulator({where})"


def serve_forever(state: SimulatorState, *, host: str, port: int) -> None:
    """Serve in the foreground until Ctrl-C (uvicorn handles the signal)."""
    sock = bind_socket(host, port)
    server = build_server(state, log_config=uvicorn.config.LOGGING_CONFIG)
    print(f"Stripe simulator listening on {url_of(sock)} (Ctrl-C to stop)", flush=True)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # uvicorn re-raises the Ctrl-C it handled once it has shut down cleanly
    finally:
        sock.close()
    print("Stripe simulator stopped", flush=True)
