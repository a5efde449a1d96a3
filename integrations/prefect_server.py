"""Prefect's embedded server, started by meter-recon before it imports Prefect.

Without `PREFECT_API_URL`, Prefect starts its embedded ("ephemeral") server on its first API
call: the process first imports `prefect.server.api.server` (~5 s of CPU on 2 cores) only to
reach `SubprocessASGIServer`, then spawns the server, which imports it all again and boots
(~8 s). Here the commands that run the flow spawn that very server process first, with the
command, environment and port range `SubprocessASGIServer` uses: the server boots while
this process imports Prefect and the flow, and Prefect never imports its server code here.
This process's calls to Prefect's API go to it through Prefect's own settings context
(`prefect_settings()`, its `PREFECT_API_URL`); the process environment is never written.

- `started_first()` (a context manager) spawns it when Prefect is not imported yet and would
  start its embedded server (no API URL in Prefect's settings, ephemeral mode on), unless
  `METER_RECON_EARLY_PREFECT_SERVER` is false; it always stops it on the way out: Prefect's
  queued events and logs are drained, then the server is terminated, and killed after 5 s.
  The server also dies with this process when it is killed (Linux: `PR_SET_PDEATHSIG`).
- `wait_until_ready()` waits for the server's `/api/health`; the flow calls it right before it
  starts (`meter_recon.launch.execute`), as does anything that calls Prefect's API earlier.
  The first start on a new Prefect home creates and migrates Prefect's database, which takes
  longer than Prefect's own 20 s on a busy machine: then it says so in one line and waits up
  to `FIRST_START_TIMEOUT`.
- `prefect_settings()`: Prefect's settings around every use of Prefect's API in this process
  (the flow run, reading the key's Secret block): the server `started_first` started, without
  flow-run heartbeats, and Prefect's telemetry off unless the user turned it on.

The server gets this process's environment without Stripe's or meter-recon's variables, nor
anything that looks like a secret (Prefect's own `PREFECT_*` settings all stay), and with
Prefect's telemetry off unless the environment turns it on (its own `env=` mapping).

This module imports nothing heavy: it runs before Prefect is imported.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator, Mapping
from importlib.util import find_spec
from pathlib import Path
from typing import IO, Any

from models.errors import UserError

#: What `SubprocessASGIServer._run_uvicorn_command` adds to the server's environment.
SERVER_ENV = {
    "PREFECT_UI_ENABLED": "0",
    "PREFECT__SERVER_EPHEMERAL": "1",
    "PREFECT__SERVER_FINAL": "1",
}
#: `SubprocessASGIServer._port_range`.
PORT_RANGE = range(8000, 9000)
#: Seconds `SubprocessASGIServer.stop` waits after terminating, before it kills.
STOP_TIMEOUT = 5.0
#: Prefect's `PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS` default.
DEFAULT_STARTUP_TIMEOUT = 20.0
#: Seconds a server creating its database may take: Prefect's migrations took 15-25 s on 2
#: idle cores, and a busy machine (load 3 on 2 cores) took longer than Prefect's 20 s.
FIRST_START_TIMEOUT = 180.0
#: A line of the server's output that says what failed, and a log line's prefix.
_ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b|\[Errno \d+\]")
_LOG_PREFIX = re.compile(r"^(ERROR:\s+|[\d:.]+ \| \w+\s+\| [\w.]+ - )")

#: Prefect's server sends anonymous usage telemetry unless told not to; a billing tool that runs
#: nightly on finance data should not phone home by default (the user's own values win).
PRIVACY_DEFAULTS = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}

#: Names the server's environment never holds (prefixes, then parts of a name).
SECRET_PREFIXES = ("STRIPE_", "METER_RECON_")
SECRET_MARKERS = ("SECRET", "TOKEN", "PASSWORD", "PASSWD", "API_KEY", "APIKEY", "PRIVATE_KEY")

#: Prefect settings that decide whether Prefect would start its embedded server.
_DECIDING = (
    "PREFECT_API_URL",
    "PREFECT_PROFILES_PATH",
    "PREFECT_SERVER_EPHEMERAL_ENABLED",
    "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE",
)
_TRUE = {"1", "true", "t", "yes", "y", "on"}


class PrefectServerError(UserError, RuntimeError):
    """Prefect's server could not be started; the message is one sentence for the user."""


