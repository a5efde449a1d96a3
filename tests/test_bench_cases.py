"""The bench's cases: one registered function each, picked by name; each row names its setup;
the seeded Stripe bills exactly the seeded pairs, and the bench counts what discovery and the
diagnosis ask."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.dataset import build, pair_list, write_ledger
from bench.discovery import measure as measure_discovery
from bench.run import CASES, grouping_label, parse_args, parse_databases, runner_label
from bench.stats import BenchStats
from integrations.settings import get_settings
from simulator import StripeSimulator, wire
from simulator.app import ApiError, SimulatorApp, _status_matches, paginate
from simulator.state import SimulatorState
from tasks.discover import discover
from tasks.run_config import RunConfig


def test_every_case_is_registered_in_the_order_it_runs() -> None:
    assert list(CASES) == [
        "startup",
        "one-task-per-pair",
        "default-grouping",
        "dask",
        "server-running",
        "large-runs",
        "discovery-memory",
        "baseline",
        "micro",
        "ledger-sync",
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


def test_a_flow_reports_its_own_peak_rss_not_the_bench_processs() -> None:
    ballast = bytearray(400 * 2**20)  # the bench process, grown by seeding a large run
    ballast[::4096] = b"\x01" * len(ballast[::4096])
    child = subprocess.run(
        [sys.executable, "-c", "from bench.flowrun import peak_rss_kib; print(peak_rss_kib())"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert int(child.stdout) < 300 * 1024  # its imports, not the 400 MiB it was forked with
    del ballast
