"""The workloads and their data: the SIZE source file (random, with the
multipart ETag it must get), the rsync tree and the listed directories (ls,
bigdir); the ceilings (boto3 multipart PUT and ranged GET, the serial rsync
request floor, dd through fuse_null) and, per tool, cp in, cat out, rsync -a
twice, ls -l, and ls -f, ls -l and find of the big directory, each checked
against what it should have produced. Each returns a Sample; the run (run.py)
supplies the bucket, the mount and the measuring around it. The read
workloads that read the same bytes again (reread, random) are in
workloads_reads.py.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import hashlib
import os
import random
import re
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NamedTuple

from .common import MIB, log, use_project
from .measure import Sample, settle, timed, warm
from .servers import count_keys, empty_bucket
from .systems import S3FS_MD5, Mount, read_ahead_kb, start_fuse_null, wait_mounted

if TYPE_CHECKING:
    from .run import Bench

WORKLOADS = ["server-put", "server-get", "server-rsync", "fuse-write", "fuse-read", "cp", "cat", "rsync", "ls",
             "reread", "random", "bigdir"]
GROUPS = {"server": ["server-put", "server-get", "server-rsync"], "fuse": ["fuse-write", "fuse-read"],
          "ceilings": ["server-put", "server-get", "server-rsync", "fuse-write", "fuse-read"],
          "tools": ["cp", "cat", "rsync", "ls"], "reads": ["reread", "random"], "dirs": ["bigdir"]}
TOOL_WORKLOADS = GROUPS["tools"] + GROUPS["reads"] + GROUPS["dirs"]  # through a mount, per tool
# a read workload's phases: cold (fresh mount, empty caches), warm (again in that mount: the
# page cache), disk (after a remount with the page cache dropped: the tool's data cache)
READ_PHASES = ("cold", "warm", "disk")
BIGDIR_COMMANDS = {"bigdir-ls-f": ["ls", "-f"], "bigdir-ls-l": ["ls", "-l"], "bigdir-find": ["find"]}
# the report's rows of the workloads measured as several
ROWS = {"rsync": ["rsync-1", "rsync-2"], "bigdir": list(BIGDIR_COMMANDS),
        **{w: [f"{w}-{p}" for p in READ_PHASES] for w in GROUPS["reads"]}}
TREE_SMALL_DIRS, TREE_SMALL_FILES, TREE_SMALL_SIZE = 20, 50, 4096
TREE_BIG_FILES, TREE_BIG_SIZE = 5, 40 * MIB
TREE_FILES = TREE_SMALL_DIRS * TREE_SMALL_FILES + TREE_BIG_FILES
TREE_BYTES = TREE_SMALL_DIRS * TREE_SMALL_FILES * TREE_SMALL_SIZE + TREE_BIG_FILES * TREE_BIG_SIZE
LS_ENTRIES = 5000


def select_workloads(text: str | None) -> list[str]:
    """--only: workload names and group names -> workloads, in order, once each."""
    if not text:
        return list(WORKLOADS)
    out: list[str] = []
    for w in text.split(","):
        w = w.strip()
        names = GROUPS.get(w, [w])
        for n in names:
            if n not in WORKLOADS:
                raise SystemExit(f"bench: unknown workload {w!r}; choose from {', '.join(WORKLOADS + list(GROUPS))}")
            if n not in out:
                out.append(n)
    return out


# ---- data --------------------------------------------------------------------------
def make_source(src: Path, size: int, part: int) -> tuple[list[tuple[int, int]], str]:
    """Write `size` random bytes to `src`; return its part ranges and the multipart ETag they give."""
    log(f"writing a {size / MIB:.0f} MiB random source file ...")
    md5s = []
    use_project()
    try:
        from s3fsmpu.upload.schedule import PartSchedule

        ranges = [(p.start, p.end) for p in PartSchedule(part).parts_for_size(size)]
    except Exception:  # the schedule module moved: fixed parts (exact up to 1,000 parts)
        ranges = [(o, min(o + part, size)) for o in range(0, size, part)]
    with open(src, "wb") as f:
        for start, end in ranges:
            h = hashlib.md5()
            left = end - start
            while left:
                chunk = os.urandom(min(left, 8 * MIB))
                h.update(chunk)
                f.write(chunk)
                left -= len(chunk)
            md5s.append(h.digest())
    return ranges, hashlib.md5(b"".join(md5s)).hexdigest() + f"-{len(md5s)}"


def make_tree(tree: Path) -> None:
    """The rsync tree: TREE_FILES files, TREE_BYTES bytes."""
    rnd = random.Random(42)
    for d in range(TREE_SMALL_DIRS):
        p = tree / f"d{d:02d}"
        p.mkdir(parents=True)
        for i in range(TREE_SMALL_FILES):
            (p / f"f{i:03d}.dat").write_bytes(rnd.randbytes(TREE_SMALL_SIZE))
    big = tree / "big"
    big.mkdir()
    for i in range(TREE_BIG_FILES):
        with open(big / f"b{i}.bin", "wb") as f:
            for _ in range(TREE_BIG_SIZE // (8 * MIB)):
                f.write(os.urandom(8 * MIB))


def rows_of(workload: str) -> list[str]:
    """The report's rows of `workload`, in order."""
    return ROWS.get(workload, [workload])


