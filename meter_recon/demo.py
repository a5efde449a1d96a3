"""`meter-recon demo`: the whole job end to end on one machine, with nothing to set up.

It seeds a SQLite ledger and a Stripe simulator with realistic data (`meter_recon.seed`),
serves the simulator and a tiny alert inbox on 127.0.0.1, runs the reconciliation flow on
Prefect's embedded server, and prints the report. Everything lives in one directory
(`demo/` by default):

- `demo.json`: the day the data is anchored on, the seed, the customer count and the window,
  so a later run regenerates the very same simulator data, even on another day;
- `stripe.json`: the simulator's data file (`meter-recon simulate-stripe --data demo/stripe.json`);
- `ledger.csv`: the ledger, imported with the real importer;
- `meter_recon.db`: the SQLite database.

The first run seeds, runs the flow, then posts late meter events to the simulator (as an
application reports usage, `POST /v1/billing/meter_events`) into a closed period that
matched, and runs the flow again: that discrepancy's likely cause is late usage. The report
shows each discrepancy's amount at stake and likely cause next to what was planted, checks
that they agree (a `DemoError` when they do not), and ends with the money at stake per
currency, the causes, and how to see the same report in Prefect's UI.

A second run reuses the directory (the ledger is not imported again; Stripe still has the
late events), runs the flow over the same window and shows that nothing is new.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from integrations.prefect_server import started_first
from meter_recon.errors import UserError
from meter_recon.seed import (
    DEFAULT_CUSTOMERS,
    DEFAULT_SEED,
    INTERNAL,
    STRIPE,
    DemoData,
    DemoEvent,
    ExpectedDiscrepancy,
    PlantedKey,
    generate,
)
from models.canonical import canonical_decimal
from models.enums import Ledger
from models.money import format_money
from models.tables import DiscrepancyKey, DiscrepancyKind

if TYPE_CHECKING:
    from flows.reconcile import RunOutcome
    from tasks.summary import RunSummary

STATE_FILE = "demo.json"
DATABASE_FILE = "meter_recon.db"
LEDGER_FILE = "ledger.csv"
STRIPE_FILE = "stripe.json"
#: Files `--fresh` removes (and nothing else: the directory may hold the user's own files).
DEMO_FILES = (
    STATE_FILE,
    STRIPE_FILE,
    LEDGER_FILE,
    DATABASE_FILE,
    f"{DATABASE_FILE}-wal",
    f"{DATABASE_FILE}-shm",
    f"{DATABASE_FILE}-journal",
)
DEMO_API_KEY = "sk_test_demo_meter_recon"

KIND_HELP = {
    DiscrepancyKind.QUANTITY_MISMATCH: "Stripe and the ledger disagree on a closed line item",
    DiscrepancyKind.MISSING_IN_STRIPE: "billed, but Stripe has no usage for the period",
    DiscrepancyKind.UNBILLED_USAGE: "a day with usage in Stripe that no line item bills",
    DiscrepancyKind.OVERLAPPING_LINE_ITEMS: "two line items bill the same days",
}


class DemoError(UserError, ValueError):
    """The demo cannot run as asked; the message is one sentence for the user."""


@dataclass(frozen=True, slots=True)
class DemoState:
    """What `demo.json` pins, so every run of a demo directory sees the same data."""

    anchor: date
    seed: int
    customers: int
    window: tuple[date, date]

    def to_json(self) -> str:
        return (
            json.dumps(
                {
                    "anchor": self.anchor.isoformat(),
                    "seed": self.seed,
                    "customers": self.customers,
                    "window": [self.window[0].isoformat(), self.window[1].isoformat()],
                },
                indent=2,
            )
            + "\n"
        )

    @classmethod
    def load(cls, path: Path) -> DemoState:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                anchor=date.fromisoformat(raw["anchor"]),
                seed=int(raw["seed"]),
                customers=int(raw["customers"]),
                window=(date.fromisoformat(raw["window"][0]), date.fromisoformat(raw["window"][1])),
            )
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            raise DemoError(
                f"{path} is not a demo state file; run `meter-recon demo --fresh` to start over."
            ) from None


@dataclass
class DemoOutcome:
    """What one demo run did (the command prints it; tests inspect it)."""

    exit_code: int
    state: DemoState
    data: DemoData
    seeded: bool
    #: The flow runs, in order: with `seeded`, before and after the late events.
    summaries: tuple[RunOutcome, ...]
    database_url: str
    #: The last run's summary, built as `meter-recon report` builds it: the money it ends with.
    report: RunSummary
    alerts: list[dict[str, Any]] = field(default_factory=list)
    open_records: list[dict[str, Any]] = field(default_factory=list)
    found: frozenset[PlantedKey] = frozenset()
    #: How what was found differs from what was planted, one line each (empty: it agrees).
    disagreements: tuple[str, ...] = ()

    @property
    def summary(self) -> RunOutcome:
        """The last run's summary."""
        return self.summaries[-1]

    @property
    def planted_found(self) -> bool:
        return self.found == self.data.expected_identities()


