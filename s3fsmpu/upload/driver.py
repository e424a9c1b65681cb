"""Runs the multipart state machine of one file against a store.

`UploadSession` is one file being written: its spool, its `MultipartPlan`,
and the rules that make close() honest (what all files share, the
`Uploader`, is in uploader.py):

- parts upload in the background as soon as they are complete, holding
  their size from the byte budget, so writers wait when S3 falls behind
  (the part requests are parts.py's `PartTraffic`, which this extends);
- flush waits for those, sends the rest, and completes with verification
  (completion.py); a lost or refused upload is repaired from the spool;
- once a session fails it stays failed: every later write and flush
  raises the same UploadFailed, the multipart upload is aborted exactly
  once (after no part request is in flight), and the spool moves to the
  recovery folder, named in an ERROR log line.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio

from s3fsmpu.errors import S3Error, UploadFailed
from s3fsmpu.retry import retrying
from s3fsmpu.store.base import Checksum, Expect, WriteMeta
from s3fsmpu.upload.completion import (
    CONFLICT_CODES,
    Expected,
    Verdict,
    abort_quietly,
    complete_upload,
    settle_conflict,
)
from s3fsmpu.upload.digest import digest_slice
from s3fsmpu.upload.parts import PartTraffic

if TYPE_CHECKING:
    from s3fsmpu.upload.uploader import Uploader

log = logging.getLogger(__name__)

REPAIR_ROUNDS = 2


class UploadSession(PartTraffic):
    def __init__(self, uploader: Uploader, key: str, meta: WriteMeta, expect: Expect | None = None) -> None:
        super().__init__(uploader, key, meta)
        # the condition of the next publish (If-None-Match / If-Match); after a publish,
        # our own version. None: unconditional (the version is not known)
        self.expect = expect
        self._cleaned_up = False
        self._lock = trio.Lock()
        self._started_at: float | None = None
        self.discarded = False  # unlinked while open: never published
        self.last_etag: str | None = None  # of the last verified publish, where known
        self.opened_at = time.monotonic()

    # ---- the application's side -------------------------------------------
    @property
    def size(self) -> int:
        return self.plan.size

    @property
    def dirty(self) -> bool:
        return self.plan.dirty

    async def write(self, offset: int, data: bytes) -> int:
        async with self._lock:
            await self._before_change(offset)
            ready = self.plan.write(offset, len(data))  # EFBIG before touching the spool
            self.spool.write(offset, data)
            if self._started_at is None:
                self._started_at = time.monotonic()
            if not self.discarded:
                for n in ready:
                    await self._start_part(n)
            return len(data)

    async def set_base(self, key: str, etag: str | None, size: int) -> None:
        """Change existing object `key` in place: nothing is fetched until it is needed."""
        async with self._lock:
            self.base_key, self.base_etag = key, etag
            self.plan.set_base(size)
            self._released_parts = 0
            self.spool.truncate(size)

    async def _ensure_loaded(self, start: int, end: int) -> None:
        """Fetch the base bytes of [start, end) that are not in the spool (caller holds the lock)."""
        for s, e in self.plan.missing_base(start, end):
            assert self.base_key is not None
            base_key, etag = self.base_key, self.base_etag
            data = await retrying(
                functools.partial(self.up.store.get_range, base_key, s, e, etag), self.up.policy,
                f"GetObject {base_key!r} bytes {s}-{e}", self._on_retry,
            )
            if len(data) != e - s:
                raise S3Error("ShortRead", base_key, f"got {len(data)} of {e - s} bytes", "GetObject")
            self.spool.write(s, data)
            self.plan.load(s, len(data))

    @asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """No write, flush or part request of this file while a rename moves it."""
        async with self._lock:
            await self._idle.wait()
            yield

    async def drop_upload(self) -> None:
        """(Held.) The multipart upload in progress is bound to the old key, and Complete
        would publish the file there: abort it; its parts are sent again from the spool."""
        if self.plan.upload_id is not None:
            await self._abort_quietly(self.plan.upload_id)
            self.plan.forget_upload()
            self._released_parts = 0

    def move_to(self, new_key: str, moved_etag: str | None, expect: Expect | None) -> None:
        """(Held, after drop_upload.) The file was renamed: it publishes under `new_key`
        only, replacing what `expect` says is there; its published version (the base of
        unwritten ranges), if any, was copied there as `moved_etag`."""
        if self.base_key == self.key:
            self.base_key, self.base_etag = new_key, moved_etag
        self.key = new_key
        self.expect = expect

    async def truncate(self, size: int) -> None:
        async with self._lock:
            await self._before_change(size)
            self.plan.truncate(size)
            self._released_parts = 0  # parts below may be written again
            self.spool.truncate(size)

    async def _before_change(self, offset: int) -> None:
        """A change inside the big copy parts renumbers the parts: let those in flight land first."""
        self._raise_if_failed()
        if self.plan.breaks_prefix(offset):
            await self._idle.wait()
            self._raise_if_failed()
            self._released_parts = 0

    def read_spool(self, offset: int, size: int) -> bytes:
        """(In a worker thread, after a publish whose bytes are all local.) The spool as it is:
        holes are zeros."""
        return self.spool.read(offset, size).ljust(size, b"\0")

    async def read(self, offset: int, size: int) -> bytes:
        """What the file holds now, for reads of a file open for writing in this mount."""
        async with self._lock:
            size = max(0, min(size, self.plan.size - offset))
            await self._ensure_loaded(offset, offset + size)
            data = self.spool.read(offset, size)
        return data.ljust(size, b"\0")

    async def flush(self) -> bool:
        """Make everything written so far durable in S3, or raise UploadFailed.

        True when this call published something (False: nothing new, or discarded)."""
        async with self._lock:
            if self.failed is None:
                if not self.plan.dirty or self.discarded:
                    return False
                try:
                    await self._publish()
                    return True
                except UploadFailed as exc:
                    self.failed = self.failed or exc
                except S3Error as exc:
                    self.failed = self.failed or UploadFailed(self.key, str(exc))
            if self.failed is not None:
                await self._handle_failure()
                raise self.failed

    async def close(self) -> None:
        """Release: publish anything not yet flushed, then drop the spool."""
        try:
            await self.flush()
        finally:
            await self._idle.wait()  # no part task may read a closed spool
            if self.discarded and self.plan.upload_id is not None:
                await self._abort_quietly(self.plan.upload_id)
                self.plan.forget_upload()
            self.spool.close(delete=self.failed is None)
            self.up.sessions.discard(self)

    async def discard(self) -> None:
        """The file lost its name while open (unlink, a rename over it): finish nothing, abort
        what was started at close. Its object goes now, so what of it the spool lacks is fetched
        first: the open file still reads whole. A base already gone leaves those ranges
        unreadable (said once); the unlink goes on."""
        async with self._lock:
            self.discarded = True
            if self.base_key is None:
                return
            try:
                await self._ensure_loaded(0, self.plan.size)
            except S3Error as exc:
                log.warning("%r: could not keep the bytes of its open version before it goes: %s",
                            self.key, exc)

    def set_meta(self, meta: WriteMeta) -> None:
        """New attributes ride on the upload if it has not been created yet."""
        self.meta = meta

    # ---- flush ------------------------------------------------------------
    async def _publish(self) -> None:
        await self._idle.wait()
        self._raise_if_failed()
        t0 = time.monotonic()
        if self.plan.single_put():
            if self.plan.upload_id is not None:  # shrunk below one part after parts went up
                await self._abort_quietly(self.plan.upload_id)
                self.plan.forget_upload()
            await self._ensure_loaded(0, self.plan.size)
            await self._put_single()
            return
        for _round in range(REPAIR_ROUNDS + 1):
            upload_id = await self._ensure_created()
            for n in self.plan.parts_to_send_at_flush():
                if self.base_key is not None and self.plan.copyable(n):
                    await self._start_copy(n)
                else:
                    rng = self.plan.layout.part(n)
                    await self._ensure_loaded(rng.start, rng.end)
                    await self._start_part(n)
            await self._idle.wait()
            self._raise_if_failed()
            refs = self.plan.complete_refs()
            config = self.up.config
            expected = Expected(
                self.plan.size,
                self.plan.expected_etag() if config.checks_md5_etags else None,
                self._token,
                self._whole_checksum(),
            )
            outcome = await complete_upload(
                self.up.store, self.key, upload_id, refs, expected, self.up.policy, self._on_retry, self.expect
            )
            if outcome.verdict is Verdict.DONE:
                self.up.stats.completed += 1
                self.up.stats.completed_after_retry += outcome.retries > 0
                self.up.stats.settled_by_head += outcome.settled_by_head
                seconds = time.monotonic() - (self._started_at or t0)
                log.info(
                    "upload completed: %r upload_id=%s parts=%d bytes=%d seconds=%.2f MB/s=%.1f%s",
                    self.key, upload_id, len(refs), self.plan.size, seconds,
                    self.plan.size / 1e6 / max(seconds, 1e-6),
                    f" ({outcome.reason})" if outcome.reason else "",
                )
                self.last_etag = expected.etag or outcome.etag
                if outcome.settled_by_head:
                    # ours by HEAD: an earlier attempt (or upload) landed, and this one may
                    # still be open (a first-attempt 412 after a repair, say)
                    await self._abort_quietly(upload_id)
                await self._abort_orphans()
                self._rebase()
                self._started_at = None
                return
            if outcome.verdict is Verdict.FAILED:
                raise UploadFailed(self.key, outcome.reason)
            # repair: abandon this upload, send every part again from the spool
            log.warning("repairing upload of %r (upload_id=%s): %s; re-uploading from local bytes",
                        self.key, upload_id, outcome.reason)
            self.up.stats.repaired += 1
            await self._abort_quietly(upload_id)
            self.plan.forget_upload()
        raise UploadFailed(self.key, f"still refused after {REPAIR_ROUNDS} repairs")

    def _whole_checksum(self) -> Checksum | None:
        algorithm = self.up.config.checksum_algorithm
        if not self.up.config.whole_object_checksum or algorithm is None:
            return None
        value = self.plan.whole_checksum(algorithm)
        return Checksum(algorithm, value) if value is not None else None

    async def _put_single(self) -> None:
        size = self.plan.size
        body, md5_hex = await trio.to_thread.run_sync(
            digest_slice, self.spool.fd, 0, size, self.up.config.checksum_algorithm, self.up.config.content_md5
        )
        meta = self._meta_with_token()
        expect = self.expect
        expected = Expected(size, md5_hex if self.up.config.checks_md5_etags else None, self._token)

        async def send() -> str:
            try:
                etag = await self.up.store.put(self.key, body, meta, expect)
            except S3Error as exc:
                if expect is None or exc.code not in CONFLICT_CODES:
                    raise
                # refused: another client's object, or our own PUT whose answer was lost
                conflict = await settle_conflict(self.up.store, self.key, expect, expected, self.up.policy)
                if conflict is not None:
                    raise UploadFailed(self.key, conflict) from exc
                return md5_hex if md5_hex is not None and self.up.config.checks_md5_etags else ""
            if self.up.config.checks_md5_etags and etag != md5_hex:
                # a PUT answer without the right ETag: ask what is there
                info = await self.up.store.head(self.key)
                if info.etag != md5_hex or info.size != size:
                    raise S3Error("PutETagMismatch", self.key, f"ETag {etag} != local MD5 {md5_hex}", "PutObject")
            return etag

        etag = await retrying(send, self.up.policy, f"PutObject of {self.key!r}", self._on_retry)
        self.last_etag = etag or None
        self._rebase()
        self.up.stats.completed += 1
        self.up.stats.bytes_uploaded += size
        log.info("upload completed: %r single PUT bytes=%d", self.key, size)
        self._started_at = None

    async def _abort_orphans(self) -> None:
        """A Create whose answer was lost still made an upload: find this key's uploads
        begun since our first attempt (other than ours) and abort them."""
        if self._create_doubt is None:
            return
        since, self._create_doubt = self._create_doubt - 60, None
        ours = self.plan.upload_id
        try:
            page = await retrying(lambda: self.up.store.list_uploads(self.key), self.up.policy,
                                  f"ListMultipartUploads of {self.key!r}")
        except S3Error as exc:
            log.warning("could not look for orphaned uploads of %r: %s (s3fsmpu uploads finds them)",
                        self.key, exc)
            return
        for u in page.uploads:
            if u.key == self.key and u.upload_id != ours and u.initiated >= since:
                log.info("aborting orphaned upload %s of %r (its Create answer was lost)", u.upload_id, self.key)
                await self._abort_quietly(u.upload_id)

    def _rebase(self) -> None:
        """What was just published is the base of whatever is written next."""
        self.plan.published()
        self._released_parts = 0  # part numbers start again for what is written next
        self.base_key, self.base_etag = self.key, self.last_etag
        self.expect = Expect(self.last_etag) if self.last_etag is not None else None
        self.retrying = False

    # ---- failure ----------------------------------------------------------
    def _raise_if_failed(self) -> None:
        if self.failed is not None:
            raise self.failed

    async def _handle_failure(self) -> None:
        """Abort once no part is in flight, keep the bytes, say where. Runs once."""
        if self._cleaned_up:
            return
        self._cleaned_up = True
        await self._idle.wait()
        if self.plan.upload_id is not None:
            await self._abort_quietly(self.plan.upload_id)
            self.plan.forget_upload()
        assert self.failed is not None
        if self.base_key is not None:  # an update: make the kept file the whole intended content
            try:
                await self._ensure_loaded(0, self.plan.size)
            except S3Error as exc:
                log.error("could not fetch the unchanged bytes of %r for the recovery file: %s "
                          "(it holds only the changed ranges)", self.key, exc)
        try:
            path = self.spool.keep(self.up.recovery_dir, self.plan.size)
            self.failed.recovery_path = path
            self.up.stats.recovery_files.append(path)
        except OSError as exc:
            log.error("could not move the spool %s to the recovery folder: %s", self.spool.path, exc)
            self.failed.recovery_path = self.spool.path
        await self._abort_orphans()
        self.up.stats.failed += 1
        log.error("%s", self.failed)

    async def _abort_quietly(self, upload_id: str) -> None:
        await abort_quietly(self.up.store, self.key, upload_id, self.up.policy)
