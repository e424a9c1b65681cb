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

A whole chunk is fetched into a buffer of the mount's `BufferPool` and
given back when the chunk is dropped, so a long sequential read reuses a
few buffers instead of mapping and unmapping 8 MiB per GET. A read served
from one chunk answers with a view of its buffer, not a copy: the view
lives only until the reply is written, which pyfuse3 does before the trio
loop runs anything else, and a buffer goes back to the pool only on the
trio loop (a chunk's fetch must have ended). A read spanning two chunks
copies its pieces, since it waits between them.

With the data cache on, bytes are looked up there block by block (1 MiB)
before any GET, and a GET covers whole blocks, which are then kept: a
random read of 256 KiB fetches the one or two blocks around it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from s3fsmpu.errors import ObjectChanged, S3Error
from s3fsmpu.memory import BufferPool, MemoryBudget
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
    buf: bytearray | None = None  # its bytes, once done without error
    error: BaseException | None = None
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    held: int = 0  # bytes of the memory budget this chunk holds
    fetching: bool = False  # a GET runs for it: its buffer is not free until it ends
    dropped: bool = False


class Reader:
    def __init__(
        self, store: ObjectStore, key: str, size: int, etag: str | None, max_window: int,
        nursery: trio.Nursery | None = None, chunk: int = CHUNK, cache: CacheAccess | None = None,
        budget: MemoryBudget | None = None, buffers: BufferPool | None = None,
    ) -> None:
        """`budget`: the mount's memory budget, which every chunk asks; None = unbounded.
        `buffers`: where whole chunks get their buffers; None = a new one each."""
        self.store = store
        self.key = key
        self.size = size
        self.etag = etag
        self.chunk = chunk
        # only an object version (ETag) is cached; a chunk is a whole number of blocks
        self.cache = cache if cache is not None and etag is not None and chunk % cache.block_size == 0 else None
        # the window is all a reader holds: the chunks ahead, the one read now, the one behind
        # (a cat of 512 MiB on radosgw peaked 17 MiB lower, as fast)
        self.max_chunks = max(1, max_window // chunk - 2)
        self.nursery = nursery
        self.budget = budget
        self.buffers = buffers or BufferPool(keep=0)
        self._chunks: dict[int, _Chunk] = {}
        self._next = 0  # where the last read ended
        self._reads = 0
        self._window = 0  # chunks ahead; 0 = not streaming

    async def read(self, offset: int, size: int) -> bytes | memoryview:
        """The bytes asked for; a memoryview is valid only until the caller next yields."""
        if offset >= self.size or size <= 0:
            return b""
        end = min(self.size, offset + size)
        first, last = offset // self.chunk, (end - 1) // self.chunk
        # the first read proves nothing: a file-type sniff reads 4 KiB and leaves; a read
        # of chunks fetched ahead is the stream too (a kernel read-ahead larger than NEAR
        # sends its requests out of order)
        in_window = all(i in self._chunks for i in range(first, last + 1))
        sequential = self._reads > 0 and (abs(offset - self._next) <= NEAR or in_window)
        self._reads += 1
        self._next = end
        if sequential:
            self._window = min(self.max_chunks, max(1, self._window * 2))
        else:
            self._window = 0
        if not sequential:
            self._drop(lambda i: True)
            return await self._get(offset, end)  # random access: only what was asked
        # one chunk behind stays: the kernel's read-ahead requests arrive slightly out of order
        self._drop(lambda i: i < first - 1 or i > last + self._window)
        for i in range(first, min(last + self._window, (self.size - 1) // self.chunk) + 1):
            if i not in self._chunks and not self._start(i):
                break  # no memory for more: the window is what the budget gave
        pieces: list[bytes | memoryview] = []
        for i in range(first, last + 1):
            lo, hi = max(offset, i * self.chunk), min(end, (i + 1) * self.chunk)
            c = self._chunks.get(i)
            if c is None:  # no memory for the whole chunk: only the bytes asked for
                pieces.append(await self._get(lo, hi))
                continue
            if self.nursery is None and not c.done.is_set():  # no background tasks: fetch now
                await self._fill(c, i * self.chunk, min(self.size, (i + 1) * self.chunk))
            await c.done.wait()
            if c.dropped:  # by another read of this file meanwhile: its buffer may hold
                pieces.append(await self._get(lo, hi))  # another chunk's bytes by now
                continue
            if c.error is not None:
                self._drop(lambda j: j == i)  # noqa: B023 - called at once
                raise c.error
            assert c.buf is not None
            view = memoryview(c.buf)[lo - i * self.chunk : hi - i * self.chunk]
            if first == last:
                return view  # no await from here to the reply: the buffer stays this chunk's
            pieces.append(bytes(view))  # the next piece may wait: copy this one now
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
        if c.buf is not None and len(c.buf) == self.chunk:
            self.buffers.give(c.buf)
        c.buf = None

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
        if c.dropped:  # before it began: a read that waits for it fetches its bytes itself
            c.done.set()
            return
        c.fetching = True
        c.buf = self.buffers.take(self.chunk) if end - start == self.chunk else bytearray(end - start)
        try:
            with c.scope:
                try:
                    await self._load(start, memoryview(c.buf))
                except S3Error as exc:
                    c.error = exc
                except Exception as exc:  # a fetch task must never take the mount down
                    log.exception("prefetch of %r bytes %d-%d failed", self.key, start, end)
                    c.error = exc
            if c.scope.cancelled_caught and c.error is None:
                c.error = S3Error("Cancelled", self.key, "prefetch dropped", "GetObject")
        finally:
            c.fetching = False
            c.done.set()
            if c.dropped:  # a read that was waiting for it fetches its bytes itself
                self._give_back(c)

    async def _get(self, start: int, end: int) -> bytes | memoryview:
        """Bytes [start, end) of the version this reader reads, in a buffer of their own."""
        if self.cache is None:
            return await self._fetch(start, end)
        # with the data cache, whole blocks: what is fetched can be kept
        bs = self.cache.block_size
        lo, hi = start // bs * bs, min(self.size, -(-end // bs) * bs)
        buf = memoryview(bytearray(hi - lo))
        await self._load(lo, buf)
        return buf[start - lo : end - lo]

    async def _load(self, start: int, buf: memoryview) -> None:
        """Fill `buf` with bytes [start, start + len(buf)): from the data cache where its
        blocks are (`start` is then a block's), a ranged GET for each run of missing
        blocks, which are then kept. (One GET spanning them all fetched a whole chunk
        after a remount, for two blocks that random reads had not kept.)"""
        if self.cache is None:
            return await self._fetch_into(start, buf)
        assert self.etag is not None
        bs = self.cache.block_size
        first = start // bs
        have = await self.cache.read_blocks(self.key, self.etag, first, buf)
        i = 0
        while i < len(have):
            if have[i]:
                i += 1
                continue
            run_end = next((j for j in range(i, len(have)) if have[j]), len(have))
            piece = buf[i * bs : run_end * bs]
            await self._fetch_into(start + i * bs, piece)
            # kept even when the chunk was dropped meanwhile: its GET ran to the end (a
            # worker thread is never abandoned), and a random read's neighbour that the
            # next seek drops is what a later read after a remount asks for
            with trio.CancelScope(shield=True):
                await self.cache.put_blocks(self.key, self.etag, first + i, piece)
            i = run_end

    async def _fetch(self, start: int, end: int) -> bytes:
        with self._pinned():
            data = await self.store.get_range(self.key, start, end, self.etag)
        self._check_length(start, end, len(data))
        return data

    async def _fetch_into(self, start: int, buf: memoryview) -> None:
        with self._pinned():
            n = await self.store.get_range_into(self.key, start, buf, self.etag)
        self._check_length(start, start + len(buf), n)

    @contextlib.contextmanager
    def _pinned(self) -> Iterator[None]:
        """A GET of the version this reader reads: another one there is ObjectChanged."""
        try:
            yield
        except S3Error as exc:
            if exc.code == "PreconditionFailed":
                raise ObjectChanged(self.key, self.etag) from exc
            raise

    def _check_length(self, start: int, end: int, got: int) -> None:
        if got != end - start:
            raise S3Error("ShortRead", self.key, f"got {got} of {end - start} bytes", "GetObject")
