"""The boto3 store against S3 answers moto never gives, through the fault proxy."""

from __future__ import annotations

import random

import pytest
import trio

from s3fsmpu.config import ConnectionConfig
from s3fsmpu.errors import S3Error
from s3fsmpu.store.base import PartRef, WriteMeta
from s3fsmpu.store.boto3_store import Boto3Store
from s3fsmpu.upload.digest import digest_bytes

MIB = 1 << 20


def proxied_store(url: str, bucket: str) -> Boto3Store:
    return Boto3Store(bucket, ConnectionConfig(endpoint_url=url, region="us-east-1", addressing_style="path",
                                               read_timeout=3))


async def _two_parts(store: Boto3Store) -> tuple[str, list[PartRef]]:
    upload_id = await store.create_multipart("k", WriteMeta())
    refs = []
    for n, size in ((1, 5 * MIB), (2, 1000)):
        body, md5 = digest_bytes(random.randbytes(size), None)
        res = await store.upload_part("k", upload_id, n, body)
        assert res.etag == md5
        refs.append(PartRef(n, md5))
    return upload_id, refs


@pytest.mark.parametrize("code", ["InvalidPart", "InternalError", "EntityTooSmall"])
def test_error_after_keepalive_whitespace_keeps_its_code(code, proxy, bucket):
    """botocore alone reports any 200-with-whitespace as a bare '500'."""
    proxy.add_rule("CompleteMultipartUpload", "error_in_200", code=code, padding=b"\n   \n" * 10)
    store = proxied_store(proxy.url, bucket)

    async def main() -> None:
        upload_id, refs = await _two_parts(store)
        with pytest.raises(S3Error) as info:
            await store.complete_multipart("k", upload_id, refs)
        assert info.value.code == code

    trio.run(main)


def test_success_after_keepalive_whitespace_is_success(proxy, bucket, s3):
    proxy.add_rule("CompleteMultipartUpload", "pad_200", padding=b" \n" * 50, pieces=5)
    store = proxied_store(proxy.url, bucket)

    async def main() -> None:
        upload_id, refs = await _two_parts(store)
        result = await store.complete_multipart("k", upload_id, refs)
        assert result.etag is not None and result.etag.endswith("-2")
        assert proxy.count("CompleteMultipartUpload") == 1  # no retry was needed

    trio.run(main)
    assert s3.head_object(Bucket=bucket, Key="k")["ContentLength"] == 5 * MIB + 1000


def test_dropped_connection_and_timeout_are_transient(proxy, bucket):
    store = proxied_store(proxy.url, bucket)
    proxy.add_rule("CompleteMultipartUpload", "drop_response")
    proxy.add_rule("HeadObject", "stall", seconds=5, then="close")

    async def main() -> None:
        upload_id, refs = await _two_parts(store)
        with pytest.raises(S3Error) as dropped:
            await store.complete_multipart("k", upload_id, refs)
        assert dropped.value.code == "ConnectionError" and dropped.value.transient
        with pytest.raises(S3Error) as stalled:
            await store.head("k")
        assert stalled.value.code == "Timeout" and stalled.value.transient

    trio.run(main)
