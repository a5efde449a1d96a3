"""`integrations.prefect_server` copies private parts of Prefect's `SubprocessASGIServer`: the
port range, the server's command and environment, the stop timeout, the startup timeout's
default. Each is compared here with Prefect's own, so an upgrade that changes one fails here
instead of starting a server Prefect would not start."""

from __future__ import annotations

import ast
import inspect
import subprocess
import textwrap
from typing import Any

import pytest
from prefect.server.api.server import SubprocessASGIServer
from prefect.settings.models.server.ephemeral import ServerEphemeralSettings

from integrations import prefect_server


class RecordedProcess:
    """Stands in for `subprocess.Popen`: keeps the command and environment, starts nothing."""

    started: list[RecordedProcess] = []

    def __init__(self, args: list[str], **kwargs: Any) -> None:
        self.args = list(args)
        self.env: dict[str, str] = kwargs.get("env") or {}
        RecordedProcess.started.append(self)

    def poll(self) -> int:
        return 0

    def terminate(self) -> None:
        return None

    def kill(self) -> None:
        return None

    def wait(self, timeout: float | None = None) -> int:
        return 0


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[RecordedProcess]:
    RecordedProcess.started = []
    monkeypatch.setattr(subprocess, "Popen", RecordedProcess)
    return RecordedProcess.started


def _prefects_command(port: int) -> list[str]:
    server = SubprocessASGIServer(port=port)
    try:
        server.port = port
        return list(server._run_uvicorn_command().args)
    finally:
        SubprocessASGIServer._instances.pop(port, None)


def _ours(port_of: list[int]) -> list[str]:
    server = prefect_server.spawn(environ={})
    try:
        port_of.append(server.port)
        assert isinstance(server.process, RecordedProcess)
        return server.process.args
    finally:
        server.stop()


def _method_tree(name: str) -> ast.AST:
    return ast.parse(textwrap.dedent(inspect.getsource(getattr(SubprocessASGIServer, name))))


def test_the_port_range_is_prefects() -> None:
    assert SubprocessASGIServer._port_range == prefect_server.PORT_RANGE


def test_the_server_command_is_prefects(recorded: list[RecordedProcess]) -> None:
    port: list[int] = []
    ours = _ours(port)
    assert ours == _prefects_command(port[0])


def test_the_server_environment_adds_what_prefect_adds() -> None:
    literals = [
        ast.literal_eval(node.value)
        for node in ast.walk(_method_tree("_run_uvicorn_command"))
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "server_env" for t in node.targets)
    ]
    assert literals == [prefect_server.SERVER_ENV]


def test_prefects_server_gets_these_variables_over_the_parents(
    recorded: list[RecordedProcess],
) -> None:
    port: list[int] = []
    _ours(port)
    ours = recorded[-1].env
    _prefects_command(port[0])
    theirs = recorded[-1].env
    for name, value in prefect_server.SERVER_ENV.items():
        assert theirs[name] == ours[name] == value


def test_the_stop_timeout_is_prefects() -> None:
    timeouts = [
        ast.literal_eval(keyword.value)
        for node in ast.walk(_method_tree("stop"))
        if isinstance(node, ast.Call)
        for keyword in node.keywords
        if keyword.arg == "timeout"
    ]
    assert timeouts == [prefect_server.STOP_TIMEOUT]


def test_the_startup_timeout_default_is_prefects() -> None:
    default = ServerEphemeralSettings.model_fields["startup_timeout_seconds"].default
    assert default == prefect_server.DEFAULT_STARTUP_TIMEOUT
