"""What the kernel says is mounted where (/proc/self/mountinfo), without touching the mount.

Reading mountinfo never enters a FUSE filesystem, so it is safe on a stale
mount and from the mount process before its loop serves requests.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

MOUNTINFO = "/proc/self/mountinfo"


@dataclass(frozen=True)
class MountEntry:
    device: str  # MAJ:MIN, as in /sys/class/bdi
    fstype: str  # e.g. fuse.s3fsmpu
    source: str = ""  # the "mount source" field, e.g. s3fsmpu#bucket


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    out, i = [], 0
    while i < len(field):
        code = field[i + 1 : i + 4]
        if field[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def find_mount(path: str, mountinfo: str = MOUNTINFO) -> MountEntry | None:
    """The mount on top at `path` (the last one listed there), or None; `path` is not resolved."""
    target = os.path.normpath(os.path.abspath(path))
    found = None
    with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            if len(fields) < 5 or _unescape(fields[4]) != target or "-" not in fields[5:]:
                continue
            sep = fields.index("-", 5)
            if sep + 1 < len(fields):
                source = _unescape(fields[sep + 2]) if sep + 2 < len(fields) else ""
                found = MountEntry(fields[2], fields[sep + 1], source)
    return found
