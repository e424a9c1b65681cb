"""The boto3 store outlives a rotation of its credentials file.

Against a moto server that enforces IAM keys (tests/iam_moto.py): the key a
store started with is deleted, the file now names a new one, and the next
requests -- a HEAD, whose 403 has no code, and a PUT -- succeed after one
reload. Through the fault proxy: codes moto never sends (ExpiredToken on a
PUT and on a Complete).
"""

from __future__ import annotations

import errno
import logging

import pytest
import trio
from botocore.exceptions import ClientError

from s3fsmpu.config import ConnectionConfig
from s3fsmpu.errors import S3Error, to_errno
from s3fsmpu.store.base import Body, PartRef, WriteMeta
from s3fsmpu.store.boto3_store import Boto3Store
from tests.conftest import bucket_bytes, open_uploads
from tests.iam_moto import IamMoto, credentials_file, iam_moto, write_credentials  # noqa: F401

MIB = 1 << 20


def store_at(url: str, bucket: str) -> Boto3Store:
    return Boto3Store(bucket, ConnectionConfig(endpoint_url=url, region="us-east-1", addressing_style="path"))


def put(store: Boto3Store, key: str, data: bytes) -> str:
    return trio.run(store.put, key, Body(len(data), data=data), WriteMeta({}))


def reload_lines(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and r.name.endswith("credential_reload")]


def working_store(iam_moto: IamMoto, credentials_file) -> tuple[Boto3Store, str, dict[str, str]]:  # noqa: F811
    """A store on a new bucket, started with a new user's key A from the file, that has written "one"."""
    bucket = iam_moto.new_bucket()
    key_a = iam_moto.new_key(iam_moto.new_user())
    write_credentials(credentials_file, key_a)
    store = store_at(iam_moto.url, bucket)
    trio.run(store.check_bucket)
    put(store, "one", b"first")
    return store, bucket, key_a


def test_a_store_keeps_working_after_its_credentials_file_rotates(
        iam_moto: IamMoto, credentials_file, caplog) -> None:  # noqa: F811
    store, bucket, key_a = working_store(iam_moto, credentials_file)

    key_b = iam_moto.new_key(key_a["UserName"])
    write_credentials(credentials_file, key_b)
    iam_moto.delete_key(key_a)
    with caplog.at_level(logging.INFO, "s3fsmpu"):
        assert trio.run(store.head, "one").size == 5  # a HEAD: the 403 has no code
        put(store, "two", b"second")
    assert bucket_bytes(iam_moto.s3(key_b), bucket, "two") == b"second"
    lines = reload_lines(caplog)
    assert len(lines) == 1 and key_b["AccessKeyId"][-4:] in lines[0] and "HeadObject" in lines[0], lines
    with pytest.raises(ClientError, match="InvalidAccessKeyId"):  # the rotation was real
        iam_moto.s3(key_a).put_object(Bucket=bucket, Key="x", Body=b"")


def test_a_file_naming_a_dead_key_fails_as_before_with_one_error_line(
        iam_moto: IamMoto, credentials_file, caplog) -> None:  # noqa: F811
    store, bucket, key_a = working_store(iam_moto, credentials_file)
    iam_moto.delete_key(key_a)  # revoked, and nothing newer in the file
    with caplog.at_level(logging.INFO, "s3fsmpu"), pytest.raises(S3Error) as refused:
        put(store, "two", b"second")
    assert refused.value.code == "InvalidAccessKeyId" and to_errno(refused.value) == errno.EIO
    errors = reload_lines(caplog, logging.ERROR)
    assert len(errors) == 1 and "InvalidAccessKeyId" in errors[0], errors
    assert not reload_lines(caplog)
    with pytest.raises(S3Error) as denied:  # a HEAD's bare 403 is still EACCES
        trio.run(store.head, "one")
    assert to_errno(denied.value) == errno.EACCES


def put_through_complete(store: Boto3Store, key: str, data: bytes) -> None:
    """One multipart upload of one part, so a Complete is sent."""
    async def run() -> None:
        upload_id = await store.create_multipart(key, WriteMeta({}))
        part = await store.upload_part(key, upload_id, 1, Body(len(data), data=data))
        assert part.etag
        try:
            await store.complete_multipart(key, upload_id, [PartRef(1, part.etag)])
        except S3Error:
            await store.abort_multipart(key, upload_id)  # leave no upload in progress
            raise

    trio.run(run)


@pytest.mark.parametrize("operation", ["PutObject", "CompleteMultipartUpload"])
@pytest.mark.parametrize("rotated", [True, False], ids=["rotated", "not-rotated"])
def test_expired_token_reloads_and_retries_only_with_new_credentials(
        s3, bucket, proxy, credentials_file, caplog, operation: str, rotated: bool) -> None:  # noqa: F811
    """moto never expires a token; the proxy answers ExpiredToken (HTTP 400) once."""
    write_credentials(credentials_file, {"AccessKeyId": "ASIAOLD", "SecretAccessKey": "old"})
    store = store_at(proxy.url, bucket)
    if rotated:
        write_credentials(credentials_file, {"AccessKeyId": "ASIANEW", "SecretAccessKey": "new"})
    rule = proxy.add_rule(operation, "status", status=400, code="ExpiredToken")
    send = put if operation == "PutObject" else put_through_complete
    with caplog.at_level(logging.INFO, "s3fsmpu"):
        if rotated:
            send(store, "k", b"payload")
        else:
            with pytest.raises(S3Error) as refused:
                send(store, "k", b"payload")
            assert refused.value.code == "ExpiredToken"
    assert rule.hits == 1
    assert proxy.count(operation) == (2 if rotated else 1)
    assert len(reload_lines(caplog)) == (1 if rotated else 0)
    assert len(reload_lines(caplog, logging.ERROR)) == (0 if rotated else 1)
    if rotated:
        assert bucket_bytes(s3, bucket, "k") == b"payload"
    assert not open_uploads(s3, bucket)
