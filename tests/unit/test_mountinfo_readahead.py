"""Finding a mount in mountinfo, and raising its device's read-ahead."""

from __future__ import annotations

from pathlib import Path

import trio

from s3fsmpu.config import MountConfig, S3Location
from s3fsmpu.kernel_readahead import raise_read_ahead
from s3fsmpu.mount import announce_when_tuned
from s3fsmpu.mountinfo import MountEntry, find_mount

MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:39 / /mnt/with\\040space rw,nosuid,nodev - fuse.s3fsmpu s3fsmpu\\043b rw,user_id=0
41 22 0:40 / /mnt/plain rw,nosuid,nodev - fuse.s3fsmpu s3fsmpu#b rw,user_id=0
42 41 0:41 / /mnt/plain rw,nosuid,nodev - fuse.s3fsmpu s3fsmpu#c rw,user_id=0
"""


def write_mountinfo(tmp_path: Path) -> str:
    path = tmp_path / "mountinfo"
    path.write_text(MOUNTINFO)
    return str(path)


def test_find_mount_unescapes_and_takes_the_top_mount(tmp_path: Path) -> None:
    info = write_mountinfo(tmp_path)
    assert find_mount("/mnt/with space", info) == MountEntry("0:39", "fuse.s3fsmpu", "s3fsmpu#b")
    assert find_mount("/mnt/plain/", info) == MountEntry("0:41", "fuse.s3fsmpu", "s3fsmpu#c")  # the last line is on top
    assert find_mount("/", info) == MountEntry("8:1", "ext4", "/dev/sda1")
    assert find_mount("/mnt/none", info) is None


def sysfs_with(tmp_path: Path, device: str, kib: int) -> Path:
    path = tmp_path / "bdi" / device / "read_ahead_kb"
    path.parent.mkdir(parents=True)
    path.write_text(f"{kib}\n")
    return path


def test_raises_but_never_lowers(tmp_path: Path) -> None:
    info = write_mountinfo(tmp_path)
    low = sysfs_with(tmp_path, "0:39", 128)
    assert raise_read_ahead("/mnt/with space", 2048, str(tmp_path / "bdi"), info)
    assert low.read_text() == "2048"
    high = sysfs_with(tmp_path, "0:41", 8192)
    assert raise_read_ahead("/mnt/plain", 2048, str(tmp_path / "bdi"), info)
    assert high.read_text() == "8192\n"


def test_missing_mount_or_device_is_not_an_error(tmp_path: Path) -> None:
    info = write_mountinfo(tmp_path)
    assert not raise_read_ahead("/mnt/none", 2048, str(tmp_path / "bdi"), info)
    assert not raise_read_ahead("/mnt/plain", 2048, str(tmp_path / "bdi"), info)  # no sysfs entry


def test_mount_is_announced_only_after_the_read_ahead_is_raised(tmp_path: Path) -> None:
    """`mount` returning before the tune would leave a `cat` started right after at 128 KiB reads."""
    events: list[str] = []

    async def slow_tune(mountpoint: str) -> None:
        events.append(f"tune {mountpoint}")
        await trio.sleep(0.05)
        events.append("tuned")

    config = MountConfig(S3Location("b"), str(tmp_path))
    trio.run(announce_when_tuned, config, lambda: events.append("ready"), slow_tune)
    assert events == [f"tune {tmp_path}", "tuned", "ready"]
