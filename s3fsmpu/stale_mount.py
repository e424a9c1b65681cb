"""What sits on a mount point: nothing, a live mount, another filesystem, or a
mount left dead by a killed s3fsmpu, and detaching the dead one.

A killed mount stays in the mount table, and every request into it fails with
ENOTCONN until it is unmounted. Only a `fuse.s3fsmpu` entry whose process is
gone and whose kernel connection answers ENOTCONN counts as dead; anything else
there is somebody's live data and is left alone.
"""

from __future__ import annotations

import enum
import errno
import logging
import os
import subprocess
import threading

from s3fsmpu.mountinfo import MOUNTINFO, MountEntry, find_mount
from s3fsmpu.runtime import forget, running_pid

log = logging.getLogger(__name__)

FSTYPE = "fuse.s3fsmpu"  # what mount.py's subtype=s3fsmpu shows in mountinfo
PROBE_TIMEOUT = 5.0
DEAD_ERRNOS = (errno.ENOTCONN, errno.ECONNABORTED)  # the connection aborted: its daemon is gone


class Occupant(enum.Enum):
    NOTHING = "nothing mounted"
    LIVE = "a live s3fsmpu mount"
    DEAD = "a dead s3fsmpu mount"
    OTHER = "another filesystem"


class DetachError(Exception):
    """fusermount3 could not detach the dead mount; the message is its last line."""


def probe(path: str, timeout: float = PROBE_TIMEOUT) -> int | None:
    """The errno statfs on `path` gets (0 if it answers), or None with no answer in `timeout`.

    statfs always goes to the filesystem (the kernel caches no answer, unlike
    stat's attributes), so a dead connection says ENOTCONN at once; a hung but
    live daemon must not hang the caller, hence the thread.
    """
    result: list[int] = []

    def run() -> None:
        try:
            os.statvfs(path)
            result.append(0)
        except OSError as exc:
            result.append(exc.errno or errno.EIO)

    thread = threading.Thread(target=run, name="statfs-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return result[0] if result else None


def occupant(path: str, mountinfo: str = MOUNTINFO) -> tuple[Occupant, MountEntry | None]:
    """Who holds `path`, and its mountinfo entry; reads mountinfo before touching the mount."""
    entry = find_mount(path, mountinfo)
    if entry is None:
        return Occupant.NOTHING, None
    if entry.fstype != FSTYPE:
        return Occupant.OTHER, entry
    if running_pid(path) is not None:
        return Occupant.LIVE, entry
    if probe(path) in DEAD_ERRNOS:
        return Occupant.DEAD, entry
    return Occupant.LIVE, entry


def detach(path: str, entry: MountEntry) -> None:
    """Lazily unmount the dead mount on `path` and drop its pid file and socket.

    fusermount3 works for the user who mounted it as well as for root. Run as
    root it detaches any filesystem (a tmpfs too), so only call this on what
    `occupant` found DEAD.
    """
    r = subprocess.run(["fusermount3", "-u", "-z", path], capture_output=True, text=True, timeout=30, check=False)
    if r.returncode != 0:
        lines = r.stderr.strip().splitlines()
        raise DetachError(lines[-1] if lines else f"fusermount3 -uz {path} failed")
    forget(path)
    what = entry.source.removeprefix("s3fsmpu#") or "?"
    log.warning("detached the dead s3fsmpu mount of %s on %s (its process had exited)", what, path)
