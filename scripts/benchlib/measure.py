"""How a measurement is taken: a Sample (the value, an error, extras), timed()
for a command under a stopwatch, a process's CPU seconds (utime + stime ticks)
and peak RSS (VmHWM) from /proc, dropping the page cache, warming a file into
it, and settle(): waiting until the machine's CPUs are quiet before measuring.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common import MIB, log


@dataclass
class Sample:
    value: float | None = None  # MB/s or seconds
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def timed(cmd: list[str], timeout: float, stdout: Any = subprocess.DEVNULL) -> tuple[float, str]:
    """Run cmd; return (seconds, stdout); raise with stderr's last lines on failure or timeout."""
    t0 = time.monotonic()
    try:
        r = subprocess.run(cmd, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{cmd[0]} timed out after {timeout:.0f} s") from None
    secs = time.monotonic() - t0
    if r.returncode != 0:
        lines = [ln for ln in (r.stderr or "").strip().splitlines() if ln.strip()]
        tail = " | ".join(lines[-3:])[:400]
        raise RuntimeError(f"{cmd[0]} exit {r.returncode} after {secs:.1f} s: {tail}")
    return secs, r.stdout if isinstance(r.stdout, str) else ""


def proc_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def proc_cpu(pid: int) -> float | None:
    """utime + stime in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def proc_hwm_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def drop_caches() -> None:
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError as exc:
        log(f"cannot drop page caches: {exc}")


def _cpu_busy_idle() -> tuple[int, int]:
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return sum(ticks) - idle, idle


def settle(max_wait: float = 30.0, busy_below: float = 0.15) -> None:
    """Wait until the machine is quiet: the last workload's leftovers (radosgw
    deleting and compacting, writeback) must not land on the next one."""
    start = time.monotonic()
    while time.monotonic() - start < max_wait:
        b0, i0 = _cpu_busy_idle()
        time.sleep(1.0)
        b1, i1 = _cpu_busy_idle()
        if (b1 - b0) <= busy_below * max(1, (b1 - b0) + (i1 - i0)):
            return
    log(f"machine still busy after {max_wait:.0f} s; measuring anyway")


def warm(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(8 * MIB):
            pass
