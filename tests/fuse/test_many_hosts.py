"""Real kernel mounts: two s3fsmpu processes on one bucket (two hosts, as far as S3 knows).

Each mount has its own cache dir. No update is lost: of two writers of one key,
exactly one close() succeeds and the other's bytes are in its recovery folder;
what one mount writes, the other sees within --attr-timeout; a bucket policy
that requires conditional writes (the fault proxy refuses writes without
If-None-Match/If-Match, and conditional CopyObject, as AWS does) takes cp,
rsync, append and rename. Every test reads the bucket back through boto3.
"""

from __future__ import annotations

import errno
import os
import random
import subprocess
from pathlib import Path

import pytest

from tests.conftest import S3FSMPU, bucket_bytes, open_uploads, wait_for
from tests.fuse.test_coherence import read_across_a_replacement

pytestmark = pytest.mark.fuse
MIB = 1 << 20
PART = ("--part-size", "5MiB")


def recovery_files(cache_dir: Path) -> list[Path]:
    return sorted(p for p in (cache_dir / "recovery").rglob("*") if p.is_file())


@pytest.mark.parametrize("size", [MIB, 12 * MIB], ids=["put", "multipart"])
def test_two_mounts_write_one_new_key_exactly_one_close_succeeds(s3, bucket, mounter, size):
    a, b = mounter(bucket, *PART), mounter(bucket, *PART)
    da, db = random.randbytes(size), random.randbytes(size)
    fa = open(a.path / "k", "wb")
    fb = open(b.path / "k", "wb")
    fa.write(da)
    fb.write(db)
    fb.close()  # B publishes first: If-None-Match: * holds for it
    with pytest.raises(OSError) as failure:
        fa.close()
    assert failure.value.errno == errno.EIO
    assert bucket_bytes(s3, bucket, "k") == db
    kept = recovery_files(a.cache_dir)
    assert len(kept) == 1 and kept[0].read_bytes() == da
    assert "conflict" in a.log and open_uploads(s3, bucket) == []


def test_two_mounts_overwrite_one_object_the_later_close_fails(s3, bucket, mounter):
    s3.put_object(Bucket=bucket, Key="k", Body=b"before")
    a, b = mounter(bucket, *PART), mounter(bucket, *PART)
    da, db = random.randbytes(MIB), random.randbytes(MIB)
    with open(b.path / "k", "r+b") as fb, open(a.path / "k", "r+b") as fa:  # both know "before"
        fa.truncate(0)
        fb.truncate(0)
        fb.write(db)
        fa.write(da)
        fb.flush()
        fb.close()
        with pytest.raises(OSError) as failure:
            fa.close()
    assert failure.value.errno == errno.EIO
    assert bucket_bytes(s3, bucket, "k") == db
    assert [p.read_bytes() for p in recovery_files(a.cache_dir)] == [da]


def test_overwrite_mode_is_last_writer_wins(s3, bucket, mounter):
    a, b = mounter(bucket, "--conflicts", "overwrite"), mounter(bucket, "--conflicts", "overwrite")
    fa = open(a.path / "k", "wb")
    fb = open(b.path / "k", "wb")
    fa.write(b"from a")
    fb.write(b"from b")
    fb.close()
    fa.close()
    assert bucket_bytes(s3, bucket, "k") == b"from a"
    assert recovery_files(a.cache_dir) == []


def test_rsync_from_two_mounts_into_different_subtrees(s3, bucket, mounter, tmp_path):
    a, b = mounter(bucket, *PART), mounter(bucket, *PART)
    src = tmp_path / "src"
    files = {f"d{i}/f{j}": random.randbytes(random.randrange(1, 200_000)) for i in range(3) for j in range(10)}
    files["big"] = random.randbytes(7 * MIB)
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    runs = [subprocess.Popen(["rsync", "-a", f"{src}/", f"{m.path}/{sub}/"])
            for m, sub in ((a, "from-a"), (b, "from-b"))]
    assert [r.wait(timeout=300) for r in runs] == [0, 0]
    for sub in ("from-a", "from-b"):
        for rel, data in files.items():
            assert bucket_bytes(s3, bucket, f"{sub}/{rel}") == data, f"{sub}/{rel}"
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert not any("/." in k for k in keys), "an rsync temp file was left"