class AlertInbox:
    """A tiny HTTP endpoint on 127.0.0.1 that keeps what Apprise's `json://` posts to it.

    The demo's inbox, and the tests' (`tests/fixtures/alerts.py`): set `fail_with` to an
    HTTP status to answer every post with it and keep nothing.
    """

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.fail_with: int | None = None
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status = inbox.fail_with
                if status is None:
                    inbox.keep(body)
                self.send_response(200 if status is None else status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the demo prints what arrived itself

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="demo-alert-inbox", daemon=True
        )

    def keep(self, body: bytes) -> None:
        """Keep a post as it came and as a message (a body that is not a JSON object: `raw`)."""
        self.raw.append(body)
        try:
            message = json.loads(body)
        except ValueError:
            message = {"raw": body.decode("utf-8", "replace")}
        self.messages.append(message if isinstance(message, dict) else {"raw": message})

    @property
    def apprise_url(self) -> str:
        return f"json://127.0.0.1:{self._server.server_address[1]}/"

    def __enter__(self) -> AlertInbox:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@contextmanager
def patched_environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration, then put back what was there."""
    from integrations.settings import get_settings

    names = {*values, "METER_RECON_DATABASE_URL"}
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(values)
    get_settings.cache_clear()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        get_settings.cache_clear()


class _TaskRunChatter(logging.Filter):
    """Drops task runs' INFO lines (one "Finished in state Completed()" per pair)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.name.startswith("prefect.task_runs")


@contextmanager
def quiet_task_runs() -> Iterator[None]:
    """Keep the terminal readable: the report lists what the tasks found.

    Only Prefect's console handlers are filtered; the task runs' logs still reach Prefect's
    API (and its UI).
    """
    import prefect.main  # noqa: F401  configures Prefect's logging: its handlers exist
    from prefect.logging.handlers import PrefectConsoleHandler

    chatter = _TaskRunChatter()
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, PrefectConsoleHandler)]
    for handler in handlers:
        handler.addFilter(chatter)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(chatter)


