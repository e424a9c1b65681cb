"""The mount-wide byte budget behind --max-memory.

Every part that is ready to upload holds its size from the budget until its
upload has finished, so a writer that outruns S3 waits in write() instead
of letting the backlog grow: backpressure, shared by all open files.
"""

from __future__ import annotations

import trio


class ByteBudget:
    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self._changed = trio.Event()

    def clamp(self, n: int) -> int:
        """A single part larger than the whole budget takes all of it, not forever."""
        return min(n, self.total)

    async def acquire(self, n: int) -> int:
        n = self.clamp(n)
        while self.used + n > self.total:
            await self._changed.wait()
        self.used += n
        return n

    def release(self, n: int) -> None:
        self.used -= n
        self._changed.set()
        self._changed = trio.Event()
