"""The data cache: blocks of objects kept on local disk, so reads do not pay S3 twice.

Owns which bytes of which object version are on local disk, proving them
whole when they are read back, and evicting them. It knows nothing of
FUSE, trio, inodes or the store; `store/` and `upload/` do not import it,
and `fs/` calls it through `DataCache`.

Contract for the callers (the read path, the upload path, the namespace):

- Blocks. An object version is (key, ETag). Block i of it holds bytes
  [i * BLOCK_SIZE, min(size, (i + 1) * BLOCK_SIZE)): block index =
  offset // BLOCK_SIZE. Every block is BLOCK_SIZE (1 MiB) long except the
  last, which is shorter; an empty object has none. The reader's chunk
  (`s3fsmpu.fs.reader.CHUNK`, 8 MiB) is a whole number of blocks, so a
  chunk is read from its blocks; a random read of a few KiB fetches and
  keeps the one or two blocks around it, which is what makes random reads
  cheap after a remount. The cache does not know the object's size: the
  caller asks for a block with the length it expects (`get_into`), and a
  block of another length is not that block.
- Reading. Before a ranged GET of bytes of an object whose ETag is known,
  `get_into(key, etag, i, buf)` for each block the range covers. True: buf
  holds the block, no request (it was verified: the block's CRC32C matched
  and its header names this key, ETag and index). False: GET what is
  missing (the GET carries If-Match: ETag, so the bytes are of that
  version), then `put(key, etag, i, data)` each whole block fetched. An
  object with no ETag is never cached.
- Writing. Once an upload is published and its ETag is known (PutObject's
  answer, or the verified Complete), the uploader may put what it sent,
  cut into BLOCK_SIZE blocks from offset 0 (independent of the part
  size), under (key, new ETag): reading back a file just written then
  costs no GET. A put of bytes that never became that ETag would be served
  as that version: put only after the publish is verified.
- Namespace. After unlink of a key, or when a key is overwritten or renamed
  away, `forget(key)`. Correctness does not need it (a new version has a
  new ETag, so old blocks are never served for it); it frees space early.
- Threads. Every method is blocking disk I/O, safe from many threads at
  once: call it with `trio.to_thread.run_sync` (under a small
  CapacityLimiter), never on the trio thread. No method raises for disk
  trouble: `get` answers None, `put` skips, and both log a WARNING.
- Lifetime. `open_data_cache` returns None when the size is 0 (off). It
  scans what an earlier mount left (one stat per block, no reads), so run
  it in a thread before serving; it raises OSError when the directory
  cannot be made, which the mount reports as a user error. Blocks of an
  object whose ETag is still current are simply hit again after a remount.
"""

from __future__ import annotations

import hashlib
import os
from typing import Protocol

from s3fsmpu.cache.disk import DiskDataCache

__all__ = ["BLOCK_SIZE", "MIN_SIZE", "DataCache", "DiskDataCache", "open_data_cache"]

BLOCK_SIZE = 1 << 20  # divides s3fsmpu.fs.reader.CHUNK (a test holds it so)
# --cache-size's least: one reader chunk (8 MiB), whose blocks are kept together
MIN_SIZE = 8 << 20


class DataCache(Protocol):
    """What the read and write paths call; see the module docstring for when."""

    def get_into(self, key: str, etag: str, index: int, buf: memoryview) -> bool: ...

    def put(self, key: str, etag: str, index: int, data: bytes | memoryview) -> None: ...

    def forget(self, key: str) -> None: ...

    def usage(self) -> int: ...


def open_data_cache(cache_dir: str, max_bytes: int, scope: str,
                    block_size: int = BLOCK_SIZE) -> DiskDataCache | None:
    """The cache of one bucket under CACHE_DIR/data/, or None when `max_bytes` is 0 (off).

    `scope` names the bucket (endpoint|bucket, as the metadata cache does):
    two buckets may hold one key with one ETag, so their blocks live apart.
    """
    if max_bytes <= 0:
        return None
    name = hashlib.sha256(scope.encode()).hexdigest()[:16]
    return DiskDataCache(os.path.join(cache_dir, "data", name), max_bytes, block_size)
