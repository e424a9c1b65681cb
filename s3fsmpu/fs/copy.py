"""Server-side copies of whole objects: rename and metadata changes.

CopyObject refuses sources above 5 GiB, so larger objects are copied as a
multipart upload of UploadPartCopy parts, sent in parallel and completed
with the same verification as any upload (completion.py).
"""

from __future__ import annotations

import logging
import uuid

import trio

from s3fsmpu.errors import S3Error, UploadFailed, first_error
from s3fsmpu.retry import RetryPolicy, retrying
from s3fsmpu.store.base import Body, Expect, ObjectStore, PartRef, WriteMeta
from s3fsmpu.store.memory import multipart_etag
from s3fsmpu.upload.completion import (
    TOKEN_KEY,
    Expected,
    Verdict,
    abort_quietly,
    complete_upload,
)

log = logging.getLogger(__name__)

COPY_LIMIT = 5 << 30  # CopyObject's ceiling
COPY_PART = 1 << 30
COPY_CONCURRENCY = 8


async def copy_object(
    store: ObjectStore,
    src: str,
    dst: str,
    size: int,
    meta: WriteMeta | None,
    policy: RetryPolicy,
    limit: int = COPY_LIMIT,
    part_size: int = COPY_PART,
    checks_md5_etags: bool = True,
    src_etag: str | None = None,
    expect: Expect | None = None,
) -> str | None:
    """Copy `src` to `dst` (with `meta`, or the source's metadata when None); the new ETag.

    With `src_etag`, only while the source is that object: a copy must not carry
    attributes (or a name) over to an object another client put there meanwhile.
    `expect` is what the destination must hold (a conditional write, on the copy or
    on a multipart copy's Complete)."""
    if size <= limit:
        try:
            return await retrying(lambda: store.copy(src, dst, meta, src_etag, expect), policy,
                                  f"CopyObject {src!r} -> {dst!r}")
        except S3Error as exc:
            # a bucket policy that requires conditional writes: AWS refuses a conditional
            # CopyObject (501); a multipart copy's Complete takes the condition
            if expect is None or exc.code not in ("NotImplemented", "501"):
                raise
    if meta is None or size == 0:
        info = await store.head(src)
        if src_etag is not None and info.etag != src_etag:
            raise S3Error("PreconditionFailed", dst, f"copy source {src!r} changed", "CopyObject", 412)
        if meta is None:
            meta = WriteMeta(dict(info.metadata or {}), info.content_type)
    if size == 0:  # no part to copy: the (empty) body is known
        empty_meta = meta
        return await retrying(lambda: store.put(dst, Body(0, data=b""), empty_meta, expect), policy,
                              f"PutObject {dst!r} (copy of empty {src!r})")
    token = None
    if not checks_md5_etags:  # SSE-KMS/SSE-C: identify the result by a token, not its ETag
        token = uuid.uuid4().hex
        meta = WriteMeta({**meta.metadata, TOKEN_KEY: token}, meta.content_type)
    # parts of at least `part_size`, within 10,000 parts
    part = max(part_size, -(-size // 10_000))
    ranges = [(n + 1, start, min(size, start + part)) for n, start in enumerate(range(0, size, part))]
    upload_id = await retrying(lambda: store.create_multipart(dst, meta), policy, f"CreateMultipartUpload {dst!r}")
    refs: dict[int, PartRef] = {}
    try:
        limiter = trio.CapacityLimiter(COPY_CONCURRENCY)

        async def one(number: int, start: int, end: int) -> None:
            async with limiter:
                res = await retrying(
                    lambda: store.upload_part_copy(dst, upload_id, number, src, start, end, src_etag),
                    policy, f"UploadPartCopy {number} {src!r} -> {dst!r}",
                )
                if res.etag is None:
                    raise S3Error("NoETag", dst, f"UploadPartCopy {number} answered without an ETag")
                refs[number] = PartRef(number, res.etag, res.checksum)

        try:
            async with trio.open_nursery() as nursery:
                for number, start, end in ranges:
                    nursery.start_soon(one, number, start, end)
        except BaseExceptionGroup as group:
            raise first_error(group) from group
        ordered = [refs[n] for n, _, _ in ranges]
        expected = Expected(size, multipart_etag([r.etag for r in ordered]) if token is None else None, token)
        outcome = await complete_upload(store, dst, upload_id, ordered, expected, policy, expect=expect)
        if outcome.verdict is not Verdict.DONE:
            raise UploadFailed(dst, f"multipart copy from {src!r}: {outcome.reason}")
        if outcome.settled_by_head:  # an earlier attempt landed; this upload may still be open
            await abort_quietly(store, dst, upload_id, policy)
        log.info("copied %r -> %r in %d parts (%d bytes)", src, dst, len(ordered), size)
        return expected.etag or outcome.etag
    except BaseException:
        with trio.CancelScope(shield=True):
            await abort_quietly(store, dst, upload_id, policy)
        raise
