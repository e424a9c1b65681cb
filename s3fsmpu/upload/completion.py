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
- NoSuchUpload / 412 after an attempt whose outcome is unknown (timeout, dropped
  connection, unparsable or empty 200), with another object under the key ->
  failed: ours may have landed and been replaced, and a repair would overwrite theirs;
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
from s3fsmpu.store.base import ObjectInfo, ObjectStore, PartRef

log = logging.getLogger(__name__)

BUG_CODES = frozenset({"EntityTooSmall", "InvalidPartOrder", "MalformedXML", "InvalidRequest"})
REPAIR_CODES = frozenset({"InvalidPart", "NoSuchUpload"})
# after an earlier attempt may have landed, these say nothing for sure
AMBIGUOUS_ON_RETRY = frozenset({"NoSuchUpload", "PreconditionFailed", "412"})
# answers that leave open whether the Complete was carried out (no S3 code said it was not)
OUTCOME_UNKNOWN = frozenset({"Timeout", "ConnectionError", "500"})

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


async def object_under_key(store: ObjectStore, key: str) -> ObjectInfo | None:
    """HeadObject settles an ambiguous answer: what is under the key now (None: nothing)."""
    try:
        return await store.head(key)
    except S3Error as exc:
        if exc.code == "NoSuchKey":
            return None
        raise


def is_ours(info: ObjectInfo | None, expected: Expected) -> bool:
    if info is None or info.size != expected.size:
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
    may_have_landed = False  # an earlier attempt may have completed the upload
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
                found = await _settle(store, key, policy)
                if is_ours(found, expected):
                    return Outcome(Verdict.DONE, f"settled by HeadObject after {exc.code}", True, attempt - 1)
                if found is not None and may_have_landed and exc.code in AMBIGUOUS_ON_RETRY:
                    # ours may have landed and been replaced since: re-uploading would overwrite theirs
                    log.error("Complete of %r upload_id=%s: %s after a retry, and the object under the key "
                              "is not ours (size %d, ETag %s; ours: size %d, ETag %s)", key, upload_id,
                              exc.code, found.size, found.etag, expected.size, expected.etag)
                    return Outcome(Verdict.FAILED, f"{exc.code} after a retry and another object under the key",
                                   True, attempt - 1)
            may_have_landed = may_have_landed or exc.code in OUTCOME_UNKNOWN
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
        if is_ours(await _settle(store, key, policy), expected):
            return Outcome(Verdict.DONE, f"settled by HeadObject ({why})", True, attempt - 1)
        if result.etag is not None:
            log.error("Complete of %r answered ETag %s, expected %s: re-uploading", key, result.etag, expected.etag)
            return Outcome(Verdict.REPAIR, why, retries=attempt - 1)
        may_have_landed = True
        log.warning("Complete of %r upload_id=%s: %s and no such object yet; retrying", key, upload_id, why)
        if on_retry is not None:
            on_retry(S3Error("EmptyAnswer", key, why, "CompleteMultipartUpload"))
    # attempts exhausted
    if is_ours(await _settle(store, key, policy), expected):
        return Outcome(Verdict.DONE, "settled by HeadObject after retries", True, attempt)
    return Outcome(Verdict.FAILED, f"Complete failed after {attempt} attempts: {last}", retries=attempt)


async def _settle(store: ObjectStore, key: str, policy: RetryPolicy) -> ObjectInfo | None:
    """HeadObject is idempotent: a transient failure of it is retried, not taken as "not ours"
    (None, as for no object, when it keeps failing)."""
    try:
        return await retrying(lambda: object_under_key(store, key), policy,
                              f"HeadObject of {key!r} to settle Complete")
    except S3Error as exc:
        log.warning("HeadObject of %r to settle Complete failed: %s", key, exc)
        return None
