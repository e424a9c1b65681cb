"""Real kernel mounts on moto: a mount point left dead by a killed s3fsmpu (issue 15).

- `mount` on it detaches the dead mount (one WARNING line says so) and mounts:
  what was written before reads back, new writes reach the bucket, `status`
  answers the new mount, not the dead one's leftover socket.
- `unmount` on it detaches it at once with that line, and leaves no pid file
  or socket behind.
- a live s3fsmpu mount, a tmpfs, and a dead FUSE filesystem that is not
  s3fsmpu are refused with today's one-line error, and stay mounted.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from s3fsmpu.mountinfo import find_mount
from s3fsmpu.runtime import pid_alive, pid_file, socket_path
from tests.conftest import S3FSMPU, bucket_bytes, run_mount, wait_for

pytestmark = pytest.mark.fuse
BUSY = "is busy: something is already mounted there"
FUSE_NULL = Path(__file__).resolve().parents[2] / "scripts" / "fuse_null.py"


def kill_9(pid: int, mountpoint: Path) -> None:
    """SIGKILL the process serving `mountpoint`; its mount then answers ENOTCONN (or, for a
    request the kill caught, ECONNABORTED) but stays in the mount table."""
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: not pid_alive(pid), timeout=10), f"pid {pid} survived SIGKILL"
    with pytest.raises(OSError) as info:
        os.listdir(mountpoint)
    assert info.value.errno in (errno.ENOTCONN, errno.ECONNABORTED), info.value
    # still in the mount table: dead, not gone. Not os.path.ismount: it lstat()s the mount
    # point, which answers ENOTCONN (-> False) once the kernel's cached attributes expire.
    assert find_mount(str(mountpoint)) is not None


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


def test_mount_on_a_dead_mount_point_detaches_it_and_mounts(s3, bucket, mounter, moto_url):
    m = mounter(bucket)
    before = random.randbytes(300_000)
    (m.path / "before.bin").write_bytes(before)
    assert bucket_bytes(s3, bucket, "before.bin") == before
    pid = m.pid()
    assert pid is not None
    kill_9(pid, m.path)
    assert os.path.exists(socket_path(str(m.path)))  # the dead mount's leftovers

    r = run_mount(bucket, m.path, moto_url, m.cache_dir)
    assert r.returncode == 0, r.stderr + m.log[-3000:]
    line = one_line(r.stderr)
    assert "WARNING" in line and f"detached the dead s3fsmpu mount of {bucket} on {m.path}" in line
    new_pid = m.pid()
    assert new_pid is not None and new_pid != pid and pid_alive(new_pid)
    entries = [e for e in Path("/proc/self/mountinfo").read_text().splitlines() if f" {m.path} " in e]
    assert len(entries) == 1, entries  # the dead mount is gone, not buried under the new one

    assert (m.path / "before.bin").read_bytes() == before
    after = random.randbytes(6 << 20)
    (m.path / "after.bin").write_bytes(after)
    assert bucket_bytes(s3, bucket, "after.bin") == after
    st = subprocess.run([S3FSMPU, "status", str(m.path), "--json"], capture_output=True, text=True, timeout=30)
    assert st.returncode == 0, st.stderr
    assert json.loads(st.stdout)["totals"]["completed"] >= 1  # the new mount's count, not a dead socket


def test_unmount_of_a_dead_mount_point_detaches_it(bucket, mounter):
    m = mounter(bucket)
    pid = m.pid()
    assert pid is not None
    kill_9(pid, m.path)

    r = subprocess.run([S3FSMPU, "unmount", str(m.path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert f"detached the dead s3fsmpu mount of {bucket} on {m.path}" in one_line(r.stderr)
    assert not os.path.ismount(m.path) and os.listdir(m.path) == []
    assert not os.path.exists(pid_file(str(m.path))) and not os.path.exists(socket_path(str(m.path)))
    st = subprocess.run([S3FSMPU, "status", str(m.path)], capture_output=True, text=True, timeout=30)
    assert st.returncode != 0 and "no s3fsmpu mount answers" in one_line(st.stderr)


def test_a_live_mount_is_refused_and_keeps_serving(s3, bucket, mounter, moto_url, tmp_path):
    m = mounter(bucket)
    pid = m.pid()
    r = run_mount(bucket, m.path, moto_url, tmp_path / "other-cache")
    assert r.returncode != 0
    assert one_line(r.stderr) == f"s3fsmpu: mountpoint {m.path} {BUSY}"
    assert m.pid() == pid and pid_alive(pid)
    (m.path / "still.txt").write_bytes(b"served\n")
    assert bucket_bytes(s3, bucket, "still.txt") == b"served\n"


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    mp = tmp_path / "tmpfs"
    mp.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mp)], check=True, timeout=30)
    yield mp
    subprocess.run(["umount", "-l", str(mp)], capture_output=True, timeout=30)


def test_a_tmpfs_is_refused(bucket, moto_url, tmpfs, tmp_path):
    (tmpfs / "keep").write_text("mine")
    r = run_mount(bucket, tmpfs, moto_url, tmp_path / "cache")
    assert r.returncode != 0
    assert one_line(r.stderr) == f"s3fsmpu: mountpoint {tmpfs} {BUSY}"
    assert find_mount(str(tmpfs)).fstype == "tmpfs"
    assert (tmpfs / "keep").read_text() == "mine"


@pytest.fixture
def dead_foreign_fuse(tmp_path: Path) -> Iterator[Path]:
    """A pyfuse3 filesystem that is not s3fsmpu (fuse.fuse_null), killed with SIGKILL."""
    mp = tmp_path / "null"
    mp.mkdir()
    proc = subprocess.Popen([sys.executable, str(FUSE_NULL), str(mp)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: find_mount(str(mp)) is not None, timeout=30), "fuse_null did not mount"
        kill_9(proc.pid, mp)
        yield mp
    finally:
        proc.kill()
        proc.wait(10)
        subprocess.run(["fusermount3", "-uz", str(mp)], capture_output=True, timeout=30)


def test_a_dead_mount_of_another_fuse_filesystem_is_refused(bucket, moto_url, dead_foreign_fuse, tmp_path):
    r = run_mount(bucket, dead_foreign_fuse, moto_url, tmp_path / "cache")
    assert r.returncode != 0
    assert one_line(r.stderr) == f"s3fsmpu: mountpoint {dead_foreign_fuse} {BUSY}"
    assert find_mount(str(dead_foreign_fuse)).fstype == "fuse.fuse_null"
    un = subprocess.run([S3FSMPU, "unmount", str(dead_foreign_fuse)], capture_output=True, text=True, timeout=30)
    assert un.returncode != 0 and "is not an s3fsmpu mount" in one_line(un.stderr)
    assert find_mount(str(dead_foreign_fuse)) is not None
