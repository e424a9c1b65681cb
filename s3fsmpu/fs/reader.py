"""Reads of one open file: ranged GETs, with parallel prefetch for sequential readers.

The object is seen as fixed chunks. While reads stay sequential, the window
of chunks fetched ahead of the reader doubles (1 chunk up to
`max_window`, less the chunk read now and the one behind), and those
chunks download in parallel in background tasks, so the next reads find
their bytes already there. A seek far from the stream resets the window;
random reads fetch only the bytes they ask for. Chunks further behind the
reader are dropped: memory per open file is bounded by the window (at
least three chunks).

Every chunk holds its bytes from the mount's one memory budget
(s3fsmpu/memory.py) from before its GET starts until it is dropped and its
GET has ended. A chunk is only started if the budget has room now
(`try_acquire`): under pressure the window shrinks to the chunks it could
get, and with none at all a read GETs just the bytes it was asked for. So
a read never waits for memory, and N readers hold no more than the
budget's read share between them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from s3fsmpu.errors import ObjectChanged, S3Error
from s3fsmpu.memory import MemoryBudget
from s3fsmpu.store.base import ObjectStore

if TYPE_CHECKING:
    from s3fsmpu.fs.data_cache import CacheAccess

log = logging.getLogger(__name__)

CHUNK = 8 << 20  # as the default part size: half the GETs (and thread hops) of 4 MiB
# a read this close to where the last one ended still counts as sequential
# (the kernel sends read-ahead requests slightly out of order)
NEAR = 2 << 20


@dataclass
class _Chunk:
    done: trio.Event = field(default_factory=trio.Event)
    data: bytes = b""
    error: BaseException | None = None
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    held: int = 0  # bytes of the memory budget this chunk holds
    fetching: bool = False  # a GET runs for it: its bytes are not free until it ends
    dropped: bool = False


class Reader:
    def __init__(
        self, store: ObjectStore, key: str, size: int, etag: str | None, max_window: int,
        nursery: trio.Nursery | None = None, chunk: int = CHUNK, cache: CacheAccess | None = None,
        budget: MemoryBudget | None = None,
    ) -> None:
        """`budget`: the mount's memory budget, which every chunk asks; None = unbounded."""
        self.store = store
        self.key = key
        self.size = size
        self.etag = etag
        self.chunk = chunk
        # blocks of the data cache are chunks: only an object version (ETag) is cached
        self.cache = cache if cache is not None and etag is not None and chunk == cache.block_size else None
        # the window is all a reader holds: the chunks ahead, the one read now, the one behind
        # (a cat of 512 MiB on radosgw peaked 17 MiB lower, as fast)
        self.max_chunks = max(1, max_window // chunk - 2)
        self.nursery = nursery
        self.budget = budget
        self._chunks: dict[int, _Chunk] = {}
        self._next = 0  # where the last read ended
        self._reads = 0
        self._window = 0  # chunks ahead; 0 = not streaming

    async def read(self, offset: int, size: int) -> bytes:
        if offset >= self.size or size <= 0:
            return b""
        end = min(self.size, offset + size)
        # the first read proves nothing: a file-type sniff reads 4 KiB and leaves
        sequential = self._reads > 0 and abs(offset - self._next) <= NEAR
        self._reads += 1
        self._next = end
        if sequential:
            self._window = min(self.max_chunks, max(1, self._window * 2))
        else:
            self._window = 0
        first, last = offset // self.chunk, (end - 1) // self.chunk
        if not sequential and not all(i in self._chunks for i in range(first, last + 1)):
            self._drop(lambda i: True)
            return await self._get(offset, end)  # random access: only what was asked
        # one chunk behind stays: the kernel's read-ahead requests arrive slightly out of order
        self._drop(lambda i: i < first - 1 or i > last + self._window)
        for i in range(first, min(last + self._window, (self.size - 1) // self.chunk) + 1):
            if i not in self._chunks and not self._start(i):
                break  # no memory for more: the window is what the budget gave
        pieces = []
        for i in range(first, last + 1):
            lo, hi = max(offset, i * self.chunk), min(end, (i + 1) * self.chunk)
            c = self._chunks.get(i)
            if c is None:  # no memory for the whole chunk: only the bytes asked for
                pieces.append(await self._get(lo, hi))
                continue
            if self.nursery is None and not c.done.is_set():  # no background tasks: fetch now
                await self._fill(c, i * self.chunk, min(self.size, (i + 1) * self.chunk))
            await c.done.wait()
            if c.error is not None:
                self._drop(lambda j: j == i)  # noqa: B023 - called at once
                if c.scope.cancelled_caught:  # dropped by another read of this file meanwhile, not S3's error
                    pieces.append(await self._get(lo, hi))
                    continue
                raise c.error
            # a copy, not a memoryview: a view would pin its whole 8 MiB chunk
            pieces.append(c.data[lo - i * self.chunk : hi - i * self.chunk])
        return b"".join(pieces)

    def close(self) -> None:
        self._drop(lambda i: True)

    def _drop(self, which) -> None:  # type: ignore[no-untyped-def]
        for i in [i for i in self._chunks if which(i)]:
            c = self._chunks.pop(i)
            c.dropped = True
            c.scope.cancel()
            if not c.fetching:  # else its GET still fills a buffer: _fill gives the bytes back
                self._give_back(c)

    def _give_back(self, c: _Chunk) -> None:
        if c.held and self.budget is not None:
            self.budget.release_read(c.held)
        c.held = 0

    def _start(self, index: int) -> bool:
        """Start fetching a chunk if the budget has its bytes now; False if not."""
        start = index * self.chunk
        end = min(self.size, start + self.chunk)
        if self.budget is not None and not self.budget.try_acquire(end - start):
            return False
        c = self._chunks[index] = _Chunk(held=end - start if self.budget is not None else 0)
        if self.nursery is not None:
            self.nursery.start_soon(self._fill, c, start, end)
        return True

    async def _fill(self, c: _Chunk, start: int, end: int) -> None:
        c.fetching = True
        try:
            with c.scope:
                try:
                    c.data = await self._get(start, end)
                except S3Error as exc:
                    c.error = exc
                except Exception as exc:  # a fetch task must never take the mount down
                    log.exception("prefetch of %r bytes %d-%d failed", self.key, start, end)
                    c.error = exc
            if c.scope.cancelled_caught and c.error is None and not c.data:
                c.error = S3Error("Cancelled", self.key, "prefetch dropped", "GetObject")
        finally:
            c.fetching = False
            c.done.set()
            if c.dropped:  # a read that was waiting for it may still take its bytes
                self._give_back(c)

    async def _get(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of the version this reader reads: from the data cache when
        its block is there, else a ranged GET (a whole chunk fetched goes into the cache)."""
        index = start // self.chunk
        block_end = min(self.size, (index + 1) * self.chunk)
        if self.cache is not None and end <= block_end:
            assert self.etag is not None
            block = await self.cache.get(self.key, self.etag, index)
            if block is not None and len(block) == block_end - index * self.chunk:
                return block[start - index * self.chunk : end - index * self.chunk]
        data = await self._fetch(start, end)
        if self.cache is not None and start == index * self.chunk and end == block_end:
            assert self.etag is not None
            await self.cache.put(self.key, self.etag, index, data)
        return data

    async def _fetch(self, start: int, end: int) -> bytes:
        try:
            data = await self.store.get_range(self.key, start, end, self.etag)
        except S3Error as exc:
            if exc.code == "PreconditionFailed":
                raise ObjectChanged(self.key, self.etag) from exc
            raise
        if len(data) != end - start:
            raise S3Error("ShortRead", self.key, f"got {len(data)} of {end - start} bytes", "GetObject")
        return data
