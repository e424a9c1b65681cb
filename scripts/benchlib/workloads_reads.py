"""The read workloads that read the same bytes again, through one tool with
its data cache on (s3fsmpu --cache-size, s3fs -o use_cache, rclone
--vfs-cache-mode full), on the big file the `cat` workload reads:

    reread  cat of the whole file
    random  RANDOM_READS preads of 256 KiB at seeded offsets aligned to 4 KiB
            (preader.py, in a process of its own)

each in three phases, one row each (READ_PHASES): cold, a fresh mount with
the page cache dropped and the data cache emptied; warm, the same reads
again in the same mount (the kernel's page cache, if the mount keeps it
across opens); disk, after an unmount, drop_caches and a mount on the same
cache directory (the data cache on local disk). Both mounts have the same
cache size, so the cold read can fill the cache. Each phase has its own CPU
seconds and S3 requests (Bench.phase); the report gives the warm and disk
phases' time relative to the cold one (the goal for reread: each <= 0.25),
and after each phase the data cache's size on disk (did the cold read fill
it? A tool may keep only whole blocks, and reads it saw as random may not go
in).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import preader
from .common import MIB, VENV_BIN
from .measure import Sample, timed
from .systems import S3FS_MD5, Mount, data_cache_dir
from .workloads import ensure_big, rows_of, spot_check

if TYPE_CHECKING:
    from .run import Bench

RANDOM_READS, RANDOM_LENGTH, RANDOM_ALIGN, RANDOM_SEED = 200, 256 * 1024, 4096, 42


def dir_mib(path: Path) -> float:
    """The bytes of the files under `path`, in MiB (0 if it is not there)."""
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / MIB, 1)


def data_cache_size(size: int) -> int:
    """The read workloads' cache size: room for the file twice over (what the cache
    holds is not the question here), and at least s3fsmpu's minimum of one 8 MiB block."""
    return max(2 * size, 8 * MIB)


@dataclass
class Reader:
    """How a read workload reads the mounted big file in each phase."""

    read: Callable[[Path], Sample]  # the timed reading
    nbytes: int  # the bytes it reads (for the read amplification)
    check: Callable[[Path], str | None] = field(default=lambda path: None)  # after it, not measured


def reread(b: Bench) -> Reader:
    """cat of the whole file; its seconds (the rows are in s), and after each phase
    16 ranges of it against the source (spot_check)."""
    def cat(path: Path) -> Sample:
        secs, _ = timed(["cat", str(path)], b.args.timeout)
        return Sample(secs, None, {"mb_per_s": round(b.size / secs / 1e6, 1)})

    return Reader(cat, b.size, lambda path: spot_check(b, path))


def random_reads(b: Bench) -> Reader:
    """preader.py's reads through the mount; MB/s and ms per read, and their digest
    against the same reads of the source file."""
    params = [b.size, RANDOM_READS, RANDOM_LENGTH, RANDOM_ALIGN, RANDOM_SEED]
    offs = preader.offsets(*params)
    want = preader.read_at(str(b.src), offs, RANDOM_LENGTH)

    def read(path: Path) -> Sample:
        _, out = timed([str(VENV_BIN / "python"), str(Path(preader.__file__)), str(path), *map(str, params)],
                       b.args.timeout, stdout=subprocess.PIPE)
        got = json.loads(out)
        secs = got["seconds"]
        s = Sample(got["bytes"] / secs / 1e6, None,
                   {"seconds": round(secs, 3), "ms_per_read": round(secs * 1000 / len(offs), 2)})
        if (got["bytes"], got["sha256"]) != (want["bytes"], want["sha256"]):
            s.error = f"read {got['bytes']} bytes that differ from the source's {want['bytes']}"
        return s

    return Reader(read, RANDOM_READS * RANDOM_LENGTH)


def three_phases(b: Bench, tool: str, workload: str, make: Callable[[Bench], Reader]) -> None:
    """`workload`'s cold, warm and disk rows for `tool` (see the module's docstring)."""
    rows = rows_of(workload)
    cache = data_cache_size(b.size)

    def go(record: Callable[[str, Sample], None]) -> None:
        reader = make(b)
        ensure_big(b, b.buckets[tool])
        shutil.rmtree(data_cache_dir(tool, b.work), ignore_errors=True)

        def measured(m: Mount) -> Sample:
            path = m.mnt / "big.bin"
            s = b.phase(m, lambda: reader.read(path), reader.nbytes)
            s.error = s.error or reader.check(path)
            s.extra["data_cache_mib"] = dir_mib(data_cache_dir(tool, b.work))
            return s

        def cold_then_warm(m: Mount) -> Sample:
            record(rows[0], measured(m))
            return measured(m)

        record(rows[1], b.with_mount(tool, cold_then_warm, workload=rows[0], cache_size=cache))
        record(rows[2], b.with_mount(tool, measured, workload=rows[2], cache_size=cache))

    b.attempt_rows(workload, rows, tool, go)


def run_reads(b: Bench, tool: str) -> None:
    """reread and random through `tool` (not s3fs-md5: it differs from s3fs in uploads only)."""
    if tool == S3FS_MD5:
        return
    three_phases(b, tool, "reread", reread)
    three_phases(b, tool, "random", random_reads)
