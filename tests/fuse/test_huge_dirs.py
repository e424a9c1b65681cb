"""`ls -f`, `ls -l` and `find` over a huge directory on a real mount are LIST-bound (issue 17).

Each listing costs about one ListObjectsV2 per 1,000 entries and no HEAD per
entry (readdirplus carries the attributes), and the mount's peak RSS grows by
a bounded amount per entry. Creating keys in moto costs ~5 ms each and moto's
LIST is O(bucket) per page, so the default run uses 5,000 keys (~40 s);
S3FSMPU_SLOW=1 runs the 100,000 of the issue (~15 minutes).
"""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import vm_kib

pytestmark = pytest.mark.fuse

N = 100_000 if os.environ.get("S3FSMPU_SLOW") == "1" else 5_000
# per entry the kernel holds after readdirplus: a Node (~250 bytes with slots), its path and two
# table slots (~150), its packed listing record (~90), plus allocator slack: 1 KiB. Fixed: one page
# of 1,000 nodes and boto3's parse of a 1,000-key answer, ~20 MiB at most.
PER_ENTRY = 1024
FIXED = 32 << 20


def test_ls_and_find_over_a_huge_directory_are_list_bound(s3, bucket, mounter, proxy):
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda i: s3.put_object(Bucket=bucket, Key=f"big/f{i:06d}", Body=b"x"), range(N)))
    s3.put_object(Bucket=bucket, Key="warm/a", Body=b"x")
    m = mounter(bucket, "--attr-timeout", "600", endpoint=proxy.url)
    pid = m.pid()
    assert pid is not None
    assert os.listdir(m.path / "warm") == ["a"]  # every code path of a listing once
    baseline = vm_kib(pid, "VmHWM")
    pages = N // 1000 + 1
    for argv in (["ls", "-f"], ["ls", "-l"], ["find"]):
        proxy.clear_log()
        r = subprocess.run([*argv, str(m.path / "big")], capture_output=True, text=True, timeout=1800)
        assert r.returncode == 0, r.stderr
        assert len(r.stdout.splitlines()) >= N, argv
        lists, heads = proxy.count("ListObjectsV2"), proxy.count("HeadObject")
        print(f"{argv}: {lists} LIST, {heads} HEAD")
        assert lists <= pages + 1, (argv, lists)
        assert heads <= 3, (argv, heads)
    grown = (vm_kib(pid, "VmHWM") - baseline) * 1024
    print(f"peak RSS grew {grown / 1e6:.1f} MB, {grown / N:.0f} bytes per entry")
    assert grown < PER_ENTRY * N + FIXED, grown
