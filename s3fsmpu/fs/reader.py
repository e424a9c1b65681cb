"""Reads of one open file: ranged GETs with a sequential read-ahead window.

A read that continues where the last one ended doubles the window (up to
`max_window`); a seek resets it, so random reads fetch only what they ask
for. The window is fetched as parallel ranged GETs of `chunk` bytes.
Memory per handle is bounded by one window.
"""

from __future__ import annotations

import trio

from s3fsmpu.store.base import ObjectStore

MIN_WINDOW = 128 << 10


class Reader:
    def __init__(
        self, store: ObjectStore, key: str, size: int, etag: str | None, max_window: int,
        chunk: int = 4 << 20,
    ) -> None:
        self.store = store
        self.key = key
        self.size = size
        self.etag = etag
        self.max_window = max(max_window, MIN_WINDOW)
        self.chunk = chunk
        self._buf = b""
        self._buf_start = 0
        self._next_expected = 0
        self._window = MIN_WINDOW

    async def read(self, offset: int, size: int) -> bytes:
        if offset >= self.size or size <= 0:
            return b""
        size = min(size, self.size - offset)
        buf_end = self._buf_start + len(self._buf)
        sequential = offset == self._next_expected
        self._next_expected = offset + size
        if self._buf_start <= offset and offset + size <= buf_end:
            return self._slice(offset, size)
        if sequential:
            self._window = min(self._window * 2, self.max_window)
        else:
            self._window = MIN_WINDOW
        start = offset
        # keep what is already buffered at the start of the request
        head = b""
        if self._buf_start <= offset < buf_end:
            head = self._slice(offset, buf_end - offset)
            start = buf_end
        end = min(self.size, max(offset + size, start + (self._window if sequential else 0)))
        data = head + await self._fetch(start, end)
        self._buf, self._buf_start = data, offset
        return data[:size]

    def _slice(self, offset: int, size: int) -> bytes:
        i = offset - self._buf_start
        return self._buf[i : i + size]

    async def _fetch(self, start: int, end: int) -> bytes:
        if end - start <= self.chunk:
            return await self.store.get_range(self.key, start, end, self.etag)
        pieces: dict[int, bytes] = {}

        async def one(s: int, e: int) -> None:
            pieces[s] = await self.store.get_range(self.key, s, e, self.etag)

        async with trio.open_nursery() as nursery:
            for s in range(start, end, self.chunk):
                nursery.start_soon(one, s, min(end, s + self.chunk))
        return b"".join(pieces[s] for s in sorted(pieces))
