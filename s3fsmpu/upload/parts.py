"""The part requests of one upload: sending, copying, and what they account for.

`PartTraffic` is the half of an `UploadSession` (driver.py) that talks to S3
part by part while the application writes: one CreateMultipartUpload that
concurrent parts wait for, each UploadPart hashed in a worker thread and
sent under the uploader's concurrency limit while holding its size from the
byte budget, unchanged ranges copied with UploadPartCopy, and the page
cache of a big spool handed back as its prefix settles. A part's failure
fails the upload (`failed`), never the mount; the session decides at flush.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import trio

from s3fsmpu.errors import S3Error, UploadFailed
from s3fsmpu.retry import retrying
from s3fsmpu.store.base import Body, WriteMeta
from s3fsmpu.upload.completion import TOKEN_KEY
from s3fsmpu.upload.digest import digest_slice
from s3fsmpu.upload.mpu import MultipartPlan
from s3fsmpu.upload.spool import Spool

if TYPE_CHECKING:
    from s3fsmpu.upload.uploader import Uploader

log = logging.getLogger(__name__)


class PartTraffic:
    def __init__(self, uploader: Uploader, key: str, meta: WriteMeta) -> None:
        self.up = uploader
        self.key = key
        self.meta = meta
        self.plan = MultipartPlan(uploader.schedule)
        self.spool = Spool(uploader.cache_dir, key)
        self.failed: UploadFailed | None = None
        self._inflight = 0
        self._idle = trio.Event()
        self._idle.set()
        self._token: str | None = None
        self._creating: trio.Event | None = None
        self.sent_meta: WriteMeta = meta  # the metadata the last Create/PUT carried
        # the object unwritten ranges come from (update of an existing object, or
        # writing on after a flush): copied server-side or fetched by ranged GET
        self.base_key: str | None = None
        self.base_etag: str | None = None
        self.bytes_sent = 0
        self.retrying = False  # a request of this upload is waiting to be retried
        # when a CreateMultipartUpload attempt failed ambiguously (it may have
        # landed, its answer lost), the wall-clock time of the first attempt
        self._create_doubt: float | None = None
        self._released_parts = 0  # parts 1..n are uploaded and their pages handed back

    async def _start_part(self, number: int) -> None:
        rng, version = self.plan.begin_part(number)
        self._inflight += 1
        self._idle = trio.Event()
        try:
            reserved = await self.up.budget.acquire(rng.size)
        except BaseException:
            self.plan.part_abandoned(number)
            self._part_finished()
            raise
        self.up.nursery.start_soon(self._run_part, number, version, "UploadPart", reserved,
                                   lambda: self._send_part(number, rng.start, rng.size, version))

    async def _start_copy(self, number: int) -> None:
        """An unchanged part: copied from the base object, no bytes sent, no budget held."""
        rng, version = self.plan.begin_part(number)
        self._inflight += 1
        self._idle = trio.Event()
        self.up.nursery.start_soon(self._run_part, number, version, "UploadPartCopy", 0,
                                   lambda: self._copy_part(number, rng.start, rng.end, version))

    async def _copy_part(self, number: int, start: int, end: int, version: int) -> None:
        upload_id = await self._ensure_created()
        assert self.base_key is not None
        base_key, base_etag = self.base_key, self.base_etag
        res = await retrying(
            lambda: self.up.store.upload_part_copy(self.key, upload_id, number, base_key, start, end, base_etag),
            self.up.policy, f"UploadPartCopy {number} of {self.key!r}", self._on_retry,
        )
        if res.etag is None:
            raise S3Error("NoETag", self.key, f"UploadPartCopy {number} answered without an ETag")
        self.plan.part_uploaded(number, version, end - start, res.etag, res.etag, res.checksum)
        self.up.stats.parts_copied += 1

    async def _send_part(self, number: int, start: int, length: int, version: int) -> None:
        upload_id = await self._ensure_created()
        body, md5_hex = await trio.to_thread.run_sync(self._digest_part, start, length)

        async def send() -> tuple[str, str | None]:
            res = await self.up.store.upload_part(self.key, upload_id, number, body)
            self._verify_part(number, res.etag, md5_hex, res.checksum, body.checksum)
            if res.etag is None and md5_hex is None:
                raise S3Error("NoETag", self.key, f"UploadPart {number} answered without an ETag", "UploadPart")
            return res.etag or md5_hex or "", body.checksum

        etag, checksum = await retrying(send, self.up.policy, f"UploadPart {number} of {self.key!r}",
                                        self._on_retry)
        self.plan.part_uploaded(number, version, length, etag, md5_hex, checksum)
        await self._release_uploaded_prefix()
        self.up.stats.parts_uploaded += 1
        self.up.stats.bytes_uploaded += length
        self.bytes_sent += length

    def _verify_part(self, number: int, etag: str | None, md5_hex: str | None,
                     checksum: str | None, sent: str | None) -> None:
        """What S3 says it received must be what we sent: the ETag against our MD5 (md5 mode,
        where ETags are MD5s), the checksum it echoes against ours (where it echoes one)."""
        if self.up.config.checks_md5_etags and etag != md5_hex:
            raise S3Error("PartETagMismatch", self.key, f"part {number} ETag {etag} != local MD5 {md5_hex}",
                          "UploadPart")
        if checksum is not None and sent is not None and checksum != sent:
            raise S3Error("PartChecksumMismatch", self.key, f"part {number} {self.up.config.checksum_algorithm} "
                                                            f"{checksum} != local {sent}", "UploadPart")
        if checksum is None and sent is not None and not self.up.config.content_md5:
            self.up.note_unconfirmed_checksum()

    async def _release_uploaded_prefix(self) -> None:
        """Drop the page cache of a big file's uploaded prefix: the spool must not fill memory.

        Always from offset 0: the kernel drops only whole folios, and the
        folio straddling the last boundary goes once its neighbour is done.
        Parts in flight lie past the prefix, so none is re-read from disk.
        """
        if not self._spool_is_big():
            return
        n = self.plan.settled_through(self._released_parts)
        if n > self._released_parts:
            self._released_parts = n
            end = min(self.plan.layout.part(n).end, self.plan.size)
            await trio.to_thread.run_sync(self.spool.release, 0, end)

    def _digest_part(self, start: int, length: int) -> tuple[Body, str | None]:
        """In a worker thread: hash the part, and start writing it back to disk meanwhile."""
        digested = digest_slice(self.spool.fd, start, length, self.up.config.checksum_algorithm,
                                self.up.config.content_md5)
        if self._spool_is_big():
            self.spool.release(start, length)
        return digested

    def _spool_is_big(self) -> bool:
        """Past spool_resident, uploaded parts go back to the kernel (written back, then dropped)."""
        return self.plan.size > self.up.config.spool_resident

    async def _run_part(self, number: int, version: int, what: str, reserved: int,
                        work: Callable[[], Awaitable[None]]) -> None:
        """One part request under the concurrency limit; its failure fails the upload, never the mount."""
        ok = False
        try:
            async with self.up.limiter:
                await work()
            ok = True
        except S3Error as exc:
            if self.plan.parts[number].version != version:
                # written again while in flight: the body changed under its MD5.
                # Nothing is lost; the part is not current and is sent again.
                log.debug("%s %d of %r superseded by a newer write: %s", what, number, self.key, exc)
            else:
                log.error("%s %d of %r failed: %s", what, number, self.key, exc)
                if self.failed is None:
                    self.failed = UploadFailed(self.key, f"{what} {number}: {exc}")
        except UploadFailed as exc:
            self.failed = self.failed or exc
        except Exception as exc:  # a part task must never take the mount down
            log.exception("%s %d of %r: unexpected error", what, number, self.key)
            if self.failed is None:
                self.failed = UploadFailed(self.key, f"{what} {number}: {exc!r}")
        finally:
            if not ok:
                self.plan.part_abandoned(number)
            if reserved:
                self.up.budget.release(reserved)
            self._part_finished()

    def _part_finished(self) -> None:
        self._inflight -= 1
        if self._inflight == 0:
            self._idle.set()

    async def _ensure_created(self) -> str:
        if self.plan.upload_id is None:
            # one CreateMultipartUpload; concurrent parts wait for it
            if self._creating is not None:
                await self._creating.wait()
                if self.plan.upload_id is None:
                    raise self.failed or UploadFailed(self.key, "CreateMultipartUpload failed")
                return self.plan.upload_id
            self._creating = trio.Event()
            try:
                meta = self._meta_with_token()
                first_attempt = time.time()

                def doubt(exc: S3Error) -> None:
                    self._create_doubt = self._create_doubt or first_attempt
                    self._on_retry(exc)

                self.plan.upload_id = await retrying(
                    lambda: self.up.store.create_multipart(self.key, meta),
                    self.up.policy,
                    f"CreateMultipartUpload of {self.key!r}",
                    doubt,
                )
                self.up.stats.started += 1
                log.info("upload started: %r upload_id=%s", self.key, self.plan.upload_id)
            except S3Error as exc:
                self.failed = self.failed or UploadFailed(self.key, f"CreateMultipartUpload: {exc}")
                raise self.failed from exc
            finally:
                self._creating.set()
                self._creating = None
        return self.plan.upload_id

    def _meta_with_token(self) -> WriteMeta:
        """The metadata for a new Create/PUT (recorded: it is what the object will carry)."""
        self.sent_meta = self.meta
        if self.up.config.checks_md5_etags:
            return self.meta
        self._token = uuid.uuid4().hex
        return replace(self.meta, metadata={**self.meta.metadata, TOKEN_KEY: self._token})

    def _on_retry(self, exc: S3Error) -> None:
        self.retrying = True
        self.up.note_retry(exc)
