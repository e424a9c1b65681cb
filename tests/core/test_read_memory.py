"""Read-ahead within --max-memory (issue 17): many sequential readers share one budget.

Chunks are made small (64 KiB, the harness's part size) so that sixteen
readers of 4 MiB files show what sixteen `cat`s of big files do with 8 MiB
chunks: each would hold its window plus a chunk or two, and the mount the
sum. With one budget the readers' chunks stay within its read share, a lone
reader still gets its whole window, an idle reader does not hold writers
up, and the bytes read are the objects'.
"""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from pathlib import Path

import trio
import trio.testing

from s3fsmpu.store.base import Body, WriteMeta
from s3fsmpu.store.memory import MemoryStore
from tests.core.harness import KIB, PART, ROOT, Env, blob, run

CHUNK = PART
READERS = 16
FILE = 64 * CHUNK  # 4 MiB
WINDOW = 16 * CHUNK  # --read-ahead 1 MiB
BUDGET = 16 * CHUNK  # --max-memory 1 MiB: readers may hold half of it
REQUEST = 32 * KIB  # the kernel's read size


class FreshBytesStore(MemoryStore):
    """GETs answer new bytes after a checkpoint, as from a socket: a GET of a whole
    object is not the stored object itself, and readers interleave."""

    async def get_range(self, key: str, start: int, end: int, etag: str | None = None) -> bytes:
        data = await super().get_range(key, start, end, etag)
        await trio.sleep(0)
        return bytes(memoryview(data))


async def put_files(env: Env, n: int) -> None:
    env.fs.read_chunk = CHUNK
    for i in range(n):
        data = blob(FILE, i)
        await env.mem.put(env.key(f"f{i}"), Body(len(data), data=data), WriteMeta())


async def md5_read(env: Env, name: str, stop_at: int | None = None) -> tuple[str, int]:
    """Read `name` sequentially as the kernel does; the MD5 and size of what came back."""
    attr = await env.fs.lookup(ROOT, name)
    fh = await env.fs.open(attr.inode, os.O_RDONLY)
    digest, offset = hashlib.md5(), 0
    while offset != stop_at and (piece := await env.fs.read(fh, offset, REQUEST)):
        digest.update(piece)
        offset += len(piece)
    await env.fs.release(fh)
    return digest.hexdigest(), offset


