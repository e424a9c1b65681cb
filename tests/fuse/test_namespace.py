"""Real kernel mounts: cp -a and rsync -a end to end, namespace operations,
metadata persistence across remounts, and what they cost in S3 requests."""

from __future__ import annotations

import errno
import os
import random
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import bucket_bytes

pytestmark = pytest.mark.fuse
MIB = 1 << 20


def make_tree(root: Path, seed: int = 1, big: bool = True) -> dict[str, bytes]:
    """3 levels, ~200 files of 0 B, 1 B, 4 KiB (and 6 / 13 MiB), names with spaces and unicode."""
    rng = random.Random(seed)
    files: dict[str, bytes] = {}
    sizes = [0, 1, 4096, 4096, 4096]
    dirs = ["", "a", "b c", "a/ünïcode", "a/ünïcode/deep", "b c/x y z"]
    n = 0
    for d in dirs:
        for i in range(33):
            name = rng.choice(["f", "file ", "dätä-", "x%+#?"]) + f"{n:03d}.bin"
            rel = f"{d}/{name}" if d else name
            files[rel] = rng.randbytes(sizes[n % len(sizes)])
            n += 1
    if big:
        files["a/big 6M.bin"] = rng.randbytes(6 * MIB)
        files["b c/big-13M.bin"] = rng.randbytes(13 * MIB)
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        p.chmod(rng.choice([0o644, 0o600, 0o755, 0o640]))
        t = 1_500_000_000 + rng.randrange(10**8)
        os.utime(p, ns=(t * 10**9 + 123456789, t * 10**9 + rng.randrange(10**9)))
    for d in dirs[1:]:
        os.utime(root / d, (1_400_000_000, 1_400_000_000))
    return files


def rsync(src: Path, dst: Path, *extra: str) -> str:
    r = subprocess.run(["rsync", "-a", *extra, f"{src}/", f"{dst}/"], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    return r.stdout


def check_bucket_matches(s3, bucket: str, src: Path, files: dict[str, bytes], prefix: str = "") -> None:
    for rel, data in files.items():
        key = prefix + rel
        assert bucket_bytes(s3, bucket, key) == data, key
        meta = s3.head_object(Bucket=bucket, Key=key)["Metadata"]
        st = os.stat(src / rel)
        assert int(meta["mode"]) == st.st_mode, key
        assert int(meta["mtime"].split(".")[0]) == int(st.st_mtime), key


def test_rsync_a_tree_then_nothing_to_do(s3, bucket, mounter, tmp_path):
    src = tmp_path / "src"
    files = make_tree(src)
    m = mounter(bucket)
    rsync(src, m.path)
    check_bucket_matches(s3, bucket, src, files)
    assert rsync(src, m.path, "--itemize-changes") == ""
    assert rsync(src, m.path, "-c", "--dry-run", "--itemize-changes") == ""
    m.unmount()
    m2 = mounter(bucket, remount=m)
    assert rsync(src, m2.path, "--itemize-changes") == ""
    assert rsync(src, m2.path, "-c", "--dry-run", "--itemize-changes") == ""
    for rel in ("a/ünïcode/deep", "b c/big-13M.bin"):
        assert os.stat(m2.path / rel).st_mtime_ns // 10**9 == os.stat(src / rel).st_mtime_ns // 10**9


def test_cp_a_preserves_modes_and_mtimes_across_remount(s3, bucket, mounter, tmp_path):
    src = tmp_path / "src"
    files = make_tree(src, seed=2, big=False)
    m = mounter(bucket)
    subprocess.run(["cp", "-a", f"{src}/.", str(m.path)], check=True)
    m.unmount()
    m2 = mounter(bucket)
    for rel, data in files.items():
        a, b = os.stat(src / rel), os.stat(m2.path / rel)
        assert (b.st_mode, b.st_size, b.st_mtime_ns) == (a.st_mode, a.st_size, a.st_mtime_ns), rel
        assert (m2.path / rel).read_bytes() == data


def test_namespace_operations(s3, bucket, mounter):
    m = mounter(bucket)
    p = m.path
    (p / "x/y/z").mkdir(parents=True)
    assert s3.head_object(Bucket=bucket, Key="x/y/z/")["ContentLength"] == 0
    (p / "x/y/z/f.txt").write_bytes(b"f")
    with pytest.raises(OSError) as info:
        (p / "x/y/z").rmdir()
    assert info.value.errno == errno.ENOTEMPTY
    (p / "x/y/z/f.txt").unlink()
    (p / "x/y/z").rmdir()
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="x/y/z")
    with pytest.raises(FileExistsError):
        os.close(os.open(p / "x", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    (p / "excl").write_bytes(b"1")
    with pytest.raises(FileExistsError):
        os.close(os.open(p / "excl", os.O_CREAT | os.O_EXCL | os.O_WRONLY))

    big = random.randbytes(20 * MIB)
    (p / "big.bin").write_bytes(big)
    subprocess.run(["mv", str(p / "big.bin"), str(p / "x/moved.bin")], check=True)
    assert bucket_bytes(s3, bucket, "x/moved.bin") == big
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="big.bin")

    (p / "d1/sub").mkdir(parents=True)
    for name in ("one", "two", "sub/three"):
        (p / "d1" / name).write_bytes(name.encode())
    subprocess.run(["mv", str(p / "d1"), str(p / "d2")], check=True)
    assert sorted(os.listdir(p / "d2")) == ["one", "sub", "two"]
    assert bucket_bytes(s3, bucket, "d2/sub/three") == b"sub/three"
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="d1/")
    assert not (p / "d1").exists()

    (p / "old").write_bytes(b"old")
    (p / "new").write_bytes(b"new")
    os.rename(p / "new", p / "old")
    assert bucket_bytes(s3, bucket, "old") == b"new"
    assert sorted(k["Key"] for k in s3.list_objects_v2(Bucket=bucket, Prefix="ne")["Contents"]
                  if True) == [] if "Contents" in s3.list_objects_v2(Bucket=bucket, Prefix="ne") else True

    os.chmod(p / "old", 0o604)
    subprocess.run(["touch", "-d", "2001-02-03 04:05:06.789 UTC", str(p / "old")], check=True)
    os.symlink("x/moved.bin", p / "link")
    os.symlink("../dangling target", p / "x/dangle")
    assert os.readlink(p / "link") == "x/moved.bin"
    m.unmount()

    head = s3.head_object(Bucket=bucket, Key="link")
    assert bucket_bytes(s3, bucket, "link") == b"x/moved.bin"  # s3fs: the body is the target
    assert stat.S_ISLNK(int(head["Metadata"]["mode"]))
    m2 = mounter(bucket)
    st = os.stat(m2.path / "old")
    assert stat.S_IMODE(st.st_mode) == 0o604
    assert st.st_mtime_ns == 981173106789000000
    assert os.readlink(m2.path / "link") == "x/moved.bin"
    assert os.readlink(m2.path / "x/dangle") == "../dangling target"
    assert (m2.path / "link").read_bytes() == big
    assert sorted(os.listdir(m2.path)) == ["d2", "excl", "link", "old", "x"]


