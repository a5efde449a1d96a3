"""Stripe's rate limit shared by every worker process of one machine: one sliding window in a
small file they all map.

The local Dask cluster's workers are processes on one machine. They keep the starts of the
last `budget` requests in one ring of timestamps (`time.monotonic()`, the machine's clock
since boot, the same in every process), under an exclusive file lock held for a read and a
write. A request may start once the oldest remembered start is `1 + margin` seconds old: the
per-process sliding window the thread runner uses, made machine-wide. Nothing is split, so a
process with no work left leaves the whole budget to the others (fixed shares lost the idle
worker's share at the end of every run), and no process asks Prefect or another process for
anything.

The budget is 98 % of the limit, as for the Prefect global concurrency limit: a request that
reaches Stripe later than the margin allows then still finds room. Within a process, threads
queue first come, first served and only the head of the queue touches the file.

The file lives in a directory of the user's own under the temporary directory, named after
the budget and the window, so every run of the machine at the same limit shares it (they
share the account's limit at Stripe too). Starts left by an earlier boot of the machine
(later than the clock now) count as free.
"""

from __future__ import annotations

import mmap
import os
import stat
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from integrations.stripe.prefect_limit import DEFAULT_MARGIN
from integrations.stripe.rate_limit import DEFAULT_MARGIN_SECONDS, SlidingWindowRateLimiter
from models.errors import UserError

try:  # POSIX only; `machine_window_supported()` says whether this machine has it
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

_HEADER = struct.Struct("<Qd")  # the ring's next slot, the last start
_SLOT = struct.Struct("<d")
# Starts are at least this part of the mean interval apart: a window's budget leaves over
# three quarters of it instead of at once (a burst that would then repeat every window), and
# a late start still leaves room to catch up within the window.
SPREAD = 0.75


def machine_window_supported() -> bool:
    """Whether processes here can share a window (POSIX file locks)."""
    return fcntl is not None


class WindowDirectoryRefused(UserError, PermissionError):
    """The window files' directory is not the user's own and private: another user could
    change the pace of this user's requests to Stripe."""


def window_directory() -> Path:
    """The user's own directory for window files: created private, refused if it is not."""
    directory = Path(tempfile.gettempdir()) / f"meter-recon-{os.getuid()}"
    directory.mkdir(mode=0o700, exist_ok=True)
    info = directory.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise WindowDirectoryRefused(
            f"{directory} is not a private directory of this user, and it holds the Dask "
            "workers' shared Stripe rate limit: remove it, or point TMPDIR elsewhere."
        )
    return directory


class MachineWindowRateLimiter(SlidingWindowRateLimiter):
    """At most 98 % of `rate` request starts in any window of `1 + margin` seconds, counted
    over every process of the machine that maps the same file."""

    def __init__(
        self,
        path: Path,
        rate: float,
        *,
        margin: float = DEFAULT_MARGIN_SECONDS,
        spread: float = SPREAD,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if fcntl is None:  # pragma: no cover - Windows
            raise OSError("sharing a rate limit between processes needs POSIX file locks")
        if not 0 <= spread < 1:
            raise ValueError(f"spread must be at least 0 and less than 1, got {spread!r}")
        # The budget: 98 % of the limit (below one request a second, one request spaced out).
        super().__init__(rate * (1 - DEFAULT_MARGIN), 1.0, margin=margin, clock=clock, sleep=sleep)
        self.path = path
        self.spacing = self.window * spread / self.capacity
        size = _HEADER.size + self.capacity * _SLOT.size
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            with self._locked():
                if os.fstat(self._fd).st_size != size:  # new, or left by another layout
                    os.ftruncate(self._fd, 0)
                    os.ftruncate(self._fd, size)  # zeros: every slot free
            self._ring = mmap.mmap(self._fd, size)
        except BaseException:
            os.close(self._fd)
            raise

    def _locked(self) -> _FileLock:
        return _FileLock(self._fd)

    def _try_start(self, now: float) -> float | None:
        with self._locked():
            ring = self._ring
            slot, last = _HEADER.unpack_from(ring, 0)
            offset = _HEADER.size + slot * _SLOT.size
            (oldest,) = _SLOT.unpack_from(ring, offset)
            # Starts later than now were left by an earlier boot of the machine: free.
            ready_at = max(
                oldest + self.window if oldest <= now else now,
                last + self.spacing if last <= now else now,
            )
            if now < ready_at:
                return ready_at - now
            _SLOT.pack_into(ring, offset, now)
            _HEADER.pack_into(ring, 0, (slot + 1) % self.capacity, now)
            return None

    def __repr__(self) -> str:
        return (
            f"MachineWindowRateLimiter(path={str(self.path)!r}, rate={self.rate!r}, "
            f"budget={self.capacity}, window={self.window!r})"
        )


class _FileLock:
    """The file's exclusive lock for one read and write of the ring."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def __enter__(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *_: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)


# Keyed by process too: a forked child shares its parent's open file, and so its lock, and
# must open the file again to be kept out while the parent holds it.
_shared: dict[tuple[int, Path], MachineWindowRateLimiter] = {}
_shared_lock = threading.Lock()


def machine_window_limiter(
    rate: float, *, margin: float = DEFAULT_MARGIN_SECONDS, directory: Path | None = None
) -> MachineWindowRateLimiter:
    """This process's handle on the machine's window for `rate` requests a second."""
    path = (directory or window_directory()) / f"stripe-{rate:g}-per-s-{margin * 1000:g}ms.window"
    with _shared_lock:
        key = (os.getpid(), path)
        limiter = _shared.get(key)
        if limiter is None:
            limiter = _shared[key] = MachineWindowRateLimiter(path, rate, margin=margin)
        return limiter