class PrefectServer:
    """One Prefect server process on 127.0.0.1, started as `SubprocessASGIServer` starts it."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        port: int,
        reservation: socket.socket | None,
        output: IO[bytes],
        *,
        new_database: Path | None = None,
    ) -> None:
        self.process = process
        self.port = port
        self._reservation = reservation
        self._output = output  # the server's stdout and stderr
        self.new_database = new_database  # the SQLite file this start creates, if it does
        self.healthy = False

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def wait_until_healthy(self, timeout: float = DEFAULT_STARTUP_TIMEOUT) -> None:
        """Poll `/api/health` until it answers 200; PrefectServerError if the server exits
        or does not answer within `timeout` seconds (from now)."""
        import http.client

        deadline = time.monotonic() + timeout
        while not self.healthy:
            code = self.process.poll()
            if code is not None:
                self._release()
                reason = self._first_error()
                self._output.close()
                raise PrefectServerError(
                    f"Prefect's embedded server stopped before it was ready (exit code {code}"
                    f"{': ' + reason if reason else ''}); set PREFECT_API_URL to a running "
                    "Prefect server, or remove the cause and run the command again."
                )
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                try:
                    connection.request("GET", "/api/health")
                    self.healthy = connection.getresponse().status == 200
                finally:
                    connection.close()
            except OSError:
                pass
            if not self.healthy:
                if time.monotonic() >= deadline:
                    raise PrefectServerError(
                        f"Prefect's embedded server did not answer on {self.api_url} within "
                        f"{timeout:.0f} s; set PREFECT_API_URL to a running Prefect server or "
                        "raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS."
                    )
                time.sleep(0.05)
        self._release()

    def _first_error(self) -> str:
        """The first line of the server's output that says what failed (an exception, an OS
        error such as the port being taken), else its last line; shortened."""
        self._output.seek(0)
        text = self._output.read(1 << 20).decode(errors="replace")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        reason = next((line for line in lines if _ERROR_LINE.search(_LOG_PREFIX.sub("", line))), "")
        reason = _LOG_PREFIX.sub("", reason or (lines[-1] if lines else "")).rstrip(".")
        return reason if len(reason) <= 300 else reason[:297] + "..."

    def _release(self) -> None:
        """Let go of the port reservation (the server listens on it by now, or never will)."""
        if self._reservation is not None:
            self._reservation.close()
            self._reservation = None

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Terminate the server, kill it after `timeout` seconds, then pass on what it wrote
        (Prefect's server logs errors only); safe to call again."""
        self._release()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if not self._output.closed:
            self._output.seek(0)
            written = self._output.read()
            self._output.close()
            if written:
                sys.stderr.write(written.decode(errors="replace"))
                sys.stderr.flush()


