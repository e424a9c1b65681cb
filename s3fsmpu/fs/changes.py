"""Changes of the namespace: mkdir, rmdir, unlink, rename, symlink.

Each replaces or deletes only the version this mount knows (conditional
writes and deletes), and holds the locks of the nodes whose keys it changes.
A file rename is one copy and one delete; a directory rename, the same for
every key below it, markers last.
"""

from __future__ import annotations

import logging
import stat
import time
from contextlib import AsyncExitStack

import trio

from s3fsmpu import meta as metadata
from s3fsmpu.errors import (
    Exists,
    InvalidArgument,
    IsADirectory,
    NameTooLong,
    NotADirectory,
    NotEmpty,
    NotFound,
    S3Error,
    first_error,
)
from s3fsmpu.fs.attributes import Attributes
from s3fsmpu.fs.copy import copy_object
from s3fsmpu.fs.inodes import Kind, Node
from s3fsmpu.fs.listing import Listing
from s3fsmpu.fs.state import MAX_KEY_BYTES, Attr
from s3fsmpu.store.base import ABSENT, Body, Expect, ObjectInfo, WriteMeta

log = logging.getLogger(__name__)


class Changes(Attributes):
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
        self._store_listing(path, Listing(time.monotonic()))  # a new directory is empty
        return self.attr(node)

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
            await node.writer.discard()  # still open: reads on, and its upload must not bring the name back
        if node.writer is None or node.etag is not None or await self._exists_key(self.key_of(path)):
            await self._delete_version(self.key_of(path), node.etag)
        self.metacache.delete(self.key_of(path))
        if self.data_cache is not None:  # frees the space now; a new version has a new ETag anyway
            await self.data_cache.forget(self.key_of(path))
        self._clear_pending(node)
        self.inodes.unlink_path(path)
        self._listing_remove(path)

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
            await replaced.writer.discard()  # its name now belongs to the renamed file
        target = self._known(replaced if replaced is not node else None)
        # files being written move with their sessions, held still meanwhile: nothing of
        # them is published under the old name (an upload in progress is bound to the old
        # key: it is dropped, and its parts go again from the spool under the new one)
        async with AsyncExitStack() as stack:
            for n in sorted(writing, key=lambda n: n.inode):
                assert n.writer is not None
                await stack.enter_async_context(n.writer.held())
                await n.writer.drop_upload()
            if node.kind is Kind.DIR:
                await self._rename_dir(old_path, new_path)
            elif node.etag is not None:  # a published version (or the base of an in-place edit)
                await self._rename_file(node, self.key_of(old_path), self.key_of(new_path), target)
            elif node.writer is not None and node.writer.expect is not None \
                    and node.writer.expect.etag is not None:
                # the object an earlier rename put this file over: nothing will replace it
                # now (found by the reference model: b -> a/a -> a/b left a/a behind)
                await self._delete_version(self.key_of(old_path), node.writer.expect.etag)
                self.metacache.delete(self.key_of(old_path))
            self.inodes.move(old_path, new_path)
            if self._moved_etags:  # a directory's objects were copied: the same bytes, new ETags
                for n in self.inodes.subtree(new_path):
                    moved = self.key_of(n.path) in self._moved_etags
                    self._same_bytes(n, self._moved_etags.pop(self.key_of(n.path), n.etag), n.size)
                    if moved:
                        n.fetched_at = time.monotonic()
            for n in writing:
                assert n.writer is not None
                n.writer.move_to(self.key_of(n.path), n.etag,
                                 Expect(n.etag) if n.etag is not None else target if n is node else ABSENT)
        self._moved_etags.clear()
        self._listing_remove(old_path)
        self._listing_add(node)
        node.fetched_at = time.monotonic()

    async def _rename_file(self, node: Node, old_key: str, new_key: str, target: Expect) -> None:
        """One copy (carrying attributes changed since close) and one delete, each of the
        versions this mount knows: of the source, and of what the target replaces."""
        meta = self._write_meta(node) if node.meta_pending else None
        etag = await copy_object(self.store, old_key, new_key, node.size, meta, self.policy,
                                 checks_md5_etags=self.config.upload.checks_md5_etags,
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
                                     checks_md5_etags=self.config.upload.checks_md5_etags,
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
