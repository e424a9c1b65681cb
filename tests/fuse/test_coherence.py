"""Real kernel mounts: what a reader sees when another client replaces an object.

One version whole, or an error, never a mix: across reopens (the kernel keeps its
page cache of an inode only while the size and mtime are unchanged, which a
replacement with the same size and s3fs mtime keeps) and within one open (the
reads of an open are pinned to the ETag it opened). The bytes in the bucket are
read back through boto3 each time.
"""

from __future__ import annotations

import errno
import os
import random
import time
from collections.abc import Callable
from typing import BinaryIO

import pytest

from tests.conftest import bucket_bytes

pytestmark = pytest.mark.fuse
MIB = 1 << 20
META = {"mtime": "1600000000", "mode": "33188"}  # as s3fs and rsync --inplace keep them


def read_range(path: os.PathLike[str], offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def read_across_a_replacement(f: BinaryIO, old: bytes, replace: Callable[[], None]) -> None:
    """Read 1 MiB of `old` through `f`, let `replace` put another version, read on: the
    rest is `old` (what was already fetched) or ESTALE, never the other version's bytes."""
    got = bytearray(f.read(MIB))
    replace()
    try:
        while chunk := f.read(MIB):
            got += chunk
    except OSError as exc:
        assert exc.errno == errno.ESTALE, exc
        assert old.startswith(bytes(got))
    else:
        assert bytes(got) == old


def test_reopen_after_a_same_size_same_mtime_replacement_reads_the_new_version(s3, bucket, mounter):
    """The issue-17 bug: the first MiBs came from the kernel's pages of the old version."""
    old, new = random.randbytes(16 * MIB), random.randbytes(16 * MIB)
    s3.put_object(Bucket=bucket, Key="f", Body=old, Metadata=META)
    m = mounter(bucket, "--attr-timeout", "1")
    assert read_range(m.path / "f", 0, MIB) == old[:MIB]  # pages of the old version now
    s3.put_object(Bucket=bucket, Key="f", Body=new, Metadata=META)  # another host's rsync --inplace
    time.sleep(1.5)  # --attr-timeout: then the mount asks S3 again
    st = os.stat(m.path / "f")
    assert (st.st_size, st.st_mtime_ns) == (16 * MIB, 1600000000 * 10**9)  # nothing the kernel could see
    assert (m.path / "f").read_bytes() == new
    assert bucket_bytes(s3, bucket, "f") == new


def test_second_read_of_an_unchanged_file_comes_from_the_page_cache(s3, bucket, mounter, proxy):
    data = random.randbytes(8 * MIB)
    s3.put_object(Bucket=bucket, Key="g", Body=data, Metadata=META)
    m = mounter(bucket, "--attr-timeout", "0", endpoint=proxy.url)
    assert (m.path / "g").read_bytes() == data
    gets = proxy.count("GetObject")
    assert gets >= 1
    assert (m.path / "g").read_bytes() == data  # reopened, revalidated (HEAD), same ETag
    assert proxy.count("GetObject") == gets
    assert bucket_bytes(s3, bucket, "g") == data


def test_an_open_reader_gets_one_version_or_estale(s3, bucket, mounter):
    """Replaced while open: the rest of the file is the old version (what was already
    fetched) or ESTALE, never the new version's bytes after the old one's."""
    old, new = random.randbytes(32 * MIB), random.randbytes(32 * MIB)
    s3.put_object(Bucket=bucket, Key="f", Body=old, Metadata=META)
    m = mounter(bucket, "--attr-timeout", "0")
    with open(m.path / "f", "rb", buffering=0) as f:
        def replace() -> None:
            s3.put_object(Bucket=bucket, Key="f", Body=new, Metadata=META)
            os.stat(m.path / "f")  # the mount learns of the new ETag now

        read_across_a_replacement(f, old, replace)
    assert (m.path / "f").read_bytes() == new  # a new open reads the new version
    assert bucket_bytes(s3, bucket, "f") == new