def server_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` without secrets, with `PRIVACY_DEFAULTS` unless set, plus what
    `SubprocessASGIServer` sets for its server."""
    env = PRIVACY_DEFAULTS | {
        name: value for name, value in environ.items() if not _is_secret(name)
    }
    env.update(SERVER_ENV)
    return env


def _is_secret(name: str) -> bool:
    upper = name.upper()
    if upper.startswith("PREFECT_"):
        return False  # Prefect's own settings, e.g. a database password, it needs them all
    return upper.startswith(SECRET_PREFIXES) or any(marker in upper for marker in SECRET_MARKERS)


def _reserve_port() -> tuple[int, socket.socket]:
    """A free port of Prefect's range, held by a bound socket until the server listens.

    Prefect checks that a port is free, then the server binds it ~8 s later, when it has
    booted. On Linux the socket stays bound meanwhile, with SO_REUSEADDR set after the bind:
    the server (asyncio binds with SO_REUSEADDR) can still bind and listen, while Prefect's
    own free-port check and most other programs see the port as taken.
    """
    for _ in range(50):
        port = random.choice(PORT_RANGE)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            continue
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        return port, sock
    raise PrefectServerError(
        f"No free port for Prefect's embedded server between {PORT_RANGE.start} and "
        f"{PORT_RANGE.stop - 1}; set PREFECT_API_URL to a running Prefect server."
    )


def _die_with_parent() -> Any:
    """A `preexec_fn` that has the kernel kill the server when its parent dies (Linux only).

    The signal follows the thread that spawned the server: spawn it from the main thread.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def preexec() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def spawn(environ: Mapping[str, str] | None = None) -> PrefectServer:
    """Start a Prefect server process with `SubprocessASGIServer`'s command; do not wait."""
    spec = find_spec("prefect")
    if spec is None or spec.origin is None:
        raise PrefectServerError("Prefect is not installed in this Python environment.")
    port, reservation = _reserve_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(Path(spec.origin).parent.parent),
        "--factory",
        "prefect.server.api.server:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "error",
        "--lifespan",
        "on",
    ]
    env = server_environment(os.environ if environ is None else environ)
    new_database = database_to_create(env)
    if not sys.platform.startswith("linux"):
        reservation.close()  # elsewhere SO_REUSEADDR would not let the server bind it too
        reservation = None
    # Its output goes to a file: a start that fails ends in one sentence quoting why, not in
    # the server's traceback; otherwise `stop` passes it on.
    output = tempfile.TemporaryFile()  # noqa: SIM115  (closed by PrefectServer)
    try:
        process = subprocess.Popen(  # noqa: S603
            command,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent(),
        )
    except (OSError, subprocess.SubprocessError) as exc:
        output.close()
        if reservation is not None:
            reservation.close()
        raise PrefectServerError(
            f"Prefect's embedded server could not be started: {exc}."
        ) from None
    return PrefectServer(process, port, reservation, output, new_database=new_database)


def database_to_create(environ: Mapping[str, str]) -> Path | None:
    """The SQLite file a server with this environment will create on its first start (Prefect's
    default, `PREFECT_HOME/prefect.db`, or a `sqlite` connection URL in the environment or
    the active profile), or None when it exists already, cannot be created, or is not SQLite."""
    names = ("PREFECT_SERVER_DATABASE_CONNECTION_URL", "PREFECT_API_DATABASE_CONNECTION_URL")
    profile = _active_profile(environ)
    url = next((str(s[n]) for s in (environ, profile) for n in names if s.get(n)), None)
    if url is None:
        home = Path(environ.get("PREFECT_HOME") or "~/.prefect").expanduser()
        return None if (home / "prefect.db").exists() else home / "prefect.db"
    scheme, _, rest = url.partition(":///")
    if not scheme.startswith("sqlite") or not rest or rest.startswith(":memory:"):
        return None
    path = Path(rest.split("?", 1)[0]).expanduser()
    return None if path.exists() or not path.parent.is_dir() else path


# -- whether Prefect would start its embedded server -------------------------------------------


def can_start_first(environ: Mapping[str, str] | None = None) -> bool:
    """True when Prefect is not imported yet and, asked for its API, would start its embedded
    server: no API URL in its settings, and ephemeral mode on (`read_before_import`).

    Once Prefect is imported its settings are read, and `PREFECT_API_URL` set then would not
    reach them: Prefect starts its own server, as it always did.
    """
    if "prefect" in sys.modules:
        return False
    return read_before_import(os.environ if environ is None else environ)


def read_before_import(environ: Mapping[str, str]) -> bool:
    """Whether Prefect would start its embedded server, from what it reads, without importing
    it (~2 s).

    Reads the environment, the active profile (`PREFECT_PROFILE`, else the profiles file's),
    and in the working directory `.env`, `prefect.toml` and `pyproject.toml`'s
    `[tool.prefect]`; cautiously: any API URL, profiles path or ephemeral-mode setting in
    those three files means "no" (Prefect then starts its server itself, as before).
    """
    if environ.get("PREFECT_API_URL") or _local_config_decides():
        return False
    profile = _active_profile(environ)
    if profile.get("PREFECT_API_URL"):
        return False
    for source in (environ, profile):
        for name in ("PREFECT_SERVER_EPHEMERAL_ENABLED", "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE"):
            if source.get(name) is not None:
                return str(source[name]).strip().lower() in _TRUE
    return False  # Prefect's default: no embedded server


def _local_config_decides() -> bool:
    """Whether `.env`, `prefect.toml` or `[tool.prefect]` in the working directory touch the
    settings that decide (or could not be read)."""
    dotenv = Path(".env")
    if dotenv.is_file():
        try:
            text = dotenv.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return True
        if any(name in text for name in _DECIDING):
            return True
    for path, table in ((Path("prefect.toml"), ()), (Path("pyproject.toml"), ("tool", "prefect"))):
        if not path.is_file():
            continue
        try:
            data: Any = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            return True
        for key in table:
            data = data.get(key, {}) if isinstance(data, dict) else {}
        if not isinstance(data, dict):
            continue
        api = data.get("api", {})
        server = data.get("server", {})
        if (
            "profiles_path" in data
            or (isinstance(api, dict) and "url" in api)
            or (isinstance(server, dict) and "ephemeral" in server)
        ):
            return True
    return False


def _active_profile(environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings of Prefect's active profile (`PREFECT_PROFILE`, else the file's)."""
    if environ.get("PREFECT_PROFILES_PATH"):
        path = Path(environ["PREFECT_PROFILES_PATH"]).expanduser()
    else:
        home = Path(environ.get("PREFECT_HOME") or "~/.prefect").expanduser()
        path = home / "profiles.toml"
    data: dict[str, Any] = {}
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            return {"PREFECT_API_URL": "unreadable profiles: let Prefect decide"}
    profiles = data.get("profiles", {})
    active = environ.get("PREFECT_PROFILE") or data.get("active")
    if isinstance(profiles, dict) and isinstance(profiles.get(active), dict):
        return dict(profiles[active])
    return _default_profile()


def _default_profile() -> dict[str, Any]:
    """Prefect's default profile, as shipped in its `profiles.toml` (next to its settings)."""
    spec = find_spec("prefect")
    if spec is None or spec.origin is None:
        return {}
    path = Path(spec.origin).parent / "settings" / "profiles.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    profile = data.get("profiles", {}).get(data.get("active", "ephemeral"), {})
    return dict(profile) if isinstance(profile, dict) else {}


# -- this process's server ---------------------------------------------------------------------

_current: PrefectServer | None = None


@contextlib.contextmanager
def started_first(*, enabled: bool = True) -> Iterator[PrefectServer | None]:
    """Start Prefect's embedded server now if Prefect would start one later, for
    `prefect_settings()` to point this process's Prefect at; stop it on the way out.

    Yields the server, or None when none was started (`enabled` false, an API URL is set,
    Prefect would not start one, or Prefect is imported already).
    """
    global _current
    if not enabled or _current is not None or not can_start_first():
        yield None
        return
    server = spawn()
    _current = server
    atexit.register(_stop, server)  # if the `with` is skipped (os._exit is not covered)
    try:
        yield server
    finally:
        _current = None
        _stop(server)
        atexit.unregister(_stop)


def wait_until_ready() -> None:
    """Wait until the server `started_first` started answers; nothing to do without one.

    The timeout is Prefect's (`PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`), counted
    from now: the server has been booting since the command started; at least
    `FIRST_START_TIMEOUT` when the server is creating its database, which the user is told.
    """
    server = _current
    if server is None or server.healthy:
        return
    timeout = DEFAULT_STARTUP_TIMEOUT
    if "prefect.settings" in sys.modules:
        from prefect.settings import get_current_settings

        timeout = float(get_current_settings().server.ephemeral.startup_timeout_seconds)
    timeout = startup_timeout(server, timeout)
    if server.new_database is not None:
        sys.stderr.write(first_start_notice(server.new_database, timeout) + "\n")
        sys.stderr.flush()
    server.wait_until_healthy(timeout)


def startup_timeout(server: PrefectServer, configured: float) -> float:
    """How long to wait for `server`: Prefect's timeout, or longer on its first start."""
    return configured if server.new_database is None else max(configured, FIRST_START_TIMEOUT)


def first_start_notice(database: Path, timeout: float) -> str:
    """The line said while a first start creates Prefect's database."""
    return (
        f"Prefect's first start on this machine: its server is creating its database "
        f"({database}); waiting for it, up to {timeout:.0f} s."
    )


def prefect_settings() -> contextlib.AbstractContextManager[object]:
    """Prefect's settings around this process's use of Prefect's API (it imports Prefect).

    Telemetry is off unless the user's settings turn it on (a default: their value wins),
    which also reaches a server Prefect starts itself (it hands its settings to it). On the
    server `started_first` started: its API URL, and no flow-run heartbeats. They let a server
    that outlives a run mark it crashed; this one dies with the process. And Prefect's
    heartbeat thread sleeps in 1-s steps, so joining it held every finished run up to 1 s.
    """
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        temporary_settings,
    )

    updates: dict[Any, Any] = {}
    if _current is not None:
        updates = {PREFECT_API_URL: _current.api_url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
    return temporary_settings(
        updates=updates, set_defaults={PREFECT_SERVER_ANALYTICS_ENABLED: False}
    )


def _stop(server: PrefectServer) -> None:
    """Send what Prefect still queues for the server (flow-run events, logs), then stop it."""
    if server.healthy and server.process.poll() is None:
        for module, name in (
            ("prefect.events.worker", "EventsWorker"),
            ("prefect.logging.handlers", "APILogWorker"),
        ):
            worker = getattr(sys.modules.get(module), name, None)
            if worker is not None:
                with contextlib.suppress(Exception):
                    worker.drain_all(timeout=STOP_TIMEOUT)
    server.stop()
