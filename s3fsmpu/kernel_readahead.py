"""The kernel's read-ahead for a FUSE mount, raised so that reads arrive 1 MiB at a time.

A FUSE mount gets the kernel's default read-ahead of 128 KiB, so a
sequential `cat` reaches the filesystem as 128 KiB requests: 8,192 Python
dispatches per GiB, which caps reads well below what S3 can deliver. libfuse
already negotiates 1 MiB requests (max_pages 256, as for writes); only the
backing device's `read_ahead_kb` holds reads back, and it can be raised
after the mount exists. Only root may write it: other users keep 128 KiB.

It has to happen after the kernel has processed the FUSE_INIT answer, which
sets the device's read-ahead to at most what the kernel offered (128 KiB).
So `tune_read_ahead` runs in the mount's nursery once the loop is serving:
a stat() of the mountpoint from a worker thread returns only after INIT.
The device is then found in mountinfo.
"""

from __future__ import annotations

import logging
import os

import trio

from s3fsmpu.mountinfo import MOUNTINFO, find_mount

log = logging.getLogger(__name__)

# Two 1 MiB requests in flight: the kernel keeps one being answered while it
# asks for the next; the filesystem's own prefetch covers the rest.
DEFAULT_KIB = 2048


def raise_read_ahead(mountpoint: str, kib: int = DEFAULT_KIB, sysfs: str = "/sys/class/bdi",
                     mountinfo: str = MOUNTINFO) -> bool:
    """Set the mount's read_ahead_kb to at least `kib`; False (and a debug line) if it can't be."""
    entry = find_mount(mountpoint, mountinfo)
    if entry is None:
        log.info("read-ahead stays at the kernel's default: %s not found in mountinfo", mountpoint)
        return False
    path = os.path.join(sysfs, entry.device, "read_ahead_kb")
    try:
        with open(path, encoding="ascii") as f:
            current = int(f.read().strip())
        if current >= kib:
            return True
        with open(path, "w", encoding="ascii") as f:
            f.write(str(kib))
    except (OSError, ValueError) as exc:
        log.info("read-ahead stays at the kernel's default: cannot set %s to %d KiB (%s)", path, kib, exc)
        return False
    log.debug("read-ahead: %s = %d KiB (was %d)", path, kib, current)
    return True


async def tune_read_ahead(mountpoint: str, kib: int = DEFAULT_KIB) -> None:
    """Raise the read-ahead once the FUSE loop has answered INIT (start before pyfuse3.main)."""
    try:
        await trio.to_thread.run_sync(os.stat, mountpoint, abandon_on_cancel=True)
    except OSError as exc:
        log.info("read-ahead stays at the kernel's default: stat %s failed (%s)", mountpoint, exc)
        return
    raise_read_ahead(mountpoint, kib)
