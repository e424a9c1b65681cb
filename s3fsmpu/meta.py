"""File attributes in S3 user metadata, compatible with s3fs-fuse (and rclone's mtime).

s3fs-fuse writes `mtime` (decimal seconds, optional fraction), `mode` (decimal,
with the file-type bits), `uid` and `gid`; rclone writes `mtime` as float
seconds too. Objects without metadata fall back to Last-Modified and the
mount's defaults.
"""

from __future__ import annotations

import stat
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

NS = 1_000_000_000


@dataclass(frozen=True)
class FileAttrs:
    mode: int  # with S_IFMT bits
    uid: int
    gid: int
    mtime_ns: int


def format_mtime(mtime_ns: int) -> str:
    sign = "-" if mtime_ns < 0 else ""
    seconds, frac = divmod(abs(mtime_ns), NS)
    return f"{sign}{seconds}.{frac:09d}" if frac else f"{sign}{seconds}"


def parse_mtime(text: str) -> int | None:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    return int(value * NS)


def _int(meta: Mapping[str, str], name: str) -> int | None:
    try:
        return int(meta[name])
    except (KeyError, ValueError):
        return None


def decode(
    meta: Mapping[str, str] | None,
    *,
    default_mode: int,
    uid: int,
    gid: int,
    last_modified_ns: int,
) -> FileAttrs:
    """Attributes of an object; `default_mode` carries the expected file type."""
    meta = meta or {}
    mode = _int(meta, "mode")
    if mode is None or stat.S_IFMT(mode) == 0:
        perm = mode & 0o7777 if mode is not None else stat.S_IMODE(default_mode)
        mode = stat.S_IFMT(default_mode) | perm
    mtime = parse_mtime(meta["mtime"]) if "mtime" in meta else None
    meta_uid, meta_gid = _int(meta, "uid"), _int(meta, "gid")
    return FileAttrs(
        mode,
        meta_uid if meta_uid is not None and meta_uid >= 0 else uid,
        meta_gid if meta_gid is not None and meta_gid >= 0 else gid,
        mtime if mtime is not None else last_modified_ns,
    )


def encode(mode: int, uid: int, gid: int, mtime_ns: int | None) -> dict[str, str]:
    out = {"mode": str(mode), "uid": str(uid), "gid": str(gid)}
    if mtime_ns is not None:
        out["mtime"] = format_mtime(mtime_ns)
    return out
