"""A database that cannot be used is one sentence on stderr and exit code 2, from every command
that touches it: what is wrong (the URL without its password) and what to do."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from sqlalchemy.engine import make_url

from meter_recon.cli import main
from meter_recon.errors import EXIT_BAD_INPUT
from models.migrate import alembic_config, head_revision
from tests.builders import csv_file, line_item
from tests.fixtures.db import backends

UNREACHABLE = "postgresql://u:secret@127.0.0.1:1/x"
SHOWN = "postgresql://u:***@127.0.0.1:1/x"
MISSING_FOLDER = "sqlite:////nonexistent/dir/x.db"
UPGRADE = "run `meter-recon db upgrade`"

#: Every command that touches the database, as a user would type it (without the URL).
COMMANDS: dict[str, list[str]] = {
    "discrepancies": ["discrepancies"],
    "ack": ["ack", "1", "--note", "seen"],
    "report": ["report"],
    "pairs list": ["pairs", "list"],
    "pairs add": ["pairs", "add", "cus_A", "mtr_api"],
    "pairs sync": ["pairs", "sync"],
    "import-line-items": ["import-line-items", "ledger.csv"],
    "run": ["run", "--start", "2026-01-01", "--end", "2026-01-02"],
    "nightly": ["nightly"],
}
WITH_UPGRADE = {**COMMANDS, "db upgrade": ["db", "upgrade"]}


@pytest.fixture(autouse=True)
def _a_key_and_a_ledger(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the commands need besides the database: a Stripe key, a CSV to import."""
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_db_errors")
    item = line_item()
    csv_file(
        Path("ledger.csv"),
        f"{item.id},in_1,cus_A,mtr_api,2026-10-01,2026-11-01,100,usd,10",
    )


def refusal(args: list[str], url: str, capsys: pytest.CaptureFixture[str]) -> str:
    """The command's one line on stderr; it must exit 2 and print no traceback."""
    code = main([*args, "--database-url", url])
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("name", WITH_UPGRADE)
def test_an_unreachable_postgresql_is_named_without_its_password(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = refusal(WITH_UPGRADE[name], UNREACHABLE, capsys)
    assert f"Cannot reach the database {SHOWN} (Connection refused)" in err
    assert "that the server is running" in err
    assert "secret" not in err


@pytest.mark.parametrize("name", WITH_UPGRADE)
def test_a_sqlite_file_in_a_missing_folder_names_the_folder(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = refusal(WITH_UPGRADE[name], MISSING_FOLDER, capsys)
    assert f"SQLite database {MISSING_FOLDER}" in err
    assert "check that the folder /nonexistent/dir exists" in err


@pytest.mark.parametrize("name", COMMANDS)
def test_an_empty_sqlite_file_asks_for_db_upgrade(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    err = refusal(COMMANDS[name], f"sqlite:///{empty}", capsys)
    assert f"has no schema yet: {UPGRADE}." in err


def test_a_sqlite_file_that_does_not_exist_is_not_created_by_reading_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "never.db"
    err = refusal(COMMANDS["discrepancies"], f"sqlite:///{path}", capsys)
    assert f"does not exist yet: {UPGRADE}." in err
    assert not path.exists()


@pytest.mark.parametrize("name", ["discrepancies", "pairs add", "run"])
def test_a_database_without_the_schema_asks_for_db_upgrade(
    name: str, empty_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """On SQLite and PostgreSQL alike (an empty database, not a missing file)."""
    if empty_database_url.startswith("sqlite"):
        Path(str(make_url(empty_database_url).database)).touch()  # empty, as `touch` leaves it
    err = refusal(COMMANDS[name], empty_database_url, capsys)
    assert f"has no schema yet: {UPGRADE}." in err


@pytest.mark.parametrize("name", ["discrepancies", "report", "run"])
def test_a_database_behind_the_newest_revision_asks_for_db_upgrade(
    name: str, empty_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    command.upgrade(alembic_config(empty_database_url), "0003")
    err = refusal(COMMANDS[name], empty_database_url, capsys)
    assert f"is at revision 0003, behind the newest ({head_revision(empty_database_url)})" in err
    assert err.endswith(f"{UPGRADE}.\n")


def test_after_db_upgrade_the_same_command_works(
    empty_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    command.upgrade(alembic_config(empty_database_url), "0003")
    assert main(["db", "upgrade", "--database-url", empty_database_url]) == 0
    assert main(["discrepancies", "--database-url", empty_database_url]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("backend", [b for b in backends() if b == "postgresql"], indirect=True)
def test_a_postgresql_database_that_does_not_exist_is_named(
    backend: str, empty_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = make_url(empty_database_url).set(database="mr_no_such_database")
    url = url.render_as_string(hide_password=False)
    err = refusal(COMMANDS["discrepancies"], url, capsys)
    assert '(database "mr_no_such_database" does not exist)' in err


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("not a url", "cannot be parsed"),
        ("mysql://u:secret@db/x", "mysql://u:***@db/x is for mysql, which meter-recon does not"),
    ],
)
def test_a_url_meter_recon_cannot_use_is_refused_in_one_sentence(
    url: str, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    err = refusal(COMMANDS["discrepancies"], url, capsys)
    assert said in err and "secret" not in err


def test_a_locked_sqlite_database_says_another_process_holds_it() -> None:
    """SQLite gives up after its busy timeout (30 s): too long to wait for here, so the error
    is the one sqlite3 raises then."""
    import sqlite3

    from sqlalchemy import exc

    from models.db_errors import translate

    locked = exc.OperationalError(
        "BEGIN IMMEDIATE", {}, sqlite3.OperationalError("database is locked")
    )
    problem = translate(locked, url="sqlite:////srv/meter_recon.db")
    assert problem is not None
    assert str(problem) == (
        "The SQLite database sqlite:////srv/meter_recon.db stayed locked (database is locked): "
        "another process is writing to it; try again when it is done, or use PostgreSQL for "
        "concurrent runs."
    )
