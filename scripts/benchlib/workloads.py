"""The workloads and their data: the SIZE source file (random, with the
multipart ETag it must get), the rsync tree and the ls directory; the
ceilings (boto3 multipart PUT and ranged GET, the serial rsync request floor,
dd through fuse_null) and, per tool, cp in, cat out, rsync -a twice and ls -l,
each checked against what it should have produced. Each returns a Sample; the
run (run.py) supplies the bucket, the mount and the measuring around it.
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
from typing import TYPE_CHECKING, Any, Callable

from .common import MIB, log, use_project
from .measure import Sample, settle, timed, warm
from .servers import count_keys, empty_bucket
from .systems import S3FS_MD5, Mount, read_ahead_kb, start_fuse_null, wait_mounted

if TYPE_CHECKING:
    from .run import Bench

WORKLOADS = ["server-put", "server-get", "server-rsync", "fuse-write", "fuse-read", "cp", "cat", "rsync", "ls"]
GROUPS = {"server": ["server-put", "server-get", "server-rsync"], "fuse": ["fuse-write", "fuse-read"],
          "ceilings": ["server-put", "server-get", "server-rsync", "fuse-write", "fuse-read"],
          "tools": ["cp", "cat", "rsync", "ls"]}
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


def populate_ls(client: Any, bucket: str) -> None:
    def put(i: int) -> None:
        client.put_object(Bucket=bucket, Key=f"ls{LS_ENTRIES}/entry-{i:05d}.txt", Body=b"ls-bench\n")

    with cf.ThreadPoolExecutor(16) as ex:
        list(ex.map(put, range(LS_ENTRIES)))


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
    t0 = time.monotonic()
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
    s = Sample(b.size / secs / 1e6, None, {"seconds": round(secs, 2)})
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

    t0 = time.monotonic()
    with cf.ThreadPoolExecutor(b.conc) as ex:
        got = sum(ex.map(get, ranges))
    secs = time.monotonic() - t0
    return Sample(got / secs / 1e6, None if got == size else f"read {got} of {size} bytes",
                  {"seconds": round(secs, 2)})


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
def run_tool(b: Bench, tool: str) -> None:
    """cp, cat, rsync (first and second run) and ls through `tool`, each on a fresh mount."""
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

    def rsync_both() -> Sample:
        empty_bucket(b.client, bucket, "rsync/")
        s1 = b.with_mount(tool, rsync_run(), workload="rsync-1")
        n, total = count_keys(b.client, bucket, "rsync/")
        s1.extra["objects"] = n
        if (n, total) != (TREE_FILES, TREE_BYTES):
            s1.error = f"bucket holds {n} files / {total} bytes, expected {TREE_FILES} / {TREE_BYTES}"
        b.record("rsync-1", tool, s1)
        s2 = b.with_mount(tool, rsync_run(), workload="rsync-2")
        if s2.extra.get("files_transferred"):
            s2.extra["note"] = "second run re-copied files (quick check failed)"
        return s2

    def ls(m: Mount) -> Sample:
        secs, out = timed(["ls", "-l", f"{mnt}/ls{LS_ENTRIES}"], T, stdout=subprocess.PIPE)
        n = sum(1 for ln in out.splitlines() if not ln.startswith("total"))
        return Sample(secs, None if n == LS_ENTRIES else f"listed {n} of {LS_ENTRIES}", {"entries": n})

    # cp: source in page cache, fresh mount
    b.attempt("cp", tool, cp_and_verify)
    if tool == S3FS_MD5:
        empty_bucket(b.client, bucket, "big.bin")
        return
    b.attempt("cat", tool, cat_prepared)
    if "rsync" in b.only:
        try:
            s2 = rsync_both()
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            s2 = Sample(error=f"{type(exc).__name__}: {exc}"[:500])
            if ("rsync-1", tool) not in b.samples:
                b.record("rsync-1", tool, Sample(error=s2.error))
        b.record("rsync-2", tool, s2)
    b.attempt("ls", tool, lambda: b.with_mount(tool, ls, workload="ls"))
    empty_bucket(b.client, bucket, "big.bin")
    empty_bucket(b.client, bucket, "rsync/")
