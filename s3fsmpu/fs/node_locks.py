"""One change at a time to the key of a node: the self-copy against rename, unlink, overwrite.

A server-side copy is not atomic against a DELETE of its own key: S3 (and
moto) read the source, then write the destination, so a DELETE that lands
in between is undone and the key comes back. The background self-copy of
changed attributes (CopyObject k -> k) therefore must never overlap a
rename's or an unlink's DELETE of k, nor an upload that replaces k. Every
such operation holds the locks of the nodes whose keys it changes; locks
exist only while held or awaited, so a huge tree costs nothing here.
Several locks are taken in inode order, so two operations cannot deadlock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from s3fsmpu.fs.inodes import Node


class NodeLocks:
    def __init__(self) -> None:
        self._locks: dict[int, tuple[trio.Lock, list[int]]] = {}  # inode -> lock, users

    @asynccontextmanager
    async def hold(self, *nodes: Node | None) -> AsyncIterator[None]:
        """Hold the locks of `nodes` (None and unregistered nodes are skipped)."""
        inodes = sorted({n.inode for n in nodes if n is not None and n.inode != 0})
        held: list[int] = []
        try:
            for inode in inodes:
                lock, users = self._locks.setdefault(inode, (trio.Lock(), [0]))
                users[0] += 1
                held.append(inode)
                await lock.acquire()
            yield
        finally:
            for inode in reversed(held):
                lock, users = self._locks[inode]
                if lock.locked() and lock.statistics().owner is trio.lowlevel.current_task():
                    lock.release()
                users[0] -= 1
                if users[0] == 0:
                    del self._locks[inode]

    def busy(self, node: Node) -> bool:
        return node.inode in self._locks
