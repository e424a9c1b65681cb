"""The format of one cached block on disk, and the names blocks are stored under.

A block file is a fixed header, the key and ETag it belongs to, then the
bytes. The header records the block index, the payload length and its
CRC32C, so that a read proves the file is whole and belongs to the
(key, ETag, index) asked for; anything else is `CorruptBlock`. No I/O
beyond reads of the file descriptor it is handed; no index, no locking.
"""

from __future__ import annotations

import hashlib
import os
import struct

MAGIC = b"S3FC"
VERSION = 2  # 2: blocks of 1 MiB (1: 8 MiB, the reader's chunk)
# magic, version, key length, ETag length, block index, payload length, CRC32C of the payload
_HEADER = struct.Struct("<4sBxHHQQI")
DIGEST_SIZE = 16  # 8 bytes naming the key (its directory) + 8 naming the block


def crc32c(data: bytes | memoryview) -> int:
    # imported here: a mount without the data cache (or a CRC) never loads awscrt (s3fsmpu/memory.py)
    from awscrt.checksums import crc32c as crc

    return int(crc(data))


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


def read_block(fd: int, key: str, etag: str, index: int) -> bytes:
    """The payload of the block file open as `fd`, verified; raises CorruptBlock otherwise."""
    head = os.pread(fd, _header_size(key, etag), 0)
    length, crc = _check_header(head, key, etag, index)
    # what the file holds, not what a garbled header says (2**60 bytes would be asked for)
    data = os.pread(fd, max(0, os.fstat(fd).st_size - len(head)), len(head))
    _check_payload(data, length, crc)
    return data


def read_block_into(fd: int, key: str, etag: str, index: int, buf: memoryview) -> int:
    """Fill `buf` with the payload of the block file open as `fd`, verified; CorruptBlock
    unless the payload is exactly len(buf) bytes, whole (`buf` then holds whatever the
    file had). One preadv of the whole file: per block one read, not four, and the
    kernel reads ahead the whole block at once."""
    head = bytearray(_header_size(key, etag))
    spare = bytearray(1)  # filled only by a file longer than its header says
    got = os.preadv(fd, [head, buf, spare], 0)
    length, crc = _check_header(head[: min(got, len(head))], key, etag, index)
    if length != len(buf):
        raise CorruptBlock(f"{length} bytes where the object has {len(buf)}")
    # (a read shorter than asked counts as a short file: at worst a refetch, never wrong bytes)
    if got > len(head) + length:
        raise CorruptBlock(f"more bytes than the header's {length}")
    _check_payload(buf[: got - len(head)], length, crc)
    return length


def _header_size(key: str, etag: str) -> int:
    return _HEADER.size + len(key.encode()) + len(etag.encode())


def _check_header(head: bytes | bytearray, key: str, etag: str, index: int) -> tuple[int, int]:
    """Check the header of the block asked for: (payload length, its CRC32C)."""
    if len(head) < _header_size(key, etag):
        raise CorruptBlock(f"short header ({len(head)} bytes)")
    magic, version, klen, elen, got_index, length, crc = _HEADER.unpack_from(head)
    if magic == MAGIC and version < VERSION:
        raise OlderFormat(f"block format {version}, not {VERSION}")
    if magic != MAGIC or version != VERSION:
        raise CorruptBlock("not a block file of this version")
    kb, eb = key.encode(), etag.encode()
    if (klen, elen, got_index) != (len(kb), len(eb), index) or head[_HEADER.size :] != kb + eb:
        raise CorruptBlock("header names another block")
    return length, crc


def _check_payload(data: bytes | memoryview, length: int, crc: int) -> None:
    if len(data) != length:
        raise CorruptBlock(f"{len(data)} bytes where the header says {length}")
    if crc32c(data) != crc:
        raise CorruptBlock("CRC32C mismatch")
