"""Lookups and listings: what a path is in S3 now, and the negative cache.

A lookup answers from a fresh listing of its directory where one exists (a
readdir's, of any size, or one it made of a small directory: one LIST for
every later miss), else HEADs the key. Listings page through ListObjectsV2
and fetch directory markers for their modes; "no such name" is trusted for
NEGATIVE_TTL at most. Memory stays bounded in huge directories: a listing is
kept packed (fs/listing.py), an open directory holds one page of nodes, and a
node lives only while the kernel holds it (`forget`) or a page is being read.
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
from s3fsmpu.fs.listing import Listing, entry_of
from s3fsmpu.fs.state import MAX_NAME_BYTES, Attr, DirEntry, FsState

log = logging.getLogger(__name__)

# a directory this small is listed whole on a lookup miss, so later misses cost nothing
SMALL_DIR = 1000
# "no such name" from a listing is trusted this long at most: a file another
# client creates shows up within it, while rsync's misses still cost nothing
NEGATIVE_TTL = 2.0


class _ShadowingFiles:
    """File names a later `name/` prefix of the listing could collide with.

    In key order "a" < "a-1" < "a/": only the chain of file names that are
    prefixes of the latest key can still meet their prefix, so this stays
    short however long the directory is.
    """

    def __init__(self) -> None:
        self._chain: list[str] = []

    def add(self, name: str) -> None:
        self._trim(name)
        self._chain.append(name)

    def shadow(self, dir_name: str) -> bool:
        self._trim(dir_name + "/")
        return bool(self._chain) and self._chain[-1] == dir_name

    def _trim(self, key: str) -> None:
        while self._chain and not key.startswith(self._chain[-1]):
            self._chain.pop()


class DirHandle:
    """A directory listing, fetched page by page as readdir asks for it.

    It holds only the page readdir is in (the kernel asks with increasing
    offsets, and from 0 again after a rewinddir, which lists again); every
    entry passed is packed into the `Listing` that becomes the directory's
    negative cache when the last page is in.
    """

    def __init__(self, fs: Namespace, node: Node) -> None:
        self.fs = fs
        self.node = node
        self._start()

    def _start(self) -> None:
        self.page: list[tuple[str, Node]] = []
        self.page_start = 0  # the position of page[0] in the listing
        self._pages = self.fs._list_dir(self.node.path)
        self._listing = Listing(0.0)
        self._done = False

    async def entry(self, index: int) -> tuple[str, Node] | None:
        if index < self.page_start:
            self.drop_page()
            self._start()
        while index >= self.page_start + len(self.page) and not self._done:
            try:
                batch, _ = await self._pages.__anext__()
            except StopAsyncIteration:
                batch = self._local_pending()
                self._done = True
            self.drop_page()
            self.page_start += len(self.page)
            self.page = batch
            for name, child in batch:
                self._listing.append(name, entry_of(child))
                if child.kind is Kind.DIR and child.metadata:
                    self._listing.dir_meta[name] = dict(child.metadata)
            if self._done:
                self._listing.at = time.monotonic()
                self.fs._store_listing(self.node.path, self._listing.seal())
        i = index - self.page_start
        return self.page[i] if 0 <= i < len(self.page) else None

    def drop_page(self) -> None:
        """Nodes of the page the kernel took no reference on leave the inode table."""
        for _, child in self.page:
            if child.inode:
                self.fs.inodes.drop_if_unused(child)

    def _local_pending(self) -> list[tuple[str, Node]]:
        """Files created in this mount and not yet in S3 are listed too."""
        listed = self._listing.seal()
        return [(name, child) for name, child in self.fs._pending_children(self.node.path)
                if name not in listed]


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
        if listing is None and node is None and not self._known_big(dir_path):
            listing = await self._list_small_dir(dir_path)
        if listing is not None and name not in listing and self._fresh_listing(dir_path, NEGATIVE_TTL) is None:
            # too old to say "no such name": list again (one request, if the directory is small)
            listing = None if self._known_big(dir_path) else await self._list_small_dir(dir_path)
        if listing is None:
            return await self._resolve(path)
        listed = listing.get(name)
        if listed is None:
            raise NotFound(path)
        if node is not None and node.kind is Kind.DIR and listed.kind is Kind.DIR:
            return node  # listings leave a known directory as it is
        if node is not None or (listed.kind is not Kind.DIR and not listed.meta_known):
            return await self._resolve(path)  # a HEAD tells mode, mtime, symlink
        child = self._new_node(path, listed.kind)
        child.size, child.mode, child.uid, child.gid = listed.size, listed.mode, listed.uid, listed.gid
        child.mtime_ns, child.etag, child.fetched_at = listed.mtime_ns, listed.etag, listing.at
        if listed.kind is Kind.DIR:
            child.metadata = listing.dir_meta.get(name, {})
        elif listed.etag is not None:
            child.metadata = self.metacache.get(self.key_of(path), listed.etag)
        if child.metadata is None:
            return await self._resolve(path)  # fell out of the metadata cache
        return child

    def _fresh_listing(self, dir_path: str, ttl: float | None = None) -> Listing | None:
        listing = self._listings.get(dir_path)
        ttl = self.config.attr_timeout if ttl is None else min(ttl, self.config.attr_timeout)
        if listing is None or time.monotonic() - listing.at >= ttl:
            return None
        return listing

    def _known_big(self, dir_path: str) -> bool:
        """Listed in part lately and found longer than one page: a lookup HEADs instead."""
        seen = self._big_dirs.get(dir_path)
        return seen is not None and time.monotonic() - seen < self.config.attr_timeout

    def _store_listing(self, dir_path: str, listing: Listing) -> None:
        """Keep `listing`; drop the expired ones (a directory never visited again must not stay)."""
        now = time.monotonic()
        for p in [p for p, old in self._listings.items() if now - old.at >= self.config.attr_timeout]:
            del self._listings[p]
        self._listings[dir_path] = listing
        self._big_dirs.pop(dir_path, None)

    def _pending_children(self, dir_path: str) -> list[tuple[str, Node]]:
        """Files created in this mount and not yet in S3: listings show them too."""
        return [(child.path.rpartition("/")[2], child) for child in self.inodes.nodes()
                if child.writer is not None and not child.unlinked and child.path.rpartition("/")[0] == dir_path]

    async def _list_small_dir(self, dir_path: str) -> Listing | None:
        """One LIST page of the directory; a complete one becomes its listing."""
        pages = self._list_dir(dir_path, max_keys=SMALL_DIR)
        assert isinstance(pages, AsyncGenerator)
        try:
            batch, complete = await pages.__anext__()
        finally:
            await pages.aclose()
        if not complete:
            self._big_dirs[dir_path] = time.monotonic()
            return None
        listing = Listing(time.monotonic())
        for name, child in batch:
            listing.add_node(name, child)
        for name, child in self._pending_children(dir_path):
            if name not in listing:
                listing.add_node(name, child)
        self._store_listing(dir_path, listing)
        return listing

    def _known_absent(self, dir_path: str, name: str) -> bool:
        listing = self._fresh_listing(dir_path, NEGATIVE_TTL)
        return listing is not None and name not in listing

    def _listing_add(self, node: Node) -> None:
        parent, _, name = node.path.rpartition("/")
        listing = self._listings.get(parent)
        if listing is not None:
            listing.add_node(name, node)

    def _listing_remove(self, path: str) -> None:
        parent, _, name = path.rpartition("/")
        listing = self._listings.get(parent)
        if listing is not None:
            listing.remove(name)
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
        """Pages of (name, node) entries, and whether this page was the last one.

        The nodes are new unless the inode table has the path; nothing keeps them.
        """
        prefix = self.key_of(path, dir=True)
        token: str | None = None
        files = _ShadowingFiles()
        while True:
            page = await self.store.list_page(prefix, delimiter="/", token=token, max_keys=max_keys)
            batch: list[tuple[str, Node]] = []
            new_dirs: list[Node] = []
            keyed = [(p, None) for p in page.prefixes] + [(o.key, o) for o in page.objects]
            for key, info in sorted(keyed, key=lambda e: e[0]):
                name = key[len(prefix):].removesuffix("/") if info is None else key[len(prefix):]
                if info is not None and not name:
                    continue  # the directory's own marker
                if not name or name in (".", "..") or "/" in name or \
                        len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
                    log.warning("skipping key %r: not a valid file name", key)
                    continue
                child = self.inodes.by_path(self._join(path, name))
                if child is not None and child.writer is None and (child.kind is Kind.DIR) != (info is None):
                    # another client replaced a directory with a file or the other way round:
                    # the kernel's inode keeps its type, so the name gets a new one (found by
                    # the reference model: readdir showed a directory that lstat called a file)
                    self.inodes.unlink_path(child.path)
                    child = None
                if info is None:
                    if files.shadow(name):
                        # a key and a key/ prefix of the same name: the file wins (it sorts first)
                        log.warning("%r is both an object and a prefix: showing the object; the keys under "
                                    "%r/ are not reachable through this mount", self._join(path, name), name)
                        continue
                    if child is None or child.kind is not Kind.DIR:
                        child = self._new_node(self._join(path, name), Kind.DIR)
                        child.fetched_at = time.monotonic()
                    if child.metadata is None:
                        new_dirs.append(child)
                else:
                    files.add(name)
                    if child is None:
                        child = self._new_node(self._join(path, name), Kind.FILE)
                    if child.writer is None and child.kind is not Kind.DIR:
                        self._apply_info(child, info)
                batch.append((name, child))
            batch.sort(key=lambda e: e[0])
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
                dh.page[index - dh.page_start] = (name, node)
            index += 1
            yield DirEntry(name, self.attr(node), index)

    def readdir_accepted(self, entry: DirEntry, fh: int) -> None:
        """The kernel took the entry (readdirplus): it holds one lookup on it now."""
        self.node(entry.attr.inode).lookups += 1

    def releasedir(self, fh: int) -> None:
        dh = self._dirs.pop(fh, None)
        if dh is not None:
            dh.drop_page()

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