def test_what_one_mount_writes_the_other_sees_within_attr_timeout(s3, bucket, mounter):
    a, b = mounter(bucket, *PART), mounter(bucket, "--attr-timeout", "1")
    assert sorted(os.listdir(b.path)) == []  # B has listed: "new" is known absent
    data = random.randbytes(3 * MIB)
    (a.path / "new").write_bytes(data)
    assert wait_for(lambda: (b.path / "new").exists(), timeout=5)
    assert (b.path / "new").read_bytes() == data
    (a.path / "new").write_bytes(b"replaced")  # same name, new ETag: B's pages are not kept

    def reads_the_new_version() -> bool:
        """Until B learns of the new ETag (--attr-timeout), an open there reads the old
        version, whole, or fails with ESTALE: never a mix, and never for longer."""
        try:
            return (b.path / "new").read_bytes() == b"replaced"
        except OSError as exc:
            assert exc.errno == errno.ESTALE, exc
            return False

    assert wait_for(reads_the_new_version, timeout=5)
    assert bucket_bytes(s3, bucket, "new") == b"replaced"


def test_a_reader_in_one_mount_during_an_overwrite_in_the_other_reads_one_version(s3, bucket, mounter):
    old, new = random.randbytes(32 * MIB), random.randbytes(32 * MIB)
    s3.put_object(Bucket=bucket, Key="f", Body=old)
    a, b = mounter(bucket, *PART), mounter(bucket, "--attr-timeout", "0")
    with open(b.path / "f", "rb", buffering=0) as f:
        read_across_a_replacement(f, old, lambda: (a.path / "f").write_bytes(new))  # cp over it in A
    assert (b.path / "f").read_bytes() == new
    assert bucket_bytes(s3, bucket, "f") == new


def require_conditional_writes(proxy) -> None:
    """As AWS enforces a bucket policy with s3:if-none-match / s3:if-match: writes without
    the headers are AccessDenied, and a CopyObject with them is NotImplemented."""
    def conditional(r) -> bool:
        return r.header("If-None-Match") is not None or r.header("If-Match") is not None

    proxy.add_rule(("PutObject", "CompleteMultipartUpload", "CopyObject"), "status", times=None,
                   match=lambda r: not conditional(r), status=403, code="AccessDenied")
    proxy.add_rule("CopyObject", "status", times=None, match=conditional, status=501, code="NotImplemented")


def test_a_bucket_that_requires_conditional_writes_takes_cp_rsync_append_rename(
        s3, bucket, mounter, proxy, tmp_path):
    require_conditional_writes(proxy)
    m = mounter(bucket, *PART, endpoint=proxy.url)
    big, small = random.randbytes(12 * MIB), random.randbytes(1000)
    (tmp_path / "big").write_bytes(big)
    subprocess.run(["cp", str(tmp_path / "big"), str(m.path / "big")], check=True)
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a").write_bytes(small)
    (src / "b").write_bytes(big[:6 * MIB])
    subprocess.run(["rsync", "-a", f"{src}/", f"{m.path}/tree/"], check=True)
    with open(m.path / "big", "ab") as f:
        f.write(b"appended")
    os.rename(m.path / "tree" / "b", m.path / "b-renamed")
    os.chmod(m.path / "big", 0o600)
    subprocess.run([S3FSMPU, "unmount", str(m.path)], check=True, capture_output=True)
    assert bucket_bytes(s3, bucket, "big") == big + b"appended"
    assert s3.head_object(Bucket=bucket, Key="big")["Metadata"]["mode"] == str(0o100600)
    assert bucket_bytes(s3, bucket, "tree/sub/a") == small
    assert bucket_bytes(s3, bucket, "b-renamed") == big[:6 * MIB]
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert keys == {"big", "b-renamed", "tree/", "tree/sub/", "tree/sub/a"}, keys
    refused = [r for r in proxy.log if r.status == 403]
    assert refused == [], [(r.op, r.path) for r in refused]
    assert open_uploads(s3, bucket) == []
