"""The disk block store of the data cache: files, the in-memory LRU index, eviction.

Owns the directory it is given: `<root>/<2 hex>/<14 hex>/<16 hex>`, the
first 8 bytes of the name being a hash of the key (so every version of a
key shares one directory) and the last 8 a hash of (key, ETag, index).
Each file holds one block in the format of `blockfile`; a read that does
not verify drops the file. The index is an OrderedDict from the 16-byte
name to the file's size, oldest first, and is rebuilt at start by listing
the directory (one stat per block, no reads) in mtime order; a read sets
the file's mtime, so the order survives remounts.

Thread safety: every method may be called from any thread at once. One
lock guards the index and every rename and unlink in the tree; block
contents are written (to a temporary file) and read outside it, so a
slow 1 MiB read does not hold up other threads. A file is only ever
replaced whole (rename), so a reader sees an old block or a new one.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

from s3fsmpu.cache import blockfile
from s3fsmpu.cache.blockfile import CorruptBlock, block_digest, key_digest

log = logging.getLogger(__name__)
T = TypeVar("T")

TMP = "tmp"
STALE_TMP = 600.0  # seconds; a temporary file older than this is a crashed put's leftover
ANY = -1  # no inode has this number
# errors opening a block file that say nothing about the block (too many open files, no memory)
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})
# distinct file sizes whose int objects the index shares: a full block's size
# depends only on the key's and ETag's lengths, so a few hundred cover most
MAX_SHARED_SIZES = 4096


def disk_space(path: str) -> tuple[int, int]:
    """(bytes free to unprivileged writers, bytes in total) of the file system holding `path`."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