def test_names_round_trip(s3, bucket, mounter):
    names = ["with space", "ünïcødé ✓", "per%cent", "plus+sign", "ques?tion", "hash#tag", "a=b&c"]
    m = mounter(bucket)
    for n in names:
        (m.path / n).write_bytes(n.encode())
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]) == sorted(names)
    m.unmount()
    m2 = mounter(bucket)
    assert sorted(os.listdir(m2.path)) == sorted(names)
    for n in names:
        assert (m2.path / n).read_bytes() == n.encode()


def test_long_names(s3, bucket, mounter):
    m = mounter(bucket)
    with pytest.raises(OSError) as info:
        (m.path / ("n" * 256)).write_bytes(b"x")
    assert info.value.errno == errno.ENAMETOOLONG
    deep = m.path
    parts = []
    while len("/".join(parts)) < 1100:
        parts.append("d" * 200)
    with pytest.raises(OSError) as info:
        (m.path / "/".join(parts)).mkdir(parents=True)
    assert info.value.errno == errno.ENAMETOOLONG
    ok = "/".join(["e" * 200] * 4) + "/" + "f" * 100  # 904 bytes
    (m.path / ok).parent.mkdir(parents=True)
    (m.path / ok).write_bytes(b"ok")
    assert bucket_bytes(s3, bucket, ok) == b"ok"
    del deep


def test_object_and_prefix_of_the_same_name(s3, bucket, mounter):
    s3.put_object(Bucket=bucket, Key="both", Body=b"file body")
    s3.put_object(Bucket=bucket, Key="both/inner", Body=b"inner")
    m = mounter(bucket)
    assert os.listdir(m.path) == ["both"]
    assert (m.path / "both").is_file() and (m.path / "both").read_bytes() == b"file body"
    assert "both" in m.log and "is both an object and a prefix" in m.log


def test_request_counts_for_rsync_of_100_small_files(s3, bucket, mounter, proxy, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rng = random.Random(5)
    for i in range(100):
        (src / f"f{i:03d}.txt").write_bytes(rng.randbytes(rng.randrange(0, 5000)))
    m = mounter(bucket, endpoint=proxy.url)
    proxy.clear_log()
    rsync(src, m.path)
    first = {op: proxy.count(op) for op in {r.op for r in proxy.log}}
    proxy.clear_log()
    assert rsync(src, m.path, "--itemize-changes") == ""
    second = {op: proxy.count(op) for op in {r.op for r in proxy.log}}
    print("rsync -a of 100 small files, requests by operation: first", first, "second", second)
    # first run: per file a PUT of the temp file, one COPY carrying utimens+chmod+chown with the
    # rename, one DELETE of the temp name; names are answered from one LIST of the directory
    assert first.get("PutObject", 0) == 100
    assert first.get("CopyObject", 0) <= 100
    assert first.get("DeleteObject", 0) <= 100
    assert first.get("HeadObject", 0) <= 5
    # one LIST answers every miss for 2 s (NEGATIVE_TTL): a slow run lists again
    assert first.get("ListObjectsV2", 0) <= 20
    assert sum(first.values()) <= 330
    # second run: nothing to transfer, and no request per file
    assert sum(second.values()) <= 5, second
    for i in range(100):
        assert bucket_bytes(s3, bucket, f"f{i:03d}.txt") == (src / f"f{i:03d}.txt").read_bytes()
    m.unmount()
    m2 = mounter(bucket, endpoint=proxy.url, remount=m)
    proxy.clear_log()
    assert rsync(src, m2.path, "--itemize-changes") == ""
    after_remount = {op: proxy.count(op) for op in {r.op for r in proxy.log}}
    assert sum(after_remount.values()) <= 5, after_remount
    assert m2.path.exists()


def test_file_created_by_another_client_shows_up_quickly(s3, bucket, mounter):
    m = mounter(bucket)
    assert not (m.path / "later").exists()  # a miss: the directory is listed
    s3.put_object(Bucket=bucket, Key="later", Body=b"from elsewhere")
    import time

    time.sleep(2.5)  # NEGATIVE_TTL
    assert (m.path / "later").read_bytes() == b"from elsewhere"
