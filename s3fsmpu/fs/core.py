"""S3Filesystem: the FUSE-agnostic core (namespace, attributes, handles).

Everything the mount does lives here and is testable without a kernel:
the pyfuse3 adapter only converts arguments and errors. Keys are
PREFIX + path; a directory is a common prefix or a `dir/` marker object.
Files being written in this mount are served from their upload session
(one per inode, shared by all handles), so reads see what was written.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import stat
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import trio

from s3fsmpu import meta as metadata
from s3fsmpu.config import MountConfig
from s3fsmpu.errors import (
    Exists,
    first_error,
    InvalidArgument,
    IsADirectory,
    NameTooLong,
    NotADirectory,
    NotEmpty,
    NotFound,
    ReadOnly,
    S3Error,
    S3FSError,
)
from s3fsmpu.fs.copy import copy_object
from s3fsmpu.fs.inodes import ROOT_INODE, InodeTable, Kind, Node
from s3fsmpu.fs.metacache import MetadataCache
from s3fsmpu.fs.node_locks import NodeLocks
from s3fsmpu.fs.reader import Reader
from s3fsmpu.retry import RetryPolicy
from s3fsmpu.store.base import ABSENT, Body, Expect, ObjectInfo, ObjectStore, WriteMeta
from s3fsmpu.store.retrying import RetryingStore
from s3fsmpu.upload.driver import Uploader

log = logging.getLogger(__name__)

MAX_KEY_BYTES = 1024
MAX_NAME_BYTES = 255
# chmod/chown/utimens of a closed file are copied to S3 after this long, unless
# a rename (rsync's next step) carries them in its own copy first
PENDING_META_DELAY = 1.0
# the mount root has no marker in a bucket mount: its attributes persist in the local cache
ROOT_META_KEY = "\0root"
# a directory this small is listed whole on a lookup miss, so later misses cost nothing
SMALL_DIR = 1000
# "no such name" from a listing is trusted this long at most: a file another
# client creates shows up within it, while rsync's misses still cost nothing
NEGATIVE_TTL = 2.0
BLOCK_SIZE = 1 << 20  # st_blksize: cp and friends pick their write size from it


@dataclass(frozen=True)
class Attr:
    inode: int
    kind: Kind
    size: int
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    blksize: int = BLOCK_SIZE

    @property
    def nlink(self) -> int:
        return 2 if self.kind is Kind.DIR else 1


@dataclass(frozen=True)
class DirEntry:
    name: str
    attr: Attr
    next_id: int


@dataclass
class Handle:
    node: Node
    writable: bool
    # the version this open reads: another client's newer one is an error (ESTALE), not a mix
    etag: str | None = None
    size: int = 0
    reader: Reader | None = None
    keep_cache: bool = False  # the kernel may keep the pages it has of this inode
    direct_io: bool = False  # bypass the page cache: another open reads another version from it


class DirHandle:
    """A directory listing, fetched page by page as readdir asks for it."""

    def __init__(self, fs: S3Filesystem, node: Node) -> None:
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


class S3Filesystem:
    def __init__(self, store: ObjectStore, config: MountConfig, uploader: Uploader | None,
                 nursery: trio.Nursery | None = None) -> None:
        up = config.upload
        self.policy = RetryPolicy(up.max_attempts, up.backoff_base, up.backoff_max)
        self.store: ObjectStore = RetryingStore(store, self.policy)  # type: ignore[assignment]
        self.config = config
        self.uploader = uploader
        # background tasks: read-ahead prefetch (uploads have the uploader's)
        self.nursery = nursery or (uploader.nursery if uploader is not None else None)
        self.prefix = config.location.prefix
        self.inodes = InodeTable()
        now = time.time_ns()
        self.inodes.add_root(
            Node(ROOT_INODE, "", Kind.DIR, mode=stat.S_IFDIR | config.dir_mode,
                 uid=config.uid, gid=config.gid, mtime_ns=now, fetched_at=float("inf"))
        )
        self._handles: dict[int, Handle] = {}
        self._dirs: dict[int, DirHandle] = {}
        self._next_fh = 1
        # names of directories listed completely, and when: negative lookups cost nothing
        self._listings: dict[str, tuple[float, dict[str, Node]]] = {}
        self._pending_meta: dict[int, float] = {}  # inode -> when its attributes changed
        self._moved_etags: dict[str, str | None] = {}  # new key -> ETag, during a directory rename
        self._locks = NodeLocks()  # a self-copy never overlaps a DELETE or upload of its key
        self._moving: set[str] = set()  # directories being renamed: no self-copy below them
        self.metacache = MetadataCache(
            config.cache_dir, f"{config.connection.endpoint_url}|{config.location.bucket}"
        )
        root_meta = self.metacache.get(ROOT_META_KEY, "local")
        if not root_meta:  # first mount here: keep the root's times stable across remounts
            root = self.node(ROOT_INODE)
            self.metacache.put(ROOT_META_KEY, "local", metadata.encode(root.mode, root.uid, root.gid,
                                                                        root.mtime_ns))
        if root_meta:
            root = self.node(ROOT_INODE)
            attrs = metadata.decode(root_meta, default_mode=root.mode, uid=root.uid, gid=root.gid,
                                    last_modified_ns=root.mtime_ns)
            root.mode, root.uid, root.gid, root.mtime_ns = attrs.mode, attrs.uid, attrs.gid, attrs.mtime_ns

    # ---- paths, keys, attributes ------------------------------------------
    def _child_path(self, parent: Node, name: str) -> str:
        if "/" in name or name in ("", ".", ".."):
            raise InvalidArgument(f"bad name {name!r}")
        if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            raise NameTooLong(name)
        path = f"{parent.path}/{name}" if parent.path else name
        if len(self.key_of(path).encode("utf-8", "surrogateescape")) > MAX_KEY_BYTES:
            raise NameTooLong(path)
        return path

    def key_of(self, path: str, dir: bool = False) -> str:
        key = self.prefix + path
        return key + "/" if dir and path else key

    def node(self, inode: int) -> Node:
        node = self.inodes.get(inode)
        if node is None:
            raise NotFound(f"inode {inode}")
        return node

    def attr(self, node: Node) -> Attr:
        size = node.writer.size if node.writer is not None else node.size
        return Attr(node.inode, node.kind, size, node.mode, node.uid, node.gid, node.mtime_ns)

    def _default_mode(self, kind: Kind) -> int:
        if kind is Kind.DIR:
            return stat.S_IFDIR | self.config.dir_mode
        return stat.S_IFREG | self.config.file_mode

    def _apply_info(self, node: Node, info: ObjectInfo) -> None:
        """Attributes from a HEAD (metadata known) or a LIST entry (metadata from the cache)."""
        if info.metadata is None:
            cached = self.metacache.get(info.key, info.etag)
            if cached is not None:
                info = dataclasses.replace(info, metadata=cached)
        elif node.kind is not Kind.DIR:
            self.metacache.put(info.key, info.etag, info.metadata)
        if node.meta_pending or (info.metadata is None and node.metadata is not None
                                 and node.etag == info.etag):
            node.fetched_at = time.monotonic()  # what we know is newer than S3's copy
            return
        attrs = metadata.decode(
            info.metadata,
            default_mode=self._default_mode(node.kind),
            uid=self.config.uid,
            gid=self.config.gid,
            last_modified_ns=int(info.last_modified * 1e9),
        )
        mode = attrs.mode
        if node.kind is Kind.DIR:
            mode = stat.S_IFDIR | stat.S_IMODE(mode)
        else:
            if stat.S_ISDIR(mode):
                mode = stat.S_IFREG | stat.S_IMODE(mode)
            node.kind = Kind.SYMLINK if stat.S_ISLNK(mode) else Kind.FILE
            node.size = info.size
        node.mode, node.uid, node.gid, node.mtime_ns = mode, attrs.uid, attrs.gid, attrs.mtime_ns
        node.etag = info.etag
        node.metadata = dict(info.metadata) if info.metadata is not None else None
        node.content_type = info.content_type
        node.fetched_at = time.monotonic()

    def _fresh(self, node: Node) -> bool:
        if node.writer is not None or node.inode == ROOT_INODE:
            return True
        return time.monotonic() - node.fetched_at < self.config.attr_timeout

    def _new_node(self, path: str, kind: Kind) -> Node:
        return Node(0, path, kind, mode=self._default_mode(kind), uid=self.config.uid,
                    gid=self.config.gid, mtime_ns=time.time_ns())

    # ---- lookups ----------------------------------------------------------
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
            node = await self._lookup_in_listing(parent.path, name, node)
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

    # ---- directories ------------------------------------------------------
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

    @staticmethod
    def _join(path: str, name: str) -> str:
        return f"{path}/{name}" if path else name

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

    async def mkdir(self, parent_inode: int, name: str, mode: int, uid: int, gid: int) -> Attr:
        self._check_writable()
        parent = self.node(parent_inode)
        path = self._child_path(parent, name)
        if len(self.key_of(path, dir=True).encode("utf-8", "surrogateescape")) > MAX_KEY_BYTES:
            raise NameTooLong(path)
        if await self._exists(path):
            raise Exists(path)
        dir_mode = stat.S_IFDIR | (mode & 0o7777)
        now = time.time_ns()
        try:
            etag = await self.store.put(
                self.key_of(path, dir=True), Body(0, data=b""),
                WriteMeta(metadata.encode(dir_mode, uid, gid, now), "application/x-directory"), ABSENT,
            )
        except S3Error as exc:
            if exc.code in ("PreconditionFailed", "412"):
                raise Exists(path) from exc  # another client made it meanwhile
            raise
        node = self._new_node(path, Kind.DIR)
        node.etag = etag or None
        node.mode, node.uid, node.gid, node.mtime_ns = dir_mode, uid, gid, now
        node.fetched_at = time.monotonic()
        node = self.inodes.add(node)
        node.lookups += 1
        self._listing_add(node)
        self._listings[path] = (time.monotonic(), {})  # a new directory is empty
        return self.attr(node)

    async def _exists(self, path: str) -> bool:
        try:
            await self._resolve(path)
            return True
        except NotFound:
            return False

    async def rmdir(self, parent_inode: int, name: str) -> None:
        self._check_writable()
        path = self._child_path(self.node(parent_inode), name)
        node = await self._resolve(path)
        if node.kind is not Kind.DIR:
            raise NotADirectory(path)
        prefix = self.key_of(path, dir=True)
        page = await self.store.list_page(prefix, delimiter="/", max_keys=2)
        if page.prefixes or any(o.key != prefix for o in page.objects):
            raise NotEmpty(path)
        if any(n.writer is not None and n.path.startswith(path + "/") for n in self.inodes.nodes()):
            raise NotEmpty(path)
        await self.store.delete(prefix)
        self.inodes.unlink_path(path)
        self._listing_remove(path)

    # ---- files ------------------------------------------------------------
    def _alloc_fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    def _check_writable(self) -> None:
        if self.config.read_only or self.uploader is None:
            raise ReadOnly("mounted read-only")

    def _write_meta(self, node: Node) -> WriteMeta:
        """Metadata for the next upload of `node`: its attributes plus what it had."""
        kept = {k: v for k, v in (node.metadata or {}).items() if k not in ("mode", "uid", "gid", "mtime")}
        meta = metadata.encode(node.mode, node.uid, node.gid, node.mtime_ns)
        return WriteMeta({**kept, **meta}, node.content_type)

    @staticmethod
    def _known(node: Node | None) -> Expect:
        """What this mount knows the node's key holds: a conditional write replaces only that."""
        return ABSENT if node is None or node.etag is None else Expect(node.etag)

    async def _delete_version(self, key: str, etag: str | None) -> None:
        """Delete the version this mount knew; a newer one another client wrote came after
        this delete in time, so it stays (If-Match; unconditional where etag is None)."""
        try:
            await self.store.delete(key, etag)
        except S3Error as exc:
            if etag is None or exc.code not in ("PreconditionFailed", "412", "NoSuchKey"):
                raise
            if exc.code != "NoSuchKey":
                log.warning("%r: another client wrote it since this mount knew ETag %s; its version stays",
                            key, etag)

    def _start_writer(self, node: Node) -> None:
        assert self.uploader is not None
        node.writer = self.uploader.open_session(self.key_of(node.path), self._write_meta(node),
                                                 self._known(node))

    async def _start_writer_after_copy(self, node: Node) -> None:
        """A new upload of the key waits for a self-copy in flight (which would otherwise
        copy the old object over it); once it has a writer, no self-copy starts."""
        while self._locks.busy(node):
            async with self._locks.hold(node):
                pass
        if node.unlinked:
            raise NotFound(node.path)
        if node.writer is None:
            self._start_writer(node)

    async def create(self, parent_inode: int, name: str, mode: int, flags: int,
                     uid: int, gid: int) -> tuple[int, Attr]:
        self._check_writable()
        parent = self.node(parent_inode)
        path = self._child_path(parent, name)
        existing = self.inodes.by_path(path)
        if flags & os.O_EXCL and (existing is not None or (
                not self._known_absent(parent.path, name) and await self._exists(path))):
            raise Exists(path)
        node = existing or self._new_node(path, Kind.FILE)
        if node.kind is Kind.DIR:
            raise IsADirectory(path)
        node.mode = stat.S_IFREG | (mode & 0o7777)
        node.uid, node.gid, node.mtime_ns = uid, gid, time.time_ns()
        node.metadata, node.content_type = None, None
        node = self.inodes.add(node)
        node.lookups += 1
        if node.writer is None:
            await self._start_writer_after_copy(node)
        assert node.writer is not None
        await node.writer.truncate(0)  # a new, empty object even if nothing is written
        self._listing_add(node)
        return self._open_handle(node, True), self.attr(node)

    def _open_handle(self, node: Node, writable: bool) -> int:
        fh = self._alloc_fh()
        handle = self._handles[fh] = Handle(node, writable, node.etag, node.size)
        if node.open_handles and any(h.node is node and h.etag != node.etag for h in self._handles.values()):
            handle.direct_io = True  # its pages are an older version, still read by that open
        else:
            handle.keep_cache = node.cache_etag is not None and node.cache_etag == node.etag
            node.cache_etag = node.etag  # kept or dropped, the pages from now on are this version's
        node.open_handles += 1
        return fh

    def page_cache(self, fh: int) -> tuple[bool, bool]:
        """(keep_cache, direct_io) for the kernel's open reply: pages survive a reopen only
        while they are of the version the open reads (same size and mtime prove nothing:
        rsync --inplace from another host keeps both)."""
        handle = self._handles[fh]
        return handle.keep_cache, handle.direct_io

    def _same_bytes(self, node: Node, etag: str | None, size: int) -> None:
        """This mount made `etag` (a publish, a copy): the kernel's pages and the open files
        of the node's version before are of it now; they follow instead of going stale."""
        if node.cache_etag == node.etag:
            node.cache_etag = etag
        if node.open_handles:
            for handle in self._handles.values():
                if handle.node is node and handle.etag == node.etag:
                    handle.etag, handle.size = etag, size
                    if handle.reader is not None:
                        handle.reader.close()
                        handle.reader = None
        node.etag = etag

    async def open(self, inode: int, flags: int) -> int:
        node = self.node(inode)
        if node.kind is Kind.DIR:
            raise IsADirectory(node.path)
        accmode = flags & os.O_ACCMODE
        writable = accmode in (os.O_WRONLY, os.O_RDWR)
        if writable or flags & os.O_TRUNC:
            self._check_writable()
            if node.writer is None:
                await self._start_writer_after_copy(node)
                if not flags & os.O_TRUNC and node.size > 0:
                    await self._change_in_place(node)
            if flags & os.O_TRUNC:
                assert node.writer is not None
                await node.writer.truncate(0)
        return self._open_handle(node, writable)

    async def _change_in_place(self, node: Node) -> None:
        """The existing object is the base of the new upload: unchanged parts are copied
        server-side at flush, changed parts fetch only their own old bytes."""
        assert node.writer is not None
        await node.writer.set_base(self.key_of(node.path), node.etag, node.size)

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        handle = self._handles[fh]
        node = handle.node
        if node.writer is not None:
            return await node.writer.read(offset, size)
        key = self.key_of(node.path)
        if handle.reader is None or handle.reader.key != key:
            if handle.reader is not None:
                handle.reader.close()
            handle.reader = Reader(self.store, key, handle.size, handle.etag,
                                   self.config.read_ahead, self.nursery)
        return await handle.reader.read(offset, size)

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        handle = self._handles[fh]
        if not handle.writable:
            raise OSError(errno.EBADF, "not open for writing")
        writer = handle.node.writer
        assert writer is not None
        n = await writer.write(offset, data)
        handle.node.mtime_ns = time.time_ns()
        return n

    async def flush(self, fh: int) -> None:
        """close(): a durability point for descriptors that could write. A reader closing
        publishes nothing (as NFS does for read-only opens): a half-written file stays
        unpublished while its writer goes on."""
        handle = self._handles[fh]
        if handle.writable:
            await self._publish(handle.node)

    async def fsync(self, fh: int) -> None:
        await self._publish(self._handles[fh].node)

    async def _publish(self, node: Node) -> None:
        if node.writer is not None:
            if node.writer.dirty:
                node.writer.set_meta(self._write_meta(node))  # rides if not created yet
            if await node.writer.flush():
                self._published(node)

    def _published(self, node: Node) -> None:
        """After a verified upload: what the mount shows is what S3 holds."""
        assert node.writer is not None
        if node.writer.last_etag is None or node.writer.discarded:
            return
        node.size = node.writer.size
        # what S3 holds: the metadata sent at Create/PUT (a multipart upload's is fixed
        # when it starts), so listings, HEADs and other mounts all agree
        sent = dict(node.writer.sent_meta.metadata)
        attrs = metadata.decode(sent, default_mode=node.mode, uid=node.uid, gid=node.gid,
                                last_modified_ns=node.mtime_ns)
        if not node.meta_pending:
            node.mode, node.uid, node.gid, node.mtime_ns = attrs.mode, attrs.uid, attrs.gid, attrs.mtime_ns
        node.metadata = sent
        self._same_bytes(node, node.writer.last_etag, node.size)
        node.fetched_at = time.monotonic()
        node.changes += 1
        self.metacache.put(node.writer.key, node.etag, node.metadata)
        self._clear_pending(node)

    async def release(self, fh: int) -> None:
        handle = self._handles.pop(fh)
        if handle.reader is not None:
            handle.reader.close()
        node = handle.node
        node.open_handles -= 1
        if node.open_handles == 0 and node.writer is not None:
            writer = node.writer
            try:
                if writer.dirty and not writer.discarded and await writer.flush():  # normally flush came first
                    self._published(node)
            except Exception as exc:  # already reported by flush; release errors are discarded by FUSE
                log.debug("release of %r: %s", node.path, exc)
                node.fetched_at = 0.0
            finally:
                node.writer = None
                try:
                    await writer.close()
                except Exception as exc:
                    log.debug("release of %r: %s", node.path, exc)
                    node.fetched_at = 0.0
        self.inodes.drop_if_unused(node)

    async def unlink(self, parent_inode: int, name: str) -> None:
        self._check_writable()
        path = self._child_path(self.node(parent_inode), name)
        node = await self._resolve_or_local(path)
        if node.kind is Kind.DIR:
            raise IsADirectory(path)
        async with self._locks.hold(node):
            if node.path != path:  # renamed or unlinked while a self-copy held it
                raise NotFound(path)
            await self._unlink_file(node, path)

    async def _unlink_file(self, node: Node, path: str) -> None:
        if node.writer is not None:
            node.writer.discard()  # still open: its upload must not bring the name back
        if node.writer is None or node.etag is not None or await self._exists_key(self.key_of(path)):
            await self._delete_version(self.key_of(path), node.etag)
        self.metacache.delete(self.key_of(path))
        self._clear_pending(node)
        self.inodes.unlink_path(path)
        self._listing_remove(path)

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

    async def setattr(
        self, inode: int, *, size: int | None = None, mode: int | None = None,
        uid: int | None = None, gid: int | None = None, mtime_ns: int | None = None,
    ) -> Attr:
        node = self.node(inode)
        if not any(v is not None for v in (size, mode, uid, gid, mtime_ns)):
            return self.attr(node)
        self._check_writable()
        node.changes += 1
        if mode is not None:
            node.mode = stat.S_IFMT(node.mode) | (mode & 0o7777)
        if uid is not None:
            node.uid = uid
        if gid is not None:
            node.gid = gid
        if mtime_ns is not None:
            node.mtime_ns = mtime_ns
        meta_changed = any(v is not None for v in (mode, uid, gid, mtime_ns))
        if node.kind is Kind.DIR:
            if meta_changed:
                new_meta = self._write_meta(node).metadata
                node.metadata = dict(new_meta)
                if node.inode == ROOT_INODE:
                    self.metacache.put(ROOT_META_KEY, "local", new_meta)
                if node.path or self.prefix:
                    etag = await self.store.put(self.key_of(node.path, dir=True), Body(0, data=b""),
                                                WriteMeta(new_meta, "application/x-directory"), self._known(node))
                    node.etag = etag or None
            return self.attr(node)
        if size is not None:
            own = node.writer is None
            if own:
                await self._start_writer_after_copy(node)
                if size > 0 and node.size > 0:
                    await self._change_in_place(node)
            assert node.writer is not None
            await node.writer.truncate(size)
            node.writer.set_meta(self._write_meta(node))
            if own:  # truncate of a closed file: publish now
                try:
                    if await node.writer.flush():
                        self._published(node)
                finally:
                    writer, node.writer = node.writer, None
                    await writer.close()
            return self.attr(node)
        if node.writer is not None:
            node.writer.set_meta(self._write_meta(node))
            if node.writer.plan.upload_id is None:
                node.writer.plan.dirty = True  # rides along with the pending upload
                return self.attr(node)
            # the upload already started with the old metadata: publish, then copy
            wanted = (node.mode, node.uid, node.gid, node.mtime_ns)
            if await node.writer.flush():
                self._published(node)
            node.mode, node.uid, node.gid, node.mtime_ns = wanted
        # a closed object: one self-copy with the new metadata, soon -- or none at
        # all if a rename comes first and carries it (rsync: utimens, chmod, rename)
        node.meta_pending = True
        self._pending_meta.setdefault(node.inode, time.monotonic())
        return self.attr(node)

    def _clear_pending(self, node: Node) -> None:
        node.meta_pending = False
        self._pending_meta.pop(node.inode, None)

    async def apply_pending_metadata(self, older_than: float = 0.0) -> None:
        """Copy changed attributes of closed files to S3 (one self-copy each)."""
        now = time.monotonic()
        for inode, since in list(self._pending_meta.items()):
            node = self.inodes.get(inode)
            if node is None or not node.meta_pending:
                self._pending_meta.pop(inode, None)
                continue
            if now - since < older_than or node.writer is not None:
                continue
            async with self._locks.hold(node):
                # a rename, an unlink or an upload may have come first and carried it
                if node.meta_pending and node.writer is None and not node.unlinked \
                        and not self._below_moving(node.path):
                    await self._copy_pending_metadata(node)
            self.inodes.drop_if_unused(node)

    def _below_moving(self, path: str) -> bool:
        return any(path.startswith(d + "/") for d in self._moving)

    async def _copy_pending_metadata(self, node: Node) -> None:
        """The self-copy, guarded by the ETag we know: another client's newer object keeps
        its own attributes. meta_pending stays set until the copy is done: a HEAD answered
        meanwhile carries the old attributes, which must not replace the new ones
        (_apply_info); a change made meanwhile registers itself again."""
        self._pending_meta.pop(node.inode, None)
        key = self.key_of(node.path)
        new_meta = self._write_meta(node)
        try:
            etag = await copy_object(self.store, key, key, node.size, new_meta, self.policy,
                                     etags_are_md5=self.config.upload.etags_are_md5,
                                     src_etag=node.etag, expect=self._known(node))
        except S3FSError as exc:  # S3Error, or a failed multipart copy
            if isinstance(exc, S3Error) and exc.code in ("PreconditionFailed", "NoSuchKey"):
                log.warning("attributes of %r not stored: another client replaced or deleted it "
                            "(%s); its version stands", key, exc.code)
            else:
                log.error("could not store new attributes of %r: %s", key, exc)
            node.fetched_at = 0.0  # show what S3 has
            return
        finally:
            if node.inode not in self._pending_meta:
                node.meta_pending = False
        self._same_bytes(node, etag, node.size)
        node.changes += 1
        node.metadata = dict(new_meta.metadata)
        node.fetched_at = time.monotonic()
        self.metacache.put(key, node.etag, node.metadata)

    async def pending_metadata_loop(self) -> None:
        while True:
            await trio.sleep(PENDING_META_DELAY / 2)
            await self.apply_pending_metadata(PENDING_META_DELAY)

    # ---- rename, links, statfs --------------------------------------------
    async def rename(self, old_parent: int, old_name: str, new_parent: int, new_name: str) -> None:
        self._check_writable()
        old_path = self._child_path(self.node(old_parent), old_name)
        new_path = self._child_path(self.node(new_parent), new_name)
        node = await self._resolve_or_local(old_path)
        if node.kind is not Kind.DIR:
            target = self.inodes.by_path(new_path)
            if target is not None and target.kind is Kind.DIR:
                raise IsADirectory(new_path)
        copying = [node]
        if node.kind is Kind.DIR:  # no self-copy starts below it; those in flight end first
            copying = [n for n in self.inodes.subtree(old_path) if n.meta_pending]
            self._moving.add(old_path)
        try:
            async with self._locks.hold(*copying, self.inodes.by_path(new_path)):
                if node.path != old_path:  # renamed or unlinked while a self-copy held it
                    raise NotFound(old_path)
                await self._rename_locked(node, old_path, new_path)
        finally:
            self._moving.discard(old_path)

    async def _rename_locked(self, node: Node, old_path: str, new_path: str) -> None:
        writing = [n for n in self.inodes.subtree(old_path) if n.writer is not None]
        replaced = self.inodes.by_path(new_path)
        if replaced is not None and replaced is not node and replaced.writer is not None:
            replaced.writer.discard()  # its name now belongs to the renamed file
        writer = node.writer
        if (node.kind is not Kind.DIR and writer is not None and writer.dirty
                and writer.plan.upload_id is None and writer.failed is None
                and writer.base_key is None):
            # nothing of it is in an upload yet: it simply completes under the new name.
            # What the old name holds (an earlier version of it, or the object it was to
            # replace when an earlier rename put it there) goes now: nothing else will
            # replace it (found by the reference model: b -> a/a -> a/b left a/a behind)
            old = writer.expect.etag if writer.expect is not None else node.etag
            writer.key = self.key_of(new_path)
            writer.expect = self._known(replaced)
            if old is not None:
                await self._delete_version(self.key_of(old_path), old)
                self.metacache.delete(self.key_of(old_path))
        else:
            # files being written are published under their old key first, then moved
            for n in writing:
                if n.writer is not None and n.writer.dirty and await n.writer.flush():
                    self._published(n)
            if node.kind is Kind.DIR:
                await self._rename_dir(old_path, new_path)
            else:
                await self._rename_file(node, self.key_of(old_path), self.key_of(new_path),
                                        self._known(replaced if replaced is not node else None))
        self.inodes.move(old_path, new_path)
        if self._moved_etags:  # a directory's objects were copied: the same bytes, new ETags
            for n in self.inodes.subtree(new_path):
                moved = self.key_of(n.path) in self._moved_etags
                self._same_bytes(n, self._moved_etags.pop(self.key_of(n.path), n.etag), n.size)
                if moved:
                    n.fetched_at = time.monotonic()
        for n in writing:
            if n.writer is not None:
                n.writer.retarget(self.key_of(n.path), n.etag)
        self._moved_etags.clear()
        self._listing_remove(old_path)
        self._listing_add(node)
        node.fetched_at = time.monotonic()

    async def _rename_file(self, node: Node, old_key: str, new_key: str, target: Expect) -> None:
        """One copy (carrying attributes changed since close) and one delete, each of the
        versions this mount knows: of the source, and of what the target replaces."""
        meta = self._write_meta(node) if node.meta_pending else None
        etag = await copy_object(self.store, old_key, new_key, node.size, meta, self.policy,
                                 etags_are_md5=self.config.upload.etags_are_md5,
                                 src_etag=node.etag, expect=target)
        await self._delete_version(old_key, node.etag)
        self.metacache.delete(old_key)
        if meta is not None:
            node.metadata = dict(meta.metadata)
            self._clear_pending(node)
        self._same_bytes(node, etag, node.size)
        self.metacache.put(new_key, etag, node.metadata)

    async def _rename_dir(self, old_path: str, new_path: str) -> None:
        if new_path == old_path or new_path.startswith(old_path + "/"):
            raise InvalidArgument("cannot move a directory into itself")
        target_marker: str | None = None  # the ETag of the empty target's marker, if any
        try:
            target = await self._resolve(new_path)
        except NotFound:
            pass
        else:
            if target.kind is not Kind.DIR:
                raise NotADirectory(new_path)
            page = await self.store.list_page(self.key_of(new_path, dir=True), delimiter=None, max_keys=2)
            if any(o.key != self.key_of(new_path, dir=True) for o in page.objects):
                raise NotEmpty(new_path)
            target_marker = next((o.etag for o in page.objects), None)
        old_prefix, new_prefix = self.key_of(old_path, dir=True), self.key_of(new_path, dir=True)
        objects: list[ObjectInfo] = []
        token = None
        while True:
            page = await self.store.list_page(old_prefix, delimiter=None, token=token)
            objects.extend(page.objects)
            if page.next_token is None:
                break
            token = page.next_token
        if not any(o.key == old_prefix for o in objects):
            # the new directory gets a marker either way
            etag = await self.store.put(old_prefix, Body(0, data=b""), WriteMeta({}, "application/x-directory"),
                                        ABSENT)
            objects.append(ObjectInfo(old_prefix, 0, etag, 0.0))
        # markers last, so an interrupted rename leaves both trees listable
        limiter = trio.CapacityLimiter(8)
        for batch in ([o for o in objects if not o.key.endswith("/")],
                      [o for o in objects if o.key.endswith("/")]):
            try:
                async with trio.open_nursery() as nursery:
                    for info in batch:
                        nursery.start_soon(self._move_key, info, old_prefix, new_prefix, limiter,
                                           Expect(target_marker) if info.key == old_prefix and target_marker
                                           else ABSENT)
            except BaseExceptionGroup as group:
                raise first_error(group) from group

    async def _move_key(self, info: ObjectInfo, old_prefix: str, new_prefix: str,
                        limiter: trio.CapacityLimiter, target: Expect) -> None:
        async with limiter:
            new_key = new_prefix + info.key[len(old_prefix):]
            etag = await copy_object(self.store, info.key, new_key, info.size, None, self.policy,
                                     etags_are_md5=self.config.upload.etags_are_md5,
                                     src_etag=info.etag or None, expect=target)
            self._moved_etags[new_key] = etag
            await self._delete_version(info.key, info.etag or None)
            cached = self.metacache.get(info.key, info.etag)
            self.metacache.delete(info.key)
            self.metacache.put(new_key, etag, cached)

    async def symlink(self, parent_inode: int, name: str, target: str, uid: int, gid: int) -> Attr:
        self._check_writable()
        path = self._child_path(self.node(parent_inode), name)
        if await self._exists(path):
            raise Exists(path)
        data = target.encode("utf-8", "surrogateescape")
        mode = stat.S_IFLNK | 0o777
        now = time.time_ns()
        try:
            etag = await self.store.put(self.key_of(path), Body(len(data), data=data),
                                        WriteMeta(metadata.encode(mode, uid, gid, now)), ABSENT)
        except S3Error as exc:
            if exc.code in ("PreconditionFailed", "412"):
                raise Exists(path) from exc  # another client made it meanwhile
            raise
        node = self._new_node(path, Kind.SYMLINK)
        node.mode, node.uid, node.gid, node.mtime_ns, node.size = mode, uid, gid, now, len(data)
        node.metadata = metadata.encode(mode, uid, gid, now)
        node.etag = etag or None
        node.fetched_at = time.monotonic()
        node = self.inodes.add(node)
        node.lookups += 1
        self._listing_add(node)
        return self.attr(node)

    async def readlink(self, inode: int) -> str:
        node = self.node(inode)
        if node.kind is not Kind.SYMLINK:
            raise InvalidArgument("not a symlink")
        data = await self.store.get_range(self.key_of(node.path), 0, max(node.size, 1) + 4096)
        return data.decode("utf-8", "surrogateescape")

    async def shutdown(self) -> None:
        """Unmount: publish every file still dirty and every pending attribute change."""
        if self.uploader is not None:
            await self.apply_pending_metadata()
            for node in self.inodes.nodes():
                if node.writer is not None:
                    writer, node.writer = node.writer, None
                    try:
                        await writer.close()
                    except Exception as exc:
                        log.error("at unmount, %s", exc)
            await self.uploader.drain()
        self.metacache.close()
