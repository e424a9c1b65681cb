"""The command line: the help text (DOC, also the benchmark's summary), the
options, their checks, and main(): root and signals, one Bench run, and its
cleanup whatever happens.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from typing import Any

from .common import MIB, log
from .run import Bench
from .workloads import GROUPS, WORKLOADS

DOC = """Benchmark s3fsmpu against its ceilings and its peers, in one run, as root.

    scripts/bench                                  # moto on 127.0.0.1, 1 GiB
    scripts/bench --size 256MiB --skip-peers       # quicker
    scripts/bench --rgw --peers                    # radosgw via scripts/start-rgw, s3fs + rclone too
    scripts/bench --endpoint http://127.0.0.1:7480 # a server you started (credentials from env)
    scripts/bench --skip-peers --only reads,dirs --bigdir-keys 100000

Measures
  server ceiling  boto3 multipart upload of the SIZE file (same part size and
                  concurrency as the mount, same client settings as s3fsmpu) and
                  a ranged parallel GET of it, each with the CPU seconds boto3
                  spent (the bench process's: the same work without FUSE and
                  spool, a yardstick for the mount's CPU on a noisy machine)
                  and the rsync floor: boto3 doing, one file after the other as
                  rsync does, the requests any mount needs for the rsync tree
                  (a marker PUT per directory; per file PUT of the temp name
                  (multipart above the part size), CopyObject to the final
                  name with metadata, DELETE of the temp name)
  FUSE ceiling    dd bs=1M into / out of scripts/fuse_null.py (pyfuse3, no I/O)
  per tool        cp SIZE file in (until cp returns; object verified by size and
                  multipart ETag), cat it out (page cache dropped, fresh mount),
                  rsync -a of 1,000 x 4 KiB in 20 dirs + 5 x 40 MiB into an empty
                  prefix and again (fresh mount), ls -l of a 5,000-entry directory.
                  Mount-process peak RSS (VmHWM) and CPU seconds (utime+stime).
  reads (per tool) reading again, with the tool's data cache on (s3fsmpu
                  --cache-size 2 x SIZE, s3fs -o use_cache, rclone --vfs-cache-mode
                  full), cat's file, three phases: cold (fresh mount, caches
                  dropped, data cache emptied), warm (again in that mount), disk
                  (remount on the same cache dir after drop_caches); per phase
                  x_cold (its time over the cold one's), CPU seconds, peak RSS,
                  and requests and GETs (radosgw log):
                  reread  cat of the SIZE file (seconds)
                  random  200 os.pread of 256 KiB at seeded 4 KiB-aligned offsets
                          (MB/s, ms per read)
  dirs (per tool) bigdir: ls -f, ls -l and find of a directory of --bigdir-keys
                  1-byte objects written by boto3, each on a fresh mount with
                  caches dropped: seconds, requests, peak RSS.
Tools: s3fsmpu always; s3fs and rclone where installed (--peers installs them),
and s3fs-md5 (s3fs -o enable_content_md5: Content-MD5 on every part, as s3fsmpu
sends; cp only).
Output: a table on stdout, JSON in bench-results/bench-<timestamp>.json, the
mount logs next to it. MB = 10^6 bytes.
"""


def parse_size(text: str) -> int:
    units = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20,
             "g": 1 << 30, "gib": 1 << 30, "kb": 1000, "mb": 10**6, "gb": 10**9}
    t = text.strip().lower()
    num = t.rstrip("abcdefghijklmnopqrstuvwxyz")
    try:
        return int(float(num) * units[t[len(num):]])
    except (KeyError, ValueError):
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None


def _on_signal(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    p = argparse.ArgumentParser(prog="scripts/bench", description=DOC.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=DOC.split("\n\n", 1)[1])
    p.add_argument("--size", type=parse_size, default=1 << 30, help="big file size (default 1GiB)")
    p.add_argument("--part-size", type=parse_size, default=8 * MIB, help="part size for everyone (default 8MiB)")
    p.add_argument("--concurrency", type=int, default=8, help="parts in flight (default 8)")
    p.add_argument("--max-memory", type=parse_size, default=256 * MIB, help="s3fsmpu --max-memory (default 256MiB)")
    p.add_argument("--integrity", choices=["md5", "crc64nvme", "crc32c"], default="md5",
                   help="s3fsmpu --integrity (default md5: Content-MD5 as s3fs-md5 and the boto3 ceiling send)")
    srv = p.add_mutually_exclusive_group()
    srv.add_argument("--endpoint", metavar="URL", help="use this S3 server; credentials from AWS_* env vars")
    srv.add_argument("--rgw", action="store_true", help="start (and afterwards purge) radosgw with scripts/start-rgw")
    p.add_argument("--keep-rgw-data", action="store_true", help="with --rgw: only stop radosgw, keep its state dir")
    p.add_argument("--peers", action="store_true", help="apt-get install s3fs and rclone if missing")
    p.add_argument("--skip-peers", action="store_true", help="only s3fsmpu")
    p.add_argument("--tools", help="comma list of tools to run (s3fsmpu,s3fs,rclone)")
    p.add_argument("--only", metavar="WORKLOADS",
                   help=f"comma list of {','.join(WORKLOADS)} or groups {','.join(GROUPS)}")
    p.add_argument("--bigdir-keys", type=int, default=20000, metavar="N",
                   help="objects in bigdir's directory (default 20000)")
    p.add_argument("--runs", type=int, default=1, help="repeat and report the median (default 1)")
    p.add_argument("--timeout", type=float, default=900, help="per command, seconds (default 900)")
    p.add_argument("--profile", nargs="?", const="cp", metavar="WORKLOADS",
                   help="py-spy record the s3fsmpu mount during these workloads (cp,cat,rsync-1,rsync-2,ls,"
                        "bigdir-ls-f,bigdir-ls-l,bigdir-find; reread-cold and random-cold for the mount of the "
                        "cold and warm phases, reread-disk and random-disk for the remount; default cp); "
                        "the sampling costs some throughput")
    p.add_argument("--py-spy", metavar="PATH", help="py-spy binary (default: PATH, then /tmp/pyspy-venv/bin/py-spy)")
    p.add_argument("--server-log", metavar="FILE",
                   help="radosgw log with beast access lines: count S3 requests per workload "
                        "(automatic with --rgw)")
    p.add_argument("--debug", action="store_true", help="tracebacks for failed workloads")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("bench: run as root (FUSE mounts, drop_caches)", file=sys.stderr)
        return 1
    if args.max_memory < args.part_size:
        p.error("--max-memory must be at least --part-size")
    if args.bigdir_keys < 1:
        p.error("--bigdir-keys must be at least 1")
    # also SIGINT: a shell starts background jobs with SIGINT ignored, and Python keeps that
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    bench = Bench(args)
    try:
        return bench.go()
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    except Exception as exc:
        traceback.print_exc()
        log(f"failed: {exc}; cleaning up")
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        bench.cleanup()

