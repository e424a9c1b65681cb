"""Real kernel mounts: browsing, reading, prefix mounts, bad input, read-only."""

from __future__ import annotations

import errno
import hashlib
import http.server
import os
import random
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest

from s3fsmpu.cli import pid_alive, pid_file
from s3fsmpu.local_server import free_port
from s3fsmpu.mountinfo import find_mount
from tests.conftest import S3FSMPU, bucket_bytes, wait_for

MIB = 1 << 20

pytestmark = pytest.mark.fuse


def put_many(s3, bucket: str, keys: list[str], body: bytes = b"x") -> None:
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=body), keys))


def test_listing_2500_keys_is_complete_with_attributes(s3, bucket, mounter, proxy):
    keys = [f"many/f{i:05d}.txt" for i in range(2500)]
    put_many(s3, bucket, keys, b"12345")
    s3.put_object(Bucket=bucket, Key="many/sub/inner.bin", Body=b"z" * 10)
    s3.put_object(Bucket=bucket, Key="many/marked/", Body=b"")
    m = mounter(bucket, endpoint=proxy.url)
    proxy.clear_log()
    out = subprocess.run(["ls", "-l", str(m.path / "many")], capture_output=True, text=True, check=True)
    # readdir returns attributes: ~N/1000 LIST calls, not a HEAD per file
    assert proxy.count("ListObjectsV2") <= 6, proxy.count("ListObjectsV2")
    assert proxy.count("HeadObject") <= 3, proxy.count("HeadObject")
    file_lines = [line for line in out.stdout.splitlines() if line.startswith("-")]
    assert len(file_lines) == 2500
    assert all(line.split()[4] == "5" for line in file_lines)
    names = os.listdir(m.path / "many")
    assert len(names) == 2502
    assert set(names) == {k.split("/")[1] for k in keys} | {"sub", "marked"}
    assert (m.path / "many" / "sub").is_dir() and (m.path / "many" / "marked").is_dir()
    assert (m.path / "many" / "f01234.txt").stat().st_size == 5
    found = subprocess.run(["find", str(m.path)], capture_output=True, text=True, check=True)
    assert len(found.stdout.splitlines()) == 1 + 1 + 2502 + 1  # root, many, entries, inner.bin
    du = subprocess.run(["du", "-s", str(m.path)], capture_output=True, text=True, check=True)
    assert int(du.stdout.split()[0]) > 0


def test_read_40mib_sequential_and_random(s3, bucket, mounter):
    data = random.randbytes(40 << 20)
    s3.put_object(Bucket=bucket, Key="big.bin", Body=data)
    m = mounter(bucket)
    md5 = subprocess.run(["md5sum", str(m.path / "big.bin")], capture_output=True, text=True, check=True)
    assert md5.stdout.split()[0] == hashlib.md5(data).hexdigest()
    assert (m.path / "big.bin").read_bytes() == data
    rng = random.Random(7)
    fd = os.open(m.path / "big.bin", os.O_RDONLY)
    try:
        for _ in range(200):
            off = rng.randrange(0, len(data))
            n = rng.choice([1, 100, 4096, 70000, 1 << 20])
            assert os.pread(fd, n, off) == data[off : off + n]
    finally:
        os.close(fd)


def test_kernel_read_ahead_is_raised_to_1mib_requests(bucket, mounter):
    """Without it the kernel sends 128 KiB reads: 8,192 requests per GiB (issue 7).

    Raised before `mount` returns: a file keeps the read-ahead it was opened
    with, so a `cat` started right after the mount must already get it."""
    m = mounter(bucket)
    entry = find_mount(str(m.path))
    assert entry is not None and entry.fstype == "fuse.s3fsmpu"
    path = Path("/sys/class/bdi") / entry.device / "read_ahead_kb"
    assert int(path.read_text()) >= 2048


def test_cp_out_and_cat(s3, bucket, mounter, tmp_path):
    data = random.randbytes(3 << 20)
    s3.put_object(Bucket=bucket, Key="d/e/f.bin", Body=data)
    m = mounter(bucket)
    subprocess.run(["cp", str(m.path / "d/e/f.bin"), str(tmp_path / "out")], check=True)
    assert (tmp_path / "out").read_bytes() == data
    cat = subprocess.run(["cat", str(m.path / "d/e/f.bin")], capture_output=True, check=True)
    assert cat.stdout == data


