"""The ObjectStore on boto3: with boto3_client.py (the client it uses, and what
its answers mean), the only modules that import boto3 or botocore.

Every call runs in a worker thread (`trio.to_thread.run_sync`) behind one
CapacityLimiter whose size equals the connection pool, so no blocking call
ever runs on the trio loop. botocore is pinned explicitly rather than left
to defaults that changed between versions:

- retries: one attempt per call. Retrying is the caller's job (upload
  driver, `retry.py`), because a retried Complete must be judged by its
  S3 code and settled by HeadObject, and every retry must be logged.
- checksums: `when_required`; Content-MD5 and the optional flexible
  checksum are computed once by the upload path and passed in, so no
  byte is hashed twice. Payload signing is off for the same reason: over
  plain http botocore would SHA-256 every part body; integrity comes from
  Content-MD5 (and the chosen checksum) instead.
- credentials: the client signs with whatever `credential_reload` holds,
  so credentials rotated under a long-running mount are reloaded from
  boto3's chain when S3 refuses the old ones.
"""

from __future__ import annotations

import functools
import http.client
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import botocore.exceptions as bexc
import trio
from botocore.response import StreamingBody

from s3fsmpu.config import ConnectionConfig, UploadConfig
from s3fsmpu.errors import S3Error
from s3fsmpu.store.base import (
    Body,
    Checksum,
    CompleteResult,
    Expect,
    ListPage,
    ObjectInfo,
    PartInfo,
    PartRef,
    PartResult,
    UploadInfo,
    UploadsPage,
    WriteMeta,
)
from s3fsmpu.store.boto3_client import chain_credentials, make_client, translate

log = logging.getLogger(__name__)
T = TypeVar("T")

# the parameter name botocore uses for each flexible checksum algorithm
_CHECKSUM_PARAM = {
    "CRC32": "ChecksumCRC32",
    "CRC32C": "ChecksumCRC32C",
    "SHA1": "ChecksumSHA1",
    "SHA256": "ChecksumSHA256",
    "CRC64NVME": "ChecksumCRC64NVME",
}

# S3 answers these 200 at once, may stream whitespace while it works, and puts
# the outcome (result or <Error>) at the end of the body
def _condition(expect: Expect | None) -> dict[str, str]:
    """The If-Match / If-None-Match parameter of a conditional write."""
    if expect is None:
        return {}
    if expect.etag is None:
        return {"IfNoneMatch": "*"}
    return {"IfMatch": f'"{expect.etag}"' if expect.quoted else expect.etag}


def _copy_etag(result: dict[str, Any] | None, key: str, operation: str) -> str:
    """The ETag of a copy's result; a 200 without one (empty, cut short) did not say it copied."""
    etag = str((result or {}).get("ETag") or "").strip('"')
    if not etag:
        raise S3Error("NoETag", key, "answered 200 without an ETag", operation, 200)
    return etag


