"""The embedded S3 server behind `mount --local`: moto's server on 127.0.0.1.

It runs as a child process of the mount and dies with it (PR_SET_PDEATHSIG),
so an unmount or a crash never leaves it behind. Its data lives in memory.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "s3fsmpu-local", "AWS_SECRET_ACCESS_KEY": "s3fsmpu-local"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    PR_SET_PDEATHSIG = 1
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start_moto(port: int | None = None, env: dict[str, str] | None = None,
               timeout: float = 30.0) -> tuple[subprocess.Popen[bytes], str]:
    """Start moto's server on 127.0.0.1; return the process and its URL once it answers."""
    port = port or free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        # prctl in the child before exec, no lock taken: the server dies with the mount
        env={**os.environ, **(env or {})}, preexec_fn=_die_with_parent,  # noqa: PLW1509
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the embedded S3 server exited with code {proc.returncode}")
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1).close()
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the embedded S3 server did not start within {timeout:.0f} s")