class ListedDir(NamedTuple):
    """A directory of `entries` objects that a workload lists, with each of its commands (one row each)."""

    workload: str
    prefix: str
    entries: int
    body: bytes
    commands: dict[str, list[str]]


def listed_dirs(b: Bench) -> list[ListedDir]:
    """The chosen workloads' directories to list."""
    dirs = [ListedDir("ls", f"ls{LS_ENTRIES}", LS_ENTRIES, b"ls-bench\n", {"ls": ["ls", "-l"]}),
            ListedDir("bigdir", f"bigdir{b.args.bigdir_keys}", b.args.bigdir_keys, b"x", BIGDIR_COMMANDS)]
    return [d for d in dirs if d.workload in b.only]


def populate_dirs(b: Bench, bucket: str) -> None:
    """The listed directories in `bucket`: their objects written by boto3 in parallel,
    so the mount knows them only from LIST (as another client's objects)."""
    for d in listed_dirs(b):
        log(f"creating {d.entries} objects for {d.workload} in {bucket} ...")

        def put(i: int, d: ListedDir = d) -> None:
            b.client.put_object(Bucket=bucket, Key=f"{d.prefix}/entry-{i:06d}.txt", Body=d.body)

        with cf.ThreadPoolExecutor(16) as ex:
            list(ex.map(put, range(d.entries)))


def ensure_big(b: Bench, bucket: str) -> None:
    """big.bin in `bucket`, uploaded with boto3 unless it is there, for the read tests."""
    try:
        if b.client.head_object(Bucket=bucket, Key="big.bin")["ContentLength"] == b.size:
            return
    except Exception:
        pass
    from boto3.s3.transfer import TransferConfig

    log(f"  (uploading big.bin to {bucket} with boto3 for the read test)")
    b.client.upload_file(str(b.src), bucket, "big.bin",
                         Config=TransferConfig(multipart_chunksize=b.part, max_concurrency=b.conc))


def spot_check(b: Bench, path: Path) -> str | None:
    """16 random 1 MiB ranges of the mounted file against the source."""
    rnd = random.Random(7)
    with open(b.src, "rb") as f1, open(path, "rb") as f2:
        for _ in range(16):
            off = rnd.randrange(0, max(1, b.size - MIB))
            f1.seek(off)
            f2.seek(off)
            if f1.read(MIB) != f2.read(MIB):
                return f"content differs from the source at offset {off}"
    return None


# ---- ceilings ----------------------------------------------------------------------
def server_put(b: Bench) -> Sample:
    bucket = b.buckets["ceiling"]
    c = b.client
    warm(b.src)
    key = "big.bin"
    t0, cpu0 = time.monotonic(), time.process_time()  # the bench does nothing else meanwhile
    uid = c.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    fd = os.open(b.src, os.O_RDONLY)
    try:
        def up(i: int) -> dict:
            start, end = b.part_ranges[i]
            data = os.pread(fd, end - start, start)
            md5 = hashlib.md5(data).digest()
            r = c.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=i + 1, Body=data,
                              ContentMD5=base64.b64encode(md5).decode())
            return {"PartNumber": i + 1, "ETag": r["ETag"]}

        with cf.ThreadPoolExecutor(b.conc) as ex:
            parts = list(ex.map(up, range(len(b.part_ranges))))
        r = c.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=uid, MultipartUpload={"Parts": parts})
    except BaseException:
        c.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=uid)
        raise
    finally:
        os.close(fd)
    secs = time.monotonic() - t0
    s = Sample(b.size / secs / 1e6, None, {"seconds": round(secs, 2), "cpu_s": round(time.process_time() - cpu0, 2)})
    if not r.get("ETag", "").strip('"'):
        s.extra["complete_etag"] = "empty"
        note = "the server answers CompleteMultipartUpload with an empty <ETag> (HeadObject has it)"
        if note not in b.notes:
            b.notes.append(note)
    etag = c.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
    if etag != b.expected_etag:
        s.error = f"ETag {etag} != {b.expected_etag}"
    return s


