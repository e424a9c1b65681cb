"""Inode numbers for paths, with the kernel's lookup counts.

An inode stands for a path below the mount root ("" is the root). It lives
while the kernel holds a lookup reference or a handle is open; `forget`
drops it. Renames move the paths of an inode and of everything below it.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from s3fsmpu.upload.driver import UploadSession

ROOT_INODE = 1


class Kind(enum.Enum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"


@dataclass(slots=True)  # one per inode the kernel holds: ~250 bytes with slots, not ~600
class Node:
    inode: int
    path: str
    kind: Kind
    size: int = 0
    mode: int = 0
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0
    etag: str | None = None
    cache_etag: str | None = None  # the version the kernel's page cache holds pages of
    metadata: dict[str, str] | None = None  # None: not known yet (from LIST)
    content_type: str | None = None
    fetched_at: float = float("-inf")  # monotonic time the attributes came from S3 (STALE: ask again)
    lookups: int = 0
    meta_pending: bool = False  # attributes changed here, not yet copied to S3
    changes: int = 0  # local changes of its attributes: an S3 answer asked for before one is older
    open_handles: int = 0
    writer: UploadSession | None = field(default=None, repr=False)

    @property
    def unlinked(self) -> bool:
        """Its name was removed while it was still open or referenced."""
        return self.path.startswith("\0")


UNLINKED = "\0deleted\0"
# fetched_at of attributes that must be asked for again, whatever --attr-timeout says
# (0.0 would count as fresh for the first attr_timeout seconds of the clock, and always
# with --attr-timeout indefinite)
STALE = float("-inf")


class InodeTable:
    def __init__(self, on_drop: Callable[[Node], None] | None = None) -> None:
        self._on_drop = on_drop  # told of each node leaving the table (its listing keeps what it knew)
        self._by_inode: dict[int, Node] = {}
        self._by_path: dict[str, Node] = {}
        self._next = itertools.count(ROOT_INODE + 1)
        self._high = 0  # most nodes held since the dicts were last rebuilt

    def add_root(self, node: Node) -> None:
        node.inode = ROOT_INODE
        node.lookups = 1  # never forgotten
        self._by_inode[ROOT_INODE] = self._by_path[""] = node

    def get(self, inode: int) -> Node | None:
        return self._by_inode.get(inode)

    def by_path(self, path: str) -> Node | None:
        return self._by_path.get(path)

    def add(self, node: Node) -> Node:
        """Register `node` for its path, reusing the inode of a live node of that path."""
        existing = self._by_path.get(node.path)
        if existing is not None:
            return existing
        node.inode = next(self._next)
        self._by_inode[node.inode] = self._by_path[node.path] = node
        self._high = max(self._high, len(self._by_inode))
        return node

    def forget(self, inode: int, count: int) -> None:
        node = self._by_inode.get(inode)
        if node is None or inode == ROOT_INODE:
            return
        node.lookups = max(0, node.lookups - count)
        self.drop_if_unused(node)

    def drop_if_unused(self, node: Node) -> None:
        if node.lookups == 0 and node.open_handles == 0 and node.writer is None and not node.meta_pending:
            self._by_inode.pop(node.inode, None)
            if self._by_path.get(node.path) is node:
                del self._by_path[node.path]
            if self._on_drop is not None:
                self._on_drop(node)
            if self._high > 1024 and len(self._by_inode) * 4 < self._high:
                self._shrink()

    def _shrink(self) -> None:
        """A dict never gives back the slots of deleted keys: after the kernel forgot a huge
        directory's entries, copies free them (amortized: at most once per 3/4 dropped)."""
        self._by_inode, self._by_path = dict(self._by_inode), dict(self._by_path)
        self._high = len(self._by_inode)

    def unlink_path(self, path: str) -> None:
        """The name is gone; the inode lives on while referenced."""
        node = self._by_path.pop(path, None)
        if node is not None:
            node.path = UNLINKED + path

    def subtree(self, path: str) -> list[Node]:
        """The known node at `path` and, if it may be a directory, every known node below it.

        Only a directory (or a path not known) costs a scan of the table: a
        file rename, rsync's every file, must not grow with the tree.
        """
        node = self._by_path.get(path)
        if node is not None and node.kind is not Kind.DIR:
            return [node]
        return [n for p, n in self._by_path.items() if p == path or path == "" or p.startswith(path + "/")]

    def move(self, old: str, new: str) -> None:
        """Rename `old` (and, for a directory, everything below it) to `new`."""
        self.unlink_path(new)
        moves = [(n.path, n) for n in self.subtree(old)]
        for p, _ in moves:
            del self._by_path[p]
        for p, n in moves:
            n.path = new + p[len(old):]
            self._by_path[n.path] = n

    def nodes(self) -> list[Node]:
        return list(self._by_inode.values())