def test_attributes_from_s3fs_metadata(s3, bucket, mounter):
    s3.put_object(Bucket=bucket, Key="meta.txt", Body=b"abc",
                  Metadata={"mtime": "1600000000.123456789", "mode": str(0o100600), "uid": "1234", "gid": "4321"})
    s3.put_object(Bucket=bucket, Key="plain.txt", Body=b"abcd")
    m = mounter(bucket, "--file-mode", "0640", "--uid", "77", "--gid", "88")
    st = os.stat(m.path / "meta.txt")
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o600, 1234, 4321)
    assert st.st_mtime_ns == 1600000000123456789
    st = os.stat(m.path / "plain.txt")
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid, st.st_size) == (0o640, 77, 88, 4)
    head = s3.head_object(Bucket=bucket, Key="plain.txt")
    assert abs(st.st_mtime - head["LastModified"].timestamp()) < 2


def test_prefix_mount_shows_only_the_prefix(s3, bucket, mounter):
    for key in ["top.txt", "sub/dir/a.txt", "sub/dir/b/c.txt", "sub/other.txt", "sub/dirx/no.txt"]:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    m = mounter(f"{bucket}:sub/dir")
    assert sorted(os.listdir(m.path)) == ["a.txt", "b"]
    assert (m.path / "a.txt").read_bytes() == b"sub/dir/a.txt"
    assert (m.path / "b" / "c.txt").read_bytes() == b"sub/dir/b/c.txt"
    (m.path / "new.txt").write_bytes(b"fresh")
    assert bucket_bytes(s3, bucket, "sub/dir/new.txt") == b"fresh"
    assert not (m.path / "top.txt").exists()


def test_read_only_refuses_writes(s3, bucket, mounter):
    s3.put_object(Bucket=bucket, Key="keep.txt", Body=b"keep")
    m = mounter(bucket, "--read-only")
    assert (m.path / "keep.txt").read_bytes() == b"keep"
    for action in (
        lambda: (m.path / "new.txt").write_bytes(b"x"),
        lambda: (m.path / "keep.txt").write_bytes(b"x"),
        lambda: (m.path / "dir").mkdir(),
        lambda: (m.path / "keep.txt").unlink(),
    ):
        with pytest.raises(OSError) as info:
            action()
        assert info.value.errno == errno.EROFS
    assert bucket_bytes(s3, bucket, "keep.txt") == b"keep"
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]) == ["keep.txt"]


# ---- bad input: one line, non-zero exit, within 15 s, nothing left behind ----------

