"""The reader with the data cache: what it asks S3 for when some blocks of a chunk are
on disk and some are not (blocks of 1 MiB, chunks of 8)."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from s3fsmpu.cache import BLOCK_SIZE, DiskDataCache
from s3fsmpu.fs.data_cache import CacheAccess
from s3fsmpu.fs.reader import CHUNK, Reader
from s3fsmpu.store.base import Body, WriteMeta
from s3fsmpu.store.memory import MemoryStore
from tests.core.harness import PART, blob


class RangeLog(MemoryStore):
    def __init__(self) -> None:
        super().__init__(min_part_size=PART)
        self.ranges: list[tuple[int, int]] = []

    async def get_range(self, key: str, start: int, end: int, etag: str | None = None) -> bytes:
        self.ranges.append((start, end))
        return await super().get_range(key, start, end, etag)


def test_a_chunk_fetches_only_its_missing_blocks_one_get_per_run(tmp_path: Path) -> None:
    """Blocks 1-6 of a chunk are cached (random reads kept them), 0 and 7 are not: the
    chunk costs two 1 MiB GETs, not one of 8 MiB, and afterwards all eight are cached."""
    store = RangeLog()
    data = blob(CHUNK, seed=4)
    disk = DiskDataCache(str(tmp_path), 64 << 20, BLOCK_SIZE)

    async def main() -> None:
        await store.put("k", Body(len(data), data=data), WriteMeta())
        etag = store.objects["k"].etag
        for i in range(1, 7):
            disk.put("k", etag, i, data[i * BLOCK_SIZE:(i + 1) * BLOCK_SIZE])
        reader = Reader(store, "k", len(data), etag, 4 * CHUNK, None, cache=CacheAccess(disk))
        assert bytes(await reader.read(BLOCK_SIZE, 4096)) == data[BLOCK_SIZE:BLOCK_SIZE + 4096]
        assert store.ranges == []  # a random read of a cached block
        offset = BLOCK_SIZE + 4096
        assert bytes(await reader.read(offset, 1 << 20)) == data[offset:offset + (1 << 20)]  # the chunk
        assert store.ranges == [(0, BLOCK_SIZE), (7 * BLOCK_SIZE, CHUNK)]
        reader.close()
        assert all(disk.get("k", etag, i) == data[i * BLOCK_SIZE:(i + 1) * BLOCK_SIZE] for i in range(8))
        assert store.objects["k"].data == data and store.objects["k"].etag == etag  # reads changed nothing

    trio.run(main)


class ThreadLikeGets(MemoryStore):
    """GETs that wait for the gate and then end whole even if the read that started them
    was cancelled meanwhile, as a boto3 call in a worker thread does (never abandoned)."""

    def __init__(self) -> None:
        super().__init__(min_part_size=PART)
        self.gate = trio.Event()
        self.gate.set()
        self.ranges: list[tuple[int, int]] = []

    async def get_range(self, key: str, start: int, end: int, etag: str | None = None) -> bytes:
        self.ranges.append((start, end))
        with trio.CancelScope(shield=True):
            await self.gate.wait()
            return await super().get_range(key, start, end, etag)


def test_a_chunk_dropped_while_its_get_ran_keeps_the_blocks_it_fetched(tmp_path: Path) -> None:
    """Two random reads close together look like a stream and start the next chunk; the
    next seek drops it while its GET runs. The GET ends whole all the same, and its blocks
    must go into the cache: a remount's reads of the same places found them missing and
    fetched the chunk again (the 8 MiB GET in the benchmark's random reads)."""
    store = ThreadLikeGets()
    data = blob(4 * CHUNK, seed=5)
    disk = DiskDataCache(str(tmp_path), 64 << 20, BLOCK_SIZE)
    request = 128 << 10

    async def main() -> None:
        await store.put("k", Body(len(data), data=data), WriteMeta())
        etag = store.objects["k"].etag
        got: dict[str, bytes] = {}
        async with trio.open_nursery() as nursery:
            reader = Reader(store, "k", len(data), etag, 4 * CHUNK, nursery, cache=CacheAccess(disk))

            async def read(name: str, offset: int) -> None:
                got[name] = bytes(await reader.read(offset, request))

            await read("first", 0)
            store.gate = trio.Event()  # the next GETs hang until the gate opens
            nursery.start_soon(read, "near", request)  # looks sequential: chunks 0 and 1 start
            with trio.fail_after(10):
                while (CHUNK, 2 * CHUNK) not in store.ranges:  # chunk 1's GET is running
                    await trio.sleep(0.01)
            nursery.start_soon(read, "seek", 3 * CHUNK)  # drops chunks 0 and 1
            await trio.testing.wait_all_tasks_blocked()
            store.gate.set()
        reader.close()
        assert got["near"] == data[request:2 * request]
        assert got["seek"] == data[3 * CHUNK:3 * CHUNK + request]
        for i in range(CHUNK // BLOCK_SIZE, 2 * CHUNK // BLOCK_SIZE):  # chunk 1, fetched whole
            assert disk.get("k", etag, i) == data[i * BLOCK_SIZE:(i + 1) * BLOCK_SIZE], i
        assert store.objects["k"].data == data and store.objects["k"].etag == etag

    trio.run(main)
