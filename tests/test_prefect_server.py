"""Prefect's embedded server, started by the CLI before it imports Prefect.

The CLI runs as its own process here, as a user runs it; its server is found through a marker
in the environment it passes on, and watched through /proc (Linux).
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL, Settings

from integrations.prefect_server import (
    FIRST_START_TIMEOUT,
    SERVER_ENV,
    can_start_first,
    database_to_create,
    first_start_notice,
    read_before_import,
    server_environment,
    spawn,
    started_first,
    startup_timeout,
)
from models.engine import dispose_engines, get_engine
from models.migrate import upgrade
from simulator import StripeSimulator
from tests.fixtures.prefect import LEAK_CANARY_KEY
from tests.world import World, build_world

ROOT = Path(__file__).resolve().parent.parent
MARKER = "METERRECON_TEST_MARKER"  # passed on to the server: not a secret-looking name
LINUX = sys.platform.startswith("linux")


# -- the server's environment ------------------------------------------------------------------


def test_the_servers_environment_keeps_prefect_and_drops_secrets() -> None:
    env = server_environment(
        {
            "STRIPE_API_KEY": LEAK_CANARY_KEY,
            "STRIPE_API_BASE": "http://127.0.0.1:1",
            "METER_RECON_STRIPE_API_KEY": LEAK_CANARY_KEY,
            "METER_RECON_DATABASE_URL": "postgresql://u:pw@db/x",
            "METER_RECON_ALERT_URLS": "slack://token",
            "GITHUB_TOKEN": "ghp_x",
            "AWS_SECRET_ACCESS_KEY": "x",
            "PGPASSWORD": "x",
            "PREFECT_HOME": "/somewhere",
            "PREFECT_SERVER_DATABASE_PASSWORD": "kept: Prefect's own",
            "PATH": "/usr/bin",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "true",
        }
    )
    assert LEAK_CANARY_KEY not in env.values()
    assert not [name for name in env if name.startswith(("STRIPE_", "METER_RECON_"))]
    assert not {"GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "PGPASSWORD"} & set(env)
    assert env["PREFECT_HOME"] == "/somewhere"
    assert env["PREFECT_SERVER_DATABASE_PASSWORD"] == "kept: Prefect's own"
    assert env["PATH"] == "/usr/bin"
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "true"  # the user's choice stands
    assert env["DO_NOT_TRACK"] == "1"
    assert SERVER_ENV.items() <= env.items()


# -- whether Prefect would start its embedded server -------------------------------------------

URL = "http://127.0.0.1:4200/api"
PROFILES = f"""
active = "team"

[profiles.team]
PREFECT_API_URL = "{URL}"

[profiles.local]
PREFECT_SERVER_EPHEMERAL_ENABLED = "true"

