"""The ObjectStore on boto3: the only module that imports boto3 or botocore.

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
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from xml.etree import ElementTree

import boto3
import botocore.exceptions as bexc
import botocore.session
import trio
from botocore.config import Config
from botocore.credentials import CredentialProvider, CredentialResolver, Credentials

from s3fsmpu.config import ConnectionConfig, UploadConfig
from s3fsmpu.errors import NoSuchKey, S3Error
from s3fsmpu.store.base import (
    Body,
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
from s3fsmpu.store.credential_reload import CredentialReloader

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
ANSWER_AFTER_KEEPALIVE = ("CompleteMultipartUpload", "CopyObject", "UploadPartCopy")


def _condition(expect: Expect | None) -> dict[str, str]:
    """The If-Match / If-None-Match parameter of a conditional write."""
    if expect is None:
        return {}
    return {"IfNoneMatch": "*"} if expect.etag is None else {"IfMatch": f'"{expect.etag}"'}


class _CurrentCredentials(Credentials):  # type: ignore[misc]  # botocore has no type stubs
    """botocore Credentials that are always the reloader's current ones.

    A client's signer keeps one Credentials object for its life; this one
    delegates to what the chain gave last, so a reload takes effect on the
    next request signed, in every thread, without a new client and pool.
    A RefreshableCredentials behind it goes on refreshing itself.
    """

    def __init__(self, reloader: CredentialReloader[Credentials]) -> None:
        self._reloader = reloader  # no super().__init__: every attribute is the current one's

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._reloader.current, name)

    def get_frozen_credentials(self) -> Any:
        return self._reloader.current.get_frozen_credentials()

    def get_deferred_property(self, property_name: str) -> Callable[[], Any]:
        return lambda: getattr(self._reloader.current, property_name, None)


class _FixedProvider(CredentialProvider):  # type: ignore[misc]
    """Hands the session our credentials object instead of running the chain again."""

    METHOD = "s3fsmpu-reloadable"
    CANONICAL_NAME = "custom-s3fsmpu"

    def __init__(self, credentials: Credentials) -> None:
        super().__init__()
        self._credentials = credentials

    def load(self) -> Credentials:
        return self._credentials


def chain_credentials(profile: str | None) -> CredentialReloader[Credentials] | None:
    """boto3's credential chain for `profile`, reloadable; None if it finds nothing.

    Each load is a fresh botocore session, so it re-reads the environment,
    the shared credentials and config files, and reruns credential_process.
    """

    def load() -> Credentials | None:
        return botocore.session.Session(profile=profile).get_credentials()

    first = load()
    if first is None:
        return None
    return CredentialReloader(first, load, lambda c: tuple(c.get_frozen_credentials())[:3])


def make_client(conn: ConnectionConfig, credentials: CredentialReloader[Credentials] | None = None) -> Any:
    """A botocore S3 client with every behaviour that matters pinned.

    With `credentials`, it signs with their current value, whatever reloads them.
    """
    botocore_session = botocore.session.Session(profile=conn.profile)
    if credentials is not None:
        botocore_session.register_component(
            "credential_provider", CredentialResolver([_FixedProvider(_CurrentCredentials(credentials))])
        )
    session = boto3.session.Session(botocore_session=botocore_session)
    config = Config(
        retries={"mode": "standard", "total_max_attempts": 1},
        connect_timeout=conn.connect_timeout,
        read_timeout=conn.read_timeout,
        max_pool_connections=conn.max_connections,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": conn.addressing_style, "payload_signing_enabled": False},
        tcp_keepalive=True,
    )
    client = session.client(
        "s3", endpoint_url=conn.endpoint_url, region_name=conn.region, config=config
    )
    for operation in ANSWER_AFTER_KEEPALIVE:
        client.meta.events.register(f"before-parse.s3.{operation}", _strip_keepalive_whitespace)
    raise_send_blocksize(client)
    return client


SEND_BLOCKSIZE = 1 << 20


def raise_send_blocksize(client: Any) -> bool:
    """Send request bodies 1 MiB per socket write instead of 128 KiB.

    urllib3 2.x reads a file-like body (a part from the spool) in `blocksize`
    pieces, with a few Python calls per piece (8,192 rounds per GiB as
    botocore sets it up here). At 1 MiB the CPU for sending a GiB drops by
    ~0.2 s (measured on radosgw, 8 MiB parts, 8 threads).
    botocore offers no public setting; its pool manager's connection kwargs
    are used when set, and left alone if botocore's internals ever change.
    """
    manager = getattr(getattr(getattr(client, "_endpoint", None), "http_session", None), "_manager", None)
    pool_kw = getattr(manager, "connection_pool_kw", None)
    if not isinstance(pool_kw, dict):
        log.debug("cannot set the send block size: botocore's connection pool is not where expected")
        return False
    pool_kw["blocksize"] = SEND_BLOCKSIZE
    return True


def _strip_keepalive_whitespace(response_dict: dict[str, Any] | None = None, **_: Any) -> None:
    """S3 streams whitespace while a Complete runs; the answer follows it.

    Whitespace before the XML declaration makes the body unparsable, and
    botocore then reports any such 200 -- success or error -- as a bare
    "500". Stripping it lets the real outcome through: a success stays a
    success, and an <Error> keeps its code (InvalidPart is not InternalError,
    AccessDenied is not worth a retry).
    Runs after botocore's own 200-error handler.
    """
    if not response_dict or not isinstance(response_dict.get("body"), bytes):
        return
    body: bytes = response_dict["body"]
    stripped = body.lstrip()
    if stripped is body or stripped == body:
        return
    response_dict["body"] = stripped
    if response_dict.get("status_code") == 500 and stripped:
        try:
            root = ElementTree.fromstring(stripped)
        except ElementTree.ParseError:
            return  # a truncated answer stays a 500: ambiguous, settled by the caller
        if root.tag != "Error" and not root.tag.endswith("}Error"):
            response_dict["status_code"] = 200


def translate(exc: Exception, key: str, operation: str) -> S3Error:
    """botocore's exceptions -> S3Error with the S3 code (or Timeout/ConnectionError)."""
    if isinstance(exc, bexc.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code") or "Unknown")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("NoSuchKey", "404", "NotFound") and operation in ("HeadObject", "GetObject"):
            return NoSuchKey(key, operation)
        return S3Error(code, key, str(err.get("Message") or ""), operation, status)
    if isinstance(exc, (bexc.ReadTimeoutError, bexc.ConnectTimeoutError)):
        return S3Error("Timeout", key, str(exc), operation)
    if isinstance(exc, (bexc.EndpointConnectionError, bexc.ConnectionClosedError)):
        return S3Error("ConnectionError", key, str(exc), operation)
    if isinstance(exc, bexc.NoCredentialsError):
        return S3Error("NoCredentials", key, "no AWS credentials found", operation)
    if isinstance(exc, bexc.ProfileNotFound):
        return S3Error("ProfileNotFound", key, str(exc), operation)
    if isinstance(exc, (bexc.HTTPClientError, bexc.ResponseStreamingError)):
        return S3Error("ConnectionError", key, str(exc), operation)
    if isinstance(exc, bexc.BotoCoreError):
        return S3Error(type(exc).__name__, key, str(exc), operation)
    raise exc


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

    async def get_range(self, key: str, start: int, end: int, etag: str | None = None) -> bytes:
        if end <= start:
            return b""

        def run() -> bytes:
            args: dict[str, Any] = {"Range": f"bytes={start}-{end - 1}"}
            if etag:
                args["IfMatch"] = f'"{etag}"'
            resp = self.client.get_object(Bucket=self.bucket, Key=key, **args, **self._extra("GetObject"))
            return resp["Body"].read()  # type: ignore[no-any-return]

        try:
            return await self._call("GetObject", key, run)
        except S3Error as exc:
            if exc.code == "InvalidRange":  # reading at or past the end
                return b""
            raise

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
            return PartResult(etag.strip('"') if etag else None, checksum or body.checksum)

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
        self, key: str, upload_id: str, parts: Sequence[PartRef], expect: Expect | None = None
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
