"""Where a running mount can be found: its pid file and control socket, by mountpoint."""

from __future__ import annotations

import os


def run_dir() -> str:
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/s3fsmpu-{os.getuid()}"
    path = os.path.join(base, "s3fsmpu")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def _name(mountpoint: str) -> str:
    return os.path.realpath(mountpoint).strip("/").replace("/", "_") or "root"


def pid_file(mountpoint: str) -> str:
    return os.path.join(run_dir(), _name(mountpoint) + ".pid")


def socket_path(mountpoint: str) -> str:
    """Unix sockets have a ~107-byte path limit: long mountpoints get a hashed name."""
    path = os.path.join(run_dir(), _name(mountpoint) + ".sock")
    if len(path.encode()) > 100:
        import hashlib

        path = os.path.join(run_dir(), hashlib.sha256(_name(mountpoint).encode()).hexdigest()[:24] + ".sock")
    return path