[profiles.bare]
PREFECT_LOGGING_LEVEL = "INFO"
"""

CASES = {
    "no profiles file": ({}, {}),
    "active profile names a server": ({}, {"profiles.toml": PROFILES}),
    "PREFECT_PROFILE picks an ephemeral profile": (
        {"PREFECT_PROFILE": "local"},
        {"profiles.toml": PROFILES},
    ),
    "a profile without ephemeral mode": ({"PREFECT_PROFILE": "bare"}, {"profiles.toml": PROFILES}),
    "ephemeral mode off in the environment": ({"PREFECT_SERVER_EPHEMERAL_ENABLED": "false"}, {}),
    "legacy switch on, profile without it": (
        {"PREFECT_PROFILE": "bare", "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "true"},
        {"profiles.toml": PROFILES},
    ),
    "URL in .env": ({}, {".env": f"PREFECT_API_URL={URL}\n"}),
    "URL in prefect.toml": ({}, {"prefect.toml": f'[api]\nurl = "{URL}"\n'}),
    "URL in pyproject.toml": ({}, {"pyproject.toml": f'[tool.prefect.api]\nurl = "{URL}"\n'}),
    "unrelated pyproject.toml": ({}, {"pyproject.toml": '[project]\nname = "x"\n'}),
}


# -- the first start on a new Prefect home -----------------------------------------------------


def test_a_new_prefect_home_means_the_server_creates_its_database(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert database_to_create({"PREFECT_HOME": str(home)}) == home / "prefect.db"
    home.mkdir()
    (home / "prefect.db").touch()
    assert database_to_create({"PREFECT_HOME": str(home)}) is None


def test_a_sqlite_url_names_the_database_a_first_start_creates(tmp_path: Path) -> None:
    home = {"PREFECT_HOME": str(tmp_path)}
    url = "PREFECT_SERVER_DATABASE_CONNECTION_URL"
    assert database_to_create(home | {url: f"sqlite+aiosqlite:///{tmp_path / 'p.db'}"}) == (
        tmp_path / "p.db"
    )
    # One that cannot be created fails fast, as any server that cannot start.
    missing = f"sqlite+aiosqlite:///{tmp_path / 'no-such-directory' / 'p.db'}"
    assert database_to_create(home | {url: missing}) is None
    assert database_to_create(home | {url: "postgresql+asyncpg://u@db/prefect"}) is None


def test_a_first_start_is_waited_for_longer_than_prefects_own_timeout(tmp_path: Path) -> None:
    new = spawn({**os.environ, "PREFECT_HOME": str(tmp_path / "new-home")})
    new.stop()
    assert new.new_database == tmp_path / "new-home" / "prefect.db"
    assert startup_timeout(new, 20.0) == FIRST_START_TIMEOUT
    assert startup_timeout(new, 600.0) == 600.0  # a longer setting still wins
    new.new_database = None
    assert startup_timeout(new, 20.0) == 20.0
    notice = first_start_notice(tmp_path / "prefect.db", FIRST_START_TIMEOUT)
    assert "first start" in notice and "creating its database" in notice
    assert f"up to {FIRST_START_TIMEOUT:.0f} s" in notice


@pytest.mark.parametrize("case", list(CASES))
def test_the_early_check_agrees_with_prefects_own_settings(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read before Prefect is imported, the answer is Prefect's own (Settings() re-reads the
    environment, the profile and the working directory's files)."""
    environ, files = CASES[case]
    home = tmp_path / "home"
    home.mkdir()
    for name in list(os.environ):
        if name.startswith("PREFECT_") and name != "PREFECT_SERVER_ANALYTICS_ENABLED":
            monkeypatch.delenv(name)
    monkeypatch.setenv("PREFECT_HOME", str(home))
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    for name, text in files.items():
        (home if name == "profiles.toml" else Path.cwd()).joinpath(name).write_text(text)
    prefect = Settings()
    prefect_answer = not prefect.api.url and prefect.server.ephemeral.enabled
    assert read_before_import(os.environ) is prefect_answer


def test_once_prefect_is_imported_no_server_is_started_first() -> None:
    """Its settings are read by then: it would not use the server, and would start its own."""
    assert "prefect" in sys.modules
    assert not can_start_first({})
    with started_first() as server:
        assert server is None
    assert "PREFECT_API_URL" not in os.environ


# -- the CLI's server, process by process ------------------------------------------------------


def _state(pid: int) -> str | None:
    """The process's state letter; None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    return _state(pid) not in (None, "Z")


@dataclass(frozen=True)
class Server:
    pid: int
    port: int
    env: dict[str, str]


def _marked_servers(marker: str) -> dict[int, Server]:
    """Running uvicorn processes whose environment holds the marker."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "environ").read_bytes()
            argv = (entry / "cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if "uvicorn" not in argv or f"{MARKER}={marker}".encode() not in raw:
            continue
        pid = int(entry.name)
        if _alive(pid):
            env = dict(item.decode().split("=", 1) for item in raw.split(b"\0") if b"=" in item)
            found[pid] = Server(pid, int(argv[argv.index("--port") + 1]), env)
    # A server's own child between fork and exec still shows the server's command line and
    # environment: it is not a second server.
    return {pid: server for pid, server in found.items() if _parent(pid) not in found}


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _healthy(port: int) -> bool:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        connection.request("GET", "/api/health")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def _listens(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _interruptible() -> None:
    """Ctrl-C reaches the CLI as it does from a terminal, even when the tests were started
    in the background by a shell that ignores SIGINT there (children inherit that, and Python
    then installs no KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Cli:
    """`meter-recon ...` in its own process, and the Prefect server it starts, if any."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.marker = uuid.uuid4().hex
        self.log = log
        self.servers: dict[int, Server] = {}
        with log.open("wb") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "meter_recon.cli", *args],
                env={**env, MARKER: self.marker},
                cwd=ROOT,
                stdout=sink,
                stderr=subprocess.STDOUT,
                preexec_fn=_interruptible,
            )

    def watch(self, until: float = 120.0, *, healthy: bool = False) -> Server | None:
        """Record the CLI's servers until it exits, or until one is healthy (returned)."""
        deadline = time.monotonic() + until
        while time.monotonic() < deadline:
            self.servers |= _marked_servers(self.marker)
            if healthy and self.servers:
                server = next(iter(self.servers.values()))
                if _healthy(server.port):
                    return server
            if self.process.poll() is not None:
                return None
            time.sleep(0.01)
        raise AssertionError(f"the CLI still runs after {until} s:\n{self.output}")

    def wait(self, timeout: float = 120.0) -> int:
        self.watch(timeout)
        return self.process.wait(timeout=5)

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def left_running(self, grace: float = 10.0) -> list[int]:
        """The CLI's servers still running, or still listening, `grace` s after it ended."""
        deadline = time.monotonic() + grace
        while True:
            running = [s.pid for s in self.servers.values() if _alive(s.pid) or _listens(s.port)]
            running += [pid for pid in _marked_servers(self.marker) if pid not in running]
            if not running or time.monotonic() > deadline:
                return running
            time.sleep(0.05)


