"""Suite-wide setup: a clean environment per test, and the markers `make test-fast` skips.

`slow` and `postgres` are given here by one rule each (`pytest_collection_modifyitems`),
never by hand: a test is `slow` when its fixtures include Prefect's server (`prefect_server`,
and so `flow_env`, ...) or it is listed in `STARTS_A_SERVER`/`TAKES_SECONDS` with a reason;
`postgres` when it runs on the PostgreSQL backend. A test outside `slow` that tries to start a
Prefect server anyway fails, naming the list to add it to.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

# Tests never read the developer's .env or real Stripe settings.
for _name in list(os.environ):
    if _name.startswith("METER_RECON_") and _name != "METER_RECON_TEST_POSTGRES_URL":
        del os.environ[_name]
os.environ.pop("STRIPE_API_KEY", None)
os.environ.pop("STRIPE_API_BASE", None)

pytest_plugins = [
    "tests.fixtures.db",
    "tests.fixtures.stripe",
    "tests.fixtures.prefect",
    "tests.fixtures.alerts",
]


@pytest.fixture(autouse=True)
def _isolated_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Each test starts in an empty directory and reads the settings afresh.

    Product code never writes the environment (tests/test_config_travel.py); a test sets
    its own with `monkeypatch`, undone after it, and the cached settings must not outlive it.
    """
    from integrations.settings import get_settings

    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


SERVER_FIXTURE = "prefect_server"
#: Tests that start a Prefect server without the fixture (node id or its prefix), and how.
STARTS_A_SERVER: dict[str, str] = {
    "tests/test_prefect_server.py::test_a_first_start_is_waited_for": "spawns a server process",
    "tests/test_reliability.py": "runs `meter-recon run` in child processes that start servers",
    "tests/test_prefect_server.py::test_the_demo_starts_on_a_new_prefect_home": "runs the demo",
    "tests/test_ui.py": "starts `prefect server start` for a browser to read its UI",
}
#: Tests that start no server but take seconds anyway, and why.
TAKES_SECONDS: dict[str, str] = {
    "tests/test_dask.py::test_processes_sharing_the_gcl_never_start": "a second of real traffic",
    "tests/test_prefect_limit.py::test_when_one_worker_finishes_the_other_takes": "waits on decay",
    "tests/test_rate_limit.py::test_sixteen_threads_": "2.5 s of real traffic, timing-sensitive",
}


def _listed(nodeid: str, listing: dict[str, str]) -> bool:
    return any(nodeid == key or nodeid.startswith(key) for key in listing)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The one place `slow` and `postgres` are decided (see the module docstring)."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if (
            SERVER_FIXTURE in fixtures
            or _listed(item.nodeid, STARTS_A_SERVER)
            or _listed(item.nodeid, TAKES_SECONDS)
        ):
            item.add_marker(pytest.mark.slow)
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("backend") == "postgresql":
            item.add_marker(pytest.mark.postgres)


_SERVER_COMMANDS = ("prefect.server.api.server:create_app",)
_FLOW_COMMANDS = {"run", "nightly", "demo"}


def _starts_a_server(args: Any) -> bool:
    """A command that starts Prefect's server: its ASGI app, `prefect server start`, or a
    `meter-recon` command that runs the flow (and so starts one unless told of one)."""
    words = (
        [str(a) for a in args]
        if isinstance(args, Sequence) and not isinstance(args, str)
        else str(args).split()
    )
    if any(command in word for word in words for command in _SERVER_COMMANDS):
        return True
    if any(words[i : i + 2] == ["server", "start"] for i in range(len(words))):
        return True
    cli = next(
        (i for i, word in enumerate(words) if word.endswith(("meter_recon.cli", "meter-recon"))),
        None,
    )
    return cli is not None and bool(_FLOW_COMMANDS & set(words[cli + 1 : cli + 2]))


@pytest.fixture(autouse=True)
def _no_server_unless_slow(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside `slow`, starting a Prefect server is a failure that says where to mark it."""
    if request.node.get_closest_marker("slow") is not None:
        return
    real = subprocess.Popen

    class GuardedPopen(real):  # type: ignore[misc, valid-type]
        def __init__(self, args: Any, *rest: Any, **options: Any) -> None:
            if _starts_a_server(args):
                raise AssertionError(
                    f"{request.node.nodeid} starts a Prefect server but is not marked slow: "
                    "use the prefect_server fixture, or list it in STARTS_A_SERVER "
                    "(tests/conftest.py) with the reason."
                )
            super().__init__(args, *rest, **options)

    monkeypatch.setattr(subprocess, "Popen", GuardedPopen)