def server_get(b: Bench) -> Sample:
    bucket = b.buckets["ceiling"]
    c = b.client
    key = "big.bin"
    size = c.head_object(Bucket=bucket, Key=key)["ContentLength"]
    ranges = [(o, min(o + b.part, size) - 1) for o in range(0, size, b.part)]

    def get(r: tuple[int, int]) -> int:
        body = c.get_object(Bucket=bucket, Key=key, Range=f"bytes={r[0]}-{r[1]}")["Body"]
        n = 0
        while True:
            chunk = body.read(1 * MIB)
            if not chunk:
                return n
            n += len(chunk)

    t0, cpu0 = time.monotonic(), time.process_time()
    with cf.ThreadPoolExecutor(b.conc) as ex:
        got = sum(ex.map(get, ranges))
    secs = time.monotonic() - t0
    return Sample(got / secs / 1e6, None if got == size else f"read {got} of {size} bytes",
                  {"seconds": round(secs, 2), "cpu_s": round(time.process_time() - cpu0, 2)})


def server_rsync(b: Bench) -> Sample:
    """The serial request floor of rsync's write-temp-then-rename into S3."""
    from boto3.s3.transfer import TransferConfig

    bucket = b.buckets["ceiling"]
    c = b.client
    tc = TransferConfig(multipart_threshold=b.part, multipart_chunksize=b.part,
                        max_concurrency=b.conc)
    t0 = time.monotonic()
    for d in sorted(p for p in b.tree.iterdir() if p.is_dir()):
        c.put_object(Bucket=bucket, Key=f"rsync-floor/{d.name}/", Body=b"")
        for f in sorted(d.iterdir()):
            tmp, final = f"rsync-floor/{d.name}/.{f.name}.XXXXXX", f"rsync-floor/{d.name}/{f.name}"
            if f.stat().st_size > b.part:
                c.upload_file(str(f), bucket, tmp, Config=tc)
            else:
                c.put_object(Bucket=bucket, Key=tmp, Body=f.read_bytes())
            c.copy_object(Bucket=bucket, Key=final, CopySource={"Bucket": bucket, "Key": tmp},
                          MetadataDirective="REPLACE", Metadata={"mode": "33188", "mtime": "1700000000"})
            c.delete_object(Bucket=bucket, Key=tmp)
    secs = time.monotonic() - t0
    n, total = count_keys(c, bucket, "rsync-floor/")
    bad = None if (n, total) == (TREE_FILES, TREE_BYTES) else f"{n} files / {total} bytes"
    return Sample(secs, bad, {"files_per_s": round(TREE_FILES / secs, 1)})


def fuse_ceiling(b: Bench) -> None:
    """fuse-write and fuse-read: dd bs=1M into and out of one fuse_null mount."""
    if not {"fuse-write", "fuse-read"} & set(b.only):
        return
    mnt = b.work / "mnt-null"
    mnt.mkdir(exist_ok=True)
    logf = open(b.work / "fuse_null.log", "w")
    m = start_fuse_null(mnt, b.size, logf)
    b.mounts.append(m)
    try:
        wait_mounted(mnt, m.proc, 30)

        def write() -> Sample:
            warm(b.src)
            settle()
            cpu0 = m.cpu()
            secs, _ = timed(["dd", f"if={b.src}", f"of={mnt}/x", "bs=1M"], b.args.timeout)
            return Sample(b.size / secs / 1e6, None, {"seconds": round(secs, 2), "cpu_s": round(m.cpu() - cpu0, 2)})

        def read() -> Sample:
            settle()
            cpu0 = m.cpu()
            secs, _ = timed(["dd", f"if={mnt}/null", "of=/dev/null", "bs=1M"], b.args.timeout)
            return Sample(b.size / secs / 1e6, None, {"seconds": round(secs, 2), "cpu_s": round(m.cpu() - cpu0, 2),
                                                       "read_ahead_kb": read_ahead_kb(mnt)})

        b.attempt("fuse-write", "fuse_null", write)
        b.attempt("fuse-read", "fuse_null", read)
    finally:
        m.unmount(30)
        b.mounts.remove(m)
        logf.close()


