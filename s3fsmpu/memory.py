"""The one memory budget of the process (--max-memory): write parts and read-ahead.

Writers and readers ask the same `MemoryBudget`, so the figure the user
gives bounds both:

- a part that is ready to upload holds its size from the budget until its
  upload has finished (`acquire`, which waits), so a writer that outruns S3
  waits in write() instead of letting the backlog grow;
- a reader takes the bytes of each chunk it fetches ahead with
  `try_acquire`, which never waits, and gives them back when the chunk is
  consumed and dropped (`release_read`). Under pressure a reader's window
  shrinks to what it can get, down to no chunk at all: it then GETs only the
  bytes the kernel asked for. A read never waits for memory, so it can never
  deadlock on it.

Writers are never starved by readers, by two rules: `try_acquire` fails
while a writer waits, and readers together hold at most `read_limit` (half
of the budget on a writable mount, all of it on a read-only one), so the
other half is only ever held by parts, which finish and give it back (a
part larger than that half is counted as the half). An idle open file that
was read ahead cannot keep writers out.

Memory formula (what the mount's data buffers can hold at once):

    max_memory                      parts in flight + chunks read ahead (<= read_limit)
  + R x request                     R reads answered without a chunk: their own bytes
                                    (request <= 1 MiB, the kernel's largest read)

The bytes being returned to the kernel (the reply and its pieces) are not
counted: they live for one request. So 16 readers of a 96 MiB mount hold
at most 48 MiB of read-ahead between them, not 16 x (32 + 8) MiB.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from collections.abc import Callable

import trio

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


class MemoryBudget:
    def __init__(self, total: int, read_limit: int | None = None) -> None:
        """`read_limit`: the most readers may hold; half of `total` unless given."""
        self.total = total
        self.read_limit = total // 2 if read_limit is None else min(read_limit, total)
        self.used = 0  # parts and read-ahead chunks
        self.reading = 0  # the readers' share of `used`
        self.peak = 0  # the high-water mark of `used`, for tests and status
        self._waiting = 0  # writers waiting in acquire()
        # the share readers can never hold: a part is counted as at most that, so it
        # always fits once the other parts are done, whatever the readers hold
        self.part_max = self.total - self.read_limit or self.total
        self.touched = False  # took or gave back anything since trim_while_idle last looked
        self._changed = trio.Event()

    @property
    def writing(self) -> int:
        """Bytes held by parts ready for or in upload."""
        return self.used - self.reading

    def clamp(self, n: int) -> int:
        """A part larger than the writers' share takes all of it, not forever."""
        return min(n, self.part_max)

    async def acquire(self, n: int) -> int:
        """A writer's part: waits until the bytes are free; returns what it holds."""
        n = self.clamp(n)
        self._waiting += 1
        try:
            while self.used + n > self.total:
                await self._changed.wait()
        finally:
            self._waiting -= 1
        self._take(n)
        return n

    def release(self, n: int) -> None:
        self.used -= n
        self.touched = True
        self._wake()

    def try_acquire(self, n: int) -> bool:
        """A reader's chunk: the bytes now if they are free and no writer waits, else False."""
        if self._waiting or self.used + n > self.total or self.reading + n > self.read_limit:
            return False
        self.reading += n
        self._take(n)
        return True

    def release_read(self, n: int) -> None:
        self.reading -= n
        self.release(n)

    def _take(self, n: int) -> None:
        self.used += n
        self.touched = True
        self.peak = max(self.peak, self.used)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


class BufferPool:
    """Chunk buffers that outlive their chunk, so a sequential reader reuses them.

    An 8 MiB bytes object per GET is a fresh mapping (the mmap threshold is
    fixed below it): 2,048 page faults to fill it and an munmap to free it,
    about 0.45 CPU s per GiB read on radosgw, as much as the GETs themselves.
    A reader takes a buffer for each whole chunk and gives it back when the
    chunk is dropped; up to `keep` wait for the next chunk, and all of them
    go once no reader holds any, so an idle mount holds none. The budget
    still counts the chunks: a pooled buffer is only ever held by one.
    """

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self.out = 0  # buffers held by chunks
        self._free: list[bytearray] = []

    def take(self, size: int) -> bytearray:
        self.out += 1
        while self._free:
            buf = self._free.pop()
            if len(buf) == size:
                return buf
        return bytearray(size)

    def give(self, buf: bytearray) -> None:
        self.out -= 1
        if self.out == 0:
            self._free.clear()
        elif len(self._free) < self.keep:
            self._free.append(buf)


