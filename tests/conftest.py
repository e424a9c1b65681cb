"""Shared fixtures: a real moto server on 127.0.0.1, buckets, and real kernel mounts.

Mount tests run the installed `s3fsmpu` command exactly as a user would and
check results both through the mount and directly in the bucket via boto3.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from s3fsmpu.local_server import start_moto

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("AWS_PROFILE", None)

S3FSMPU = str(Path(sys.executable).with_name("s3fsmpu"))


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    proc, url = start_moto()
    yield url
    proc.terminate()
    proc.wait(10)


def make_client(url: str) -> object:
    return boto3.client(
        "s3", endpoint_url=url, region_name="us-east-1",
        config=Config(retries={"mode": "standard", "total_max_attempts": 3},
                      s3={"addressing_style": "path"}, max_pool_connections=32),
    )


@pytest.fixture(scope="session")
def s3(moto_url: str) -> object:
    """A plain boto3 client straight to moto: how tests read what is really in the bucket."""
    return make_client(moto_url)


@pytest.fixture
def bucket(s3: object) -> str:
    name = "t-" + uuid.uuid4().hex[:16]
    s3.create_bucket(Bucket=name)  # type: ignore[attr-defined]
    return name


def bucket_bytes(s3: object, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()  # type: ignore[attr-defined, no-any-return]


def open_uploads(s3: object, bucket: str) -> list[dict]:
    return s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])  # type: ignore[attr-defined, no-any-return]


def empty_bucket(s3: Any, bucket: str) -> None:
    """Delete every object and abort every upload (and give moto its memory back:
    it keeps every object of the session)."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
    for u in open_uploads(s3, bucket):
        s3.abort_multipart_upload(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])


@dataclass
class Mount:
    path: Path
    cache_dir: Path
    bucket: str
    args: list[str] = field(default_factory=list)

    @property
    def log(self) -> str:
        p = self.cache_dir / "mount.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def pid(self) -> int | None:
        from s3fsmpu.cli import pid_file

        try:
            return int(Path(pid_file(str(self.path))).read_text())
        except (OSError, ValueError):
            return None

    def unmount(self) -> None:
        if os.path.ismount(self.path):
            r = subprocess.run([S3FSMPU, "unmount", str(self.path), "--timeout", "120"],
                               capture_output=True, text=True, timeout=150)
            assert r.returncode == 0, r.stderr
        assert not os.path.ismount(self.path)


# botocore's data cut to what a mount uses (s3fsmpu/store/slim_botocore.py) is kept per cache
# dir, and made by a child process (~1 s) where none is kept: the tests' mounts, each on a
# cache dir of its own, share one, made for this run
SHARED_BOTOCORE_CUT = Path(tempfile.mkdtemp(prefix="s3fsmpu-tests-botocore-"))
atexit.register(shutil.rmtree, SHARED_BOTOCORE_CUT, True)


def run_mount(location: str, mountpoint: Path, endpoint: str, cache_dir: Path, *extra: str,
              timeout: float = 60) -> subprocess.CompletedProcess[str]:
    if not os.path.lexists(cache_dir / "botocore"):
        cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (cache_dir / "botocore").symlink_to(SHARED_BOTOCORE_CUT)
    return subprocess.run(
        [S3FSMPU, "mount", location, str(mountpoint), "--endpoint-url", endpoint,
         "--region", "us-east-1", "--addressing-style", "path", "--cache-dir", str(cache_dir),
         "--log-level", "DEBUG", *extra],
        capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture
def mounter(tmp_path: Path, moto_url: str) -> Iterator[object]:
    """mounter(bucket_or_location, *options, endpoint=None) -> Mount; unmounted at teardown."""
    mounts: list[Mount] = []

    def mount(location: str, *extra: str, endpoint: str | None = None, remount: Mount | None = None) -> Mount:
        """With remount=M, reuse M's cache dir, as a user remounting on the same machine does."""
        n = len(mounts)
        mp = tmp_path / f"mnt{n}"
        mp.mkdir()
        cache = remount.cache_dir if remount is not None else tmp_path / f"cache{n}"
        r = run_mount(location, mp, endpoint or moto_url, cache, *extra)
        assert r.returncode == 0, f"mount failed: {r.stderr}\n{(cache / 'mount.log').read_text() if (cache / 'mount.log').exists() else ''}"
        m = Mount(mp, cache, location.split(":")[0], list(extra))
        mounts.append(m)
        return m

    yield mount
    errors = []
    for m in mounts:
        try:
            m.unmount()
        except Exception as exc:  # noqa: BLE001 - keep unmounting the others
            errors.append(f"{m.path}: {exc}")
            subprocess.run(["fusermount3", "-uz", str(m.path)], capture_output=True)
        if "Traceback" in m.log:
            errors.append(f"traceback in mount log {m.cache_dir}/mount.log:\n{m.log[-3000:]}")
    assert not errors, "\n".join(errors)


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


@pytest.fixture
def proxy(moto_url: str) -> Iterator[object]:
    """A fault-injecting HTTP/1.1 proxy in front of moto; mount with endpoint=proxy.url."""
    from tests.faultproxy import FaultProxy

    p = FaultProxy(moto_url)
    p.start()
    yield p
    p.stop()


def vm_kib(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise KeyError(field_name)
