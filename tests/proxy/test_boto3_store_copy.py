"""CopyObject and UploadPartCopy answer 200 and put errors in the body, as Complete does.

Through the fault proxy: the boto3 store classifies those answers by their
S3 code (whitespace keep-alive or not), never takes one -- or a 200 without
an ETag -- as success, and fs/copy.py retries the transient ones to the
right bytes in the bucket.
"""

from __future__ import annotations

import random

import pytest
import trio

from s3fsmpu.errors import S3Error
from s3fsmpu.fs.copy import copy_object
from s3fsmpu.retry import RetryPolicy
from tests.conftest import bucket_bytes, open_uploads
from tests.proxy.test_boto3_store_complete import proxied_store

MIB = 1 << 20
SIZE = 6 * MIB + 17
# UploadPartCopy: copy_object copies anything above `limit` in parts of `part_size` (here one)
VIA = {"CopyObject": {}, "UploadPartCopy": {"limit": 0, "part_size": 8 * MIB}}
PADDING = b"\n   \n" * 10


def copy(store, op: str, attempts: int = 1) -> str | None:  # store: a Boto3Store
    """Copy "src" to "dst" the way the filesystem does, by `op`."""
    policy = RetryPolicy(attempts=attempts, base=0.01)
    return trio.run(lambda: copy_object(store, "src", "dst", SIZE, None, policy, **VIA[op]))


@pytest.fixture
def source(s3, bucket) -> bytes:
    data = random.randbytes(SIZE)
    s3.put_object(Bucket=bucket, Key="src", Body=data)
    return data


@pytest.mark.parametrize("op", list(VIA))
@pytest.mark.parametrize(("code", "transient"), [("InternalError", True), ("SlowDown", True),
                                                  ("AccessDenied", False), ("InvalidRequest", False)])
@pytest.mark.parametrize("padding", [b"", PADDING], ids=["bare", "keepalive"])
def test_error_in_200_is_classified_by_its_code(op, code, transient, padding, proxy, s3, bucket, source):
    rule = proxy.add_rule(op, "error_in_200", code=code, padding=padding)
    with pytest.raises(S3Error) as info:
        copy(proxied_store(proxy.url, bucket), op)
    assert rule.hits == 1
    assert (info.value.code, info.value.transient) == (code, transient)
    assert "dst" not in [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert open_uploads(s3, bucket) == []


@pytest.mark.parametrize("op", list(VIA))
@pytest.mark.parametrize("forward", [False, True], ids=["not-copied", "copied"])
def test_200_without_etag_is_not_success(op, forward, proxy, s3, bucket, source):
    proxy.add_rule(op, "empty_200", forward=forward)
    with pytest.raises(S3Error) as info:
        copy(proxied_store(proxy.url, bucket), op)
    assert info.value.code == "NoETag" and info.value.transient


@pytest.mark.parametrize("op", list(VIA))
@pytest.mark.parametrize("fault", ["error_in_200", "empty_200"])
def test_transient_answers_are_retried_to_the_right_bytes(op, fault, proxy, s3, bucket, source):
    rule = proxy.add_rule(op, fault, times=2)
    etag = copy(proxied_store(proxy.url, bucket), op, attempts=3)
    assert rule.hits == 2 and proxy.count(op) == 3
    assert bucket_bytes(s3, bucket, "dst") == source
    assert etag == s3.head_object(Bucket=bucket, Key="dst")["ETag"].strip('"')


@pytest.mark.parametrize("op", list(VIA))
def test_success_after_keepalive_whitespace_is_success(op, proxy, s3, bucket, source):
    rule = proxy.add_rule(op, "pad_200", padding=PADDING, pieces=3)
    etag = copy(proxied_store(proxy.url, bucket), op)
    assert rule.hits == 1 and proxy.count(op) == 1
    assert bucket_bytes(s3, bucket, "dst") == source
    assert etag == s3.head_object(Bucket=bucket, Key="dst")["ETag"].strip('"')
