"""One benchmark run, start to finish: Bench holds its state (the server and
client, the buckets, the source file, the mounts, the samples) and its order
(go(): server, tools, data, then each run's ceilings and tools, then the
report), records each workload's Sample (or its rows', attempt_rows()), puts
the measuring around a fresh mount (with_mount(): caches dropped, quiet
machine, CPU seconds, peak RSS, unmount time, requests, py-spy) and around
one phase of a workload within a mount (phase()), and cleanup() leaves
nothing mounted or running and no bucket behind.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable

from . import report, workloads, workloads_reads
from .common import RESULTS, log, run
from .measure import Sample, drop_caches, settle
from .profiling import start_profile, stop_profile
from .servers import count_requests, create_bucket, delete_buckets, empty_bucket, log_offset, make_client, start_server
from .systems import S3FS_MD5, Mount, collect_versions, find_tools, is_mounted, mounted_paths, start_mount, wait_mounted


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.size: int = args.size
        self.part: int = args.part_size
        self.conc: int = args.concurrency
        self.only = workloads.select_workloads(args.only)
        self.samples: dict[tuple[str, str], list[Sample]] = {}
        self.mounts: list[Mount] = []
        self.cleanups: list[Callable[[], None]] = []
        self.work = Path(tempfile.mkdtemp(prefix="s3fsmpu-bench-"))
        self.src = self.work / "src.bin"
        self.tree = self.work / "tree"
        self.endpoint = ""
        self.server_name = ""
        self.client: Any = None
        self.buckets: dict[str, str] = {}
        self.notes: list[str] = []
        self.log_findings: dict[str, list[str]] = {}
        self.expected_etag = ""
        self.part_ranges: list[tuple[int, int]] = []
        self.tools = ["s3fsmpu"]
        self.versions: dict[str, str] = {}
        self.profile = set((args.profile or "").split(",")) - {""}
        self.profiles: list[tuple[str, Path]] = []
        self.server_log: str | None = args.server_log

    # -- setup ----------------------------------------------------------------
    def start_server(self) -> None:
        server = start_server(self.args, self.cleanups)
        self.server_name, self.endpoint, self.server_log = server.name, server.endpoint, server.log
        self.client = make_client(self.endpoint, self.conc)

    def create_bucket(self, name: str) -> str:
        self.buckets[name] = create_bucket(self.client, name, self.stamp)
        return self.buckets[name]

    # -- recording ---------------------------------------------------------------
    def record(self, workload: str, tool: str, sample: Sample) -> None:
        self.samples.setdefault((workload, tool), []).append(sample)
        v = "-" if sample.value is None else f"{sample.value:.2f}"
        log(f"  {workload:<11} {tool:<8} {v} {sample.error or ''} {json.dumps(sample.extra) if sample.extra else ''}")

    def failed(self, exc: Exception) -> Sample:
        """A workload that raised: its Sample says why (with --debug, the traceback too)."""
        if self.args.debug:
            traceback.print_exc()
        return Sample(error=f"{type(exc).__name__}: {exc}"[:500])

    def attempt(self, workload: str, tool: str, fn: Callable[[], Sample], row: str = "") -> Sample | None:
        """fn's Sample (or its failure), recorded as `row` (default: the workload) if the
        workload was chosen."""
        if workload not in self.only:
            return None
        try:
            s = fn()
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            s = self.failed(exc)
        self.record(row or workload, tool, s)
        return s

    def attempt_rows(self, workload: str, rows: list[str], tool: str,
                     fn: Callable[[Callable[[str, Sample], None]], None]) -> None:
        """A workload measured as several rows (rsync's two runs, a read's phases): `fn`
        records each row through the callback it gets as soon as it has it; if `fn`
        fails, the rows it has not recorded get the error, so every run has every row."""
        if workload not in self.only:
            return
        done: set[str] = set()

        def record(row: str, s: Sample) -> None:
            self.record(row, tool, s)
            done.add(row)

        try:
            fn(record)
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            s = self.failed(exc)
            for row in rows:
                if row not in done:
                    self.record(row, tool, Sample(error=s.error))

    # -- mounts ------------------------------------------------------------------
    def mount(self, tool: str, cache_size: int = 0) -> Mount:
        mnt = self.work / f"mnt-{tool}"
        mnt.mkdir(exist_ok=True)
        if is_mounted(mnt):
            raise RuntimeError(f"{mnt} still mounted")
        m = start_mount(tool, self.buckets[tool], mnt, self.work, self.endpoint, self.args, cache_size)
        self.mounts.append(m)
        try:
            wait_mounted(mnt, m.proc, 60)
        except Exception as exc:
            self.unmount(m)
            tail = ""
            if m.log_path and m.log_path.exists():
                lines = [ln for ln in m.log_path.read_text(errors="replace").splitlines() if ln.strip()]
                tail = " | ".join(lines[-2:])[:300]
            raise RuntimeError(f"{tool} mount failed: {exc}: {tail}") from None
        return m

    def unmount(self, m: Mount) -> float:
        try:
            return m.unmount(self.args.timeout)
        finally:
            if m in self.mounts:
                self.mounts.remove(m)

    def with_mount(self, tool: str, fn: Callable[[Mount], Sample], fresh_cache: bool = True,
                   workload: str = "", cache_size: int = 0) -> Sample:
        """fn on a fresh mount of `tool`, with the mount's cost and requests added to its Sample
        (where fn did not measure them itself, phase by phase: see phase())."""
        if fresh_cache:
            drop_caches()
        settle()
        req_off = log_offset(self.server_log)
        m = self.mount(tool, cache_size)
        cpu0 = m.cpu()
        prof = None
        if tool == "s3fsmpu" and workload in self.profile:
            prof = start_profile(m.pid, self.args.py_spy, RESULTS / f"bench-{self.stamp}-{workload}-pyspy.txt",
                                 workload)
        try:
            s = fn(m)
        except BaseException:
            if prof:
                stop_profile(prof, self.profiles)
            self.unmount(m)
            raise
        if prof:
            stop_profile(prof, self.profiles)
            s.extra["profiled"] = True
        cost = Sample()
        self.add_cost(cost, m, cpu0)
        s.extra["unmount_s"] = round(self.unmount(m), 2)
        self.add_requests(cost, req_off, tool, self.size if workload == "cat" else None)
        for k, v in cost.extra.items():
            s.extra.setdefault(k, v)
        return s

    def phase(self, m: Mount, fn: Callable[[], Sample], read_bytes: int | None = None) -> Sample:
        """fn, one phase of a workload inside the mount `m`, with its own CPU seconds and
        S3 requests and the mount's peak RSS so far: several phases share one mount."""
        req_off = log_offset(self.server_log)
        cpu0 = m.cpu()
        s = fn()
        self.add_cost(s, m, cpu0)
        self.add_requests(s, req_off, m.tool, read_bytes)
        return s

    @staticmethod
    def add_cost(s: Sample, m: Mount, cpu0: float | None) -> None:
        """The mount's CPU seconds since `cpu0` and its peak RSS, into `s`."""
        cpu1, hwm = m.cpu(), m.hwm()
        if cpu0 is not None and cpu1 is not None:
            s.extra["cpu_s"] = round(cpu1 - cpu0, 2)
        if hwm is not None:
            s.extra["peak_rss_mib"] = round(hwm)

    def add_requests(self, s: Sample, req_off: int | None, tool: str, read_bytes: int | None) -> None:
        """The requests to `tool`'s bucket since `req_off` in the server's log, if we have
        one, into `s`; with `read_bytes`, the bytes fetched per byte read too."""
        if req_off is None:
            return
        reqs = count_requests(self.server_log, req_off, self.buckets[tool])
        if reqs is None:
            return
        s.extra["requests"] = sum(v for k, v in reqs.items() if k != "GET bytes")
        s.extra["req_by_op"] = reqs
        if read_bytes:
            s.extra["gets"] = reqs.get("GET", 0)
            if reqs.get("GET bytes"):
                s.extra["read_amplification"] = round(reqs["GET bytes"] / read_bytes, 2)

    # -- main ---------------------------------------------------------------------------
    def go(self) -> int:
        RESULTS.mkdir(exist_ok=True)
        a = self.args
        self.start_server()
        self.tools = find_tools(a, self.notes)
        self.versions = collect_versions(self.tools)
        self.part_ranges, self.expected_etag = workloads.make_source(self.src, self.size, self.part)
        tool_workloads = set(self.only) & set(workloads.TOOL_WORKLOADS)
        if {"rsync", "server-rsync"} & set(self.only):
            workloads.make_tree(self.tree)
        if {"server-put", "server-get", "server-rsync"} & set(self.only):
            self.create_bucket("ceiling")
        if tool_workloads:
            for t in self.tools:
                self.create_bucket(t)
                if t != S3FS_MD5:
                    workloads.populate_dirs(self, self.buckets[t])
        for i in range(a.runs):
            log(f"run {i + 1}/{a.runs}")
            if "server-put" in self.only or "server-get" in self.only:
                settle()
                self.attempt("server-put", "boto3", lambda: workloads.server_put(self))
                if "server-get" in self.only:
                    workloads.ensure_big(self, self.buckets["ceiling"])
                    drop_caches()
                    settle()
                    self.attempt("server-get", "boto3", lambda: workloads.server_get(self))
                empty_bucket(self.client, self.buckets["ceiling"])
            if "server-rsync" in self.only:
                settle()
                self.attempt("server-rsync", "boto3", lambda: workloads.server_rsync(self))
                empty_bucket(self.client, self.buckets["ceiling"])
            workloads.fuse_ceiling(self)
            if tool_workloads:
                for t in self.tools:
                    log(f"{t}:")
                    workloads.run_tool(self, t)
                    workloads_reads.run_reads(self, t)
                    workloads.clear_tool(self, t)
        for m_tool, p in (("s3fsmpu", self.work / "cache-s3fsmpu" / "mount.log"),
                          ("s3fs", self.work / "s3fs.log"), ("rclone", self.work / "rclone.log")):
            findings = report.scan_log(m_tool, p, self.stamp) if m_tool in self.tools else None
            if findings is not None:
                self.log_findings[m_tool] = findings
        report.report(self)
        return 0

    def cleanup(self) -> None:
        for m in list(self.mounts):
            try:
                m.unmount(60)
            except BaseException as exc:
                log(f"unmount {m.mnt}: {exc}")
                m.force()
        self.mounts.clear()
        if self.client is not None and self.buckets:
            delete_buckets(self.client, self.buckets.values())
        for fn in reversed(self.cleanups):
            try:
                fn()
            except BaseException as exc:
                log(f"cleanup: {exc}")
        still = [p for p in mounted_paths() if p.startswith(str(self.work))]
        for p in still:
            run(["fusermount3", "-u", "-z", p], timeout=30, check=False)
        if [p for p in mounted_paths() if p.startswith(str(self.work))]:
            log(f"leaving {self.work} in place: something is still mounted under it")
        else:
            shutil.rmtree(self.work, ignore_errors=True)
