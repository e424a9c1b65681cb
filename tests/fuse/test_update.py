"""Real kernel mounts: changing existing objects in place, checked in the bucket.

Appends, overwrites, truncates, rsync --inplace, dd conv=notrunc, writes
after a forked child closed an inherited descriptor -- each compared byte
for byte, and the append's cost counted in UploadPart bytes."""

from __future__ import annotations

import errno
import os
import random
import subprocess

import pytest

from tests.conftest import bucket_bytes, open_uploads

pytestmark = pytest.mark.fuse
MIB = 1 << 20


def test_append_overwrite_truncate(s3, bucket, mounter):
    ten, twelve, twenty = (random.randbytes(n * MIB) for n in (10, 12, 20))
    s3.put_object(Bucket=bucket, Key="ten", Body=ten)
    s3.put_object(Bucket=bucket, Key="twelve", Body=twelve)
    s3.put_object(Bucket=bucket, Key="t3", Body=twenty)
    s3.put_object(Bucket=bucket, Key="t30", Body=twenty)
    m = mounter(bucket, "--part-size", "5MiB")
    more = random.randbytes(MIB)
    with open(m.path / "ten", "ab") as f:
        f.write(more)
    assert bucket_bytes(s3, bucket, "ten") == ten + more

    patch = random.randbytes(4096)
    with open(m.path / "twelve", "r+b") as f:
        f.seek(6 * MIB + 100)
        f.write(patch)
    expected = bytearray(twelve)
    expected[6 * MIB + 100 : 6 * MIB + 100 + 4096] = patch
    assert bucket_bytes(s3, bucket, "twelve") == bytes(expected)

    subprocess.run(["truncate", "-s", "3M", str(m.path / "t3")], check=True)
    subprocess.run(["truncate", "-s", "30M", str(m.path / "t30")], check=True)
    assert bucket_bytes(s3, bucket, "t3") == twenty[: 3 * MIB]
    assert bucket_bytes(s3, bucket, "t30") == twenty + bytes(10 * MIB)
    assert (m.path / "t30").stat().st_size == 30 * MIB
    assert open_uploads(s3, bucket) == []


def test_dd_notrunc_patch_and_rsync_inplace(s3, bucket, mounter, tmp_path):
    old = random.randbytes(40 * MIB)
    s3.put_object(Bucket=bucket, Key="f.bin", Body=old)
    s3.put_object(Bucket=bucket, Key="dd.bin", Body=old[: 9 * MIB])
    m = mounter(bucket, "--part-size", "5MiB")
    patch = tmp_path / "patch"
    patch.write_bytes(b"P" * 3000)
    subprocess.run(["dd", f"if={patch}", f"of={m.path / 'dd.bin'}", "bs=1000", "seek=7000", "conv=notrunc",
                    "status=none"], check=True)
    expected = bytearray(old[: 9 * MIB])
    expected[7_000_000:7_003_000] = b"P" * 3000
    assert bucket_bytes(s3, bucket, "dd.bin") == bytes(expected)

    new = bytearray(old)
    new[11 * MIB : 11 * MIB + 5000] = random.randbytes(5000)
    new += random.randbytes(123)
    src = tmp_path / "f.bin"
    src.write_bytes(bytes(new))
    r = subprocess.run(["rsync", "--inplace", "--no-whole-file", str(src), str(m.path / "f.bin")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert bucket_bytes(s3, bucket, "f.bin") == bytes(new)


def test_append_to_100mib_sends_about_one_part(s3, bucket, mounter, proxy):
    base = random.randbytes(100 * MIB)
    s3.put_object(Bucket=bucket, Key="log", Body=base)
    m = mounter(bucket, "--part-size", "8MiB", endpoint=proxy.url)
    proxy.clear_log()
    more = random.randbytes(MIB)
    with open(m.path / "log", "ab") as f:
        f.write(more)
    sent = sum(r.bytes_in for r in proxy.log if r.op == "UploadPart")
    copies = proxy.count("UploadPartCopy")
    print(f"append 1 MiB to 100 MiB: UploadPart bytes={sent} UploadPartCopy calls={copies} "
          f"GetObject bytes={sum(r.bytes_out for r in proxy.log if r.op == 'GetObject')}")
    assert sent < 2 * 8 * MIB
    assert copies >= 12
    assert bucket_bytes(s3, bucket, "log") == base + more


def test_forked_child_closes_inherited_descriptor(s3, bucket, mounter):
    m = mounter(bucket, "--part-size", "5MiB")
    first, second = random.randbytes(12 * MIB), random.randbytes(7 * MIB)
    fd = os.open(m.path / "forked.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, first)
    pid = os.fork()
    if pid == 0:  # the child closes its copy (a flush) and leaves
        os.close(fd)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert status == 0
    assert bucket_bytes(s3, bucket, "forked.bin") == first  # the child's close published
    os.write(fd, second)
    os.close(fd)
    assert bucket_bytes(s3, bucket, "forked.bin") == first + second
    assert open_uploads(s3, bucket) == []


def test_two_descriptors_see_each_other(s3, bucket, mounter):
    s3.put_object(Bucket=bucket, Key="shared", Body=b"a" * 100)
    m = mounter(bucket)
    a = os.open(m.path / "shared", os.O_RDWR)
    b = os.open(m.path / "shared", os.O_RDWR)
    os.pwrite(a, b"AAAA", 10)
    assert os.pread(b, 6, 9) == b"aAAAAa"
    os.pwrite(b, b"BB", 50)
    os.close(a)
    os.close(b)
    expected = bytearray(b"a" * 100)
    expected[10:14] = b"AAAA"
    expected[50:52] = b"BB"
    assert bucket_bytes(s3, bucket, "shared") == bytes(expected)


def test_failed_update_leaves_old_object_intact(s3, bucket, mounter, proxy):
    old = random.randbytes(12 * MIB)
    s3.put_object(Bucket=bucket, Key="keep.bin", Body=old)
    proxy.add_rule("CompleteMultipartUpload", "error_in_200", times=None, code="InvalidPart", decl_first=True)
    m = mounter(bucket, "--part-size", "5MiB", "--read-timeout", "2", endpoint=proxy.url)
    fd = os.open(m.path / "keep.bin", os.O_RDWR)
    os.pwrite(fd, b"changed", 7 * MIB)
    with pytest.raises(OSError) as info:
        os.close(fd)
    assert info.value.errno == errno.EIO
    proxy.wait_idle(10)
    assert bucket_bytes(s3, bucket, "keep.bin") == old
    assert open_uploads(s3, bucket) == []
    kept = [p for p in (m.cache_dir / "recovery").rglob("*") if p.is_file()]
    expected = bytearray(old)
    expected[7 * MIB : 7 * MIB + 7] = b"changed"
    assert len(kept) == 1 and kept[0].read_bytes() == bytes(expected)
