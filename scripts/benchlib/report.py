"""What a run reports: the rows (the median of each workload and tool over
the runs, as a fraction of its ceilings and relative to s3fsmpu, a read
phase's time relative to its cold read), the table,
request counts, log findings, notes and profiles printed on stdout, and the
same in bench-results/bench-<time>.json; scan_log() copies each mount's log
beside it and picks out its errors and warnings.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import MIB, RESULTS
from .measure import Sample
from .profiling import summarize_profile
from .workloads import READ_PHASES, TREE_FILES, WORKLOADS, rows_of

if TYPE_CHECKING:
    from .run import Bench

ORDER = [row for w in WORKLOADS for row in rows_of(w)]
UNITS = {row: "s" for w in ("server-rsync", "rsync", "ls", "reread", "bigdir") for row in rows_of(w)}  # else MB/s
# each tool workload against (its server ceiling, its FUSE ceiling)
CEILING = {"cp": (("server-put", "boto3"), ("fuse-write", "fuse_null")),
           "cat": (("server-get", "boto3"), ("fuse-read", "fuse_null")),
           "rsync-1": (("server-rsync", "boto3"), None)}
# a read phase against the cold read of its workload (reread-warm -> reread-cold)
COLD = {f"{w}-{p}": f"{w}-{READ_PHASES[0]}" for w in ("reread", "random") for p in READ_PHASES[1:]}
NOTE_KEYS = ("x_cold", "mb_per_s", "ms_per_read", "cpu_s", "peak_rss_mib", "files_per_s", "files_transferred",
             "requests", "gets", "read_amplification", "data_cache_mib", "read_ahead_kb", "unmount_s", "etag_ok",
             "entries", "note")


def speedup(v: float, ref: float, unit: str) -> float:
    """How many times faster `v` is than `ref`: a rate's ratio, or a time's inverse one."""
    return v / ref if unit == "MB/s" else ref / v


def fmt_value(v: float, unit: str) -> str:
    """A result with three digits or so: 348.0 MB/s, 1.30 s, 0.042 s (a page-cache reread)."""
    digits = 1 if abs(v) >= 10 else 2 if abs(v) >= 1 else 3
    return f"{v:.{digits}f} {unit}"


def summary(samples: dict[tuple[str, str], list[Sample]], tools: list[str]) -> list[dict[str, Any]]:
    rows = []

    def med(key: tuple[str, str]) -> tuple[float | None, Sample | None, list[Sample]]:
        ss = samples.get(key, [])
        vals = [s.value for s in ss if s.value is not None and s.error is None]
        if not vals:
            return None, (ss[-1] if ss else None), ss
        m = statistics.median(vals)
        best = min((s for s in ss if s.value is not None and s.error is None), key=lambda s: abs(s.value - m))
        return m, best, ss

    for w in ORDER:
        for tool in ["boto3", "fuse_null", *tools]:
            key = (w, tool)
            if key not in samples:
                continue
            v, s, ss = med(key)
            unit = UNITS.get(w, "MB/s")
            row: dict[str, Any] = {"workload": w, "tool": tool, "value": None if v is None else round(v, 3),
                                   "unit": unit, "runs": len(ss),
                                   "errors": [x.error for x in ss if x.error]}
            if s is not None:
                row.update({k: v2 for k, v2 in s.extra.items()})
            if v is not None and w in CEILING:
                srv, fus = (med(c)[0] if c else None for c in CEILING[w])
                row["x_server"] = round(speedup(v, srv, unit), 3) if srv else None
                row["x_fuse"] = round(speedup(v, fus, unit), 3) if fus else None
            if v is not None and tool not in ("boto3", "fuse_null"):
                ref = med((w, "s3fsmpu"))[0]
                if ref:
                    row["x_s3fsmpu"] = round(speedup(v, ref, unit), 3)
            if v and w in COLD:
                cold = med((COLD[w], tool))[0]
                if cold:
                    row["x_cold"] = round(speedup(cold, v, unit), 3)  # its time over the cold read's
            rows.append(row)
    return rows


def report(b: Bench) -> None:
    """Print the table and the rest; write the JSON."""
    rows = summary(b.samples, b.tools)
    print()
    print(f"s3fsmpu benchmark {b.stamp}: {b.server_name}; size {b.size / MIB:.0f} MiB, "
          f"part {b.part / MIB:g} MiB, concurrency {b.conc}, max-memory {b.args.max_memory / MIB:.0f} MiB, "
          f"s3fsmpu --integrity {b.args.integrity}, "
          f"runs {b.args.runs} (median)")
    print("x server / x fuse: fraction of the ceiling; x s3fsmpu: speed relative to s3fsmpu (>1 = faster);\n"
          "x_cold: a read phase's time relative to its cold read (warm: same mount; disk: remount, data cache)\n")
    hdr = f"{'workload':<11} {'tool':<9} {'result':>14} {'x server':>8} {'x fuse':>7} {'x s3fsmpu':>9}  notes"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        res = "-" if r["value"] is None else fmt_value(r["value"], r["unit"])

        def f(k: str) -> str:
            return "" if r.get(k) is None else f"{r[k]:.2f}"

        notes = [f"{k}={r[k]}" for k in NOTE_KEYS if k in r]
        if r["errors"]:
            notes.append("ERROR: " + r["errors"][0])
        print(f"{r['workload']:<11} {r['tool']:<9} {res:>14} {f('x_server'):>8} {f('x_fuse'):>7} {f('x_s3fsmpu'):>9}  {' '.join(notes)}")
    req_rows = [r for r in rows if r.get("req_by_op")]
    if req_rows:
        print("\nS3 requests per workload (radosgw access log):")
        for r in req_rows:
            per = ""
            if r["workload"].startswith("rsync"):
                per = f" = {r['requests'] / TREE_FILES:.1f}/file"
            ops = ", ".join(f"{k} {v}" for k, v in r["req_by_op"].items())
            print(f"  {r['workload']:<11} {r['tool']:<8} {r['requests']:>6}{per}: {ops}")
    for tool, lines in b.log_findings.items():
        print(f"\n{tool} log findings:")
        for ln in lines:
            print(f"  {ln}")
    for n in b.notes:
        print(f"note: {n}")
    profiles = {}
    for workload, path in b.profiles:
        summ = summarize_profile(path)
        profiles[workload] = {"path": str(path), "summary": summ}
        print(f"\npy-spy profile of the s3fsmpu mount during {workload} ({path}):")
        for ln in summ:
            print(f"  {ln}")
    with open("/proc/loadavg") as fl:
        load = fl.read().split()[:3]
    doc = {
        "timestamp": b.stamp,
        "server": b.server_name, "endpoint": b.endpoint,
        "args": {k: v for k, v in vars(b.args).items()},
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                    "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30), 1),
                    "loadavg_at_end": load},
        "versions": b.versions, "expected_etag": b.expected_etag,
        "rows": rows,
        "samples": [{"workload": w, "tool": t, "value": s.value, "error": s.error, **s.extra}
                    for (w, t), ss in b.samples.items() for s in ss],
        "log_findings": b.log_findings, "notes": b.notes,
        "profiles": profiles,
    }
    out = RESULTS / f"bench-{b.stamp}.json"
    out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(f"\nJSON: {out}")


def scan_log(tool: str, path: Path | None, stamp: str) -> list[str] | None:
    """Copy `tool`'s log to bench-results/; return its findings (None if it wrote no log)."""
    if path is None or not path.exists():
        return None
    dest = RESULTS / f"bench-{stamp}-{tool}.log"
    shutil.copyfile(path, dest)
    pat = re.compile(r"\b(ERROR|WARNING|CRITICAL|Traceback|ERR|error)\b")
    seen: dict[str, int] = {}
    first: dict[str, str] = {}  # a group's first line, as the log says it
    for line in path.read_text(errors="replace").splitlines():
        if pat.search(line):
            text = line[line.find(" ", 20) + 1:][:160] if len(line) > 20 else line
            # lines that differ only in numbers (not in names such as s3fsmpu or crc64nvme) are one group
            key = re.sub(r"\b\d+(?:\.\d+)?\b", "N", text)
            seen[key] = seen.get(key, 0) + 1
            first.setdefault(key, text)
    findings = [f"{n} x {first[k]}" for k, n in sorted(seen.items(), key=lambda kv: -kv[1])[:8]]
    totals: dict[str, int] = {}
    for m in re.finditer(r"unmounted: (.*)", path.read_text(errors="replace")):
        for k, v in re.findall(r"(\w+)=(\d+)", m.group(1)):
            totals[k] = totals.get(k, 0) + int(v)
    if totals:
        findings.insert(0, "summed over its mounts: " + " ".join(f"{k}={v}" for k, v in totals.items()))
    findings.insert(0, f"log: {dest}")
    return findings