@pytest.fixture(scope="module")
def prefect_home(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Prefect home with a migrated database (a copy of the test server's): a new home would
    cost every server ~10 s of migrations."""
    home = tmp_path_factory.mktemp("prefect-home")
    source = str(PREFECT_SERVER_DATABASE_CONNECTION_URL.value()).split("///", 1)[1]
    with sqlite3.connect(source) as src, sqlite3.connect(home / "prefect.db") as dst:
        src.backup(dst)
    src.close()
    dst.close()
    return home


@pytest.fixture
def world(simulator: StripeSimulator, tmp_path: Path) -> Iterator[tuple[World, str]]:
    url = f"sqlite:///{tmp_path / 'meter_recon.db'}"
    upgrade(url)
    simulator.api_key = LEAK_CANARY_KEY
    yield build_world(simulator, get_engine(url), tmp_path), url
    dispose_engines()


def cli_env(prefect_home: Path, simulator: StripeSimulator) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "METER_RECON_"))}
    return env | {
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "STRIPE_API_KEY": LEAK_CANARY_KEY,
        "STRIPE_API_BASE": simulator.url,
    }


def run_args(world: World, url: str) -> list[str]:
    return ["run", "--start", str(world.start), "--end", str(world.end), "--database-url", url]


def flow_run_state(prefect_home: Path, flow_run_id: str) -> str | None:
    """The state of a flow run in the home's Prefect database (its server is gone)."""
    with sqlite3.connect(prefect_home / "prefect.db") as db:
        row = (
            db.execute(
                "SELECT state_type FROM flow_run WHERE id = ?", (flow_run_id.replace("-", ""),)
            ).fetchone()
            or db.execute("SELECT state_type FROM flow_run WHERE id = ?", (flow_run_id,)).fetchone()
        )
    db.close()
    return None if row is None else str(row[0])


pytestmark = pytest.mark.skipif(not LINUX, reason="watches processes through /proc")


def test_the_cli_runs_on_the_server_it_started_and_stops_it(
    world: tuple[World, str],
    prefect_home: Path,
    simulator: StripeSimulator,
    tmp_path: Path,
) -> None:
    state, url = world
    cli = Cli(run_args(state, url), cli_env(prefect_home, simulator), tmp_path / "cli.log")
    assert cli.wait() == 0, cli.output
    assert "run 1 completed" in cli.output
    assert "Traceback" not in cli.output
    (server, *others) = cli.servers.values()
    assert not others, "one server per run"
    env = server.env
    assert cli.left_running() == [], "the server outlived the CLI"
    # The server it started was Prefect's, and it kept no Stripe key.
    assert env["PREFECT_HOME"] == str(prefect_home)
    assert SERVER_ENV.items() <= env.items()
    assert "STRIPE_API_KEY" not in env
    assert LEAK_CANARY_KEY not in "".join(f"{k}={v}" for k, v in env.items())
    # The flow ran against that server: it recorded the run, completed.
    with sqlite3.connect(url.split("///", 1)[1]) as db:
        (flow_run_id,) = db.execute("SELECT flow_run_id FROM reconciliation_run").fetchone()
    db.close()
    assert flow_run_state(prefect_home, flow_run_id) == "COMPLETED"


def test_a_failing_command_stops_the_server_it_started(
    simulator: StripeSimulator, prefect_home: Path, tmp_path: Path
) -> None:
    """The database has no schema: the command says so (exit 2) after the server started."""
    args = ["run", "--start", "2026-01-01", "--end", "2026-01-02"]
    args += ["--database-url", f"sqlite:///{tmp_path / 'empty.db'}"]
    cli = Cli(args, cli_env(prefect_home, simulator), tmp_path / "cli.log")
    assert cli.wait() == 2, cli.output
    assert "meter-recon db upgrade" in cli.output
    assert len(cli.servers) == 1, "the server starts before the command's checks"
    assert cli.left_running() == []


def test_a_server_that_cannot_start_ends_the_command_with_one_sentence(
    world: tuple[World, str], prefect_home: Path, simulator: StripeSimulator, tmp_path: Path
) -> None:
    state, url = world
    unusable = f"sqlite+aiosqlite:///{tmp_path / 'no-such-directory' / 'prefect.db'}"
    env = cli_env(prefect_home, simulator) | {"PREFECT_SERVER_DATABASE_CONNECTION_URL": unusable}
    cli = Cli(run_args(state, url), env, tmp_path / "cli.log")
    assert cli.wait() == 1, cli.output
    assert cli.output.splitlines() == [
        "error: Prefect's embedded server stopped before it was ready (exit code 3: "
        "sqlite3.OperationalError: unable to open database file); set PREFECT_API_URL to a "
        "running Prefect server, or remove the cause and run the command again."
    ]
    assert cli.left_running() == []


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["killed", "interrupted"])
def test_the_server_ends_with_a_cli_that_is_killed_or_interrupted(
    sig: signal.Signals,
    world: tuple[World, str],
    prefect_home: Path,
    simulator: StripeSimulator,
    tmp_path: Path,
) -> None:
    state, url = world
    simulator.latency = 10  # the flow is under way, waiting for Stripe, when the signal comes
    # A CLI that does not end shows where it stands: SIGABRT makes Python print every thread.
    env = cli_env(prefect_home, simulator) | {"PYTHONFAULTHANDLER": "1"}
    cli = Cli(run_args(state, url), env, tmp_path / "cli.log")
    try:
        server = cli.watch(healthy=True)
        assert server is not None, cli.output
        time.sleep(0.5)
        cli.process.send_signal(sig)
        try:
            cli.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            cli.process.send_signal(signal.SIGABRT)
            cli.process.wait(timeout=10)
            pytest.fail(f"the CLI still ran 30 s after {sig.name}:\n{cli.output}")
        assert cli.left_running() == [], f"the server outlived the CLI ({sig.name})"
    finally:
        simulator.latency = 0
        if cli.process.poll() is None:
            cli.process.kill()
            cli.process.wait()


def test_with_prefect_api_url_set_no_server_is_started(
    world: tuple[World, str], prefect_server: str, simulator: StripeSimulator, tmp_path: Path
) -> None:
    state, url = world
    env = cli_env(tmp_path / "unused-home", simulator) | {"PREFECT_API_URL": prefect_server}
    with get_client(sync_client=True) as client:
        before = client.count_flow_runs()
    cli = Cli(run_args(state, url), env, tmp_path / "cli.log")
    assert cli.wait() == 0, cli.output
    assert cli.servers == {}
    with get_client(sync_client=True) as client:
        assert client.count_flow_runs() == before + 1


# -- a new user's first run on a busy machine --------------------------------------------------

BUSY_SECONDS = 60  # the CPU burners stop by themselves after this


@pytest.fixture
def busy_cores() -> Iterator[None]:
    """Every core kept busy by a process that stops by itself after BUSY_SECONDS; killed when
    the test ends."""
    code = (
        f"import time\nend = time.monotonic() + {BUSY_SECONDS}\nwhile time.monotonic() < end: pass"
    )
    burners = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(os.cpu_count() or 2)]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


def test_the_demo_starts_on_a_new_prefect_home_while_the_machine_is_busy(
    busy_cores: None, tmp_path: Path
) -> None:
    user_home = tmp_path / "user"
    user_home.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "METER_RECON_", "STRIPE_"))
    }
    env |= {
        "HOME": str(user_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # Prefect's own wait, set below what any first start takes: keeping to it would fail.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "3",
    }
    cli = Cli(["demo", "--directory", str(tmp_path / "demo")], env, tmp_path / "cli.log")
    assert cli.wait(timeout=FIRST_START_TIMEOUT + 60) == 0, cli.output
    said = [line for line in cli.output.splitlines() if "first start" in line]
    assert said == [first_start_notice(user_home / ".prefect" / "prefect.db", FIRST_START_TIMEOUT)]
    assert (user_home / ".prefect" / "prefect.db").is_file()
    assert len(cli.servers) == 1
    assert cli.left_running() == []