class _DenyAll(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _deny(self) -> None:
        body = b'<?xml version="1.0"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>'
        if self.command == "HEAD":
            body = b""
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _deny

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def denying_endpoint():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _DenyAll)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _bad_mount(args: list[str], mountpoint: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    r = subprocess.run([S3FSMPU, "mount", *args], capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - t0
    return r, elapsed


def _assert_clean_failure(r: subprocess.CompletedProcess[str], elapsed: float, mountpoint: Path,
                          expect: str) -> None:
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert expect in lines[0].lower(), lines[0]
    assert elapsed < 15
    assert not os.path.ismount(mountpoint)

    def leftovers() -> str:
        return subprocess.run(["pgrep", "-f", f"s3fsmpu mount .*{mountpoint}"], capture_output=True,
                              text=True).stdout.strip()

    # the child that reported the error exits right after: a deadline, not a fixed sleep
    assert wait_for(lambda: leftovers() == "", timeout=10), f"stray processes: {leftovers()}"


@pytest.mark.parametrize("case", ["no-such-bucket", "access-denied", "unreachable", "missing-mountpoint",
                                  "not-a-directory", "non-empty", "unknown-option", "bad-size",
                                  "small-part-size"])
def test_bad_input_fails_fast_with_one_line(case, tmp_path, moto_url, denying_endpoint, bucket):
    mp = tmp_path / "mnt"
    mp.mkdir()
    endpoint, location, extra, expect = moto_url, bucket, [], ""
    if case == "no-such-bucket":
        location, expect = "no-such-bucket-here", "does not exist"
    elif case == "access-denied":
        endpoint, expect = denying_endpoint, "denied"
    elif case == "unreachable":
        endpoint, expect = f"http://127.0.0.1:{free_port()}", "cannot reach"
    elif case == "missing-mountpoint":
        mp, expect = tmp_path / "nope", "does not exist"
    elif case == "not-a-directory":
        mp = tmp_path / "file"
        mp.write_text("x")
        expect = "not a directory"
    elif case == "non-empty":
        (mp / "something").write_text("x")
        expect = "not empty"
    elif case == "unknown-option":
        extra, expect = ["--frobnicate"], "unrecognized"
    elif case == "bad-size":
        extra, expect = ["--part-size", "5XB"], "not a size"
    elif case == "small-part-size":
        extra, expect = ["--part-size", "1MiB"], "part-size"
    r, elapsed = _bad_mount([location, str(mp), "--endpoint-url", endpoint, "--region", "us-east-1",
                             "--cache-dir", str(tmp_path / "cache"), *extra], mp)
    _assert_clean_failure(r, elapsed, mp, expect)


def test_busy_mountpoint(bucket, mounter, moto_url, tmp_path):
    m = mounter(bucket)
    r, elapsed = _bad_mount([bucket, str(m.path), "--endpoint-url", moto_url, "--region", "us-east-1",
                             "--cache-dir", str(tmp_path / "c2")], m.path)
    assert r.returncode != 0
    assert len(r.stderr.strip().splitlines()) == 1 and "busy" in r.stderr
    assert elapsed < 15
    assert os.path.ismount(m.path)  # the first mount is untouched


def test_foreground_mount_unmounts_on_sigterm(bucket, moto_url, tmp_path, s3):
    mp = tmp_path / "fg"
    mp.mkdir()
    proc = subprocess.Popen(
        [S3FSMPU, "mount", bucket, str(mp), "--foreground", "--endpoint-url", moto_url, "--region",
         "us-east-1", "--cache-dir", str(tmp_path / "cache")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not os.path.ismount(mp) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert os.path.ismount(mp)
        (mp / "x.txt").write_bytes(b"fg")
        proc.terminate()
        assert proc.wait(30) == 0
        assert not os.path.ismount(mp)
        assert bucket_bytes(s3, bucket, "x.txt") == b"fg"
    finally:
        if proc.poll() is None:
            proc.kill()
        _, stderr = proc.communicate()
        assert "Traceback" not in stderr
        subprocess.run(["fusermount3", "-uz", str(mp)], capture_output=True)


def embedded_server(mount_pid: int) -> tuple[int, int]:
    """(pid, port) of the moto server a `--local` mount started as its child."""
    for task in Path(f"/proc/{mount_pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            if b"moto.server" in argv:
                return int(child), int(argv[argv.index(b"-p") + 1])
    raise AssertionError(f"mount process {mount_pid} has no moto.server child")


def accepts_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


def test_local_mode_needs_no_account_and_its_server_stops_with_the_mount(tmp_path):
    mp = tmp_path / "local"
    mp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    r = subprocess.run([S3FSMPU, "mount", "--local", "demo", str(mp), "--cache-dir", str(tmp_path / "c")],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    try:
        server_pid, port = embedded_server(int(Path(pid_file(str(mp))).read_text()))
        data = random.randbytes(6 * MIB + 123)  # a multipart upload
        (mp / "hello.bin").write_bytes(data)
        assert (mp / "hello.bin").read_bytes() == data
        assert os.listdir(mp) == ["hello.bin"]
        direct = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                              aws_access_key_id="any", aws_secret_access_key="any")
        assert bucket_bytes(direct, "demo", "hello.bin") == data
    finally:
        u = subprocess.run([S3FSMPU, "unmount", str(mp)], capture_output=True, text=True, timeout=60, check=False)
        assert u.returncode == 0, u.stderr
    assert not os.path.ismount(mp)
    assert wait_for(lambda: not pid_alive(server_pid), timeout=30), "embedded moto outlived its mount"
    assert not accepts_connections(port), f"something still answers on the embedded server's port {port}"