# ---- per tool ----------------------------------------------------------------------
def listing(cmd: list[str], path: Path, expect: int, timeout: float) -> Callable[[Mount], Sample]:
    """`cmd path` through the mount, its seconds, and the entries it printed (the
    lines naming an entry-*: not ls -l's total, find's directory or ls -f's . and ..)."""
    def go(m: Mount) -> Sample:
        secs, out = timed([*cmd, str(path)], timeout, stdout=subprocess.PIPE)
        n = sum(1 for ln in out.splitlines() if "entry-" in ln)
        return Sample(secs, None if n == expect else f"listed {n} of {expect}", {"entries": n})
    return go


def run_tool(b: Bench, tool: str) -> None:
    """cp, cat, rsync (first and second run), ls and bigdir through `tool`, each on a fresh mount."""
    bucket = b.buckets[tool]
    mnt = b.work / f"mnt-{tool}"
    T = b.args.timeout

    def cp(m: Mount) -> Sample:
        warm(b.src)
        secs, _ = timed(["cp", str(b.src), f"{mnt}/big.bin"], T)
        return Sample(b.size / secs / 1e6, None, {"seconds": round(secs, 2)})

    def cp_and_verify() -> Sample:
        s = b.with_mount(tool, cp, fresh_cache=False, workload="cp")
        try:
            h = b.client.head_object(Bucket=bucket, Key="big.bin")
        except Exception as exc:
            s.error = f"object missing after cp: {exc}"
            return s
        etag = h["ETag"].strip('"')
        s.extra["etag_ok"] = etag == b.expected_etag
        if h["ContentLength"] != b.size:
            s.error = f"object size {h['ContentLength']} != {b.size}"
        elif etag != b.expected_etag:
            msg = f"ETag {etag} != expected {b.expected_etag}"
            if tool == "s3fsmpu":
                s.error = msg
            else:
                s.extra["etag"] = etag  # peers may choose their own part sizes
        return s

    def cat(m: Mount) -> Sample:
        secs, _ = timed(["cat", f"{mnt}/big.bin"], T)
        s = Sample(b.size / secs / 1e6, None, {"seconds": round(secs, 2), "read_ahead_kb": read_ahead_kb(mnt)})
        bad = spot_check(b, mnt / "big.bin")
        if bad:
            s.error = bad
        return s

    def cat_prepared() -> Sample:
        ensure_big(b, bucket)
        return b.with_mount(tool, cat, workload="cat")

    def rsync_run() -> Callable[[Mount], Sample]:
        def go(m: Mount) -> Sample:
            secs, out = timed(["rsync", "-a", "--stats", f"{b.tree}/", f"{mnt}/rsync/"], T,
                              stdout=subprocess.PIPE)
            got = re.search(r"Number of regular files transferred: ([\d,]+)", out)
            n = int(got.group(1).replace(",", "")) if got else None
            return Sample(secs, None, {"files_per_s": round(TREE_FILES / secs, 1),
                                       "files_transferred": n})
        return go

    def rsync_both(record: Callable[[str, Sample], None]) -> None:
        empty_bucket(b.client, bucket, "rsync/")
        s1 = b.with_mount(tool, rsync_run(), workload="rsync-1")
        n, total = count_keys(b.client, bucket, "rsync/")
        s1.extra["objects"] = n
        if (n, total) != (TREE_FILES, TREE_BYTES):
            s1.error = f"bucket holds {n} files / {total} bytes, expected {TREE_FILES} / {TREE_BYTES}"
        record("rsync-1", s1)
        s2 = b.with_mount(tool, rsync_run(), workload="rsync-2")
        if s2.extra.get("files_transferred"):
            s2.extra["note"] = "second run re-copied files (quick check failed)"
        record("rsync-2", s2)

    # cp: source in page cache, fresh mount
    b.attempt("cp", tool, cp_and_verify)
    if tool == S3FS_MD5:
        return
    b.attempt("cat", tool, cat_prepared)
    b.attempt_rows("rsync", rows_of("rsync"), tool, rsync_both)

    def list_dir(d: ListedDir, row: str, cmd: list[str]) -> None:
        go = listing(cmd, mnt / d.prefix, d.entries, T)
        b.attempt(d.workload, tool, lambda: b.with_mount(tool, go, workload=row), row=row)

    for d in listed_dirs(b):  # each command on a fresh mount, caches dropped
        for row, cmd in d.commands.items():
            list_dir(d, row, cmd)


def clear_tool(b: Bench, tool: str) -> None:
    """What the workloads wrote into `tool`'s bucket, gone before the next tool's turn."""
    empty_bucket(b.client, b.buckets[tool], "big.bin")
    empty_bucket(b.client, b.buckets[tool], "rsync/")
