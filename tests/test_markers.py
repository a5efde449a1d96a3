"""`make test-fast` leaves out every test that starts a Prefect server: tests/conftest.py marks
them `slow` by one rule, and a test it missed fails the moment it starts one."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import _starts_a_server


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app"],
        ["prefect", "server", "start"],
        [sys.executable, "-m", "meter_recon.cli", "run", "--start", "2026-11-01"],
        ["/venv/bin/meter-recon", "nightly"],
        "meter-recon demo --directory demo",
    ],
)
def test_commands_that_start_a_prefect_server_are_recognised(command: list[str] | str) -> None:
    assert _starts_a_server(command)


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "meter_recon.cli", "db", "upgrade"],
        [sys.executable, "-c", "print('server start')"],
        ["prefect", "--no-prompt", "deploy", "--all"],
    ],
)
def test_other_commands_are_not(command: list[str]) -> None:
    assert not _starts_a_server(command)


def test_a_test_outside_slow_that_starts_a_server_fails_saying_where_to_mark_it() -> None:
    with pytest.raises(AssertionError, match=r"not marked slow.*STARTS_A_SERVER"):
        subprocess.Popen(["prefect", "server", "start"])


def test_the_rule_marks_every_test_with_prefect_servers_fixture_slow(
    request: pytest.FixtureRequest,
) -> None:
    unmarked = [
        item.nodeid
        for item in request.session.items
        if "prefect_server" in getattr(item, "fixturenames", ())
        and item.get_closest_marker("slow") is None
    ]
    assert unmarked == []
