"""Attribute changes: setattr, and the coalesced self-copy that stores them.

chmod/chown/utimens of a closed file change the node at once and reach S3 as
one self-copy (CopyObject k -> k) about PENDING_META_DELAY later, unless a
rename carries them first. The copy holds the node's lock: it never overlaps
a rename's or unlink's DELETE of its key, nor a new upload of it.
"""

from __future__ import annotations

import logging
import stat
import time

import trio

from s3fsmpu.errors import (
    S3Error,
    S3FSError,
)
from s3fsmpu.fs.copy import copy_object
from s3fsmpu.fs.handles import OpenFiles
from s3fsmpu.fs.inodes import ROOT_INODE, STALE, Kind, Node
from s3fsmpu.fs.state import ROOT_META_KEY, Attr
from s3fsmpu.store.base import Body, WriteMeta

log = logging.getLogger(__name__)

# chmod/chown/utimens of a closed file are copied to S3 after this long, unless
# a rename (rsync's next step) carries them in its own copy first
PENDING_META_DELAY = 1.0


class Attributes(OpenFiles):
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
                    await self._flush(node, node.writer)
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
            await self._flush(node, node.writer)
            node.mode, node.uid, node.gid, node.mtime_ns = wanted
        # a closed object: one self-copy with the new metadata, soon -- or none at
        # all if a rename comes first and carries it (rsync: utimens, chmod, rename)
        node.meta_pending = True
        self._pending_meta.setdefault(node.inode, time.monotonic())
        return self.attr(node)

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
                                     checks_md5_etags=self.config.upload.checks_md5_etags,
                                     src_etag=node.etag, expect=self._known(node))
        except S3FSError as exc:  # S3Error, or a failed multipart copy
            if isinstance(exc, S3Error) and exc.code in ("PreconditionFailed", "NoSuchKey"):
                log.warning("attributes of %r not stored: another client replaced or deleted it "
                            "(%s); its version stands", key, exc.code)
            else:
                log.error("could not store new attributes of %r: %s", key, exc)
            node.fetched_at = STALE  # show what S3 has
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
