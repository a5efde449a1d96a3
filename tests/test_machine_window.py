"""Stripe's rate limit shared by the processes of one machine through one window in a file.

Every process that maps the window's file keeps the starts of the last `budget` requests (98 %
of the limit) in it; together they never start more than the budget in any `1 + margin`
seconds, and a process alone may use the whole of it. Starts are spread over the window
rather than sent at once.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from integrations.stripe.machine_window import (
    SPREAD,
    MachineWindowRateLimiter,
    machine_window_limiter,
    window_directory,
)
from integrations.stripe.rate_limit import DEFAULT_MARGIN_SECONDS
from models.errors import UserError
from simulator import max_in_window


class FakeClock:
    """A clock that only moves when someone sleeps."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def fake_window(path: Path, rate: float, clock: FakeClock) -> MachineWindowRateLimiter:
    return MachineWindowRateLimiter(path, rate, clock=clock, sleep=clock.sleep)


def starts(limiter: MachineWindowRateLimiter, clock: FakeClock, count: int) -> list[float]:
    times = []
    for _ in range(count):
        limiter.acquire()
        times.append(clock.now)
    return times


@pytest.mark.parametrize(("rate", "budget"), [(50.0, 49), (100.0, 98), (20.0, 19), (40.0, 39)])
def test_the_budget_is_98_percent_of_the_limit_in_whole_requests(
    tmp_path: Path, rate: float, budget: int
) -> None:
    limiter = fake_window(tmp_path / "window", rate, FakeClock())
    assert limiter.capacity == budget
    assert limiter.window == pytest.approx(1.0 + DEFAULT_MARGIN_SECONDS)


def test_no_window_of_the_margin_and_a_second_holds_more_than_the_budget(tmp_path: Path) -> None:
    clock = FakeClock()
    limiter = fake_window(tmp_path / "window", 50.0, clock)
    times = starts(limiter, clock, 200)
    assert max_in_window(times, limiter.window - 1e-9) == 49
    # Four windows' worth: the limiter kept the budget's pace, not less.
    assert times[-1] - times[0] < 4.2 * limiter.window


def test_starts_are_spread_over_the_window_not_sent_at_once(tmp_path: Path) -> None:
    clock = FakeClock()
    limiter = fake_window(tmp_path / "window", 50.0, clock)
    times = starts(limiter, clock, 49)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) == pytest.approx(limiter.window * SPREAD / 49)
    assert times[-1] - times[0] == pytest.approx(48 * limiter.window * SPREAD / 49)


def test_two_handles_on_one_file_share_one_budget(tmp_path: Path) -> None:
    clock = FakeClock()
    first = fake_window(tmp_path / "window", 20.0, clock)
    second = fake_window(tmp_path / "window", 20.0, clock)
    times = [*starts(first, clock, 10), *starts(second, clock, 10), *starts(first, clock, 10)]
    assert max_in_window(times, first.window - 1e-9) == 19


def test_starts_left_by_an_earlier_boot_of_the_machine_count_as_free(tmp_path: Path) -> None:
    path = tmp_path / "window"
    before_reboot = FakeClock(now=50_000.0)
    starts(fake_window(path, 20.0, before_reboot), before_reboot, 19)
    after_reboot = FakeClock(now=10.0)  # the machine's clock starts again at boot
    limiter = fake_window(path, 20.0, after_reboot)
    assert starts(limiter, after_reboot, 1) == [10.0]


def test_a_file_of_another_layout_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / "window"
    path.write_bytes(b"\xff" * 13)
    clock = FakeClock()
    limiter = fake_window(path, 20.0, clock)
    assert starts(limiter, clock, 1) == [1000.0]
    assert path.stat().st_size == 16 + 19 * 8


def test_the_window_files_directory_is_the_users_own_and_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    directory = window_directory()
    assert directory == tmp_path / f"meter-recon-{os.getuid()}"
    assert directory.stat().st_mode & 0o777 == 0o700
    directory.chmod(0o755)
    with pytest.raises(UserError, match="not a private directory of this user") as refused:
        window_directory()
    assert "TMPDIR" in str(refused.value)  # what to do about it, in the one sentence


def test_a_process_has_one_handle_per_window_and_a_file_per_limit(tmp_path: Path) -> None:
    limiter = machine_window_limiter(50.0, directory=tmp_path)
    assert machine_window_limiter(50.0, directory=tmp_path) is limiter
    other = machine_window_limiter(100.0, directory=tmp_path)
    assert other.path != limiter.path
    assert oct(limiter.path.stat().st_mode & 0o777) == oct(0o600)


# -- real processes ----------------------------------------------------------------------------


def _start_in_a_process(path: str, rate: float, count: int, begin: float, queue: object) -> None:
    limiter = MachineWindowRateLimiter(Path(path), rate)
    while time.monotonic() < begin:  # every process starts asking at the same moment
        time.sleep(0.001)
    times = []
    for _ in range(count):
        limiter.acquire()
        times.append(time.monotonic())  # one clock for the machine: comparable across processes
    queue.put(times)  # type: ignore[attr-defined]


def run_processes(path: Path, rate: float, counts: list[int]) -> list[list[float]]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    begin = time.monotonic() + 3.0  # after every process has imported and opened the file
    processes = [
        context.Process(target=_start_in_a_process, args=(str(path), rate, n, begin, queue))
        for n in counts
    ]
    for process in processes:
        process.start()
    results = [queue.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=10)
        assert process.exitcode == 0
    return results


def test_processes_together_never_start_more_than_the_budget_in_a_window(tmp_path: Path) -> None:
    rate = 40.0  # budget 39 in any 1.02 s
    first, second = run_processes(tmp_path / "window", rate, [60, 60])
    both = sorted([*first, *second])
    # Stamped just after each start: a window a little short of the limiter's leaves room
    # for a stamp taken late on a busy machine.
    assert max_in_window(both, 0.9) <= 39
    # 120 starts at 39 in any 1.02 s: the third window's budget is reached in about 2 s.
    assert both[-1] - both[0] < 3.5


def test_a_process_with_nothing_left_to_send_leaves_the_whole_budget_to_the_other(
    tmp_path: Path,
) -> None:
    rate = 40.0
    short, long = run_processes(tmp_path / "window", rate, [10, 100])
    after_short = [t for t in long if t > max(short) + 1.1]
    # With the other process done, this one keeps the budget's pace alone, not half of it.
    assert max_in_window(after_short, 1.02) >= 36
