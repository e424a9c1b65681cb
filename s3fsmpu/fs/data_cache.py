"""The trio side of the data cache: its blocking disk calls in worker threads.

s3fsmpu/cache/ is plain blocking code; the reader and the publish path call
it through `CacheAccess`, which runs every call in a worker thread under one
small limiter, so a slow disk never stalls the trio loop and never takes
more than a few threads from S3 requests.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from s3fsmpu.cache import BLOCK_SIZE, DataCache

CACHE_THREADS = 4


class CacheAccess:
    def __init__(self, cache: DataCache, block_size: int = BLOCK_SIZE) -> None:
        self.cache = cache
        self.block_size = block_size
        self._limiter = trio.CapacityLimiter(CACHE_THREADS)

    async def read_blocks(self, key: str, etag: str, first: int, buf: memoryview) -> list[bool]:
        """Fill `buf` from blocks first, first + 1, ... (as many as it spans; the last may
        be short at the object's end): which of them were there, verified."""
        def run() -> list[bool]:
            return [self.cache.get_into(key, etag, first + i, buf[off : off + self.block_size])
                    for i, off in enumerate(range(0, len(buf), self.block_size))]

        return await trio.to_thread.run_sync(run, limiter=self._limiter)

    async def put_blocks(self, key: str, etag: str, first: int, data: memoryview) -> None:
        """Keep `data` as blocks first, first + 1, ... (whole blocks, or the object's last)."""
        def run() -> None:
            for i, off in enumerate(range(0, len(data), self.block_size)):
                self.cache.put(key, etag, first + i, data[off : off + self.block_size])

        await trio.to_thread.run_sync(run, limiter=self._limiter)

    async def forget(self, key: str) -> None:
        await trio.to_thread.run_sync(self.cache.forget, key, limiter=self._limiter)

    async def fill(self, key: str, etag: str, size: int, read: Callable[[int, int], bytes]) -> None:
        """Put a just-published object, read block by block with `read(offset, length)`
        (the spool, in the worker thread): reading back a file just written costs no GET."""
        for index in range(-(-size // self.block_size)):
            start = index * self.block_size
            length = min(self.block_size, size - start)

            def one(start: int = start, length: int = length, index: int = index) -> None:
                self.cache.put(key, etag, index, read(start, length))

            await trio.to_thread.run_sync(one, limiter=self._limiter)
