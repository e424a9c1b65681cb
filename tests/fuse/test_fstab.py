"""`mount -t fuse.s3fsmpu` (as an fstab line does) and `umount`."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from tests.conftest import bucket_bytes

pytestmark = pytest.mark.fuse


@pytest.mark.skipif(not os.path.exists("/sbin/mount.fuse.s3fsmpu"), reason="scripts/setup installs the helper")
def test_mount_t_fuse_s3fsmpu_and_umount(s3, bucket, moto_url, tmp_path):
    mp = tmp_path / "fstab"
    mp.mkdir()
    s3.put_object(Bucket=bucket, Key="plain", Body=b"x")
    opts = (f"_netdev,nofail,x-systemd.automount,rw,endpoint_url={moto_url},region=us-east-1,"
            f"addressing_style=path,part_size=5MiB,cache_dir={tmp_path / 'cache'},file_mode=0600")
    r = subprocess.run(["mount", "-t", "fuse.s3fsmpu", bucket, str(mp), "-o", opts],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    try:
        assert os.path.ismount(mp)
        (mp / "via-fstab.txt").write_bytes(b"hello")
        assert bucket_bytes(s3, bucket, "via-fstab.txt") == b"hello"
        assert os.stat(mp / "plain").st_mode & 0o777 == 0o600
    finally:
        u = subprocess.run(["umount", str(mp)], capture_output=True, text=True, timeout=60)
    assert u.returncode == 0, u.stderr
    deadline = time.monotonic() + 10
    while os.path.ismount(mp) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.ismount(mp)
    assert shutil.which("mount")
