"""How the boto3 store puts part bodies on the wire (issue 7: CPU per GiB written)."""

from __future__ import annotations

import os
import random

import trio
from botocore.awsrequest import AWSConnection

from s3fsmpu.config import ConnectionConfig
from s3fsmpu.store.base import WriteMeta
from s3fsmpu.store.boto3_client import SEND_BLOCKSIZE
from s3fsmpu.store.boto3_store import Boto3Store
from s3fsmpu.upload.digest import digest_slice
from tests.conftest import bucket_bytes

MIB = 1 << 20


def test_a_spool_slice_goes_out_in_1mib_writes(s3, bucket, moto_url, tmp_path, monkeypatch):
    """Left to botocore and urllib3 it goes out 128 KiB per call."""
    data = random.randbytes(3 * MIB + 5)
    spool = tmp_path / "spool"
    spool.write_bytes(b"x" * 100 + data)
    sizes: list[int] = []
    real_send = AWSConnection.send

    def counting_send(self, chunk):  # type: ignore[no-untyped-def]
        sizes.append(len(chunk))
        return real_send(self, chunk)

    monkeypatch.setattr(AWSConnection, "send", counting_send)
    store = Boto3Store(bucket, ConnectionConfig(endpoint_url=moto_url, region="us-east-1", addressing_style="path"))
    fd = os.open(spool, os.O_RDONLY)
    try:
        body, _ = digest_slice(fd, 100, len(data), None)
        trio.run(store.put, "sent.bin", body, WriteMeta())
    finally:
        os.close(fd)
    assert bucket_bytes(s3, bucket, "sent.bin") == data
    body_writes = [n for n in sizes if n > 4096]  # the request head goes out separately
    assert body_writes and max(body_writes) == SEND_BLOCKSIZE, sizes
    assert sum(body_writes) >= len(data) - 4096 and len(body_writes) <= 4, sizes

