"""Lookups and listings: what a path is in S3 now, and the negative cache.

A lookup answers from a fresh listing of its directory where one exists, or
lists a small directory whole (one LIST for every later miss), else HEADs
the key. Listings page through ListObjectsV2 and fetch directory markers
for their modes; "no such name" is trusted for NEGATIVE_TTL at most.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator

import trio

from s3fsmpu.errors import (
    NotADirectory,
    NotFound,
    S3Error,
)
from s3fsmpu.fs.inodes import Kind, Node
from s3fsmpu.fs.state import MAX_NAME_BYTES, Attr, DirEntry, FsState

log = logging.getLogger(__name__)

# a directory this small is listed whole on a lookup miss, so later misses cost nothing
SMALL_DIR = 1000
# "no such name" from a listing is trusted this long at most: a file another
# client creates shows up within it, while rsync's misses still cost nothing
NEGATIVE_TTL = 2.0


class DirHandle:
    """A directory listing, fetched page by page as readdir asks for it."""

    def __init__(self, fs: Namespace, node: Node) -> None:
        self.fs = fs
        self.node = node
        self.entries: list[tuple[str, Node]] = []
        self._pages = fs._list_dir(node.path)
        self._done = False
        self._seen: set[str] = set()

    async def entry(self, index: int) -> tuple[str, Node] | None:
        while index >= len(self.entries) and not self._done:
            try:
                batch, _ = await self._pages.__anext__()
            except StopAsyncIteration:
                self._done = True
                self._add_local_pending()
                self.fs._listings[self.node.path] = (time.monotonic(), dict(self.entries))
                break
            for name, node in batch:
                if name not in self._seen:
                    self._seen.add(name)
                    self.entries.append((name, node))
        return self.entries[index] if index < len(self.entries) else None

    def _add_local_pending(self) -> None:
        """Files created in this mount and not yet in S3 are listed too."""
        base = self.node.path + "/" if self.node.path else ""
        for node in self.fs.inodes.nodes():
            if node.writer is None or node.unlinked or not node.path.startswith(base):
                continue
            name = node.path[len(base):]
            if name and "/" not in name and name not in self._seen:
                self._seen.add(name)
                self.entries.append((name, node))


class Namespace(FsState):
    async def _resolve(self, path: str) -> Node:
        """What `path` is in S3 now: a file/symlink object, or a directory."""
        key = self.key_of(path)
        known = self.inodes.by_path(path)
        changes = known.changes if known is not None else 0
        try:
            info = await self.store.head(key)
        except S3Error as exc:
            if exc.code != "NoSuchKey":
                raise
        else:
            node = self.inodes.by_path(path) or self._new_node(path, Kind.FILE)
            if node is known and node.changes != changes:
                # changed here while the HEAD was out (a copy with new attributes landed,
                # say): the answer is older than what the node shows
                node.fetched_at = time.monotonic()
                return node
            if node.kind is Kind.DIR:
                node.kind = Kind.FILE
            self._apply_info(node, info)
            return node
        page = await self.store.list_page(key + "/", delimiter="/", max_keys=1)
        if page.objects or page.prefixes:
            node = self.inodes.by_path(path) or self._new_node(path, Kind.DIR)
            node.kind = Kind.DIR
            marker = next((o for o in page.objects if o.key == key + "/"), None)
            if marker is not None and node.metadata is None:
                try:
                    self._apply_info(node, await self.store.head(marker.key))
                except S3Error:
                    node.fetched_at = time.monotonic()
            elif marker is None:
                # no marker (any more: another client may delete it): what a directory
                # without one shows, not what the marker this node once came from said
                node.mode, node.uid, node.gid = self._default_mode(Kind.DIR), self.config.uid, self.config.gid
                node.metadata = node.etag = None
            node.fetched_at = time.monotonic()
            return node
        raise NotFound(path)

    async def lookup(self, parent_inode: int, name: str) -> Attr:
        parent = self.node(parent_inode)
        if parent.kind is not Kind.DIR:
            raise NotADirectory(parent.path)
        path = self._child_path(parent, name)
        node = self.inodes.by_path(path)
        if node is None or not self._fresh(node):
            try:
                node = await self._lookup_in_listing(parent.path, name, node)
            except NotFound:
                if node is not None and node.writer is None:
                    # another client deleted it: the name is free, and a file created
                    # under it now replaces nothing (found by the reference model: the
                    # create's If-Match on the old ETag failed with EIO)
                    self.inodes.unlink_path(path)
                raise
        node = self.inodes.add(node)
        node.lookups += 1
        return self.attr(node)

    async def _lookup_in_listing(self, dir_path: str, name: str, node: Node | None) -> Node:
        """Answer from a fresh listing of the directory where one exists (or is cheap)."""
        path = self._join(dir_path, name)
        listing = self._fresh_listing(dir_path)
        if listing is None and node is None:
            listing = await self._list_small_dir(dir_path)
        if listing is None:
            return await self._resolve(path)
        listed = listing.get(name)
        if listed is None and self._fresh_listing(dir_path, NEGATIVE_TTL) is None:
            # too old to say "no such name": list again (one request for the whole directory)
            listing = await self._list_small_dir(dir_path)
            if listing is None:
                return await self._resolve(path)
            listed = listing.get(name)
        if listed is None:
            raise NotFound(path)
        if listed.kind is not Kind.DIR and listed.metadata is None:
            return await self._resolve(path)  # a HEAD tells mode, mtime, symlink
        return listed

    def _fresh_listing(self, dir_path: str, ttl: float | None = None) -> dict[str, Node] | None:
        listing = self._listings.get(dir_path)
        ttl = self.config.attr_timeout if ttl is None else min(ttl, self.config.attr_timeout)
        if listing is None or time.monotonic() - listing[0] >= ttl:
            return None
        return listing[1]

    async def _list_small_dir(self, dir_path: str) -> dict[str, Node] | None:
        """One LIST page of the directory; a complete one becomes its listing."""
        pages = self._list_dir(dir_path, max_keys=SMALL_DIR)
        assert isinstance(pages, AsyncGenerator)
        try:
            batch, complete = await pages.__anext__()
        finally:
            await pages.aclose()
        if not complete:
            return None
        entries: dict[str, Node] = {}
        for name, child in batch:
            entries.setdefault(name, child)
        for child in self.inodes.nodes():  # files created here and not in S3 yet
            if child.writer is not None and not child.unlinked and child.path.rpartition("/")[0] == dir_path:
                entries.setdefault(child.path.rpartition("/")[2], child)
        self._listings[dir_path] = (time.monotonic(), entries)
        return entries

    def _known_absent(self, dir_path: str, name: str) -> bool:
        listing = self._fresh_listing(dir_path, NEGATIVE_TTL)
        return listing is not None and name not in listing

    def _listing_add(self, node: Node) -> None:
        parent, _, name = node.path.rpartition("/")
        listing = self._listings.get(parent)
        if listing is not None:
            listing[1][name] = node

    def _listing_remove(self, path: str) -> None:
        parent, _, name = path.rpartition("/")
        listing = self._listings.get(parent)
        if listing is not None:
            listing[1].pop(name, None)
        for p in [p for p in self._listings if p == path or p.startswith(path + "/")]:
            del self._listings[p]

    async def getattr(self, inode: int) -> Attr:
        node = self.node(inode)
        if not self._fresh(node) and not node.path.startswith("\0"):
            try:
                fresh = await self._resolve(node.path)
            except NotFound:
                if node.open_handles == 0:
                    raise
            else:
                if fresh is not node:  # the path changed kind under us
                    node.kind, node.size, node.mode = fresh.kind, fresh.size, fresh.mode
                    node.mtime_ns, node.etag = fresh.mtime_ns, fresh.etag
        return self.attr(node)

    def forget(self, inode: int, count: int) -> None:
        self.inodes.forget(inode, count)

    async def _list_dir(self, path: str, max_keys: int = 1000) -> AsyncIterator[tuple[list[tuple[str, Node]], bool]]:
        """Pages of (name, node) entries, and whether this page was the last one."""
        prefix = self.key_of(path, dir=True)
        token: str | None = None
        while True:
            page = await self.store.list_page(prefix, delimiter="/", token=token, max_keys=max_keys)
            batch: list[tuple[str, Node]] = []
            new_dirs: list[Node] = []
            for p in page.prefixes:
                name = p[len(prefix):].rstrip("/")
                if not name or "/" in name or len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
                    log.warning("skipping key prefix %r: not a valid file name", p)
                    continue
                child = self.inodes.by_path(self._join(path, name))
                if child is None or child.kind is not Kind.DIR:
                    child = self._new_node(self._join(path, name), Kind.DIR)
                    child.fetched_at = time.monotonic()
                if child.metadata is None:
                    new_dirs.append(child)
                batch.append((name, child))
            for info in page.objects:
                name = info.key[len(prefix):]
                if not name:
                    continue  # the directory's own marker
                if name in (".", "..") or "/" in name or len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
                    log.warning("skipping key %r: not a valid file name", info.key)
                    continue
                child = self.inodes.by_path(self._join(path, name))
                if child is None:
                    child = self._new_node(self._join(path, name), Kind.FILE)
                if child.writer is None and child.kind is not Kind.DIR:
                    self._apply_info(child, info)
                batch.append((name, child))
            # a key and a key/ prefix of the same name: the file wins (it sorts first
            # and the listing keeps the first of a name); the prefix is logged
            names = [n for n, node in batch if node.kind is not Kind.DIR]
            for name in set(names) & {n for n, node in batch if node.kind is Kind.DIR}:
                log.warning("%r is both an object and a prefix: showing the object; the keys under "
                            "%r/ are not reachable through this mount", self._join(path, name), name)
            batch.sort(key=lambda e: (e[0], e[1].kind is Kind.DIR))
            await self._fetch_dir_markers(new_dirs)
            yield batch, page.next_token is None
            if page.next_token is None:
                return
            token = page.next_token

    async def _fetch_dir_markers(self, nodes: list[Node]) -> None:
        """Mode and mtime of listed directories live in their `dir/` markers: one HEAD each."""
        limiter = trio.CapacityLimiter(16)

        async def one(node: Node) -> None:
            async with limiter:
                try:
                    self._apply_info(node, await self.store.head(self.key_of(node.path, dir=True)))
                except S3Error as exc:
                    if exc.code != "NoSuchKey":
                        log.warning("HeadObject of directory marker %r: %s", node.path, exc)
                    node.metadata = {}  # no marker: the mount's defaults
                node.fetched_at = time.monotonic()

        async with trio.open_nursery() as nursery:
            for node in nodes:
                nursery.start_soon(one, node)

    def opendir(self, inode: int) -> int:
        node = self.node(inode)
        if node.kind is not Kind.DIR:
            raise NotADirectory(node.path)
        fh = self._alloc_fh()
        self._dirs[fh] = DirHandle(self, node)
        return fh

    async def readdir(self, fh: int, start_id: int) -> AsyncIterator[DirEntry]:
        """Entries from position `start_id`; the caller registers each one it passes on."""
        dh = self._dirs[fh]
        index = start_id
        while True:
            entry = await dh.entry(index)
            if entry is None:
                return
            name, node = entry
            if node.inode == 0:  # the kernel needs a real inode number with the entry
                node = self.inodes.add(node)
                dh.entries[index] = (name, node)
            index += 1
            yield DirEntry(name, self.attr(node), index)

    def readdir_accepted(self, entry: DirEntry, fh: int) -> None:
        """The kernel took the entry (readdirplus): it holds one lookup on it now."""
        self.node(entry.attr.inode).lookups += 1

    def releasedir(self, fh: int) -> None:
        dh = self._dirs.pop(fh, None)
        if dh is not None:
            for _, node in dh.entries:
                self.inodes.drop_if_unused(node)

    async def _exists(self, path: str) -> bool:
        try:
            await self._resolve(path)
            return True
        except NotFound:
            return False

    async def _exists_key(self, key: str) -> bool:
        try:
            await self.store.head(key)
            return True
        except S3Error as exc:
            if exc.code == "NoSuchKey":
                return False
            raise

    async def _resolve_or_local(self, path: str) -> Node:
        node = self.inodes.by_path(path)
        if node is not None and (node.writer is not None or self._fresh(node)):
            return node
        return await self._resolve(path)
