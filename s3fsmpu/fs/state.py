"""The state every room of the filesystem core shares, and the helpers on it.

`FsState` holds what the mount knows (inodes, open handles, listings, pending
attribute changes, node locks, the metadata cache) and turns paths into keys
and S3 answers into attributes. The rooms build on it in one line, each
using only those below it: namespace (lookups, listings, the negative cache)
-> handles (open files, reads, writes, publishing) -> attributes (setattr and
the coalesced self-copy) -> changes (mkdir, rmdir, unlink, rename, symlink),
and `S3Filesystem` (core.py) is the whole.
"""

from __future__ import annotations

import dataclasses
import logging
import stat
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from s3fsmpu import meta as metadata
from s3fsmpu.config import MountConfig
from s3fsmpu.errors import (
    InvalidArgument,
    NameTooLong,
    NotFound,
    ReadOnly,
)
from s3fsmpu.fs.data_cache import CacheAccess
from s3fsmpu.fs.inodes import ROOT_INODE, InodeTable, Kind, Node
from s3fsmpu.fs.listing import Listing
from s3fsmpu.fs.metacache import MetadataCache
from s3fsmpu.fs.node_locks import NodeLocks
from s3fsmpu.fs.reader import CHUNK, Reader
from s3fsmpu.memory import BufferPool, MemoryBudget
from s3fsmpu.retry import RetryPolicy
from s3fsmpu.store.base import ABSENT, Expect, ObjectInfo, ObjectStore, WriteMeta
from s3fsmpu.store.retrying import RetryingStore
from s3fsmpu.upload.uploader import Uploader

if TYPE_CHECKING:
    from s3fsmpu.fs.namespace import DirHandle

log = logging.getLogger(__name__)

MAX_KEY_BYTES = 1024
MAX_NAME_BYTES = 255
# the mount root has no marker in a bucket mount: its attributes persist in the local cache
ROOT_META_KEY = "\0root"
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


class FsState:
    def __init__(self, store: ObjectStore, config: MountConfig, uploader: Uploader | None,
                 nursery: trio.Nursery | None = None, data_cache: CacheAccess | None = None,
                 budget: MemoryBudget | None = None) -> None:
        self.data_cache = data_cache  # --cache-size: blocks of objects on local disk
        # --max-memory: one budget for write parts and read-ahead (the uploader's, if any);
        # without writers, readers may have all of it
        self.budget = budget or (uploader.budget if uploader is not None else
                                 MemoryBudget(config.upload.max_memory, config.upload.max_memory))
        self.read_chunk = CHUNK  # the size of a read-ahead GET (tests make it small)
        self.read_buffers = BufferPool(keep=2)  # whole chunks' buffers, reused by the readers
        up = config.upload
        self.policy = RetryPolicy(up.max_attempts, up.backoff_base, up.backoff_max)
        self.store: ObjectStore = RetryingStore(store, self.policy)
        self.config = config
        self.uploader = uploader
        # background tasks: read-ahead prefetch (uploads have the uploader's)
        self.nursery = nursery or (uploader.nursery if uploader is not None else None)
        self.prefix = config.location.prefix
        self.inodes = InodeTable(self._node_dropped)
        now = time.time_ns()
        self.inodes.add_root(
            Node(ROOT_INODE, "", Kind.DIR, mode=stat.S_IFDIR | config.dir_mode,
                 uid=config.uid, gid=config.gid, mtime_ns=now, fetched_at=float("inf"))
        )
        self._handles: dict[int, Handle] = {}
        self._dirs: dict[int, DirHandle] = {}
        self._next_fh = 1
        # directories listed completely, packed: a lookup miss there costs nothing
        self._listings: dict[str, Listing] = {}
        self._big_dirs: dict[str, float] = {}  # directories found longer than a page, and when
        self._pending_meta: dict[int, float] = {}  # inode -> when its attributes changed
        self._moved_etags: dict[str, str | None] = {}  # new key -> ETag, during a directory rename
        self._locks = NodeLocks()  # a self-copy never overlaps a DELETE or upload of its key
        self._moving: set[str] = set()  # directories being renamed: no self-copy below them
        self.metacache = MetadataCache(
            config.cache_dir, config.bucket_scope
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

    def _node_dropped(self, node: Node) -> None:
        """A node the kernel forgot leaves what it knew last (a write, a chmod) in its listing."""
        parent, _, name = node.path.rpartition("/")
        listing = self._listings.get(parent)
        if listing is not None and not node.unlinked and name in listing:
            listing.add_node(name, node)

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

    @staticmethod
    def _join(path: str, name: str) -> str:
        return f"{path}/{name}" if path else name

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

    def _clear_pending(self, node: Node) -> None:
        node.meta_pending = False
        self._pending_meta.pop(node.inode, None)

    def _below_moving(self, path: str) -> bool:
        return any(path.startswith(d + "/") for d in self._moving)
