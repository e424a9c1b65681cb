"""Real kernel mounts: the streaming multipart write path, checked in the bucket."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import bucket_bytes, open_uploads, vm_kib, wait_for
from tests.faultproxy import Hold

pytestmark = pytest.mark.fuse
MIB = 1 << 20


def multipart_etag(data: bytes, part: int) -> str:
    md5s = b"".join(hashlib.md5(data[i : i + part]).digest() for i in range(0, len(data), part))
    return f"{hashlib.md5(md5s).hexdigest()}-{(len(data) + part - 1) // part}"


def etag(s3, bucket: str, key: str) -> str:
    return s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')


def test_cp_64mib_is_8_parts(s3, bucket, mounter, tmp_path):
    data = random.randbytes(64 * MIB)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    m = mounter(bucket, "--part-size", "8MiB")
    subprocess.run(["cp", str(src), str(m.path / "dst.bin")], check=True)
    assert bucket_bytes(s3, bucket, "dst.bin") == data
    assert etag(s3, bucket, "dst.bin") == multipart_etag(data, 8 * MIB)
    assert etag(s3, bucket, "dst.bin").endswith("-8")
    assert open_uploads(s3, bucket) == []
    assert (m.path / "dst.bin").stat().st_size == len(data)
    assert (m.path / "dst.bin").read_bytes() == data


def test_small_file_is_one_put(s3, bucket, mounter, proxy):
    data = random.randbytes(100 * 1024)
    m = mounter(bucket, endpoint=proxy.url)
    (m.path / "small.bin").write_bytes(data)
    assert bucket_bytes(s3, bucket, "small.bin") == data
    assert etag(s3, bucket, "small.bin") == hashlib.md5(data).hexdigest()
    assert proxy.count("CreateMultipartUpload") == 0
    assert proxy.count("PutObject") >= 1


def test_empty_file(s3, bucket, mounter):
    m = mounter(bucket)
    (m.path / "empty").touch()
    assert bucket_bytes(s3, bucket, "empty") == b""
    assert (m.path / "empty").stat().st_size == 0


def test_object_exists_the_moment_close_returns(s3, bucket, mounter):
    data = random.randbytes(20 * MIB)
    m = mounter(bucket)
    fd = os.open(m.path / "twenty.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for i in range(0, len(data), MIB):
        os.write(fd, data[i : i + MIB])
    os.close(fd)
    head = s3.head_object(Bucket=bucket, Key="twenty.bin")  # no waiting, no retry
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"') == multipart_etag(data, 8 * MIB)
    assert bucket_bytes(s3, bucket, "twenty.bin") == data
    assert open_uploads(s3, bucket) == []


def test_out_of_order_blocks(s3, bucket, mounter):
    blocks = {off: random.randbytes(8 * MIB) for off in (16 * MIB, 0, 8 * MIB)}
    m = mounter(bucket, "--part-size", "8MiB")
    fd = os.open(m.path / "ooo.bin", os.O_WRONLY | os.O_CREAT, 0o644)
    for off, block in blocks.items():
        os.pwrite(fd, block, off)
    os.close(fd)
    expected = blocks[0] + blocks[8 * MIB] + blocks[16 * MIB]
    assert bucket_bytes(s3, bucket, "ooo.bin") == expected
    assert etag(s3, bucket, "ooo.bin") == multipart_etag(expected, 8 * MIB)


def test_holes_are_zeros_and_rewritten_part_is_resent(s3, bucket, mounter):
    m = mounter(bucket, "--part-size", "5MiB")
    fd = os.open(m.path / "holes.bin", os.O_RDWR | os.O_CREAT, 0o644)
    os.pwrite(fd, b"A" * (5 * MIB), 0)  # part 1 complete: uploads
    os.pwrite(fd, b"tail", 12 * MIB)  # leaves a hole in parts 2 and 3
    os.pwrite(fd, b"B" * 100, 10)  # part 1 written again after its upload
    assert os.pread(fd, 4, 12 * MIB) == b"tail"  # reads see what was written
    os.close(fd)
    expected = bytearray(b"A" * (5 * MIB) + bytes(7 * MIB) + b"tail")
    expected[10:110] = b"B" * 100
    assert bucket_bytes(s3, bucket, "holes.bin") == bytes(expected)


def test_parts_upload_while_the_writer_is_still_writing(s3, bucket, mounter, proxy):
    m = mounter(bucket, "--part-size", "8MiB", endpoint=proxy.url)
    data = random.randbytes(40 * MIB)
    with open(m.path / "stream.bin", "wb") as f:
        f.write(data)
        f.flush()  # into the kernel; the file is still open
        assert wait_for(lambda: proxy.count("UploadPart") >= 5, timeout=30), proxy.count("UploadPart")
        assert proxy.count("CompleteMultipartUpload") == 0
        assert not [o for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert proxy.count("CompleteMultipartUpload") == 1
    assert bucket_bytes(s3, bucket, "stream.bin") == data


@pytest.mark.parametrize("writers", [2, 8])
def test_concurrent_writers(s3, bucket, mounter, writers):
    m = mounter(bucket, "--part-size", "5MiB", "--max-memory", "64MiB")
    payloads = {f"w{i}.bin": random.randbytes(random.Random(i).randrange(1, 23 * MIB)) for i in range(writers)}
    errors: list[BaseException] = []

    def write(name: str) -> None:
        try:
            with open(m.path / name, "wb") as f:
                data = payloads[name]
                for i in range(0, len(data), 256 * 1024):
                    f.write(data[i : i + 256 * 1024])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for name, data in payloads.items():
        assert bucket_bytes(s3, bucket, name) == data, name
    assert open_uploads(s3, bucket) == []


def test_max_memory_bounds_peak_rss(s3, bucket, mounter):
    m = mounter(bucket, "--part-size", "8MiB", "--max-memory", "64MiB")
    pid = m.pid()
    assert pid is not None
    # warm up every code path once (a small file and a multipart one), then take the baseline
    (m.path / "warm.bin").write_bytes(random.randbytes(17 * MIB))
    baseline = vm_kib(pid, "VmHWM")
    chunk = random.randbytes(MIB)
    digest = hashlib.md5()
    with open(m.path / "big.bin", "wb") as f:
        for i in range(400):
            block = chunk[i:] + chunk[:i]
            digest.update(block)
            f.write(block)
    peak = vm_kib(pid, "VmHWM")
    assert peak - baseline < 64 * 1024, f"peak RSS grew {(peak - baseline) / 1024:.0f} MiB over baseline"
    body = s3.get_object(Bucket=bucket, Key="big.bin")["Body"]
    got = hashlib.md5()
    for piece in iter(lambda: body.read(8 * MIB), b""):
        got.update(piece)
    assert got.hexdigest() == digest.hexdigest()


def test_write_beyond_the_largest_object_is_efbig(s3, bucket, mounter):
    m = mounter(bucket)
    fd = os.open(m.path / "huge", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with pytest.raises(OSError) as info:
            os.pwrite(fd, b"x", 9 << 40)  # beyond ~8 TiB of the default schedule
        assert info.value.errno == errno.EFBIG
        os.pwrite(fd, b"ok", 0)
    finally:
        os.close(fd)
    assert bucket_bytes(s3, bucket, "huge") == b"ok"


def test_read_while_writing_from_another_descriptor(s3, bucket, mounter):
    m = mounter(bucket)
    data = random.randbytes(9 * MIB)
    with open(m.path / "rw.bin", "wb") as w:
        w.write(data)
        w.flush()
        with open(m.path / "rw.bin", "rb") as r:
            assert r.read() == data
    assert bucket_bytes(s3, bucket, "rw.bin") == data


def test_recovery_spool_is_removed_after_success(s3, bucket, mounter):
    m = mounter(bucket)
    (m.path / "a.bin").write_bytes(random.randbytes(6 * MIB))
    spool = Path(m.cache_dir) / "spool"
    assert wait_for(lambda: not list(spool.iterdir()), timeout=5)
    assert not (Path(m.cache_dir) / "recovery").exists()


WRITER = """
import os, sys
src, dst, progress = sys.argv[1:4]
data = open(src, "rb").read()
fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
for i in range(0, len(data), 1 << 20):
    os.write(fd, data[i : i + (1 << 20)])
    os.pwrite(os.open(progress, os.O_WRONLY), b"%20d" % (i + len(data[i : i + (1 << 20)])), 0)
