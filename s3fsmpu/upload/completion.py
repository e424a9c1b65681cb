"""CompleteMultipartUpload, judged by what S3 meant rather than the HTTP status.

Every outcome ends in one of three results: the object is ours (verified by
the ETag S3 returned, or by HeadObject), it needs repair from the local
bytes (InvalidPart, a lost upload, a wrong object), or the upload failed.

- success carrying the expected ETag (md5 of the part md5s + "-N") -> done;
- transient codes, timeouts, dropped connections -> retry with backoff;
- ambiguous answers (no ETag, NoSuchUpload / 412 / 500 after a retry,
  retries exhausted) -> HeadObject: ours only if ETag (or, where ETags are
  not MD5s, our upload token in the metadata) and size match;
- InvalidPart, NoSuchUpload on the first attempt, a wrong object -> repair;
- EntityTooSmall, InvalidPartOrder, MalformedXML -> a bug in us: fail loudly.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import trio

from s3fsmpu.errors import S3Error
from s3fsmpu.retry import RetryPolicy, retrying
from s3fsmpu.store.base import ObjectStore, PartRef

log = logging.getLogger(__name__)

BUG_CODES = frozenset({"EntityTooSmall", "InvalidPartOrder", "MalformedXML", "InvalidRequest"})
REPAIR_CODES = frozenset({"InvalidPart", "NoSuchUpload"})
# after an earlier attempt may have landed, these say nothing for sure
AMBIGUOUS_ON_RETRY = frozenset({"NoSuchUpload", "PreconditionFailed", "412"})

TOKEN_KEY = "s3fsmpu-token"


class Verdict(enum.Enum):
    DONE = "done"
    REPAIR = "repair"
    FAILED = "failed"


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    reason: str = ""
    settled_by_head: bool = False
    retries: int = 0


@dataclass(frozen=True)
class Expected:
    size: int
    etag: str | None  # None where ETags are not MD5s (SSE-KMS, SSE-C)
    token: str | None = None


async def object_is_ours(store: ObjectStore, key: str, expected: Expected) -> bool:
    """HeadObject settles an ambiguous answer."""
    try:
        info = await store.head(key)
    except S3Error as exc:
        if exc.code == "NoSuchKey":
            return False
        raise
    if info.size != expected.size:
        return False
    if expected.etag is not None:
        return info.etag == expected.etag
    return expected.token is not None and (info.metadata or {}).get(TOKEN_KEY) == expected.token


async def complete_upload(
    store: ObjectStore,
    key: str,
    upload_id: str,
    parts: Sequence[PartRef],
    expected: Expected,
    policy: RetryPolicy,
    on_retry: Callable[[S3Error], None] | None = None,
) -> Outcome:
    attempt = 0
    last: S3Error | None = None
    while attempt < policy.attempts:
        attempt += 1
        if attempt > 1:
            await trio.sleep(policy.delay(attempt - 1))
        try:
            result = await store.complete_multipart(key, upload_id, parts)
        except S3Error as exc:
            last = exc
            if exc.code in BUG_CODES:
                log.error(
                    "BUG: CompleteMultipartUpload of %r upload_id=%s refused with %s; parts sent: %s",
                    key, upload_id, exc, [(p.number, p.etag) for p in parts],
                )
                return Outcome(Verdict.FAILED, f"S3 refused Complete: {exc.code} (a bug in s3fsmpu)",
                               retries=attempt - 1)
            if attempt > 1 and (exc.code in AMBIGUOUS_ON_RETRY or exc.transient):
                # an earlier attempt may have completed the upload
                if await _settle(store, key, expected, policy):
                    return Outcome(Verdict.DONE, f"settled by HeadObject after {exc.code}", True, attempt - 1)
            if exc.code in REPAIR_CODES:
                return Outcome(Verdict.REPAIR, f"{exc.code} on Complete", retries=attempt - 1)
            if exc.transient:
                log.warning("retrying Complete of %r upload_id=%s after %s (attempt %d of %d)",
                            key, upload_id, exc, attempt + 1, policy.attempts)
                if on_retry is not None:
                    on_retry(exc)
                continue
            return Outcome(Verdict.FAILED, f"Complete refused: {exc}", retries=attempt - 1)
        if result.etag is not None and expected.etag is not None and result.etag == expected.etag:
            return Outcome(Verdict.DONE, retries=attempt - 1)
        # 200 without an ETag, or with one we did not expect: ask what is there
        why = "no ETag in the answer" if result.etag is None else f"unexpected ETag {result.etag}"
        if await _settle(store, key, expected, policy):
            return Outcome(Verdict.DONE, f"settled by HeadObject ({why})", True, attempt - 1)
        if result.etag is not None:
            log.error("Complete of %r answered ETag %s, expected %s: re-uploading", key, result.etag, expected.etag)
            return Outcome(Verdict.REPAIR, why, retries=attempt - 1)
        log.warning("Complete of %r upload_id=%s: %s and no such object yet; retrying", key, upload_id, why)
        if on_retry is not None:
            on_retry(S3Error("EmptyAnswer", key, why, "CompleteMultipartUpload"))
    # attempts exhausted
    if await _settle(store, key, expected, policy):
        return Outcome(Verdict.DONE, "settled by HeadObject after retries", True, attempt)
    return Outcome(Verdict.FAILED, f"Complete failed after {attempt} attempts: {last}", retries=attempt)


async def _settle(store: ObjectStore, key: str, expected: Expected, policy: RetryPolicy) -> bool:
    """HeadObject is idempotent: a transient failure of it is retried, not taken as "not ours"."""
    try:
        return await retrying(lambda: object_is_ours(store, key, expected), policy,
                              f"HeadObject of {key!r} to settle Complete")
    except S3Error as exc:
        log.warning("HeadObject of %r to settle Complete failed: %s", key, exc)
        return False
