"""The bench's cases: one registered function each, picked by name; each row names its setup;
the seeded Stripe bills exactly the seeded pairs, and the bench counts what discovery and the
diagnosis ask."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bench.dataset import OFF_MIDNIGHT, build, pair_list, write_ledger
from bench.discovery import measure as measure_discovery
from bench.environ import child_environ
from bench.run import (
    CASES,
    STRIPE_LEDGER_LABEL,
    FlowCase,
    grouping_label,
    ledgers_note,
    parse_args,
    parse_databases,
    runner_label,
    runner_table,
)
from bench.settle import cpu_busy, settle
from bench.stats import BenchStats
from bench.stripe_ledger import LedgerCost, cost_table
from integrations.settings import get_settings
from simulator import StripeSimulator, wire
from simulator.app import ApiError, SimulatorApp, _status_matches, paginate
from simulator.state import SimulatorState
from simulator.stats import UNGROUPED_SUMMARIES, SimulatorStats
from tasks.discover import discover
from tasks.run_config import RunConfig


def test_every_case_is_registered_in_the_order_it_runs() -> None:
    assert list(CASES) == [
        "startup",
        "one-task-per-pair",
        "default-grouping",
        "dask",
        "runners",
        "server-running",
        "large-runs",
        "discovery-memory",
        "baseline",
        "micro",
        "ledger-sync",
        "stripe-ledger",
    ]


def test_only_picks_cases_by_name_and_rejects_unknown_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert parse_args(["--only", "large-runs, micro"]).only == "large-runs, micro"
    with pytest.raises(SystemExit):
        parse_args(["--only", "large-runs,huge"])
    assert "unknown case(s) huge" in capsys.readouterr().err


def test_the_large_runs_default_to_100000_pairs_on_a_fast_stripe() -> None:
    args = parse_args([])
    assert args.large_sizes == "20000,100000"
    assert (args.large_rate, args.large_latency) == (1000.0, 0.005)


def test_a_row_names_its_runner_and_grouping() -> None:
    assert runner_label({"task_runner": "threads", "max_workers": 16}) == "threads (16)"
    assert runner_label({"task_runner": "dask", "max_workers": 16}).startswith("Dask")
    assert grouping_label(1, chosen=False) == "1 pair per task (set)"
    assert grouping_label(62, chosen=True) == "62 pairs per task (chosen by the flow)"


def test_threads_and_dask_are_measured_side_by_side_at_1500_pairs_and_50_a_second() -> None:
    args = parse_args([])
    assert (args.runner_sizes, args.runner_rate, args.runner_database) == (
        "500,1000,1500",
        50.0,
        "postgres",
    )


def test_the_side_by_side_table_fits_the_marginal_cost_and_splits_cpu_by_process() -> None:
    def row(pairs: int, requests: int, wall: float, runner: str) -> FlowCase:
        case = FlowCase("flow", pairs, 0, "", requests=requests, wall=wall, rate=50.0)
        case.runner, case.discovery_requests = runner, 1
        case.phases = {"fanout": wall - 4.0}
        case.client_cpu, case.server_cpu, case.workers_cpu = 3.0, 1.5, 30.0
        return case

    # 1,000 more requests took 22 s more: 1.1 x 1/R at the margin, whatever the start-up.
    table = runner_table({"Dask": [row(500, 551, 20.0, "Dask"), row(1500, 1551, 42.0, "Dask")]})
    assert len(table) == 3
    cells = [cell.strip() for cell in table[2].split("|")[1:-1]]
    assert cells[0] == "Dask"
    assert cells[2] == "1,500"
    assert cells[5] == f"{42.0 / (1551 / 50):.3f}"  # whole: wall / bound
    assert cells[7] == "1.100"  # marginal: the slope of the wall time x R
    assert cells[8] == "1.100"  # and of the fan-out alone (start-up the same in both runs)
    assert cells[11] == "2.0 / 1.0 / 20.0"  # CPU ms per pair: flow / server / Dask workers


def test_the_fan_outs_marginal_cost_leaves_out_a_start_up_slower_in_one_run() -> None:
    def row(pairs: int, requests: int, start_up: float, fanout: float) -> FlowCase:
        case = FlowCase("flow", pairs, 0, "", requests=requests, wall=start_up + fanout, rate=50.0)
        case.runner, case.discovery_requests = "Dask", 4
        case.phases = {"fanout": fanout}
        return case

    # The 1,500-pair run started 2 s slower; its fan-out took 21 s more for 1,000 requests more.
    table = runner_table({"Dask": [row(500, 555, 6.0, 12.0), row(1500, 1555, 8.0, 33.0)]})
    cells = [cell.strip() for cell in table[2].split("|")[1:-1]]
    assert cells[7] == "1.150"  # the wall time's slope takes the 2 s for marginal cost
    assert cells[8] == "1.050"  # the fan-out's does not


def test_dask_rows_record_into_sqlite_postgres_or_both() -> None:
    assert parse_databases("sqlite, postgres") == ["SQLite", "PostgreSQL"]
    assert parse_args([]).dask_databases == "postgres"
    assert parse_args([]).dask_prefect_databases == "sqlite"  # Prefect's server: its default
    with pytest.raises(SystemExit):
        parse_args(["--dask-databases", "oracle"])


def test_every_customer_has_one_subscription_billing_exactly_its_seeded_pairs() -> None:
    seeded = build(42)
    subscriptions = seeded.data.subscriptions()
    billed = [(s.customer, item.price.meter) for s in subscriptions for item in s.items]
    assert seeded.subscriptions == len(subscriptions) == 11  # 4 meters a customer, 2 on the last
    assert sorted(billed) == sorted((c, m) for c, m, _, _ in pair_list(42))
    assert sorted(p.billing_scheme for p in seeded.data.prices()) == [
        "per_unit",
        "per_unit",
        "per_unit",
        "tiered",
    ]


def test_the_20000_pair_run_has_5000_subscriptions_and_2000_hourly_requests() -> None:
    seeded = build(20_000)
    # 1,000 mismatched line items on a sum meter, 2 hourly spans each; the 1,000 missing
    # ones are on a `last` meter, which the timezone-shift rule does not apply to.
    assert (seeded.subscriptions, seeded.hourly_requests) == (5_000, 2_000)
    assert seeded.expected_discrepancies == 6_000


def test_every_invoice_line_bills_exactly_the_meters_usage_over_its_period() -> None:
    seeded = build(42, invoices=True)
    data = seeded.data
    billed = []
    for invoice in data.invoices():
        for line in invoice.lines:
            meter = data.meter(line.price.meter or "")
            assert meter is not None
            # The simulator's own total over the exact instants, as `usage_total` asks it.
            buckets = data.buckets(
                meter, invoice.customer, line.period_start, line.period_end, None
            )
            usage = buckets[0].value if buckets else Decimal(0)
            assert line.quantity_decimal == usage, line.id
            billed.append((invoice.customer, meter.id))
    assert sorted(billed) == sorted((c, m) for c, m, _, _ in pair_list(42))
    assert (seeded.invoices, seeded.invoice_lines) == (11, 42)


def test_half_the_subscriptions_bill_from_midnight_and_half_from_14_30() -> None:
    seeded = build(42, invoices=True)
    anchors = {
        invoice.subscription: {(line.period_start % 86_400, line.period_end % 86_400)}
        for invoice in seeded.data.invoices()
        for line in invoice.lines
    }
    assert list(anchors.values()).count({(0, 0)}) == 6  # subscriptions 0, 2, ..., 10
    assert list(anchors.values()).count({(OFF_MIDNIGHT, OFF_MIDNIGHT)}) == 5
    assert seeded.off_midnight_lines == 20  # 5 subscriptions of 4 items


def test_each_invoice_is_paid_for_a_closed_month_the_window_overlaps() -> None:
    seeded = build(42, invoices=True)
    window_start = int(datetime.combine(seeded.window_start, time(), UTC).timestamp())
    window_end = int(datetime.combine(seeded.window_end, time(), UTC).timestamp())
    for invoice in seeded.data.invoices():
        assert invoice.status == "paid"
        assert invoice.finalized_at is not None
        assert 0 < invoice.finalized_at - invoice.period_end <= 72 * 3600
        assert invoice.created >= window_start  # listed by a run from the window's start
        assert 28 * 86_400 <= invoice.period_end - invoice.period_start <= 31 * 86_400
        assert invoice.period_start < window_start < invoice.period_end < window_end


def test_the_20000_pair_run_has_5000_invoices_and_10000_lines_off_midnight() -> None:
    seeded = build(20_000, invoices=True)
    assert (seeded.invoices, seeded.invoice_lines, seeded.off_midnight_lines) == (
        5_000,
        20_000,
        10_000,
    )
    assert seeded.expected_discrepancies == 6_000  # the internal ledger's; none for Stripe's


def test_the_bench_data_has_no_invoices_unless_asked() -> None:
    seeded = build(42)
    assert (seeded.data.invoices(), seeded.invoices, seeded.off_midnight_lines) == ([], 0, 0)


def test_every_run_compares_the_internal_ledger_only_unless_the_row_says_both() -> None:
    default = FlowCase("flow, default grouping", 1000, 0, "home")
    both = FlowCase(STRIPE_LEDGER_LABEL, 1000, 0, "home", ledgers="internal,stripe")
    assert default.ledgers == "internal"
    said = ledgers_note([default, both])[0]
    assert said.startswith("Every row compares the internal ledger only")
    assert said.endswith(f"but {STRIPE_LEDGER_LABEL}: both ledgers (`internal,stripe`).")
    assert ledgers_note([both])[0].startswith("Every row compares both ledgers")


def test_the_simulator_counts_summaries_asking_no_grouping_window_apart() -> None:
    stats = SimulatorStats()
    path = "GET /v1/billing/meters/m/event_summaries"
    stats.record_arrival(1.0, f"{path}?customer=c&start_time=0&end_time=60", "event_summaries")
    stats.record_arrival(1.1, f"{path}?value_grouping_window=day&customer=c", "event_summaries")
    stats.record_arrival(1.2, f"{path}?value_grouping_window=hour&customer=c", "event_summaries")
    assert (stats.event_summaries, stats.requests_to(UNGROUPED_SUMMARIES)) == (3, 1)
    assert stats.snapshot()[UNGROUPED_SUMMARIES] == 1


def test_the_stripe_ledgers_requests_are_shown_as_shares_of_the_runs() -> None:
    row = FlowCase(STRIPE_LEDGER_LABEL, 1000, 0, "home", requests=1600, wall=20.0)
    row.stripe_cost = LedgerCost(
        invoices_listed=250,
        line_items_synced=1000,
        lines_compared=1000,
        lines_matched=1000,
        lines_off_midnight=500,
        listing_requests=3,
        lines_requests=0,
        invoice_gets=0,
        usage_totals=500,
        daily_requests=1000,
        sync_failed=False,
        discrepancies={"internal": 300, "stripe": 0},
        expected={"internal": 300, "stripe": 0},
    )
    assert (row.stripe_cost.added, row.stripe_cost.per_line) == (503, 0.5)
    assert row.stripe_cost.per_invoice == 0.012
    table = "\n".join(cost_table([row, FlowCase("flow, default grouping", 1000, 0, "home")]))
    assert "| 3 (0.2%) | 0 (0.0%) | 500 (31.2%) | 503 (31.4%) | 1,000 (500) | 0.500 |" in table
    assert "| 300 (300) | 0 (0) |" in table
    assert table.count("| flow, ") == 1  # only the rows that compared the stripe ledger


def test_discovery_finds_the_ledgers_pairs_and_tracks_none_anew(
    flow_env: StripeSimulator, database_url: str
) -> None:
    seeded = build(40)
    write_ledger(seeded, database_url)
    flow_env.data = seeded.data
    found = discover(RunConfig.of(get_settings()))
    assert (found.pairs, found.added, found.prices) == (40, 0, 4)
    assert found.requests == 2  # one page of 10 subscriptions, the tiered price with its tiers


def test_discovery_alone_is_measured_in_its_own_process_finding_every_seeded_pair(
    tmp_path: Path,
) -> None:
    with StripeSimulator(api_key="sk_test_discovery_alone") as simulator:
        row = measure_discovery(
            40,
            simulator=simulator,
            api_key="sk_test_discovery_alone",
            rate=1000.0,
            workdir=tmp_path,
            log=tmp_path / "log",
        )
    assert (row.found_pairs, row.added, row.subscriptions, row.requests) == (40, 0, 10, 2)
    assert 0 < row.rss_before_mib <= row.peak_mib
    assert parse_args([]).discovery_sizes == "20000,100000"


def test_the_bench_counts_discovery_and_hourly_requests_where_they_arrive() -> None:
    stats = BenchStats()
    stats.record_arrival(1.0, "GET /v1/subscriptions?status=all&limit=100", "subscriptions_list")
    stats.record_arrival(1.5, "GET /v1/prices/price_bench_seats?expand[]=tiers", "price_get")
    hourly = "GET /v1/billing/meters/m/event_summaries?value_grouping_window=hour&customer=c"
    stats.record_arrival(2.0, hourly, "event_summaries")
    stats.record_arrival(
        2.1, "GET /v1/billing/meters/m/event_summaries?customer=c", "event_summaries"
    )
    discovery = stats.arrivals("discovery")
    assert (discovery.count, discovery.span) == (2, 0.5)
    assert stats.arrivals("hourly").count == 1
    assert stats.total == 4
    stats.reset()
    assert stats.arrivals("discovery").count == 0


def _every_object_then_a_page(
    app: SimulatorApp, *, limit: int, status: str = "all", **cursor: str
) -> dict[str, Any]:
    """The list as the simulator used to build it: every wire object first, then the page."""
    objects = [
        wire.subscription_object(s)
        for s in app.state.data.subscriptions()
        if _status_matches(s.status, status)
    ]
    page, has_more = paginate(
        objects,
        limit=limit,
        starting_after=cursor.get("starting_after"),
        ending_before=cursor.get("ending_before"),
        object_name="subscription",
    )
    return wire.list_object(page, has_more=has_more, url="/v1/subscriptions")


def test_the_subscription_list_builds_only_its_page_and_answers_the_same() -> None:
    simulator = SimulatorApp(SimulatorState(data=build(90).data))
    pages = [
        ("status=all&limit=10", {"limit": 10}),
        (
            "status=all&limit=10&starting_after=sub_bench0000012",
            {"limit": 10, "starting_after": "sub_bench0000012"},
        ),
        (
            "status=all&limit=5&ending_before=sub_bench0000003",
            {"limit": 5, "ending_before": "sub_bench0000003"},
        ),
        ("status=active&limit=100", {"limit": 100, "status": "active"}),
    ]
    for query, reference in pages:
        assert simulator._subscriptions_list(query) == _every_object_then_a_page(
            simulator, **reference
        )
    with pytest.raises(ApiError):
        simulator._subscriptions_list("status=all&starting_after=sub_nope")


def test_a_measured_child_reports_its_own_peak_rss_not_the_bench_processs() -> None:
    ballast = bytearray(400 * 2**20)  # the bench process, grown by seeding a large run
    ballast[::4096] = b"\x01" * len(ballast[::4096])
    child = subprocess.run(
        [sys.executable, "-c", "from bench.proc import peak_rss_kib; print(peak_rss_kib())"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert int(child.stdout) < 300 * 1024  # its imports, not the 400 MiB it was forked with
    del ballast


def test_a_measured_run_gets_none_of_the_shells_settings_but_those_it_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("METER_RECON_TASK_RUNNER", "PREFECT_API_URL", "STRIPE_API_KEY"):
        monkeypatch.setenv(name, "from the shell")
    monkeypatch.setenv("LANG", "C.UTF-8")
    env = child_environ({"STRIPE_API_KEY": "sk_test_bench"})
    assert env["STRIPE_API_KEY"] == "sk_test_bench"
    assert "METER_RECON_TASK_RUNNER" not in env and "PREFECT_API_URL" not in env
    assert env["LANG"] == "C.UTF-8"


class ReadingClock:
    """Each busy reading takes half a second, as `cpu_busy` does."""

    def __init__(self, readings: list[float]) -> None:
        self.now = 0.0
        self.readings = iter(readings)

    def busy(self) -> float:
        self.now += 0.5
        return next(self.readings)


def test_a_run_starts_once_the_machine_has_gone_quiet() -> None:
    clock = ReadingClock([0.9, 0.6, 0.1, 0.9])
    waited = settle(busy=clock.busy, clock=lambda: clock.now)
    assert waited == 1.5  # three readings: the third below a quarter of the cores


def test_a_machine_busy_with_other_work_is_measured_as_it_is_after_the_timeout() -> None:
    clock = ReadingClock([1.0] * 100)
    assert settle(busy=clock.busy, clock=lambda: clock.now, timeout=5.0) == 5.0


def test_the_machines_busy_share_is_a_share_of_all_its_cores() -> None:
    assert 0.0 <= cpu_busy(0.05) <= 1.0
