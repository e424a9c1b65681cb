"""CompleteMultipartUpload, judged by what S3 meant rather than the HTTP status.

Every outcome ends in one of three results: the object is ours (verified by
the ETag S3 returned, or by HeadObject), it needs repair from the local
bytes (InvalidPart, a lost upload, a wrong object), or the upload failed.

- success carrying the expected ETag (md5 of the part md5s + "-N"), or (crc
  modes) the whole-object checksum we sent -> done;
- transient codes, timeouts, dropped connections -> retry with backoff;
- ambiguous answers (no ETag, NoSuchUpload / 412 / 500 after a retry,
  retries exhausted) -> HeadObject: ours only if ETag (or, where ETags are
  not MD5s, our upload token in the metadata) and size match;
- InvalidPart, NoSuchUpload on the first attempt, a wrong object, BadDigest
  (the joined parts are not what our whole-object checksum says) -> repair;
- NoSuchUpload / 412 after an attempt whose outcome is unknown (timeout, dropped
  connection, unparsable or empty 200), with another object under the key ->
  failed: ours may have landed and been replaced, and a repair would overwrite theirs;
- a conditional Complete (If-None-Match: * / If-Match: the version this mount
  knew) refused with 412, or NoSuchKey for If-Match -> HeadObject: ours (a retry
  of one that landed) -> done, else a conflict with another client: failed,
  their object stays; 409 ConditionalRequestConflict -> a new upload (repair);
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
from s3fsmpu.store.base import Checksum, Expect, ObjectInfo, ObjectStore, PartRef

log = logging.getLogger(__name__)

BUG_CODES = frozenset({"EntityTooSmall", "InvalidPartOrder", "MalformedXML", "InvalidRequest"})
# BadDigest: the parts S3 joined do not match our whole-object checksum (crc modes): a part
# was damaged on its way and nobody noticed; sent again from the spool, it is right
REPAIR_CODES = frozenset({"InvalidPart", "NoSuchUpload", "ConditionalRequestConflict", "409", "BadDigest"})
# a conditional write refused: the key holds something else than this mount knew
CONFLICT_CODES = frozenset({"PreconditionFailed", "412", "NoSuchKey"})
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
    etag: str | None = None  # of the object, where S3 said it (DONE)


@dataclass(frozen=True)
class Expected:
    size: int
    etag: str | None  # None where ETags are not checked as MD5s (SSE-KMS, SSE-C, crc modes)
    token: str | None = None
    # the crc modes: the whole object's checksum, sent with Complete (FULL_OBJECT) for S3 to
    # check against the parts it holds
    checksum: Checksum | None = None


async def object_under_key(store: ObjectStore, key: str) -> ObjectInfo | None:
    """HeadObject settles an ambiguous answer: what is under the key now (None: nothing)."""
    try:
        return await store.head(key)
    except S3Error as exc:
        if exc.code == "NoSuchKey":
            return None
        raise


def conflict_reason(key: str, expect: Expect, found: ObjectInfo | None) -> str:
    """What the one ERROR line of a conflict says: the key, what we expected, what S3 has."""
    now = "no object" if found is None else f"ETag {found.etag}, {found.size} bytes"
    return (f"conflict: another client changed {key!r} since this mount knew it "
            f"(expected {expect}; S3 has {now}); its version stays")


async def settle_conflict(store: ObjectStore, key: str, expect: Expect, expected: Expected,
                          policy: RetryPolicy) -> str | None:
    """A refused conditional write: None if the object there is ours after all (a retry of
    a write that landed), else the conflict's reason."""
    found = await _settle(store, key, policy)
    return None if is_ours(found, expected) else conflict_reason(key, expect, found)


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
    expect: Expect | None = None,
) -> Outcome:
    """Complete the upload (only if the key holds what `expect` says) and judge the answer."""
    attempt = 0
    last: S3Error | None = None
    may_have_landed = False  # an earlier attempt may have completed the upload
    while attempt < policy.attempts:
        attempt += 1
        if attempt > 1:
            await trio.sleep(policy.delay(attempt - 1))
        try:
            result = await store.complete_multipart(key, upload_id, parts, expect, expected.checksum)
        except S3Error as exc:
            last = exc
            if exc.code in BUG_CODES:
                log.error(
                    "BUG: CompleteMultipartUpload of %r upload_id=%s refused with %s; parts sent: %s",
                    key, upload_id, exc, [(p.number, p.etag) for p in parts],
                )
                return Outcome(Verdict.FAILED, f"S3 refused Complete: {exc.code} (a bug in s3fsmpu)",
                               retries=attempt - 1)
            conflict = expect is not None and exc.code in CONFLICT_CODES
            if conflict or (attempt > 1 and (exc.code in AMBIGUOUS_ON_RETRY or exc.transient)):
                # an earlier attempt may have completed the upload
                found = await _settle(store, key, policy)
                if is_ours(found, expected):
                    return _settled(found, f"after {exc.code}", attempt - 1)
                if conflict:
                    assert expect is not None
                    return Outcome(Verdict.FAILED, conflict_reason(key, expect, found), True, attempt - 1)
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
            return Outcome(Verdict.DONE, retries=attempt - 1, etag=result.etag)
        if result.etag is not None and expected.checksum is not None and result.checksum == expected.checksum.value:
            # S3 checked our whole-object checksum against the parts it joined: ours
            return Outcome(Verdict.DONE, retries=attempt - 1, etag=result.etag)
        # 200 without an ETag, or with one we did not expect: ask what is there
        why = "no ETag in the answer" if result.etag is None else f"unexpected ETag {result.etag}"
        found = await _settle(store, key, policy)
        if is_ours(found, expected):
            return _settled(found, f"({why})", attempt - 1)
        if result.etag is not None:
            log.error("Complete of %r answered ETag %s, expected %s: re-uploading", key, result.etag, expected.etag)
            return Outcome(Verdict.REPAIR, why, retries=attempt - 1)
        may_have_landed = True
        log.warning("Complete of %r upload_id=%s: %s and no such object yet; retrying", key, upload_id, why)
        if on_retry is not None:
            on_retry(S3Error("EmptyAnswer", key, why, "CompleteMultipartUpload"))
    # attempts exhausted
    found = await _settle(store, key, policy)
    if is_ours(found, expected):
        return _settled(found, "after retries", attempt)
    return Outcome(Verdict.FAILED, f"Complete failed after {attempt} attempts: {last}", retries=attempt)