class Boto3Store:
    def __init__(
        self,
        bucket: str,
        conn: ConnectionConfig,
        upload: UploadConfig | None = None,
        client: Any = None,
    ) -> None:
        self.bucket = bucket
        # a client passed in (tests) keeps its own credentials; ours reload from the chain
        self.credentials = None if client is not None else chain_credentials(conn.profile)
        self.client = client if client is not None else make_client(conn, self.credentials)
        self.limiter = trio.CapacityLimiter(conn.max_connections)
        self.upload = upload or UploadConfig()
        # parameters every request that takes them gets
        common: dict[str, Any] = {}
        if self.upload.requester_pays:
            common["RequestPayer"] = "requester"
        if self.upload.expected_bucket_owner:
            common["ExpectedBucketOwner"] = self.upload.expected_bucket_owner
        self._common = common
        ssec: dict[str, Any] = {}
        if self.upload.sse_c_key is not None:
            ssec = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": self.upload.sse_c_key}
        self._ssec = ssec
        self._extra_cache: dict[str, dict[str, Any]] = {}

    def _extra(self, operation: str) -> dict[str, Any]:
        """The common parameters (requester pays, bucket owner, SSE-C) this operation takes."""
        cached = self._extra_cache.get(operation)
        if cached is None:
            members = self.client.meta.service_model.operation_model(operation).input_shape.members
            cached = {k: v for k, v in {**self._common, **self._ssec}.items() if k in members}
            self._extra_cache[operation] = cached
        return cached

    async def _call(self, operation: str, key: str, fn: Callable[[], T]) -> T:
        def attempt() -> T:
            try:
                return fn()
            except Exception as exc:  # translated in the thread, re-raised on the loop
                raise translate(exc, key, operation) from exc

        def run() -> T:
            if self.credentials is None:
                return attempt()
            return self.credentials.call(attempt, operation)

        return await trio.to_thread.run_sync(run, limiter=self.limiter)

    def _new_object_args(self, meta: WriteMeta) -> dict[str, Any]:
        args: dict[str, Any] = {"Metadata": dict(meta.metadata), **self._extra("PutObject")}
        if meta.content_type:
            args["ContentType"] = meta.content_type
        up = self.upload
        if up.sse:
            args["ServerSideEncryption"] = up.sse
        if up.sse_kms_key_id:
            args["SSEKMSKeyId"] = up.sse_kms_key_id
        if up.storage_class:
            args["StorageClass"] = up.storage_class
        return args

    def _body_args(self, body: Body) -> dict[str, Any]:
        args: dict[str, Any] = {"Body": body.reader(), "ContentLength": body.length}
        if body.md5_b64:
            args["ContentMD5"] = body.md5_b64
        if body.checksum and self.upload.checksum_algorithm:
            args[_CHECKSUM_PARAM[self.upload.checksum_algorithm]] = body.checksum
        return args

    # ---- objects ----------------------------------------------------------
    async def check_bucket(self) -> None:
        def run() -> None:
            try:
                self.client.head_bucket(Bucket=self.bucket, **self._extra("HeadBucket"))
            except bexc.ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code in ("404", "NoSuchBucket", "NotFound"):
                    raise S3Error("NoSuchBucket", message=f"bucket {self.bucket!r} does not exist",
                                  operation="HeadBucket", status=404) from exc
                if code in ("403", "AccessDenied"):
                    raise S3Error("AccessDenied", message=f"access to bucket {self.bucket!r} denied",
                                  operation="HeadBucket", status=403) from exc
                raise

        await self._call("HeadBucket", "", run)

    async def head(self, key: str) -> ObjectInfo:
        resp = await self._call(
            "HeadObject",
            key,
            functools.partial(
                self.client.head_object, Bucket=self.bucket, Key=key, **self._extra("HeadObject")
            ),
        )
        return ObjectInfo(
            key,
            resp["ContentLength"],
            resp.get("ETag", "").strip('"'),
            resp["LastModified"].timestamp(),
            dict(resp.get("Metadata") or {}),
            resp.get("ContentType"),
        )

    def _get_object(self, key: str, start: int, end: int, etag: str | None) -> Any:
        """GetObject of bytes [start, end), pinned to `etag` if given (in a worker thread)."""
        args: dict[str, Any] = {"Range": f"bytes={start}-{end - 1}"}
        if etag:
            args["IfMatch"] = f'"{etag}"'
        return self.client.get_object(Bucket=self.bucket, Key=key, **args, **self._extra("GetObject"))

    async def _ranged(self, key: str, run: Callable[[], T], past_the_end: T) -> T:
        try:
            return await self._call("GetObject", key, run)
        except S3Error as exc:
            if exc.code == "InvalidRange":  # reading at or past the end
                return past_the_end
            raise

    async def get_range(self, key: str, start: int, end: int, etag: str | None = None) -> bytes:
        if end <= start:
            return b""

        def run() -> bytes:
            return self._get_object(key, start, end, etag)["Body"].read()  # type: ignore[no-any-return]

        return await self._ranged(key, run, b"")

    async def get_range_into(self, key: str, start: int, buf: memoryview, etag: str | None = None) -> int:
        if not len(buf):
            return 0

        # the thread writes into buf until it returns: _call never abandons a thread on
        # cancel, so a buffer is free again once this returns or raises (fs/reader.py)
        def run() -> int:
            body = self._get_object(key, start, start + len(buf), etag)["Body"]
            try:
                return read_body_into(body, buf)
            finally:
                body.close()

        return await self._ranged(key, run, 0)

    async def list_page(
        self, prefix: str, delimiter: str | None = "/", token: str | None = None, max_keys: int = 1000
    ) -> ListPage:
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": max_keys}
        if delimiter:
            args["Delimiter"] = delimiter
        if token:
            args["ContinuationToken"] = token
        resp = await self._call(
            "ListObjectsV2", prefix,
            functools.partial(self.client.list_objects_v2, **args, **self._extra("ListObjectsV2")),
        )
        objects = [
            ObjectInfo(o["Key"], o["Size"], o.get("ETag", "").strip('"'), o["LastModified"].timestamp())
            for o in resp.get("Contents", [])
        ]
        prefixes = [p["Prefix"] for p in resp.get("CommonPrefixes", [])]
        return ListPage(objects, prefixes, resp.get("NextContinuationToken") if resp.get("IsTruncated") else None)

    async def put(self, key: str, body: Body, meta: WriteMeta, expect: Expect | None = None) -> str:
        def run() -> str:
            resp = self.client.put_object(
                Bucket=self.bucket, Key=key, **self._body_args(body), **self._new_object_args(meta),
                **_condition(expect),
            )
            return resp.get("ETag", "").strip('"')  # type: ignore[no-any-return]

        return await self._call("PutObject", key, run)

    async def copy(self, src: str, dst: str, meta: WriteMeta | None = None,
                   src_etag: str | None = None, expect: Expect | None = None) -> str:
        def run() -> str:
            args: dict[str, Any]
            if meta is None:
                args = {"MetadataDirective": "COPY", **self._extra("CopyObject")}
            else:
                args = {"MetadataDirective": "REPLACE", **self._new_object_args(meta)}
            if src_etag:
                args["CopySourceIfMatch"] = f'"{src_etag}"'
            args.update(_condition(expect))
            if self._ssec:
                args["CopySourceSSECustomerAlgorithm"] = "AES256"
                args["CopySourceSSECustomerKey"] = self.upload.sse_c_key
                args.update(self._ssec)
            resp = self.client.copy_object(
                Bucket=self.bucket, Key=dst, CopySource={"Bucket": self.bucket, "Key": src}, **args
            )
            return _copy_etag(resp.get("CopyObjectResult"), dst, "CopyObject")

        return await self._call("CopyObject", dst, run)

    async def delete(self, key: str, etag: str | None = None) -> None:
        await self._call(
            "DeleteObject",
            key,
            functools.partial(self.client.delete_object, Bucket=self.bucket, Key=key,
                              **self._extra("DeleteObject"), **_condition(None if etag is None else Expect(etag))),
        )

    # ---- multipart --------------------------------------------------------
    async def create_multipart(self, key: str, meta: WriteMeta) -> str:
        def run() -> str:
            args = self._new_object_args(meta)
            if self.upload.checksum_algorithm:
                args["ChecksumAlgorithm"] = self.upload.checksum_algorithm
            if self.upload.whole_object_checksum:
                args["ChecksumType"] = "FULL_OBJECT"
            resp = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, **args)
            return resp["UploadId"]  # type: ignore[no-any-return]

        return await self._call("CreateMultipartUpload", key, run)

    async def upload_part(self, key: str, upload_id: str, number: int, body: Body) -> PartResult:
        def run() -> PartResult:
            resp = self.client.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                **self._body_args(body),
                **self._extra("UploadPart"),
            )
            etag = resp.get("ETag")
            checksum = None
            if self.upload.checksum_algorithm:
                checksum = resp.get(_CHECKSUM_PARAM[self.upload.checksum_algorithm])
            return PartResult(etag.strip('"') if etag else None, checksum)  # None: not echoed

        return await self._call("UploadPart", key, run)

    async def upload_part_copy(
        self, key: str, upload_id: str, number: int, src: str, start: int, end: int,
        src_etag: str | None = None,
    ) -> PartResult:
        def run() -> PartResult:
            args: dict[str, Any] = {**self._extra("UploadPartCopy")}
            if src_etag:
                args["CopySourceIfMatch"] = f'"{src_etag}"'
            if self._ssec:
                args["CopySourceSSECustomerAlgorithm"] = "AES256"
                args["CopySourceSSECustomerKey"] = self.upload.sse_c_key
            resp = self.client.upload_part_copy(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                CopySource={"Bucket": self.bucket, "Key": src},
                CopySourceRange=f"bytes={start}-{end - 1}",
                **args,
            )
            result = resp.get("CopyPartResult") or {}
            etag = _copy_etag(result, key, "UploadPartCopy")
            checksum = None
            if self.upload.checksum_algorithm:
                checksum = result.get(_CHECKSUM_PARAM[self.upload.checksum_algorithm])
            return PartResult(etag, checksum)

        return await self._call("UploadPartCopy", key, run)

    async def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[PartRef], expect: Expect | None = None,
        checksum: Checksum | None = None,
    ) -> CompleteResult:
        param = _CHECKSUM_PARAM.get(self.upload.checksum_algorithm or "")

        def run() -> CompleteResult:
            listed = []
            for p in parts:
                entry: dict[str, Any] = {"PartNumber": p.number, "ETag": f'"{p.etag}"'}
                if param and p.checksum:
                    entry[param] = p.checksum
                listed.append(entry)
            args: dict[str, Any] = {**self._extra("CompleteMultipartUpload"), **_condition(expect)}
            if not param:  # SSE-C headers go on Complete only when checksums are used
                for k in self._ssec:
                    args.pop(k, None)
            if checksum is not None:
                args["ChecksumType"] = "FULL_OBJECT"
                args[_CHECKSUM_PARAM[checksum.algorithm]] = checksum.value
            resp = self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": listed},
                **args,
            )
            etag = resp.get("ETag")
            return CompleteResult(
                etag.strip('"') if etag else None, resp.get(param) if param else None
            )

        return await self._call("CompleteMultipartUpload", key, run)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        await self._call(
            "AbortMultipartUpload",
            key,
            functools.partial(
                self.client.abort_multipart_upload,
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                **self._extra("AbortMultipartUpload"),
            ),
        )

    async def list_uploads(
        self, prefix: str, key_marker: str | None = None, upload_id_marker: str | None = None
    ) -> UploadsPage:
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if key_marker is not None:
            args["KeyMarker"] = key_marker
            if upload_id_marker:
                args["UploadIdMarker"] = upload_id_marker
        resp = await self._call(
            "ListMultipartUploads",
            prefix,
            functools.partial(self.client.list_multipart_uploads, **args, **self._extra("ListMultipartUploads")),
        )
        uploads = [
            UploadInfo(u["Key"], u["UploadId"], u["Initiated"].timestamp())
            for u in resp.get("Uploads", [])
        ]
        if resp.get("IsTruncated"):
            return UploadsPage(uploads, resp.get("NextKeyMarker"), resp.get("NextUploadIdMarker"))
        return UploadsPage(uploads, None)

    async def list_parts(self, key: str, upload_id: str) -> Sequence[PartInfo]:
        def run() -> list[PartInfo]:
            out: list[PartInfo] = []
            marker = 0
            while True:
                resp = self.client.list_parts(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumberMarker=marker,
                    **self._extra("ListParts"),
                )
                for p in resp.get("Parts", []):
                    out.append(PartInfo(p["PartNumber"], p["Size"], p["ETag"].strip('"')))
                if not resp.get("IsTruncated"):
                    return out
                marker = resp["NextPartNumberMarker"]

        return await self._call("ListParts", key, run)


