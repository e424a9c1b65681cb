"""Real kernel mounts: the data cache (--cache-size) saves GETs across remounts, never
serves a changed object's old bytes, drops a corrupt block, and stays within its size.

GETs are counted at the fault proxy in front of moto; bytes are read back through
boto3 as well as through the mount.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from tests.conftest import bucket_bytes

pytestmark = pytest.mark.fuse
MIB = 1 << 20
CACHE = ("--cache-size", "64MiB")


def block_files(cache_dir: Path) -> list[Path]:
    data = cache_dir / "data"
    return [p for p in data.rglob("*") if p.is_file() and "tmp" not in p.relative_to(data).parts]


def test_a_remount_reads_from_the_cache_and_a_changed_object_fresh(s3, bucket, mounter, proxy):
    data = random.randbytes(20 * MIB)
    s3.put_object(Bucket=bucket, Key="f", Body=data)
    m = mounter(bucket, *CACHE, "--attr-timeout", "1", endpoint=proxy.url)
    assert (m.path / "f").read_bytes() == data
    assert proxy.count("GetObject") >= 3  # three 8 MiB blocks
    m.unmount()
    m2 = mounter(bucket, *CACHE, "--attr-timeout", "1", endpoint=proxy.url, remount=m)
    before = proxy.count("GetObject")
    assert (m2.path / "f").read_bytes() == data
    assert proxy.count("GetObject") == before, "a remount read the file from S3 again"

    new = random.randbytes(20 * MIB)
    s3.put_object(Bucket=bucket, Key="f", Body=new)  # another client: a new ETag
    time.sleep(1.5)  # --attr-timeout
    assert (m2.path / "f").read_bytes() == new
    assert proxy.count("GetObject") > before
    assert bucket_bytes(s3, bucket, "f") == new


def test_a_file_written_through_the_mount_reads_back_without_a_get(s3, bucket, mounter, proxy):
    data = random.randbytes(12 * MIB)
    m = mounter(bucket, *CACHE, "--part-size", "5MiB", endpoint=proxy.url)
    (m.path / "w").write_bytes(data)
    m.unmount()  # the kernel's pages are gone with the mount
    m2 = mounter(bucket, *CACHE, endpoint=proxy.url, remount=m)
    before = proxy.count("GetObject")
    assert (m2.path / "w").read_bytes() == data
    assert proxy.count("GetObject") == before
    assert bucket_bytes(s3, bucket, "w") == data


def test_a_corrupt_block_is_dropped_and_fetched_again(s3, bucket, mounter, proxy):
    data = random.randbytes(8 * MIB)
    s3.put_object(Bucket=bucket, Key="c", Body=data)
    m = mounter(bucket, *CACHE, endpoint=proxy.url)
    assert (m.path / "c").read_bytes() == data
    m.unmount()
    blocks = block_files(m.cache_dir)
    assert len(blocks) == 8  # 1 MiB blocks
    raw = bytearray(blocks[3].read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    blocks[3].write_bytes(raw)
    m2 = mounter(bucket, *CACHE, endpoint=proxy.url, remount=m)
    proxy.clear_log()
    assert (m2.path / "c").read_bytes() == data
    gets = [r for r in proxy.log if r.op == "GetObject"]
    # the one block again (twice if the kernel's read-ahead looked like a seek to the mount)
    assert gets and all(r.bytes_out <= MIB + 4096 for r in gets), gets
    assert "crc32c mismatch" in m2.log.lower(), m2.log[-2000:]
    assert len(block_files(m2.cache_dir)) == 8
    assert bucket_bytes(s3, bucket, "c") == data


def test_random_reads_are_kept_in_blocks_around_them_and_cost_no_get_after_a_remount(s3, bucket, mounter, proxy):
    """A random read fetches the 1 MiB blocks it falls in (not the 8 MiB chunk, not only
    its own bytes) and keeps them, so the same reads after a remount cost no request."""
    data = random.randbytes(64 * MIB)
    s3.put_object(Bucket=bucket, Key="r", Body=data)
    reads = [(o, 256 << 10) for o in random.Random(5).sample(range(0, 64 * MIB - (256 << 10), 4096), 12)]

    def read_all(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # no kernel read-ahead
            for offset, size in reads:
                assert os.pread(fd, size, offset) == data[offset : offset + size]
        finally:
            os.close(fd)

    m = mounter(bucket, *CACHE, endpoint=proxy.url)
    proxy.clear_log()
    read_all(m.path / "r")
    gets = [r for r in proxy.log if r.op == "GetObject"]
    assert 0 < sum(r.bytes_out for r in gets) <= len(reads) * (2 * MIB + 4096), gets
    m.unmount()
    m2 = mounter(bucket, *CACHE, endpoint=proxy.url, remount=m)
    proxy.clear_log()
    read_all(m2.path / "r")
    assert proxy.count("GetObject") == 0, "random reads after a remount went to S3"
    assert bucket_bytes(s3, bucket, "r") == data


def test_the_cache_stays_within_its_size(s3, bucket, mounter):
    files = {f"e{i}": random.randbytes(8 * MIB) for i in range(5)}
    for key, data in files.items():
        s3.put_object(Bucket=bucket, Key=key, Body=data)
    m = mounter(bucket, "--cache-size", "24MiB")
    for key, data in files.items():
        assert (m.path / key).read_bytes() == data
    held = sum(p.stat().st_size for p in block_files(m.cache_dir))
    assert 8 * MIB <= held <= 24 * MIB, held
    assert len(block_files(m.cache_dir)) < 24  # 1 MiB blocks and their headers


def test_without_cache_size_nothing_is_kept(s3, bucket, mounter):
    s3.put_object(Bucket=bucket, Key="n", Body=b"x" * MIB)
    m = mounter(bucket)
    assert (m.path / "n").read_bytes() == b"x" * MIB
    assert not (m.cache_dir / "data").exists() or block_files(m.cache_dir) == []
    assert os.listdir(m.path) == ["n"]
