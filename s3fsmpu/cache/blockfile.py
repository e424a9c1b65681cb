"""The format of one cached block on disk, and the names blocks are stored under.

A block file is a fixed header, the key and ETag it belongs to, then the
bytes. The header records the block index, the payload length and its
CRC32C, so that a read proves the file is whole and belongs to the
(key, ETag, index) asked for; anything else is `CorruptBlock`. No I/O
beyond the file object it is handed; no index, no locking.
"""

from __future__ import annotations

import hashlib
import struct
from typing import BinaryIO, Protocol

MAGIC = b"S3FC"
VERSION = 2  # 2: blocks of 1 MiB (1: 8 MiB, the reader's chunk)
# magic, version, key length, ETag length, block index, payload length, CRC32C of the payload
_HEADER = struct.Struct("<4sBxHHQQI")
DIGEST_SIZE = 16  # 8 bytes naming the key (its directory) + 8 naming the block


def crc32c(data: bytes | memoryview) -> int:
    # imported here: a mount without the data cache (or a CRC) never loads awscrt (s3fsmpu/memory.py)
    from awscrt.checksums import crc32c as crc

    return int(crc(data))


class RawFile(Protocol):
    """An unbuffered file (`open(path, "rb", buffering=0)`): readinto fills the caller's buffer."""

    def read(self, size: int = -1, /) -> bytes: ...

    def readinto(self, buffer: memoryview, /) -> int | None: ...


class CorruptBlock(Exception):
    """A block file that is short, long, garbled or not the block asked for."""


class OlderFormat(CorruptBlock):
    """A block file an earlier version wrote (version 1 held 8 MiB blocks): not corrupt,
    just not readable as this version's block; dropped quietly like a corrupt one."""


def key_digest(key: str) -> bytes:
    """Names the directory of every block of every version of `key` (so forget is one rename)."""
    return hashlib.blake2b(key.encode(), digest_size=8, person=b"s3fsmpu-key").digest()


def block_digest(key: str, etag: str, index: int) -> bytes:
    """16 bytes naming block `index` of the object version (key, etag): keys are not paths."""
    kb, eb = key.encode(), etag.encode()
    h = hashlib.blake2b(digest_size=8, person=b"s3fsmpu-block")
    h.update(struct.pack("<HHQ", len(kb), len(eb), index) + kb + eb)
    return key_digest(key) + h.digest()


def header(key: str, etag: str, index: int, data: bytes | memoryview) -> bytes:
    """What precedes `data` in its block file."""
    kb, eb = key.encode(), etag.encode()
    return _HEADER.pack(MAGIC, VERSION, len(kb), len(eb), index, len(data), crc32c(data)) + kb + eb


def read_block(f: BinaryIO, key: str, etag: str, index: int) -> bytes:
    """The payload of an open block file, verified; raises CorruptBlock otherwise."""
    length, crc = _check_header(f, key, etag, index)
    data = f.read(length + 1)  # one more: a file longer than its header says is not whole either
    _check_payload(data, length, crc)
    return data


def read_block_into(f: RawFile, key: str, etag: str, index: int, buf: memoryview) -> int:
    """Fill `buf` with the payload of an open block file, verified; CorruptBlock unless
    the payload is exactly len(buf) bytes, whole. `f` unbuffered: the bytes go straight in."""
    length, crc = _check_header(f, key, etag, index)
    if length != len(buf):
        raise CorruptBlock(f"{length} bytes where the object has {len(buf)}")
    got = 0
    while got < length and (n := f.readinto(buf[got:])):
        got += n
    if f.read(1):  # buf holds no more than length: a longer file is caught here
        raise CorruptBlock(f"more bytes than the header's {length}")
    _check_payload(buf[:got], length, crc)
    return length


def _check_header(f: BinaryIO | RawFile, key: str, etag: str, index: int) -> tuple[int, int]:
    """Read and check the header of the block asked for: (payload length, its CRC32C)."""
    fixed = f.read(_HEADER.size)
    if len(fixed) < _HEADER.size:
        raise CorruptBlock(f"short header ({len(fixed)} bytes)")
    magic, version, klen, elen, got_index, length, crc = _HEADER.unpack(fixed)
    if magic == MAGIC and version < VERSION:
        raise OlderFormat(f"block format {version}, not {VERSION}")
    if magic != MAGIC or version != VERSION:
        raise CorruptBlock("not a block file of this version")
    kb, eb = key.encode(), etag.encode()
    if (klen, elen, got_index) != (len(kb), len(eb), index) or f.read(klen + elen) != kb + eb:
        raise CorruptBlock("header names another block")
    return length, crc


def _check_payload(data: bytes | memoryview, length: int, crc: int) -> None:
    if len(data) != length:
        raise CorruptBlock(f"{len(data)} bytes where the header says {length}")
    if crc32c(data) != crc:
        raise CorruptBlock("CRC32C mismatch")
