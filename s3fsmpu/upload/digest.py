"""Content-MD5 and the optional flexible checksum of a part, in one pass.

Runs in a worker thread (hashlib releases the GIL on large buffers); each
byte of a part is hashed once per algorithm, never again by botocore.
"""

from __future__ import annotations

import base64
import hashlib
import os
import zlib
from collections.abc import Callable

from s3fsmpu.store.base import Body

CHUNK = 1 << 20


class _Crc32:
    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes) -> None:
        self.value = zlib.crc32(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(4, "big")


class _CrtChecksum:
    """CRC32C and CRC64NVME come from awscrt (botocore's optional CRT)."""

    def __init__(self, name: str) -> None:
        from awscrt import checksums

        self._fn = checksums.crc32c if name == "CRC32C" else checksums.crc64nvme
        self._bytes = 4 if name == "CRC32C" else 8
        self.value = 0

    def update(self, data: bytes) -> None:
        self.value = self._fn(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(self._bytes, "big")


def checksum_factory(name: str | None) -> Callable[[], object] | None:
    if name is None:
        return None
    if name == "CRC32":
        return _Crc32
    if name in ("SHA1", "SHA256"):
        return lambda: hashlib.new(name.lower())
    if name in ("CRC32C", "CRC64NVME"):
        return lambda: _CrtChecksum(name)
    raise ValueError(f"unknown checksum algorithm {name!r}")


def check_algorithm_available(name: str | None) -> None:
    """Fail at mount time, not at the first upload, if an algorithm cannot be computed."""
    factory = checksum_factory(name)
    if factory is not None:
        try:
            factory()
        except ImportError as exc:
            raise ValueError(f"--checksum-algorithm {name} needs the awscrt package") from exc


def digest_slice(fd: int, offset: int, length: int, algorithm: str | None) -> tuple[Body, str]:
    """A Body for [offset, offset+length) of `fd` with its digests, and the MD5 in hex."""
    md5 = hashlib.md5()
    factory = checksum_factory(algorithm)
    extra = factory() if factory else None
    pos, end = offset, offset + length
    while pos < end:
        n = min(CHUNK, end - pos)
        data = os.pread(fd, n, pos)
        if len(data) < n:  # hole at the end of a sparse spool
            data = data.ljust(n, b"\0")
        md5.update(data)
        if extra is not None:
            extra.update(data)  # type: ignore[attr-defined]
        pos += n
    checksum = base64.b64encode(extra.digest()).decode() if extra is not None else None  # type: ignore[attr-defined]
    body = Body(
        length, fd=fd, offset=offset, md5_b64=base64.b64encode(md5.digest()).decode(), checksum=checksum
    )
    return body, md5.hexdigest()


def digest_bytes(data: bytes, algorithm: str | None) -> tuple[Body, str]:
    md5 = hashlib.md5(data)
    factory = checksum_factory(algorithm)
    checksum = None
    if factory is not None:
        h = factory()
        h.update(data)  # type: ignore[attr-defined]
        checksum = base64.b64encode(h.digest()).decode()  # type: ignore[attr-defined]
    body = Body(len(data), data=data, md5_b64=base64.b64encode(md5.digest()).decode(), checksum=checksum)
    return body, md5.hexdigest()
