"""A set of disjoint half-open byte ranges: which bytes of a file were written."""

from __future__ import annotations

import bisect


class IntervalSet:
    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def add(self, start: int, end: int) -> None:
        if end <= start:
            return
        # first interval that ends at or after start, last one starting at or before end
        i = bisect.bisect_left(self._ends, start)
        j = bisect.bisect_right(self._starts, end)
        if i < j:
            start = min(start, self._starts[i])
            end = max(end, self._ends[j - 1])
        self._starts[i:j] = [start]
        self._ends[i:j] = [end]

    def covers(self, start: int, end: int) -> bool:
        if end <= start:
            return True
        i = bisect.bisect_right(self._starts, start) - 1
        return i >= 0 and self._ends[i] >= end

    def truncate(self, size: int) -> None:
        i = bisect.bisect_left(self._ends, size)
        del self._starts[i + 1 :], self._ends[i + 1 :]
        if i < len(self._starts):
            if self._starts[i] >= size:
                del self._starts[i], self._ends[i]
            else:
                self._ends[i] = size

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._ends, strict=True))

    def __bool__(self) -> bool:
        return bool(self._starts)
