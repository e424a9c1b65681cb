"""The one memory budget (s3fsmpu/memory.py): readers take without waiting and never starve writers."""

from __future__ import annotations

import trio
import trio.testing

from s3fsmpu.memory import MemoryBudget, memory_snapshot, trim_while_idle

MIB = 1 << 20


def test_try_acquire_takes_while_free_and_within_the_read_share() -> None:
    b = MemoryBudget(8 * MIB)
    assert b.read_limit == 4 * MIB
    assert b.try_acquire(3 * MIB)
    assert not b.try_acquire(2 * MIB)  # past the readers' half
    assert b.try_acquire(MIB)
    assert (b.used, b.reading, b.writing, b.peak) == (4 * MIB, 4 * MIB, 0, 4 * MIB)
    b.release_read(3 * MIB)
    assert (b.used, b.reading, b.peak) == (MIB, MIB, 4 * MIB)
    assert b.try_acquire(2 * MIB)
    assert memory_snapshot(b) == {"buffered_bytes": 0, "read_ahead_bytes": 3 * MIB, "max_memory": 8 * MIB}


def test_readers_get_only_what_writers_left() -> None:
    async def main() -> None:
        b = MemoryBudget(8 * MIB)
        assert await b.acquire(3 * MIB) == 3 * MIB
        assert await b.acquire(3 * MIB) == 3 * MIB
        assert not b.try_acquire(3 * MIB)  # 6 + 3 > 8
        assert b.try_acquire(2 * MIB)
        assert b.used == b.peak == 8 * MIB
        assert memory_snapshot(b)["buffered_bytes"] == 6 * MIB

    trio.run(main)


def test_a_read_only_budget_is_all_for_readers() -> None:
    b = MemoryBudget(8 * MIB, read_limit=8 * MIB)
    assert b.try_acquire(8 * MIB)
    assert not b.try_acquire(1)
    assert b.clamp(100 * MIB) == 8 * MIB


def test_a_waiting_writer_comes_before_readers_and_gets_what_they_give_back() -> None:
    async def main() -> None:
        b = MemoryBudget(8 * MIB)
        assert b.try_acquire(4 * MIB)  # a reader's window
        await b.acquire(4 * MIB)  # one part: the budget is full
        got: list[int] = []

        async def writer() -> None:
            got.append(await b.acquire(2 * MIB))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            await trio.testing.wait_all_tasks_blocked()
            assert got == []
            b.release_read(2 * MIB)  # the reader consumed a chunk
            assert not b.try_acquire(2 * MIB)  # the writer waits: readers may not take it back
        assert got == [2 * MIB]
        assert (b.writing, b.reading) == (6 * MIB, 2 * MIB)

    trio.run(main)


def test_readers_that_never_give_back_do_not_starve_writers() -> None:
    """Idle open files hold their windows forever: parts still come and go in the other half."""

    async def main() -> None:
        b = MemoryBudget(8 * MIB)
        while b.try_acquire(MIB):
            pass
        assert b.reading == b.read_limit == 4 * MIB
        with trio.fail_after(5):
            for _ in range(100):  # parts of a long write, two in flight at a time
                a = await b.acquire(2 * MIB)
                c = await b.acquire(2 * MIB)
                b.release(a)
                b.release(c)
            # a part larger than the writers' half is counted as that half, so it fits too
            assert await b.acquire(6 * MIB) == 4 * MIB
        assert b.peak == 8 * MIB

    trio.run(main)


def test_the_heap_is_trimmed_once_each_time_the_mount_comes_to_rest() -> None:
    """The heap's free top is kept while parts and chunks come and go (TRIM_THRESHOLD) and
    handed back after a whole period without any, once per rest, even while something is
    still held (a reader left open keeps its chunks)."""
    trims: list[float] = []

    async def main() -> None:
        budget = MemoryBudget(100)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trim_while_idle, budget, 1.0, lambda: trims.append(trio.current_time()) or True)
            await trio.sleep(3.5)
            assert trims == []  # nothing ever came or went
            n = await budget.acquire(10)
            await trio.sleep(1)
            assert trims == []  # busy in the last period
            await trio.sleep(2)
            assert len(trims) == 1  # a quiet period while still holding: trimmed, and not again
            for _ in range(4):  # busy: something comes and goes every half period
                assert budget.try_acquire(5)
                await trio.sleep(0.5)
                budget.release_read(5)
                await trio.sleep(0.5)
            assert len(trims) == 1
            budget.release(n)
            await trio.sleep(3)
            assert len(trims) == 2
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