def read_body_into(body: Any, buf: memoryview) -> int:
    """Fill `buf` from a GetObject body; returns the bytes the body held (more than
    len(buf) when it was longer)."""
    fp = _straight_from_the_socket(body)
    if fp is None:  # botocore reads it whole, checking what it checks (a checksum, the length)
        data = body.read()
        buf[: min(len(data), len(buf))] = data[: len(buf)]
        return len(data)
    got = 0
    try:
        while got < len(buf) and (n := fp.readinto(buf[got:])):
            got += n
        if got == len(buf):
            got += fp.readinto(memoryview(bytearray(1)))  # 0: the body ended where it should
        if fp.length:  # the connection closed before Content-Length bytes came
            raise http.client.IncompleteRead(b"", fp.length)
    except (OSError, http.client.HTTPException) as exc:  # what urllib3 would have wrapped
        raise bexc.ResponseStreamingError(error=exc) from exc
    if fp.isclosed():  # read to its end: the connection goes back to the pool
        body._raw_stream.release_conn()  # noqa: SLF001 - see _straight_from_the_socket
    return got


def _straight_from_the_socket(body: Any) -> http.client.HTTPResponse | None:
    """The http.client response under botocore's plain body and urllib3's response, when
    the body can be read from it as is (no checksum to compute, no content encoding to
    undo): its readinto receives into the caller's buffer, where urllib3's reads a new
    bytes object and copies it (1 GiB = a GiB of memmove, ~0.1 CPU s). None otherwise,
    or where urllib3 has no such response to offer."""
    if type(body) is not StreamingBody:  # a checksum-validating body checks in read() only
        return None
    raw = body._raw_stream  # noqa: SLF001
    fp = getattr(raw, "_fp", None)
    if not isinstance(fp, http.client.HTTPResponse) or raw.headers.get("content-encoding", "identity") != "identity":
        return None
    return fp
