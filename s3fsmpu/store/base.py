"""The ObjectStore protocol: the only way the rest of s3fsmpu talks to S3.

Two implementations obey it, and one contract suite checks both: the boto3
store (the real thing) and the in-memory store (S3's rules, no network).
Errors are always `s3fsmpu.errors.S3Error` (or its subclass NoSuchKey),
with the S3 code, whatever the transport said.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str  # without quotes
    last_modified: float  # seconds since the epoch
    # user metadata without the x-amz-meta- prefix; None when it is unknown
    # (LIST results do not carry it)
    metadata: Mapping[str, str] | None = None
    content_type: str | None = None


@dataclass(frozen=True)
class ListPage:
    objects: Sequence[ObjectInfo]
    prefixes: Sequence[str]
    next_token: str | None


@dataclass(frozen=True)
class PartRef:
    """What Complete needs to know about one part, from our own record."""

    number: int
    etag: str  # without quotes
    checksum: str | None = None  # base64 value of the chosen algorithm


@dataclass(frozen=True)
class Checksum:
    """A whole object's flexible checksum, as Complete sends it (S3's FULL_OBJECT type)."""

    algorithm: str  # CRC32, CRC32C, CRC64NVME
    value: str  # base64


@dataclass(frozen=True)
class PartResult:
    etag: str | None
    checksum: str | None = None


@dataclass(frozen=True)
class CompleteResult:
    etag: str | None  # None when S3's answer carried none: ambiguous
    checksum: str | None = None


@dataclass(frozen=True)
class UploadInfo:
    key: str
    upload_id: str
    initiated: float


@dataclass(frozen=True)
class UploadsPage:
    uploads: Sequence[UploadInfo]
    next_key_marker: str | None  # None when this was the last page
    next_upload_id_marker: str | None = None


@dataclass(frozen=True)
class PartInfo:
    number: int
    size: int
    etag: str


@dataclass(frozen=True)
class Body:
    """Bytes to send: `length` bytes of file `fd` from `offset`, or `data`.

    Part bodies are slices of the spool file, so a part is never held in
    memory whole; `md5_b64` and `checksum` are computed once, beforehand.
    """

    length: int
    fd: int | None = None
    offset: int = 0
    data: bytes | None = None
    md5_b64: str | None = None
    checksum: str | None = None  # base64, of the store's checksum algorithm

    def read_all(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.fd is not None
        return os.pread(self.fd, self.length, self.offset).ljust(self.length, b"\0")

    def reader(self) -> io.RawIOBase:
        if self.data is not None:
            return io.BytesIO(self.data)  # type: ignore[return-value]
        assert self.fd is not None
        return SliceReader(self.fd, self.offset, self.length)


class SliceReader(io.RawIOBase):
    """A seekable read-only view of [offset, offset+length) of a file descriptor.

    Holes read as zeros; botocore seeks it back to 0 to retry a request.
    """

    def __init__(self, fd: int, offset: int, length: int) -> None:
        self._fd, self._offset, self._length, self._pos = fd, offset, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes:
        left = self._length - self._pos
        if size is None or size < 0 or size > left:
            size = left
        if size <= 0:
            return b""
        data = os.pread(self._fd, size, self._offset + self._pos)
        if len(data) < size:  # a hole at the end of a sparse spool
            data = data.ljust(size, b"\0")
        self._pos += size
        return data

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)


@dataclass(frozen=True)
class Expect:
    """What a key must hold for a write to take effect (a conditional write).

    `etag` None: nothing (If-None-Match: *); else that version (If-Match). A
    write whose condition fails raises S3Error PreconditionFailed (412), or
    NoSuchKey where If-Match finds no object; 409 ConditionalRequestConflict
    means a concurrent write interfered (start over)."""

    etag: str | None
    # If-Match as the standard says, the ETag in quotes; radosgw 16 compares the header
    # with its unquoted ETag and refuses a correct quoted one (store/conditional.py)
    quoted: bool = field(default=True, compare=False)

    def holds(self, current_etag: str | None) -> bool:
        return current_etag == self.etag

    def __str__(self) -> str:
        return "no object" if self.etag is None else f"ETag {self.etag}"


ABSENT = Expect(None)


@dataclass(frozen=True)
class WriteMeta:
    """User metadata and content type for a new object."""

    metadata: Mapping[str, str] = field(default_factory=dict)
    content_type: str | None = None


class ObjectStore(Protocol):
    """S3 as s3fsmpu needs it. All keys are full keys (prefix included)."""

    async def head(self, key: str) -> ObjectInfo: ...

    async def get_range(self, key: str, start: int, end: int, etag: str | None = None) -> bytes:
        """Bytes [start, end); with `etag`, fail (PreconditionFailed) if the object changed."""
        ...

    async def get_range_into(self, key: str, start: int, buf: memoryview, etag: str | None = None) -> int:
        """Bytes [start, start + len(buf)) into `buf`, as get_range; returns how many came
        (fewer only at the object's end). For reads into reused buffers: no new bytes object."""
        ...

    async def list_page(
        self, prefix: str, delimiter: str | None = "/", token: str | None = None, max_keys: int = 1000
    ) -> ListPage: ...

    async def put(self, key: str, body: Body, meta: WriteMeta, expect: Expect | None = None) -> str:
        """PutObject, only if the key holds what `expect` says; returns the ETag."""
        ...

    async def copy(self, src: str, dst: str, meta: WriteMeta | None = None,
                   src_etag: str | None = None, expect: Expect | None = None) -> str:
        """CopyObject (meta None: keep the source's metadata); returns the new ETag.

        With `src_etag`, only if the source is still that object; with `expect`, only
        if the destination holds that (AWS since 2025; moto 5.2 and radosgw 16 ignore
        it). Either failing is PreconditionFailed."""
        ...

    async def delete(self, key: str, etag: str | None = None) -> None:
        """DeleteObject; with `etag`, only that version (If-Match: PreconditionFailed
        if another is there now, NoSuchKey if none)."""
        ...

    async def create_multipart(self, key: str, meta: WriteMeta) -> str: ...

    async def upload_part(self, key: str, upload_id: str, number: int, body: Body) -> PartResult: ...

    async def upload_part_copy(
        self, key: str, upload_id: str, number: int, src: str, start: int, end: int,
        src_etag: str | None = None,
    ) -> PartResult:
        """Copy bytes [start, end) of `src`; with `src_etag`, only if the source is unchanged."""
        ...

    async def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[PartRef], expect: Expect | None = None,
        checksum: Checksum | None = None,
    ) -> CompleteResult:
        """With `checksum`, S3 checks the joined object against it (BadDigest if it differs)."""
        ...

    async def abort_multipart(self, key: str, upload_id: str) -> None: ...

    async def list_uploads(
        self, prefix: str, key_marker: str | None = None, upload_id_marker: str | None = None
    ) -> UploadsPage: ...

    async def list_parts(self, key: str, upload_id: str) -> Sequence[PartInfo]: ...

    async def check_bucket(self) -> None:
        """Raise S3Error (NoSuchBucket, AccessDenied, ...) unless the bucket is usable."""
        ...