class DiskDataCache:
    """Blocks of object versions on local disk, within `max_bytes` and a free-space floor."""

    def __init__(self, root: str, max_bytes: int, block_size: int, min_free_fraction: float = 0.05) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.block_size = block_size
        self.min_free_fraction = min_free_fraction
        self._tmp = os.path.join(root, TMP)
        self._lock = threading.Lock()
        self._lru: OrderedDict[bytes, int] = OrderedDict()  # digest -> file size, least recent first
        self._usage = 0
        self._sizes: dict[int, int] = {}  # see _shared
        self._put_failing = False  # one WARNING per run of failing puts, not one per block
        os.makedirs(self._tmp, mode=0o700, exist_ok=True)
        self._load()

    # ---- the interface --------------------------------------------------------
    def get(self, key: str, etag: str, index: int) -> bytes | None:
        """Block `index` of (key, etag), verified; None if absent or corrupt (then it is dropped)."""
        return self._read(key, etag, index, lambda fd: blockfile.read_block(fd, key, etag, index))

    def get_into(self, key: str, etag: str, index: int, buf: memoryview) -> bool:
        """Fill `buf` with block `index` of (key, etag), verified and exactly len(buf) long;
        False if absent or not so (a block that is not whole is dropped; `buf` may then
        hold anything)."""
        return self._read(key, etag, index, lambda fd: blockfile.read_block_into(fd, key, etag, index, buf)) is not None

    def _read(self, key: str, etag: str, index: int, read: Callable[[int], T]) -> T | None:
        digest = block_digest(key, etag, index)
        with self._lock:
            if digest not in self._lru:
                return None
            self._lru.move_to_end(digest)
        try:
            fd = os.open(self._path(digest), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # removed behind our back: forget it quietly
            self._drop(digest, None)
            return None
        except OSError as exc:
            if exc.errno in OUT_OF_RESOURCES:  # the block is fine: only this read misses
                log.warning("data cache: block %d of %r not read: %s", index, key, exc)
                return None
            self._dropped(digest, ANY, key, etag, index, exc)
            return None
        try:
            data = read(fd)
            with contextlib.suppress(OSError):
                os.utime(fd)  # the LRU order a remount starts from
            return data
        except (CorruptBlock, OSError) as exc:
            try:
                inode = os.fstat(fd).st_ino
            except OSError:
                inode = ANY
            self._dropped(digest, inode, key, etag, index, exc)
            return None
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _dropped(self, digest: bytes, inode: int, key: str, etag: str, index: int, exc: Exception) -> None:
        level = logging.DEBUG if isinstance(exc, blockfile.OlderFormat) else logging.WARNING
        log.log(level, "data cache: dropped block %d of %r (ETag %s): %s", index, key, etag, exc)
        self._drop(digest, inode)

    def put(self, key: str, etag: str, index: int, data: bytes | memoryview) -> None:
        """Keep block `index` of (key, etag), evicting LRU blocks; disk trouble is logged, not raised."""
        if len(data) > self.block_size:
            raise ValueError(f"a block holds at most {self.block_size} bytes, not {len(data)}")
        digest = block_digest(key, etag, index)
        with self._lock:
            if digest in self._lru:  # a version's bytes never change: nothing to write
                self._lru.move_to_end(digest)
                return
        head = blockfile.header(key, etag, index, data)
        size = len(head) + len(data)
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=self._tmp)
            with open(fd, "wb") as f:
                f.write(head)
                f.write(data)
            with self._lock:
                if not self._make_room(size):
                    log.debug("data cache: no room for block %d of %r", index, key)
                    return
                path = self._path(digest)
                os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
                os.replace(tmp, path)
                tmp = None
                self._usage += size - self._lru.pop(digest, 0)
                self._lru[digest] = self._shared(size)
            self._put_failing = False
        except OSError as exc:
            level = logging.DEBUG if self._put_failing else logging.WARNING
            self._put_failing = True
            log.log(level, "data cache: not caching block %d of %r: %s", index, key, exc)
        finally:
            if tmp is not None:
                _unlink_quietly(tmp)

    def forget(self, key: str) -> None:
        """Drop every block of every version of `key` (after unlink or overwrite: frees space early)."""
        kd = key_digest(key).hex()
        key_dir = os.path.join(self.root, kd[:2], kd[2:])
        trash = None
        with self._lock:
            try:
                names = os.listdir(key_dir)
            except FileNotFoundError:
                return
            except OSError as exc:
                log.warning("data cache: cannot forget %r: %s", key, exc)
                return
            for name in names:
                digest = _digest(kd + name)
                if digest is not None:
                    self._usage -= self._lru.pop(digest, 0)
            trash = tempfile.mkdtemp(dir=self._tmp)
            try:
                os.rename(key_dir, os.path.join(trash, "d"))  # files go outside the lock
            except OSError as exc:
                log.warning("data cache: cannot forget %r: %s", key, exc)
            _rmdir_quietly(os.path.dirname(key_dir))
        shutil.rmtree(trash, ignore_errors=True)

    def usage(self) -> int:
        """Bytes of block files held (headers included), as counted against `max_bytes`."""
        with self._lock:
            return self._usage

    def __len__(self) -> int:
        with self._lock:
            return len(self._lru)

    # ---- internals ------------------------------------------------------------
    def _path(self, digest: bytes) -> str:
        h = digest.hex()
        return os.path.join(self.root, h[:2], h[2:16], h[16:])

    def _make_room(self, incoming: int) -> bool:
        """Evict least recently used blocks until `incoming` bytes fit; lock held."""
        free, total = disk_space(self.root)
        floor = self.min_free_fraction * total
        freed = 0
        while self._lru and (self._usage + incoming > self.max_bytes or free + freed - incoming < floor):
            digest, size = self._lru.popitem(last=False)
            self._usage -= size
            freed += size
            self._unlink(digest)
        return self._usage + incoming <= self.max_bytes and free + freed - incoming >= floor

    def _unlink(self, digest: bytes) -> None:
        """Remove a block file and the directories it leaves empty; lock held."""
        path = self._path(digest)
        _unlink_quietly(path)
        key_dir = os.path.dirname(path)
        if _rmdir_quietly(key_dir):
            _rmdir_quietly(os.path.dirname(key_dir))

    def _drop(self, digest: bytes, inode: int | None) -> None:
        """Forget a block that failed to read, unless a put has replaced its file since.

        `inode`: the file that failed, ANY for one that could not be opened, or
        None for one that was missing (the entry goes only if it still is).
        """
        path = self._path(digest)
        with self._lock:
            try:
                now: int | None = os.stat(path).st_ino
            except OSError:
                now = None
            if now is not None and inode != ANY and now != inode:
                return  # a fresh file took its place: keep that one
            self._usage -= self._lru.pop(digest, 0)
            self._unlink(digest)

    def _load(self) -> None:
        """Rebuild the index from the files (oldest mtime first), then trim to the limits."""
        found: list[tuple[int, bytes, int]] = []
        with os.scandir(self.root) as top:
            for d1 in top:
                if d1.name == TMP:
                    self._clear_stale_tmp()
                elif d1.is_dir(follow_symlinks=False):
                    self._scan(d1.path, d1.name, found)
        found.sort()
        with self._lock:
            self._adopt(found)
            blocks, held = len(self._lru), self._usage
            self._make_room(0)
        log.info("data cache %s: %d blocks, %d bytes found; %d blocks, %d bytes kept (limit %d)",
                 self.root, blocks, held, len(self._lru), self._usage, self.max_bytes)

    def _adopt(self, found: list[tuple[int, bytes, int]]) -> None:
        """Index (mtime, digest, size) of files found on disk, oldest first; lock held."""
        for _, digest, size in found:
            self._lru[digest] = self._shared(size)
            self._usage += size

    def _shared(self, size: int) -> int:
        """One int object per common size (full blocks): 32 bytes less per block in the index."""
        if len(self._sizes) < MAX_SHARED_SIZES:
            return self._sizes.setdefault(size, size)
        return self._sizes.get(size, size)

    def _scan(self, path: str, prefix: str, found: list[tuple[int, bytes, int]]) -> None:
        for d2 in os.scandir(path):
            if not d2.is_dir(follow_symlinks=False):
                continue
            empty = True
            for f in os.scandir(d2.path):
                digest = _digest(prefix + d2.name + f.name)
                if digest is not None and f.is_file(follow_symlinks=False):
                    st = f.stat(follow_symlinks=False)
                    found.append((st.st_mtime_ns, digest, st.st_size))
                    empty = False
            if empty:
                _rmdir_quietly(d2.path)
        _rmdir_quietly(path)

    def _clear_stale_tmp(self) -> None:
        """Remove what crashed puts left; a live put of another mount is younger than STALE_TMP."""
        cutoff = time.time() - STALE_TMP
        for entry in os.scandir(self._tmp):
            if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    _unlink_quietly(entry.path)


def _digest(hex_name: str) -> bytes | None:
    """The digest a file name spells, or None for a name that is not a block's."""
    if len(hex_name) != 2 * blockfile.DIGEST_SIZE:
        return None
    try:
        return bytes.fromhex(hex_name)
    except ValueError:
        return None


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("data cache: cannot remove %s: %s", path, exc)


def _rmdir_quietly(path: str) -> bool:
    """rmdir if empty; True if it is gone."""
    try:
        os.rmdir(path)
    except OSError:
        return False
    return True
