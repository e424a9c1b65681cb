"""Content-MD5 and the flexible checksum of a part, in one pass.

Runs in a worker thread (hashlib releases the GIL on large buffers); each
byte of a part is hashed once per algorithm, never again by botocore. With
`md5=False` (the crc integrity modes) there is no MD5 at all: it is the
costliest thing the mount computes.
"""

from __future__ import annotations

import hashlib
import os

from s3fsmpu.checksums import Hasher, checksum_factory, encode
from s3fsmpu.store.base import Body

CHUNK = 1 << 20


def digest_slice(fd: int, offset: int, length: int, algorithm: str | None,
                 md5: bool = True) -> tuple[Body, str | None]:
    """A Body for [offset, offset+length) of `fd` with its digests, and the MD5 in hex (None
    without `md5`)."""
    hashers: list[Hasher] = []
    md5_hash = hashlib.md5() if md5 else None
    if md5_hash is not None:
        hashers.append(md5_hash)
    factory = checksum_factory(algorithm)
    extra = factory() if factory else None
    if extra is not None:
        hashers.append(extra)
    pos, end = offset, offset + length
    while pos < end:
        n = min(CHUNK, end - pos)
        data = os.pread(fd, n, pos)
        if len(data) < n:  # hole at the end of a sparse spool
            data = data.ljust(n, b"\0")
        for h in hashers:
            h.update(data)
        pos += n
    body = Body(length, fd=fd, offset=offset,
                md5_b64=encode(md5_hash.digest()) if md5_hash is not None else None,
                checksum=encode(extra.digest()) if extra is not None else None)
    return body, md5_hash.hexdigest() if md5_hash is not None else None


def digest_bytes(data: bytes, algorithm: str | None) -> tuple[Body, str]:
    md5 = hashlib.md5(data)
    factory = checksum_factory(algorithm)
    checksum = None
    if factory is not None:
        h = factory()
        h.update(data)
        checksum = encode(h.digest())
    body = Body(len(data), data=data, md5_b64=encode(md5.digest()), checksum=checksum)
    return body, md5.hexdigest()