def memory_snapshot(budget: MemoryBudget) -> dict[str, int]:
    """The budget as `s3fsmpu status` and the metrics show it."""
    return {"buffered_bytes": budget.writing, "read_ahead_bytes": budget.reading, "max_memory": budget.total}


TRIM_THRESHOLD = 64 << 20


def return_big_buffers_to_the_os(threshold: int = 4 << 20) -> bool:
    """Fix glibc's mmap threshold at 4 MiB: the 8 MiB read chunks are then mapped alone
    and unmapped when freed, while the 1 MiB pieces of part bodies and read replies
    stay in the heap and are reused.

    Without it glibc raises the threshold to the largest buffer freed (8 MiB
    chunks), so later ones come from per-thread arenas that keep freed memory:
    16 readers made the RSS grow by 228 MiB on a 96 MiB budget, 53 MiB with it.
    At 1 MiB every body piece of an upload was a fresh mapping: the mount's CPU
    for `cp` of 512 MiB on moto rose from 1.36 to 2.24 s (4 MiB: 1.35-1.47).

    One heap for all threads, too (set before any worker thread starts): glibc
    gives each thread an arena of its own, which keeps the 1 MiB pieces that
    thread freed; with 16 worker threads a 512 MiB `cp` peaked 13 MiB higher
    (77 vs 64 MiB), for no CPU saved (1.9 vs 1.85 s on moto). False where
    there is no glibc.

    And the heap's free top is kept up to TRIM_THRESHOLD: a fixed mmap threshold
    also fixes glibc's trim threshold at 128 KiB, so freeing a 1 MiB piece at
    the top gave its pages back and the next one faulted them in again (12% of
    the mount's CPU in a 1 GiB `cp`, in page faults and page clearing).
    Interleaved A/B on radosgw: 8.0 -> 7.2 CPU s for that `cp` (a slow hour),
    same peak RSS; what stays is handed back when the mount rests
    (`trim_while_idle`).
    """
    try:
        libc = _libc()
        ok = libc is not None and bool(libc.mallopt(M_MMAP_THRESHOLD, threshold)) \
            and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(libc.mallopt(M_ARENA_MAX, 1))
    except (OSError, AttributeError):
        ok = False
    log.debug("mmap threshold %d, trim threshold %d, one arena: %s", threshold, TRIM_THRESHOLD,
              "set" if ok else "not set (no glibc)")
    return ok


def leave_out_awscrt() -> None:
    """Keep botocore from importing awscrt, for a mount that computes no CRC.

    botocore imports awscrt whenever it is installed, and S3 with SigV4 uses
    none of it; it costs an idle mount ~6 MiB of RSS (its library's pages and
    what importing it allocates). Call before botocore is imported; a later
    `import awscrt` fails, so only when `MountConfig.needs_awscrt` is False.
    """
    if "awscrt" not in sys.modules:
        sys.modules["awscrt"] = None  # type: ignore[assignment]  # import fails: botocore's HAS_CRT is False


def trim_heap() -> bool:
    """Hand the heap's free pages back to the OS (glibc malloc_trim): what starting up
    parsed and dropped (botocore's data) otherwise stays in the mount's RSS for good."""
    try:
        libc = _libc()
        return bool(libc.malloc_trim(0)) if libc is not None else False
    except (OSError, AttributeError):
        return False


async def trim_while_idle(budget: MemoryBudget, period: float = 5.0, trim: Callable[[], bool] = trim_heap) -> None:
    """Hand the heap's free top back once the mount rests: it is kept while parts and
    chunks come and go (TRIM_THRESHOLD), so an idle mount would otherwise hold what its
    last `cp` freed. Resting is a whole period with nothing taken or given back, even if
    something is still held (a reader left open keeps its chunks)."""
    owed = False
    while True:
        await trio.sleep(period)
        if budget.touched:
            budget.touched, owed = False, True
        elif owed:
            owed = False
            trim()


def _libc() -> ctypes.CDLL | None:
    """glibc, for mallopt and malloc_trim (None where there is no C library to find)."""
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None