def _say(console: Console, text: str) -> None:
    """A plain line: no markup, no highlighting, not wrapped (ids and URLs stay whole)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def sqlite_url(path: Path) -> str:
    """`sqlite:///demo/meter_recon.db` for a relative path, `sqlite:////abs/...` otherwise."""
    return f"sqlite:///{path.as_posix()}"


def _remove_demo_files(directory: Path) -> None:
    from models.engine import get_engine

    get_engine(sqlite_url(directory / DATABASE_FILE)).dispose()
    for name in DEMO_FILES:
        (directory / name).unlink(missing_ok=True)


def _line_item_count(database_url: str) -> int:
    from sqlmodel import Session, func, select

    from models.engine import get_engine
    from models.tables import InvoiceLineItem

    with Session(get_engine(database_url)) as session:
        return session.exec(select(func.count()).select_from(InvoiceLineItem)).one()


def _state_for(
    directory: Path, *, customers: int, seed: int, database_url: str, console: Console
) -> DemoState:
    """The stored state, or a new one anchored today (UTC)."""
    from flows.windows import utc_today
    from meter_recon.seed import default_window

    path = directory / STATE_FILE
    if path.exists():
        state = DemoState.load(path)
        if (state.customers, state.seed) != (customers, seed):
            _say(
                console,
                f"note: {directory} holds the demo seeded with --customers {state.customers} "
                f"--seed {state.seed}; using those (add --fresh to seed it again)",
            )
        today = utc_today()
        if state.window[1] > today:
            raise DemoError(
                f"{path} is anchored on {state.anchor}, after today ({today}, UTC); "
                "run `meter-recon demo --fresh` to start over."
            )
        return state
    database = directory / DATABASE_FILE
    if database.exists() and _line_item_count(database_url):
        raise DemoError(
            f"{database} holds a ledger but {path} is missing, so its data cannot be "
            "regenerated; run `meter-recon demo --fresh` to start over."
        )
    anchor = utc_today()
    return DemoState(anchor=anchor, seed=seed, customers=customers, window=default_window(anchor))


def _seed_ledger(data: DemoData, *, ledger: Path, database_url: str) -> None:
    from models.engine import get_engine, session_scope
    from models.ledger import import_line_items
    from models.pairs import track_by_hand

    engine = get_engine(database_url)
    import_line_items(engine=engine, path=ledger)
    with session_scope(engine) as session:
        for pair in data.hand_tracked:
            track_by_hand(
                session=session,
                customer=pair.customer,
                meter=pair.meter,
                active_from=pair.active_from,
                active_to=pair.active_to,
            )


def run_demo(
    *,
    directory: Path,
    customers: int = DEFAULT_CUSTOMERS,
    seed: int = DEFAULT_SEED,
    fresh: bool = False,
    console: Console,
    prefect_api_url: str | None = None,
) -> DemoOutcome:
    """Seed (once), serve the simulator and an alert inbox, run the flow, print the report.

    `prefect_api_url` is the Prefect server the user chose (`PREFECT_API_URL` as the command
    started, before any embedded server set it): the report's closing lines point to it.
    """
    from models.engine import get_engine

    database_url = sqlite_url(directory / DATABASE_FILE)
    state = _prepare_directory(
        directory,
        fresh=fresh,
        customers=customers,
        seed=seed,
        database_url=database_url,
        console=console,
    )
    data = _generate(state)
    stripe_file, ledger = _write_files(data, state=state, directory=directory)
    seeded = _seed_database(data, ledger=ledger, database_url=database_url)
    _print_setup(console, data, directory=directory, database_url=database_url, seeded=seeded)
    try:
        summaries, alerts = _serve_and_run(
            console,
            data=data,
            stripe_file=stripe_file,
            window=state.window,
            database_url=database_url,
            late_between_runs=seeded,
        )
        outcome = _report(
            console,
            data=data,
            state=state,
            seeded=seeded,
            summaries=summaries,
            alerts=alerts,
            database_url=database_url,
            directory=directory,
            prefect_api_url=prefect_api_url,
        )
    finally:
        get_engine(database_url).dispose()
    if outcome.disagreements:
        raise DemoError(
            f"The run's discrepancies disagree with what the demo planted "
            f"({len(outcome.disagreements)} difference(s); first: {outcome.disagreements[0]})."
        )
    return outcome


def _prepare_directory(
    directory: Path,
    *,
    fresh: bool,
    customers: int,
    seed: int,
    database_url: str,
    console: Console,
) -> DemoState:
    """Create the directory (emptied of the demo's files with `fresh`); the state to use."""
    directory.mkdir(parents=True, exist_ok=True)
    if fresh:
        _remove_demo_files(directory)
    return _state_for(
        directory, customers=customers, seed=seed, database_url=database_url, console=console
    )


def _generate(state: DemoState) -> DemoData:
    """The data the state pins; a generator refusal (too few customers) is the user's."""
    try:
        return generate(anchor=state.anchor, customers=state.customers, seed=state.seed)
    except ValueError as exc:
        raise DemoError(str(exc)) from None


def _write_files(data: DemoData, *, state: DemoState, directory: Path) -> tuple[Path, Path]:
    """Write the state, the simulator's data file and the ledger CSV; their paths."""
    (directory / STATE_FILE).write_text(state.to_json(), encoding="utf-8")
    stripe_file = data.write_simulator_file(directory / STRIPE_FILE)
    ledger = data.write_ledger_csv(directory / LEDGER_FILE)
    return stripe_file, ledger


def _seed_database(data: DemoData, *, ledger: Path, database_url: str) -> bool:
    """Migrate the database and import the ledger unless it holds one; whether it seeded."""
    from models.migrate import upgrade

    upgrade(database_url)
    seeded = _line_item_count(database_url) == 0
    if seeded:
        _seed_ledger(data, ledger=ledger, database_url=database_url)
    return seeded


def _demo_settings(*, stripe_url: str, alert_url: str) -> dict[str, str]:
    """The environment the flow runs with: the simulator, the inbox and the demo's numbers."""
    return {
        "STRIPE_API_KEY": DEMO_API_KEY,
        "STRIPE_API_BASE": stripe_url,
        "METER_RECON_ALERT_URLS": alert_url,
        # The demo's own numbers, whatever a local .env says.
        "METER_RECON_ABS_TOL": "0.000001",
        "METER_RECON_REL_TOL": "0",
        # What the planted causes and the customer only Stripe knows need.
        "METER_RECON_DISCOVER_PAIRS": "true",
        "METER_RECON_DIAGNOSE": "true",
        "METER_RECON_SETTLE_HOURS": "0",
        "METER_RECON_TASK_RUNNER": "threads",
        # The simulator on 127.0.0.1 has no rate limit to respect.
        "METER_RECON_MAX_REQUESTS_PER_SECOND": "200",
    }


def post_meter_events(*, stripe_url: str, api_key: str, events: Sequence[DemoEvent]) -> None:
    """Report meter events to Stripe the way an application does (form-encoded POSTs)."""
    import httpx

    with httpx.Client(base_url=stripe_url, timeout=10.0) as client:
        for event in events:
            response = client.post(
                "/v1/billing/meter_events",
                headers={"Authorization": f"Bearer {api_key}"},
                data={
                    "event_name": event.event_name,
                    "payload[stripe_customer_id]": event.customer,
                    "payload[value]": canonical_decimal(event.value),
                    "timestamp": str(event.timestamp),
                    "identifier": event.identifier,
                },
            )
            if response.status_code != 200:
                raise DemoError(
                    f"The Stripe simulator refused the late meter event {event.identifier} "
                    f"(HTTP {response.status_code})."
                )


def _late_item(data: DemoData) -> ExpectedDiscrepancy | None:
    return next((e for e in data.expected_in(INTERNAL) if e.after_late_events), None)


def _serve_and_run(
    console: Console,
    *,
    data: DemoData,
    stripe_file: Path,
    window: tuple[date, date],
    database_url: str,
    late_between_runs: bool,
) -> tuple[list[RunOutcome], list[dict[str, Any]]]:
    """Serve the simulator and the inbox, run the flow over the window; what it alerted.

    With `late_between_runs` (a demo just seeded) the flow runs twice, the late meter events
    posted in between; otherwise Stripe got them long ago: they are posted first, one run.
    """
    from meter_recon.launch import settings_for
    from meter_recon.terminal import execute_or_fail
    from simulator import SimulatorData, StripeSimulator
    from tasks.fetch import close_clients

    start, end = window
    try:
        with (
            AlertInbox() as inbox,
            StripeSimulator(data=SimulatorData.load(stripe_file), api_key=DEMO_API_KEY) as stripe,
            patched_environment(_demo_settings(stripe_url=stripe.url, alert_url=inbox.apprise_url)),
        ):
            _say(
                console,
                f"Stripe simulator on {stripe.url}; alerts go to {inbox.apprise_url}\n"
                f"running the flow over {start}..{end} (UTC days, end exclusive) "
                "on Prefect's embedded server unless PREFECT_API_URL is set ...",
            )
            settings = settings_for(database_url)

            def run() -> RunOutcome:
                with quiet_task_runs():
                    return execute_or_fail(
                        console=console,
                        settings=settings,
                        start=start,
                        end=end,
                        customers=[],
                        meters=[],
                        manual=True,
                    )

            def post_late() -> None:
                post_meter_events(
                    stripe_url=stripe.url, api_key=DEMO_API_KEY, events=data.late_events
                )

            summaries = []
            if late_between_runs:
                summaries.append(run())
                post_late()
                _say(console, _late_sentence(data, again=True))
                summaries.append(run())
            else:
                post_late()
                _say(console, _late_sentence(data, again=False))
                summaries.append(run())
            return summaries, list(inbox.messages)
    finally:
        close_clients()


def _late_sentence(data: DemoData, *, again: bool) -> str:
    late = _late_item(data)
    where = (
        ""
        if late is None
        else (
            f" of {late.customer} / {late.meter} into {late.period_start}..{late.period_end} "
            f"(line item {late.line_item_id}, which matched)"
        )
    )
    count = len(data.late_events)
    if again:
        return (
            f"posted {count} late meter event(s){where} with POST /v1/billing/meter_events; "
            "running the flow again ..."
        )
    return (
        f"posted again the {count} late meter event(s){where} that the first demo run posted "
        "(the simulator starts from its data file; Stripe would keep them)"
    )


def _print_setup(
    console: Console, data: DemoData, *, directory: Path, database_url: str, seeded: bool
) -> None:
    formulas = ", ".join(f"{m.display_name} ({m.formula})" for m in data.meters)
    lines = [
        f"meter-recon demo in {directory}/: {len(data.customers)} customers, seed {data.seed}, "
        f"data anchored on {data.anchor} (UTC)",
        f"  meters: {formulas}",
        f"  Stripe: {len(data.events)} meter events -> {directory / STRIPE_FILE}",
    ]
    if seeded:
        lines.append(
            f"  ledger: {len(data.line_items)} line items -> {directory / LEDGER_FILE}, imported "
            f"into {database_url}; {len(data.hand_tracked)} pair(s) tracked by hand"
        )
    else:
        lines.append(f"  ledger: already in {database_url} (not imported again)")
    lines.append(f"  planted: {len(data.expected)} discrepancies of every kind")
    _say(console, "\n".join(lines))


def _report(
    console: Console,
    *,
    data: DemoData,
    state: DemoState,
    seeded: bool,
    summaries: list[RunOutcome],
    alerts: list[dict[str, Any]],
    database_url: str,
    directory: Path,
    prefect_api_url: str | None,
) -> DemoOutcome:
    from meter_recon.terminal import print_run_summary
    from models.discrepancies import as_record, list_discrepancies
    from models.engine import get_engine, session_scope
    from tasks.report import render_terminal
    from tasks.summary import build_summary

    exit_code = 0
    for summary in summaries:
        _say(console, "")
        exit_code = max(exit_code, print_run_summary(console, summary))

    if alerts:
        for alert in alerts:
            _say(console, f"alert received: {alert.get('title', alert)}")
    else:
        _say(console, "no alert sent: nothing new or re-opened since the last run")
    if all(s.new == 0 and s.reopened == 0 for s in summaries):
        _say(console, "nothing new: every open discrepancy below was found by an earlier run")

    with session_scope(get_engine(database_url)) as session:
        records = [as_record(row) for row in list_discrepancies(session=session)]
        report = build_summary(session=session, run_id=summaries[-1].run_id)
    found = frozenset(_identity(record) for record in records)
    planted = {e.planted_key: e for e in data.expected}
    _print_discrepancies(console, records, planted=planted)
    disagreements = tuple(_disagreements(records, planted))

    outcome = DemoOutcome(
        exit_code=exit_code,
        state=state,
        data=data,
        seeded=seeded,
        summaries=tuple(summaries),
        database_url=database_url,
        report=report,
        alerts=alerts,
        open_records=records,
        found=found,
        disagreements=disagreements,
    )
    expected = data.expected_identities()
    if not disagreements:
        _say(
            console,
            f"\nall {len(expected)} planted discrepancies were found, each with its planted "
            "amount at stake and likely cause, and nothing else",
        )
    else:
        _say(
            console,
            f"\nthe open discrepancies differ from the {len(expected)} planted ones: "
            f"{len(expected - found)} planted not found, {len(found - expected)} not planted, "
            f"{len(disagreements)} difference(s) in all:",
        )
        for line in disagreements:
            _say(console, f"  {line}")

    url = database_url
    _say(
        console,
        "\nexplore:\n"
        f"  meter-recon discrepancies --database-url {url} --format csv\n"
        f"  meter-recon discrepancies --database-url {url} --sort amount --cause late_usage\n"
        f"  meter-recon ack ID --note 'seen' --database-url {url}\n"
        f"  meter-recon simulate-stripe --data {directory / STRIPE_FILE}   (in another terminal)\n"
        f"  STRIPE_API_KEY=sk_test_x STRIPE_API_BASE=http://127.0.0.1:12111 "
        f"meter-recon nightly --database-url {url}",
    )
    _say(console, "")
    for line in render_terminal(report):
        _say(console, line)
    _say(console, cause_line(records))
    _say(console, prefect_ui_lines(prefect_api_url))
    _say(console, "\n" + not_invoiced_line(records))
    return outcome


def _identity(record: dict[str, Any]) -> PlantedKey:
    """A found discrepancy's ledger (`internal` where none is recorded) and identity."""
    ledger = Ledger(record.get("ledger") or INTERNAL)
    return ledger, DiscrepancyKey(
        stripe_customer_id=record["customer"],
        meter_id=record["meter"],
        kind=DiscrepancyKind(record["kind"]),
        period_start=date.fromisoformat(record["period_start"]),
        period_end=date.fromisoformat(record["period_end"]),
        line_item_id=record["line_item_id"] or "",
        other_line_item_id=record["other_line_item_id"] or "",
        ledger=ledger,
    )


def _amount(record: dict[str, Any]) -> Decimal | None:
    value = record.get("amount_at_stake")
    return None if value is None else Decimal(str(value))


def _currency(record: dict[str, Any]) -> str | None:
    value = record.get("currency")
    return None if value is None else str(value).lower()


def _exact(amount: Decimal | None) -> str:
    return "none" if amount is None else canonical_decimal(amount)


def _cause(record: dict[str, Any]) -> str | None:
    value = record.get("likely_cause")
    return None if value is None else str(value)


def _money_text(amount: Decimal | None, currency: str | None) -> str:
    return "not valued" if amount is None or currency is None else format_money(amount, currency)


def _planted_text(expected: ExpectedDiscrepancy) -> str:
    amount = _money_text(expected.amount_at_stake, expected.currency)
    return f"cause {expected.cause or 'none'}, {amount}"


def _label(key: PlantedKey) -> str:
    ledger, identity = key
    return (
        f"{identity.kind} ({ledger} ledger) of {identity.stripe_customer_id} / "
        f"{identity.meter_id} {identity.period_start}..{identity.period_end}"
    )


def _disagreements(
    records: list[dict[str, Any]], planted: dict[PlantedKey, ExpectedDiscrepancy]
) -> Iterator[str]:
    """Each way the open discrepancies differ from the planted ones (in either ledger):
    missing, not planted, or with another amount at stake, currency or likely cause."""
    found = {_identity(record): record for record in records}
    for identity, expected in planted.items():
        record = found.get(identity)
        label = _label(identity)
        if record is None:
            yield f"{label} was planted ({expected.why}) but not found"
            continue
        amount, currency, cause = _amount(record), _currency(record), _cause(record)
        if (amount, currency) != (expected.amount_at_stake, expected.currency) or (
            cause != (str(expected.cause) if expected.cause else None)
        ):
            shown = _money_text(amount, currency)
            planted_money = (expected.amount_at_stake, expected.currency)
            if (amount, currency) != planted_money and shown == _money_text(*planted_money):
                # Apart by less than the minor unit: the exact decimals say how.
                shown += f" (exactly {_exact(amount)}, planted {_exact(expected.amount_at_stake)})"
            yield (
                f"{label} was planted with {_planted_text(expected)} "
                f"but found with cause {cause or 'none'}, {shown}"
            )
    for identity in sorted(found.keys() - planted.keys()):
        yield f"{_label(identity)} was found but not planted"


def not_invoiced_line(records: list[dict[str, Any]]) -> str:
    """What Stripe metered but did not invoice, per currency: the positive amounts of the
    stripe ledger's open discrepancies (never added across currencies)."""
    totals: dict[str, Decimal] = {}
    for record in records:
        amount, currency = _amount(record), _currency(record)
        if record.get("ledger") == STRIPE and amount is not None and currency and amount > 0:
            totals[currency] = totals.get(currency, Decimal(0)) + amount
    if not totals:
        return "Stripe metered but did not invoice: nothing"
    shown = ", ".join(format_money(totals[currency], currency) for currency in sorted(totals))
    return f"Stripe metered but did not invoice: {shown}"


def cause_line(records: list[dict[str, Any]]) -> str:
    """How many open discrepancies have each likely cause (rule order), and how many none."""
    from models.enums import LikelyCause

    counts = Counter(_cause(record) for record in records)
    parts = [f"{cause.value} {counts[cause.value]}" for cause in LikelyCause if counts[cause.value]]
    parts.append(f"no cause {counts[None]}")
    return "likely causes: " + ", ".join(parts)


def prefect_ui_lines(api_url: str | None) -> str:
    """Where to see the same report in Prefect's UI: the user's server, or how to start one."""
    if api_url:
        ui = api_url.rstrip("/").removesuffix("/api")
        return (
            f"\nthe same report is in Prefect's UI at {ui}: the flow runs of "
            "`meter-recon`, each with its run summary artifact"
        )
    return (
        "\nto see the same report in Prefect's UI (the flow runs, each with its run summary "
        "artifact):\n"
        "  prefect server start      (in another terminal; its UI is on http://127.0.0.1:4200)\n"
        "  PREFECT_API_URL=http://127.0.0.1:4200/api make demo"
    )


#: Wide enough for a discrepancy table on one line per row when the output is not a terminal
#: (a log, a pipe); a terminal gets its own width.
REPORT_WIDTH = 200
COLUMNS = ("id", "customer", "meter", "period [start, end)")
NUMBERS = ("Stripe", "ledger", "difference", "at stake")


def _print_discrepancies(
    console: Console,
    records: list[dict[str, Any]],
    *,
    planted: dict[PlantedKey, ExpectedDiscrepancy],
) -> None:
    if not records:
        _say(console, "\nno open discrepancies")
        return
    _say(console, f"\n{len(records)} open discrepancies, by kind:")
    if not console.is_terminal and console.width < REPORT_WIDTH:
        console = Console(file=console.file, width=REPORT_WIDTH, highlight=False)
    for kind in DiscrepancyKind:
        rows = [r for r in records if r["kind"] == kind.value]
        if not rows:
            continue
        notes = {row["id"]: _note(row, planted) for row in rows}
        table = _table(kind, rows, notes)
        unbounded = console.options.update_width(10_000)
        if Measurement.get(console, unbounded, table).maximum <= console.width:
            console.print(table)
            continue
        # Too narrow for the notes in a column: they follow the table, one line each.
        console.print(_table(kind, rows, None))
        for row in rows:
            _say(console, f"  #{row['id']}: {notes[row['id']]}")
        console.print()


def _note(record: dict[str, Any], planted: dict[PlantedKey, ExpectedDiscrepancy]) -> str:
    """The line item(s) of a discrepancy, why the demo planted it, and the planted cause."""
    items = " / ".join(i for i in (record["line_item_id"], record["other_line_item_id"]) if i)
    expected = planted.get(_identity(record))
    why = (
        "not planted by the demo"
        if expected is None
        else f"{expected.why} (planted: {_planted_text(expected)})"
    )
    return f"{items}: {why}" if items else why


def _table(
    kind: DiscrepancyKind, rows: list[dict[str, Any]], notes: dict[int, str] | None
) -> Table:
    table = Table(
        title=Text(f"{kind.value} ({len(rows)}): {KIND_HELP[kind]}"),
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for name in COLUMNS:
        table.add_column(name, no_wrap=True)
    for name in NUMBERS:
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("likely cause", no_wrap=True)
    if notes is not None:
        table.add_column("line item(s): planted as", no_wrap=True)
    for row in rows:
        amount, currency = _amount(row), _currency(row)
        cells = [
            row["id"],
            row["customer"],
            row["meter"],
            f"{row['period_start']}..{row['period_end']}",
            row["stripe_quantity"],
            row["internal_quantity"],
            row["difference"],
            "-" if amount is None or currency is None else format_money(amount, currency),
            _cause(row) or "-",
        ]
        if notes is not None:
            cells.append(notes[row["id"]])
        table.add_row(*(Text("" if cell is None else str(cell)) for cell in cells))
    return table


def demo(
    *,
    directory: Path = Path("demo"),
    customers: int = DEFAULT_CUSTOMERS,
    seed: int = DEFAULT_SEED,
    fresh: bool = False,
) -> int:
    """Seed a SQLite ledger and a Stripe simulator with realistic data, run the flow, report.

    Needs nothing but this package: no PostgreSQL, no Stripe account, no network. A second
    run reuses the directory and shows that nothing is new.

    Parameters
    ----------
    directory
        Where the demo keeps its ledger database, CSV and simulator data (created if missing).
    customers
        How many customers to generate (at least 6); used when the directory is seeded.
    seed
        Seed of the data generator: the same seed and day give the same data.
    fresh
        Delete the demo's files in the directory first and seed again, anchored on today.
    """
    from integrations.settings import get_settings
    from meter_recon.terminal import console

    chosen = os.environ.get("PREFECT_API_URL")  # before an embedded server sets it
    with started_first(enabled=get_settings().early_prefect_server):
        outcome = run_demo(
            directory=directory,
            customers=customers,
            seed=seed,
            fresh=fresh,
            console=console,
            prefect_api_url=chosen,
        )
    return outcome.exit_code
