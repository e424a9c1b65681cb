"""Where a running mount can be found: its pid file and control socket, by mountpoint,
and whether the process they name still runs."""

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


def pid_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it runs
        return True
    try:  # a zombie of ours is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def running_pid(mountpoint: str) -> int | None:
    """The pid of the s3fsmpu process serving `mountpoint`, or None.

    A pid file outlives a killed mount, and its pid may since belong to an
    unrelated process: only a live process whose command line names s3fsmpu counts,
    so nobody else gets signalled and a dead mount is not taken for a live one.
    """
    try:
        with open(pid_file(mountpoint)) as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except (OSError, ValueError):
        return None
    return pid if b"s3fsmpu" in cmdline and pid_alive(pid) else None


def forget(mountpoint: str) -> None:
    """Remove the pid file and control socket a dead mount left behind."""
    for path in (pid_file(mountpoint), socket_path(mountpoint)):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
