"""Read-ahead within --max-memory on a real kernel mount (issue 17).

Sixteen `md5sum`s read sixteen 64 MiB objects at once through a mount with
--max-memory 96MiB. Before the one budget each open file held its own
window plus a chunk or two (up to 16 x 40 MiB; the RSS grew by 306 MiB);
now the readers' chunks share the budget, so the mount's peak RSS grows by
at most --max-memory plus a fixed allowance (below; it grew by 53 and 63 MiB in two runs), and
every file reads back as the object boto3 reads from the bucket.
"""

from __future__ import annotations

import hashlib
import random
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import vm_kib

pytestmark = pytest.mark.fuse

MIB = 1 << 20
READERS = 16
SIZE = 64 * MIB
MAX_MEMORY = 96 * MIB
REQUEST = 1 * MIB  # the largest read the kernel sends (max_read), with read_ahead_kb raised
# Beyond the budget (s3fsmpu/memory.py's formula), per reader: a request answered
# without a chunk (1 MiB) and its reply, as pieces and joined (2 MiB); and per GET
# in flight, the socket's read of its body before it becomes the chunk's bytes, which
# may be a second copy of it for a moment (at most the read share, 48 MiB). Buffers
# of 1 MiB and more go back to the OS when freed (memory.return_big_buffers_to_the_os).
ALLOWANCE = READERS * 3 * REQUEST + MAX_MEMORY // 2


def test_sixteen_readers_of_64mib_files_stay_within_max_memory(s3, bucket, mounter):
    def put(i: int) -> None:
        s3.put_object(Bucket=bucket, Key=f"big/{i}.bin", Body=random.Random(i).randbytes(SIZE))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(put, range(READERS)))
    s3.put_object(Bucket=bucket, Key="small.bin", Body=b"warm" * 1024)
    m = mounter(bucket, "--max-memory", f"{MAX_MEMORY >> 20}MiB")
    pid = m.pid()
    assert pid is not None
    # warm up the read path (a GET, a reply), then take the baseline
    assert (m.path / "small.bin").read_bytes() == b"warm" * 1024
    baseline = vm_kib(pid, "VmHWM")

    readers = [subprocess.Popen(["md5sum", str(m.path / f"big/{i}.bin")], stdout=subprocess.PIPE, text=True)
               for i in range(READERS)]
    read = [r.communicate(timeout=600)[0].split()[0] for r in readers]
    assert all(r.returncode == 0 for r in readers)
    growth = (vm_kib(pid, "VmHWM") - baseline) * 1024

    def in_bucket(i: int) -> str:
        digest = hashlib.md5()
        for piece in s3.get_object(Bucket=bucket, Key=f"big/{i}.bin")["Body"].iter_chunks(MIB):
            digest.update(piece)
        return digest.hexdigest()

    print(f"peak RSS grew {growth / MIB:.0f} MiB")
    assert read == [in_bucket(i) for i in range(READERS)]
    assert growth <= MAX_MEMORY + ALLOWANCE, (
        f"peak RSS grew {growth / MIB:.0f} MiB, more than --max-memory {MAX_MEMORY / MIB:.0f} MiB "
        f"plus {ALLOWANCE / MIB:.0f} MiB")


def test_a_mount_that_computes_no_crc_leaves_awscrt_out(s3, bucket, mounter):
    """botocore imports awscrt whenever it is installed, ~6 MiB of an idle mount's RSS that
    SigV4 does not use. The default mount (MD5, no data cache) computes no CRC and leaves it
    out, and still writes and reads; a mount with the data cache loads it for its blocks."""
    from pathlib import Path

    from tests.conftest import bucket_bytes

    data = random.randbytes(3 * MIB)
    m = mounter(bucket)
    (m.path / "f").write_bytes(data)
    assert (m.path / "f").read_bytes() == data
    assert bucket_bytes(s3, bucket, "f") == data
    assert "_awscrt" not in Path(f"/proc/{m.pid()}/maps").read_text()
    m.unmount()
    m2 = mounter(bucket, "--cache-size", "64MiB", remount=m)
    assert (m2.path / "f").read_bytes() == data
    assert "_awscrt" in Path(f"/proc/{m2.pid()}/maps").read_text()

