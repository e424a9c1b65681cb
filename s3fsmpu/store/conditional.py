"""Where conditional writes go: on, off by choice (--conflicts overwrite), or off
after the server refused them.

The core and the upload driver always say what a write expects to replace
(an `Expect`: no object, or the version this mount knew). This wrapper is the
one place that decides whether S3 sees it: with `--conflicts overwrite` the
conditions are dropped (last writer wins, as in every other S3 mount), and a
server that answers a conditional write with NotImplemented (older MinIO,
radosgw releases before conditional Complete) turns them off for the rest of
the mount with one WARNING, the refused request sent again without them.
CopyObject is the exception: AWS answers a conditional CopyObject 501 where a
bucket policy requires conditional writes (and 403 to one without), so a
refused conditional copy is remembered and raised to copy_object, which then
copies as a multipart upload (UploadPartCopy needs no condition; its Complete
carries it). The copy's source guard (CopySourceIfMatch) is not a conditional
write and always stays.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from s3fsmpu.errors import S3Error
from s3fsmpu.store.base import Body, Checksum, CompleteResult, Expect, PartRef, WriteMeta
from s3fsmpu.store.wrapper import StoreWrapper

log = logging.getLogger(__name__)
T = TypeVar("T")

# what a server says when it does not take If-Match / If-None-Match on a write
UNSUPPORTED_CODES = frozenset({"NotImplemented", "501"})


def refuses_conditions(exc: S3Error) -> bool:
    if exc.code in UNSUPPORTED_CODES:
        return True
    text = f"{exc.code} {exc.message}".lower()
    return exc.code in ("InvalidArgument", "InvalidRequest", "400") and (
        "if-match" in text or "if-none-match" in text or "conditional" in text)


class ConditionalWrites(StoreWrapper):
    def __init__(self, inner: Any, enabled: bool = True) -> None:
        super().__init__(inner)
        self.enabled = enabled
        self.copy_refuses_conditions = False  # then conditional copies go multipart
        self.unquoted_etags = False  # then If-Match carries the bare ETag (radosgw 16)

    async def put(self, key: str, body: Body, meta: WriteMeta, expect: Expect | None = None) -> str:
        return await self._write("PutObject", key, expect, lambda e: self.inner.put(key, body, meta, e))

    async def copy(self, src: str, dst: str, meta: WriteMeta | None = None,
                   src_etag: str | None = None, expect: Expect | None = None) -> str:
        if expect is not None and self.enabled and self.copy_refuses_conditions:
            raise S3Error("NotImplemented", dst, "conditional CopyObject refused before", "CopyObject", 501)
        return await self._write("CopyObject", dst, expect,
                                 lambda e: self.inner.copy(src, dst, meta, src_etag, e))

    async def complete_multipart(self, key: str, upload_id: str, parts: Sequence[PartRef],
                                 expect: Expect | None = None, checksum: Checksum | None = None) -> CompleteResult:
        return await self._write("CompleteMultipartUpload", key, expect,
                                 lambda e: self.inner.complete_multipart(key, upload_id, parts, e, checksum))

    async def delete(self, key: str, etag: str | None = None) -> None:
        await self._write("DeleteObject", key, None if etag is None else Expect(etag),
                          lambda e: self.inner.delete(key, None if e is None else e.etag))

    async def _refused_a_true_condition(self, op: str, key: str, expect: Expect, exc: S3Error) -> bool:
        """A 412 to If-Match although the key holds exactly that ETag: the server wants the
        bare ETag (radosgw 16 compares the header unquoted). From now on it gets that."""
        if exc.code not in ("PreconditionFailed", "412") or expect.etag is None or not expect.quoted:
            return False
        try:
            info = await self.inner.head(key)
        except S3Error:
            return False
        if info.etag != expect.etag:
            return False  # a real conflict
        self.unquoted_etags = True
        log.warning("%s of %r: the server refused If-Match with the ETag it holds in quotes; "
                    "If-Match goes without quotes from now on (radosgw 16 wants it so)", op, key)
        return True

    async def _write(self, op: str, key: str, expect: Expect | None,
                     call: Callable[[Expect | None], Awaitable[T]]) -> T:
        if expect is None or not self.enabled:
            return await call(None)
        if self.unquoted_etags:
            expect = dataclasses.replace(expect, quoted=False)
        try:
            return await call(expect)
        except S3Error as exc:
            if await self._refused_a_true_condition(op, key, expect, exc):
                return await call(dataclasses.replace(expect, quoted=False))
            if not refuses_conditions(exc):
                raise
            if op == "CopyObject":
                self.copy_refuses_conditions = True
                log.info("conditional CopyObject refused (%s): copies with a condition go as multipart "
                         "uploads from now on", exc)
                raise
            if self.enabled:
                self.enabled = False
                log.warning("%s of %r: the server does not take conditional writes (%s); they are off "
                            "for this mount: another client's change to a key can now be overwritten "
                            "(last writer wins)", op, key, exc)
        return await call(None)
