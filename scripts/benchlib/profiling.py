"""--profile: py-spy recording the s3fsmpu mount process during chosen
workloads (raw collapsed stacks in bench-results/), and the summary of such
a recording printed with the report: samples by category of the innermost
frame, the top functions by self time, and s3fsmpu's functions inclusive.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

Profile = tuple[subprocess.Popen, Path, str]  # py-spy, its output file, the workload


def start_profile(pid: int, py_spy: str | None, out: Path, workload: str) -> Profile:
    pyspy = py_spy or shutil.which("py-spy") or "/tmp/pyspy-venv/bin/py-spy"
    prof = subprocess.Popen([pyspy, "record", "-p", str(pid), "-o", str(out), "--format", "raw",
                             "--rate", "100", "--nonblocking", "--threads"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    return prof, out, workload


def stop_profile(prof: Profile, profiles: list[tuple[str, Path]]) -> None:
    """Stop py-spy; its recording, if it wrote one, goes on `profiles`."""
    proc, out, workload = prof
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if out.exists():
        profiles.append((workload, out))


CATEGORIES = [  # first match on the leaf frame wins
    ("MD5/checksum hashing", r"digest|hashlib|_md5|crc|checksum"),
    ("socket send/recv", r"socket\.py|http/client\.py|ssl\.py|urllib3/util/wait|readinto|sendall"),
    ("trio scheduler/epoll/threads", r"trio/"),
    ("pyfuse3 request loop", r"pyfuse3"),
    ("botocore/urllib3 request building", r"botocore|urllib3|awscrt|dateutil|xml|email|s3transfer"),
    ("s3fsmpu own code", r"s3fsmpu/"),
]


def summarize_profile(path: Path) -> list[str]:
    """Where the samples go, from py-spy's raw (collapsed) output: by category of the
    innermost frame, by function (self), and inclusive per s3fsmpu function."""
    self_n: dict[str, int] = {}
    incl: dict[str, int] = {}
    cats: dict[str, int] = {}
    main_n = total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        cnt = int(n)
        frames = stack.split(";")
        total += cnt
        if frames and frames[0].startswith(("thread ", "process ")):
            if "MainThread" in frames[0]:
                main_n += cnt
            frames = frames[1:]
            if frames and frames[0].startswith(("thread ", "process ")):
                frames = frames[1:]
        names = [re.sub(r":\d+\)$", ")", fr) for fr in frames]
        if not names:
            continue
        leaf = names[-1]
        self_n[leaf] = self_n.get(leaf, 0) + cnt
        cat = next((c for c, pat in CATEGORIES if re.search(pat, leaf)), "other")
        cats[cat] = cats.get(cat, 0) + cnt
        for nm in set(names):
            if "s3fsmpu/" in nm and "cli.py" not in nm and "__main__" not in nm:
                incl[nm] = incl.get(nm, 0) + cnt
    if not total:
        return ["(no samples)"]
    pct = lambda v: f"{v * 100 / total:5.1f}%"  # noqa: E731
    out = [f"{total} non-idle samples at 100 Hz (~{total / 100:.1f} thread-seconds); "
           f"trio main thread {main_n * 100 / total:.0f}%, worker threads {100 - main_n * 100 / total:.0f}%",
           "by category of the innermost frame:"]
    out += [f"  {pct(v)}  {k}" for k, v in sorted(cats.items(), key=lambda kv: -kv[1])]
    out.append("self time, top functions:")
    out += [f"  {pct(v)}  {k[:110]}" for k, v in sorted(self_n.items(), key=lambda kv: -kv[1])[:12]]
    out.append("inclusive, s3fsmpu functions:")
    out += [f"  {pct(v)}  {k[:110]}" for k, v in sorted(incl.items(), key=lambda kv: -kv[1])[:12]]
    return out