async def abort_quietly(store: ObjectStore, key: str, upload_id: str, policy: RetryPolicy) -> None:
    """Abort an upload that may already be gone (completed or aborted): only a failure
    to abort one that exists is worth a line, naming the command that cleans up."""
    try:
        await retrying(lambda: store.abort_multipart(key, upload_id), policy,
                       f"AbortMultipartUpload of {key!r}")
    except S3Error as exc:
        if exc.code != "NoSuchUpload":
            log.error("could not abort upload %s of %r: %s (s3fsmpu uploads --abort removes it)",
                      upload_id, key, exc)


def _settled(found: ObjectInfo | None, why: str, retries: int) -> Outcome:
    assert found is not None
    return Outcome(Verdict.DONE, f"settled by HeadObject {why}", True, retries, found.etag)


async def _settle(store: ObjectStore, key: str, policy: RetryPolicy) -> ObjectInfo | None:
    """HeadObject is idempotent: a transient failure of it is retried, not taken as "not ours"
    (None, as for no object, when it keeps failing)."""
    try:
        return await retrying(lambda: object_under_key(store, key), policy,
                              f"HeadObject of {key!r} to settle Complete")
    except S3Error as exc:
        log.warning("HeadObject of %r to settle Complete failed: %s", key, exc)
        return None
