"""GETs into a caller's buffer (get_range_into) through the fault proxy: a body cut short
is a transient error that the next call gets over, and connections go back to the pool
read to their end."""

from __future__ import annotations

import random

import pytest
import trio

from s3fsmpu.config import ConnectionConfig
from s3fsmpu.errors import S3Error
from s3fsmpu.store.boto3_store import Boto3Store
from tests.conftest import bucket_bytes

MIB = 1 << 20


def proxied_store(url: str, bucket: str) -> Boto3Store:
    return Boto3Store(bucket, ConnectionConfig(endpoint_url=url, region="us-east-1", addressing_style="path",
                                               read_timeout=3))


@pytest.mark.parametrize("reset", [False, True])
def test_a_body_cut_short_is_a_connection_error_and_the_next_get_is_whole(reset, s3, proxy, bucket):
    data = random.randbytes(2 * MIB)
    s3.put_object(Bucket=bucket, Key="k", Body=data)
    proxy.add_rule("GetObject", "drop_response", after_bytes=MIB, reset=reset)
    store = proxied_store(proxy.url, bucket)

    async def main() -> None:
        buf = bytearray(2 * MIB)
        with pytest.raises(S3Error) as info:
            await store.get_range_into("k", 0, memoryview(buf))
        assert info.value.code == "ConnectionError" and info.value.transient
        assert await store.get_range_into("k", 0, memoryview(buf)) == 2 * MIB
        assert buf == data

    trio.run(main)
    assert bucket_bytes(s3, bucket, "k") == data  # the cut GET changed nothing in the bucket


def test_many_gets_into_buffers_read_the_right_bytes_over_reused_connections(s3, proxy, bucket):
    data = random.randbytes(3 * MIB + 12345)
    s3.put_object(Bucket=bucket, Key="k", Body=data)
    store = proxied_store(proxy.url, bucket)
    ranges = [(o, min(len(data), o + n)) for o, n in
              [(0, MIB), (MIB, MIB), (5, 300_000), (3 * MIB, 2 * MIB), (2 * MIB + 7, MIB)] * 4]

    async def main() -> None:
        for start, end in ranges:
            buf = bytearray(end - start)
            assert await store.get_range_into("k", start, memoryview(buf)) == end - start
            assert buf == data[start:end]
        past = bytearray(100)  # a range past the end: fewer bytes, not an error
        assert await store.get_range_into("k", len(data) - 10, memoryview(past)) == 10
        assert past[:10] == data[-10:]

    trio.run(main)
    assert proxy.count("GetObject") == len(ranges) + 1
    assert bucket_bytes(s3, bucket, "k") == data
