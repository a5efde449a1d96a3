"""The bench's cases: one registered function each, picked by name; each row names its setup."""

from __future__ import annotations

import pytest

from bench.run import CASES, grouping_label, parse_args, runner_label


def test_every_case_is_registered_in_the_order_it_runs() -> None:
    assert list(CASES) == [
        "startup",
        "one-task-per-pair",
        "default-grouping",
        "dask",
        "server-running",
        "large-runs",
        "baseline",
        "micro",
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
