"""An in-memory ObjectStore that enforces S3's real rules.

It is the fast fake behind unit and core tests, so it must be strict where
S3 is strict and moto is not: Content-MD5 is verified (BadDigest), parts
must be ascending at Complete (InvalidPartOrder), every part but the last
must reach the minimum size (EntityTooSmall), ETags must match the newest
upload of each part (InvalidPart), a finished or aborted upload is gone
(NoSuchUpload), and listings page at 1,000 as S3 does. Tests can inspect
`objects`, `uploads` and `calls`.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import trio

from s3fsmpu.checksums import of_bytes
from s3fsmpu.config import MIN_PART_SIZE
from s3fsmpu.errors import NoSuchKey, S3Error
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


@dataclass
class StoredObject:
    data: bytes
    etag: str
    metadata: dict[str, str]
    content_type: str | None
    last_modified: float


@dataclass
class PendingUpload:
    key: str
    upload_id: str
    meta: WriteMeta
    initiated: float
    parts: dict[int, tuple[bytes, str]] = field(default_factory=dict)  # n -> (data, etag)


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def multipart_etag(part_md5_hex: Sequence[str]) -> str:
    """S3's ETag of a multipart object: MD5 of the binary part MD5s, then -N."""
    joined = b"".join(bytes.fromhex(h) for h in part_md5_hex)
    return f"{hashlib.md5(joined).hexdigest()}-{len(part_md5_hex)}"