os.close(fd)
"""


def progress_settles(progress: Path, still: float = 2.0, timeout: float = 60.0) -> int:
    """Poll the writer's byte counter until it has not moved for `still` seconds; its value."""
    last, since = -1, time.monotonic()
    deadline = since + timeout
    while time.monotonic() < deadline:
        now = int(progress.read_bytes() or b"0")
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= still:
            return now
        time.sleep(0.05)
    raise AssertionError(f"the writer never stopped: {last} bytes written")


def test_writer_waits_at_max_memory_while_uploads_stall(s3, bucket, mounter, proxy, tmp_path):
    """--max-memory is backpressure through the kernel: with every UploadPart held at the
    proxy, a writer stops at about --max-memory, and goes on once the parts go through."""
    part, budget = 5 * MIB, 20 * MIB
    hold = Hold()
    proxy.add_rule("UploadPart", hold, times=None)
    m = mounter(bucket, "--part-size", "5MiB", "--max-memory", "20MiB", endpoint=proxy.url)
    data = random.randbytes(64 * MIB)
    src, progress = tmp_path / "src.bin", tmp_path / "progress"
    src.write_bytes(data)
    progress.write_bytes(b"0")
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(src), str(m.path / "big.bin"), str(progress)])
    try:
        assert hold.wait_held(1), "no UploadPart reached the proxy"
        stopped = progress_settles(progress)
        # parts ready or in flight hold the budget; the part being filled and the
        # kernel's write in progress come on top
        assert budget <= stopped <= budget + part + MIB, stopped / MIB
        assert writer.poll() is None
    finally:
        hold.release()
    assert writer.wait(120) == 0
    assert int(progress.read_bytes()) == len(data)
    assert bucket_bytes(s3, bucket, "big.bin") == data
    assert open_uploads(s3, bucket) == []