def test_sixteen_sequential_readers_stay_within_max_memory(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        await put_files(env, READERS)
        got: dict[str, tuple[str, int]] = {}

        async def reader(name: str) -> None:
            got[name] = await md5_read(env, name)

        tracemalloc.start()
        try:
            async with trio.open_nursery() as nursery:
                base, _ = tracemalloc.get_traced_memory()
                for i in range(READERS):
                    nursery.start_soon(reader, f"f{i}")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        for i in range(READERS):
            assert got[f"f{i}"] == (hashlib.md5(env.data(f"f{i}")).hexdigest(), FILE), i
        # what was allocated on top (README, Reading): the budget, plus per reader one
        # request fetched without a chunk, its pieces and the joined reply
        allowance = BUDGET + READERS * 3 * REQUEST
        assert peak - base <= allowance, f"{(peak - base) / KIB:.0f} KiB > {allowance / KIB:.0f} KiB"
        budget = env.fs.budget
        assert budget.used == 0  # every chunk given back
        assert 0 < budget.peak <= BUDGET

    mem = FreshBytesStore(min_part_size=PART)
    run(tmp_path, body, mem=mem, max_memory=BUDGET, read_ahead=WINDOW, timeout=120)


def test_a_lone_reader_gets_its_whole_window(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        await put_files(env, 1)
        assert await md5_read(env, "f0") == (hashlib.md5(env.data("f0")).hexdigest(), FILE)
        # the window, the chunk being read and the one behind it
        assert env.fs.budget.peak >= WINDOW
        assert env.fs.budget.used == 0

    run(tmp_path, body, max_memory=4 * WINDOW, read_ahead=WINDOW)


def test_an_idle_reader_does_not_hold_writers_up(tmp_path: Path) -> None:
    async def body(env: Env) -> None:
        await put_files(env, 1)
        attr = await env.fs.lookup(ROOT, "f0")
        fh = await env.fs.open(attr.inode, os.O_RDONLY)
        for offset in range(0, 8 * REQUEST, REQUEST):  # a streaming start, then nothing more
            await env.fs.read(fh, offset, REQUEST)
        await trio.testing.wait_all_tasks_blocked()
        assert env.fs.budget.reading == BUDGET // 2
        data = blob(4 * BUDGET, 99)
        await env.write_file("w", data, chunk=PART)
        assert env.data("w") == data
        await env.fs.release(fh)
        assert env.fs.budget.used == 0

    run(tmp_path, body, max_memory=BUDGET, read_ahead=WINDOW)


class GatedGets(MemoryStore):
    """GETs wait for the gate: a test decides when a fetch lands."""

    def __init__(self) -> None:
        super().__init__(min_part_size=PART)
        self.gate = trio.Event()
        self.gate.set()

    async def get_range(self, key: str, start: int, end: int, etag: str | None = None) -> bytes:
        await self.gate.wait()
        return await super().get_range(key, start, end, etag)


def test_a_read_waiting_for_a_chunk_that_another_read_drops_still_gets_its_bytes() -> None:
    """Found by the benchmark's random reads (`read failed: S3 Cancelled ... prefetch
    dropped`): a sequential read waits for a chunk in flight, a random read of the same
    open file (the kernel's read-ahead, another thread) drops every chunk, and the first
    read failed with EIO instead of fetching its bytes itself."""
    from s3fsmpu.fs.reader import Reader

    store = GatedGets()
    data = blob(16 * CHUNK, seed=7)

    async def main() -> None:
        await store.put("k", Body(len(data), data=data), WriteMeta())
        etag = store.objects["k"].etag
        async with trio.open_nursery() as nursery:
            reader = Reader(store, "k", len(data), etag, 4 * CHUNK, nursery, chunk=CHUNK)
            assert await reader.read(0, REQUEST) == data[:REQUEST]
            assert await reader.read(REQUEST, REQUEST) == data[REQUEST:2 * REQUEST]  # streaming now
            store.gate = trio.Event()  # the next fetches hang until the gate opens
            got: dict[str, bytes] = {}

            async def read(name: str, offset: int) -> None:
                got[name] = await reader.read(offset, REQUEST)

            nursery.start_soon(read, "sequential", 3 * CHUNK)  # waits for a chunk in flight
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(read, "random", 12 * CHUNK)  # drops every chunk
            await trio.testing.wait_all_tasks_blocked()
            store.gate.set()
        assert got["random"] == data[12 * CHUNK:12 * CHUNK + REQUEST]
        assert got["sequential"] == data[3 * CHUNK:3 * CHUNK + REQUEST]

    trio.run(main)


class HeldGets(MemoryStore):
    """GETs of ranges starting at a held offset wait until the test releases it."""

    def __init__(self) -> None:
        super().__init__(min_part_size=PART)
        self.held: dict[int, trio.Event] = {}

    async def get_range(self, key: str, start: int, end: int, etag: str | None = None) -> bytes:
        if start in self.held:
            await self.held[start].wait()
        return await super().get_range(key, start, end, etag)


def test_a_read_across_two_chunks_keeps_its_first_piece_when_that_buffer_is_reused() -> None:
    """Chunks' buffers are reused (BufferPool): a read that spans two chunks takes its
    first piece, waits for the second, and meanwhile another read drops both chunks and a
    new chunk refills the first one's buffer with other bytes. The first piece must be
    what the file holds there, not what the buffer holds by then."""
    from s3fsmpu.fs.reader import Reader
    from s3fsmpu.memory import BufferPool

    store = HeldGets()
    data = blob(110 * CHUNK, seed=9)
    far = 100 * CHUNK  # beyond the 2 MiB that still count as sequential

    async def main() -> None:
        await store.put("k", Body(len(data), data=data), WriteMeta())
        etag = store.objects["k"].etag
        async with trio.open_nursery() as nursery:
            pool = BufferPool()
            other = Reader(store, "k", len(data), etag, 4 * CHUNK, nursery, chunk=CHUNK, buffers=pool)
            for offset in (0, REQUEST):  # another open file holds a chunk: the pool stays
                assert bytes(await other.read(offset, REQUEST)) == data[offset:offset + REQUEST]
            reader = Reader(store, "k", len(data), etag, 4 * CHUNK, nursery, chunk=CHUNK, buffers=pool)
            assert await reader.read(0, REQUEST) == data[:REQUEST]
            store.held[CHUNK] = trio.Event()  # chunk 1 hangs
            got: dict[str, bytes] = {}

            async def across() -> None:
                got["across"] = bytes(await reader.read(CHUNK - REQUEST, 2 * REQUEST))

            nursery.start_soon(across)  # chunk 0 arrives, chunk 1 does not
            await trio.testing.wait_all_tasks_blocked()
            for offset in range(far, far + 4 * REQUEST, REQUEST):  # the first drops every chunk,
                assert bytes(await reader.read(offset, REQUEST)) == data[offset:offset + REQUEST]
            await trio.testing.wait_all_tasks_blocked()  # the others fill the freed buffers again
            store.held[CHUNK].set()
            other.close()
        assert got["across"] == data[CHUNK - REQUEST:CHUNK + REQUEST]
        assert store.objects["k"].data == data  # reads changed nothing in the bucket

    trio.run(main)