class MemoryStore:
    def __init__(self, min_part_size: int = MIN_PART_SIZE, page_size: int = 1000) -> None:
        self.objects: dict[str, StoredObject] = {}
        self.uploads: dict[str, PendingUpload] = {}
        self.calls: Counter[str] = Counter()
        self.min_part_size = min_part_size
        self.page_size = page_size
        self._ids = itertools.count(1)

    async def _op(self, name: str) -> None:
        self.calls[name] += 1
        await trio.lowlevel.checkpoint()

    def _object(self, key: str, op: str) -> StoredObject:
        try:
            return self.objects[key]
        except KeyError:
            raise NoSuchKey(key, op) from None

    def _upload(self, key: str, upload_id: str, op: str) -> PendingUpload:
        up = self.uploads.get(upload_id)
        if up is None or up.key != key:
            raise S3Error("NoSuchUpload", key, "upload does not exist", op, 404)
        return up

    @staticmethod
    def _check_md5(key: str, body: Body, data: bytes, op: str) -> None:
        if body.md5_b64 is not None and base64.b64encode(hashlib.md5(data).digest()).decode() != body.md5_b64:
            raise S3Error("BadDigest", key, "Content-MD5 mismatch", op, 400)

    # ---- objects ----------------------------------------------------------
    async def check_bucket(self) -> None:
        await self._op("HeadBucket")

    async def head(self, key: str) -> ObjectInfo:
        await self._op("HeadObject")
        obj = self._object(key, "HeadObject")
        return ObjectInfo(
            key, len(obj.data), obj.etag, obj.last_modified, dict(obj.metadata), obj.content_type
        )

    async def get_range(self, key: str, start: int, end: int, etag: str | None = None) -> bytes:
        await self._op("GetObject")
        obj = self._object(key, "GetObject")
        if etag is not None and etag != obj.etag:
            raise S3Error("PreconditionFailed", key, "object changed", "GetObject", 412)
        return obj.data[start:end]

    async def get_range_into(self, key: str, start: int, buf: memoryview, etag: str | None = None) -> int:
        data = await self.get_range(key, start, start + len(buf), etag)  # what subclasses gate or count
        buf[: len(data)] = data
        return len(data)

    async def list_page(
        self, prefix: str, delimiter: str | None = "/", token: str | None = None, max_keys: int = 1000
    ) -> ListPage:
        await self._op("ListObjectsV2")
        max_keys = min(max_keys, self.page_size)
        entries: list[tuple[str, ObjectInfo | None]] = []
        seen_prefixes: set[str] = set()
        for key in sorted(self.objects):
            if not key.startswith(prefix):
                continue
            rest = key[len(prefix) :]
            if delimiter and delimiter in rest:
                common = prefix + rest.split(delimiter, 1)[0] + delimiter
                if common not in seen_prefixes:
                    seen_prefixes.add(common)
                    entries.append((common, None))
                continue
            obj = self.objects[key]
            entries.append((key, ObjectInfo(key, len(obj.data), obj.etag, obj.last_modified)))
        entries.sort(key=lambda e: e[0])
        if token is not None:
            entries = [e for e in entries if e[0] > token]
        page, more = entries[:max_keys], len(entries) > max_keys
        return ListPage(
            [info for _, info in page if info is not None],
            [name for name, info in page if info is None],
            page[-1][0] if more and page else None,
        )

    def _store(self, key: str, data: bytes, etag: str, meta: WriteMeta) -> None:
        self.objects[key] = StoredObject(
            data, etag, dict(meta.metadata), meta.content_type, time.time()
        )

    def _check_expect(self, key: str, expect: Expect | None, op: str) -> None:
        if expect is None:
            return
        current = self.objects.get(key)
        if expect.etag is not None and current is None:
            raise NoSuchKey(key, op)
        if not expect.holds(None if current is None else current.etag):
            raise S3Error("PreconditionFailed", key, f"expected {expect}", op, 412)

    async def put(self, key: str, body: Body, meta: WriteMeta, expect: Expect | None = None) -> str:
        await self._op("PutObject")
        data = body.read_all()
        self._check_md5(key, body, data, "PutObject")
        self._check_expect(key, expect, "PutObject")
        etag = md5_hex(data)
        self._store(key, data, etag, meta)
        return etag

    async def copy(self, src: str, dst: str, meta: WriteMeta | None = None,
                   src_etag: str | None = None, expect: Expect | None = None) -> str:
        await self._op("CopyObject")
        obj = self._object(src, "CopyObject")
        if src_etag is not None and src_etag != obj.etag:
            raise S3Error("PreconditionFailed", dst, "copy source changed", "CopyObject", 412)
        if meta is None:
            meta = WriteMeta(dict(obj.metadata), obj.content_type)
        etag = obj.etag if "-" not in obj.etag else md5_hex(obj.data)
        await self.between_copy_steps(src, dst)
        self._check_expect(dst, expect, "CopyObject")
        self._store(dst, obj.data, etag, meta)
        return etag

    async def between_copy_steps(self, src: str, dst: str) -> None:
        """S3 reads a copy's source, then writes its destination: a DELETE or PUT that
        lands in between is undone. Nothing happens here; a test store lets calls in."""

    async def delete(self, key: str, etag: str | None = None) -> None:
        await self._op("DeleteObject")
        if etag is not None:
            self._check_expect(key, Expect(etag), "DeleteObject")
        self.objects.pop(key, None)

    # ---- multipart --------------------------------------------------------
    async def create_multipart(self, key: str, meta: WriteMeta) -> str:
        await self._op("CreateMultipartUpload")
        upload_id = f"upload-{next(self._ids)}"
        self.uploads[upload_id] = PendingUpload(key, upload_id, meta, time.time())
        return upload_id

    async def upload_part(self, key: str, upload_id: str, number: int, body: Body) -> PartResult:
        await self._op("UploadPart")
        data = body.read_all()
        up = self._upload(key, upload_id, "UploadPart")
        if not 1 <= number <= 10_000:
            raise S3Error("InvalidArgument", key, "part number out of range", "UploadPart", 400)
        self._check_md5(key, body, data, "UploadPart")
        etag = md5_hex(data)
        up.parts[number] = (data, etag)
        return PartResult(etag, body.checksum)

    async def upload_part_copy(
        self, key: str, upload_id: str, number: int, src: str, start: int, end: int,
        src_etag: str | None = None,
    ) -> PartResult:
        await self._op("UploadPartCopy")
        obj = self._object(src, "UploadPartCopy")
        if src_etag is not None and src_etag != obj.etag:
            raise S3Error("PreconditionFailed", key, "copy source changed", "UploadPartCopy", 412)
        up = self._upload(key, upload_id, "UploadPartCopy")
        if end > len(obj.data) or start >= end:
            raise S3Error("InvalidRange", key, "bad copy range", "UploadPartCopy", 416)
        data = obj.data[start:end]
        etag = md5_hex(data)
        up.parts[number] = (data, etag)
        return PartResult(etag)

    async def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[PartRef], expect: Expect | None = None,
        checksum: Checksum | None = None,
    ) -> CompleteResult:
        await self._op("CompleteMultipartUpload")
        up = self._upload(key, upload_id, "CompleteMultipartUpload")
        self._check_expect(key, expect, "CompleteMultipartUpload")
        op = "CompleteMultipartUpload"
        if not parts:
            raise S3Error("MalformedXML", key, "no parts", op, 400)
        numbers = [p.number for p in parts]
        if numbers != sorted(set(numbers)):
            raise S3Error("InvalidPartOrder", key, "parts not ascending", op, 400)
        chunks = []
        for i, ref in enumerate(parts):
            stored = up.parts.get(ref.number)
            if stored is None or stored[1] != ref.etag.strip('"'):
                raise S3Error("InvalidPart", key, f"part {ref.number} not found", op, 400)
            if i < len(parts) - 1 and len(stored[0]) < self.min_part_size:
                raise S3Error("EntityTooSmall", key, f"part {ref.number} too small", op, 400)
            chunks.append(stored)
        etag = multipart_etag([e for _, e in chunks])
        data = b"".join(d for d, _ in chunks)
        if checksum is not None and of_bytes(checksum.algorithm, data) != checksum.value:
            raise S3Error("BadDigest", key, f"the object's {checksum.algorithm} is not {checksum.value}", op, 400)
        self._store(key, data, etag, up.meta)
        del self.uploads[upload_id]
        return CompleteResult(etag, checksum.value if checksum is not None else None)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        await self._op("AbortMultipartUpload")
        self._upload(key, upload_id, "AbortMultipartUpload")
        del self.uploads[upload_id]

    async def list_uploads(
        self, prefix: str, key_marker: str | None = None, upload_id_marker: str | None = None
    ) -> UploadsPage:
        await self._op("ListMultipartUploads")
        ordered = sorted(
            (u for u in self.uploads.values() if u.key.startswith(prefix)),
            key=lambda u: (u.key, u.upload_id),
        )
        if key_marker is not None:
            marker = (key_marker, upload_id_marker or "")
            ordered = [u for u in ordered if (u.key, u.upload_id) > marker]
        page, more = ordered[: self.page_size], len(ordered) > self.page_size
        infos = [UploadInfo(u.key, u.upload_id, u.initiated) for u in page]
        if more:
            return UploadsPage(infos, page[-1].key, page[-1].upload_id)
        return UploadsPage(infos, None)

    async def list_parts(self, key: str, upload_id: str) -> Sequence[PartInfo]:
        await self._op("ListParts")
        up = self._upload(key, upload_id, "ListParts")
        return [PartInfo(n, len(d), e) for n, (d, e) in sorted(up.parts.items())]
