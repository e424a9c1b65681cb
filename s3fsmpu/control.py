"""The control socket of a mount: `s3fsmpu status` and `unmount` ask it what is going on.

A Unix socket (mode 0600) beside the pid file; a client sends `status\\n`
and reads one JSON document. It only reports, it changes nothing.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

import trio

log = logging.getLogger(__name__)


async def serve_control(path: str, snapshot: Callable[[], dict[str, Any]],
                        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(path)
    os.chmod(path, 0o600)
    sock.listen(16)
    task_status.started()

    async def handle(stream: trio.SocketStream) -> None:
        try:
            with trio.move_on_after(5):
                await stream.receive_some(1024)
                await stream.send_all(json.dumps(snapshot()).encode() + b"\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            await stream.aclose()

    try:
        await trio.serve_listeners(handle, [trio.SocketListener(sock)])
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def query(path: str, timeout: float = 5.0) -> dict[str, Any]:
    """Blocking client: the mount's status. OSError if no mount answers there."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(b"status\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)  # type: ignore[no-any-return]
