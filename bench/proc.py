"""What Linux's `/proc` tells about a process: memory figures and CPU time.

Peak RSS is `VmHWM`, which starts again at `exec`; not `ru_maxrss`, which Linux keeps across
`fork` and `exec`, so a child started by a bench process that had grown larger (seeding
100,000 pairs) would report the bench's peak as its own.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def status_kib(field: str, pid: int | str = "self") -> int:
    """A memory figure of `/proc/PID/status` (`VmHWM`: peak RSS, `VmRSS`: RSS now), in KiB;
    0 where there is none (the process is gone, or not Linux)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_rss_kib() -> int:
    """This process's own peak RSS (`ru_maxrss` only where `/proc` has none)."""
    return status_kib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS
