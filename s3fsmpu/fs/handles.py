"""Open files: create, open, read, write, and publishing at flush, fsync and release.

Files being written in this mount are served from their upload session (one
per inode, shared by all handles), so reads see what was written. An open
reads the version it opened; the kernel keeps its page cache across opens
only while that version is current.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time

from s3fsmpu import meta as metadata
from s3fsmpu.errors import (
    Exists,
    IsADirectory,
    NotFound,
)
from s3fsmpu.fs.inodes import STALE, Kind, Node
from s3fsmpu.fs.namespace import Namespace
from s3fsmpu.fs.reader import Reader
from s3fsmpu.fs.state import Attr, Handle
from s3fsmpu.upload.driver import UploadSession

log = logging.getLogger(__name__)


class OpenFiles(Namespace):
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

    async def read(self, fh: int, offset: int, size: int) -> bytes | memoryview:
        """A memoryview answer is valid only until the caller next yields (fs/reader.py)."""
        handle = self._handles[fh]
        node = handle.node
        if node.writer is not None:
            return await node.writer.read(offset, size)
        key = self.key_of(node.path)
        if handle.reader is None or handle.reader.key != key:
            if handle.reader is not None:
                handle.reader.close()
            handle.reader = Reader(self.store, key, handle.size, handle.etag, self.config.read_ahead,
                                   self.nursery, self.read_chunk, self.data_cache, self.budget,
                                   self.read_buffers)
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
            await self._flush(node, node.writer)

    async def _flush(self, node: Node, writer: UploadSession) -> None:
        """Publish what was written; then the data cache gets the new version, where the
        spool holds all of it (not an in-place edit, whose unchanged parts were copied)."""
        # does the spool hold every byte? (asked only when there is a data cache to fill)
        whole = self.data_cache is not None and not writer.plan.missing_base(0, writer.size)
        if not await writer.flush():
            return
        self._published(node)
        etag = writer.last_etag
        if self.data_cache is None or not whole or etag is None:
            return
        async with writer.held():  # no write lands in the spool while it is read
            if not writer.dirty and writer.last_etag == etag:  # nothing written since
                await self.data_cache.fill(writer.key, etag, writer.size, writer.read_spool)

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
                if writer.dirty and not writer.discarded:  # normally flush came first
                    await self._flush(node, writer)
            except Exception as exc:  # noqa: BLE001 - reported by flush already; FUSE discards release errors
                log.debug("release of %r: %s", node.path, exc)
                node.fetched_at = STALE
            finally:
                node.writer = None
                try:
                    await writer.close()
                except Exception as exc:  # noqa: BLE001 - as above
                    log.debug("release of %r: %s", node.path, exc)
                    node.fetched_at = STALE
        self.inodes.drop_if_unused(node)
