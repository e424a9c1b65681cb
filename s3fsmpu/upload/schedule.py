"""The part-size schedule: which byte range each part number covers.

Part numbers map to fixed byte ranges so a part can upload as soon as its
range is written, in any order. The first 1,000 parts have the configured
size; each further block of 1,000 doubles it, capped at 5 GiB, so that
8 MiB parts reach about 8 TiB in 10,000 parts and 5 GiB parts reach S3's
ceiling of 10,000 x 5 GiB. Pure functions, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from s3fsmpu.config import GIB, MAX_PART_SIZE, MAX_PARTS, MIB, MIN_PART_SIZE, UploadConfig

__all__ = ["GIB", "MAX_PART_SIZE", "MAX_PARTS", "MIB", "MIN_PART_SIZE", "PartRange", "PartSchedule",
           "schedule_for"]

PARTS_PER_TIER = 1_000


@dataclass(frozen=True)
class PartRange:
    number: int
    start: int
    end: int  # exclusive

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class PartSchedule:
    """Maps offsets to part numbers; `min_part` exists so tests can use tiny parts."""

    first_part_size: int
    min_part: int = MIN_PART_SIZE
    max_part: int = MAX_PART_SIZE
    max_parts: int = MAX_PARTS
    per_tier: int = PARTS_PER_TIER

    def __post_init__(self) -> None:
        if self.first_part_size < self.min_part:
            raise ValueError(f"part size must be at least {self.min_part} bytes")
        if self.first_part_size > self.max_part:
            raise ValueError(f"part size must be at most {self.max_part} bytes")

    @cached_property
    def _tiers(self) -> list[tuple[int, int, int]]:
        """(first part number, first byte offset, part size) per tier."""
        tiers = []
        number, offset, size = 1, 0, self.first_part_size
        while number <= self.max_parts:
            tiers.append((number, offset, size))
            count = min(self.per_tier, self.max_parts - number + 1)
            number += count
            offset += count * size
            size = min(size * 2, self.max_part)
        return tiers

    @cached_property
    def max_size(self) -> int:
        """Largest object the schedule can hold; a write beyond it is EFBIG."""
        number, offset, size = self._tiers[-1]
        return offset + (self.max_parts - number + 1) * size

    def part_at(self, offset: int) -> PartRange:
        """The part whose range holds byte `offset`."""
        if offset < 0 or offset >= self.max_size:
            raise ValueError(f"offset {offset} outside the schedule (max {self.max_size})")
        for number, start, size in reversed(self._tiers):
            if offset >= start:
                index = (offset - start) // size
                part_start = start + index * size
                return PartRange(number + index, part_start, part_start + size)
        raise AssertionError("unreachable")

    def part(self, number: int) -> PartRange:
        if not 1 <= number <= self.max_parts:
            raise ValueError(f"part number {number} outside 1..{self.max_parts}")
        for first, start, size in reversed(self._tiers):
            if number >= first:
                part_start = start + (number - first) * size
                return PartRange(number, part_start, part_start + size)
        raise AssertionError("unreachable")

    def parts_for_size(self, size: int) -> list[PartRange]:
        """The parts of an object of `size` bytes; the last one is cut at `size`."""
        if size <= 0:
            return []
        last = self.part_at(size - 1)
        parts = [self.part(n) for n in range(1, last.number)]
        parts.append(PartRange(last.number, last.start, size))
        return parts

    def parts_touching(self, start: int, end: int) -> range:
        """Part numbers whose ranges overlap [start, end)."""
        if end <= start:
            return range(0)
        return range(self.part_at(start).number, self.part_at(end - 1).number + 1)


def schedule_for(config: UploadConfig) -> PartSchedule:
    """The layout of a mount's uploads: --part-size, and the floor tests may lower."""
    return PartSchedule(config.part_size, min_part=config.min_part_size)
