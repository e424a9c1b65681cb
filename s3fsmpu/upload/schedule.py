"""The part-size schedule: which byte range each part number covers.

Part numbers map to fixed byte ranges so a part can upload as soon as its
range is written, in any order. The first 1,000 parts have the configured
size; each further block of 1,000 doubles it, capped at 5 GiB, so that
8 MiB parts reach about 8 TiB in 10,000 parts and 5 GiB parts reach S3's
ceiling of 10,000 x 5 GiB.

After a publish, writing on continues under `PrefixedSchedule`: the
published bytes up to a part boundary are a few big server-side copy parts
(up to `copy_part` each), then the same fixed parts as before, renumbered
to follow them. Pure functions, no I/O.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property

from s3fsmpu.config import GIB, MAX_PART_SIZE, MAX_PARTS, MIB, MIN_PART_SIZE, UploadConfig

__all__ = ["GIB", "MAX_PART_SIZE", "MAX_PARTS", "MIB", "MIN_PART_SIZE", "Layout", "PartRange", "PartSchedule",
           "PrefixedSchedule", "schedule_for"]

PARTS_PER_TIER = 1_000


@dataclass(frozen=True)
class PartRange:
    number: int
    start: int
    end: int  # exclusive

    @property
    def size(self) -> int:
        return self.end - self.start


class Layout(ABC):
    """Which byte range each part number covers; what follows from that is shared."""

    @property
    @abstractmethod
    def max_size(self) -> int:
        """Largest object the layout can hold; a write beyond it is EFBIG."""

    @abstractmethod
    def part(self, number: int) -> PartRange: ...

    @abstractmethod
    def part_at(self, offset: int) -> PartRange:
        """The part whose range holds byte `offset`."""

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


@dataclass(frozen=True)
class PartSchedule(Layout):
    """Maps offsets to part numbers; `min_part` exists so tests can use tiny parts,
    `copy_part` (the largest server-side copy part) so they can copy in few of them."""

    first_part_size: int
    min_part: int = MIN_PART_SIZE
    max_part: int = MAX_PART_SIZE
    max_parts: int = MAX_PARTS
    per_tier: int = PARTS_PER_TIER
    copy_part: int = MAX_PART_SIZE

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
        number, offset, size = self._tiers[-1]
        return offset + (self.max_parts - number + 1) * size

    def part_at(self, offset: int) -> PartRange:
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

    def after_publish(self, size: int) -> Layout:
        """The layout for writing on after `size` bytes were published.

        The published bytes up to the last part boundary at or below `size`
        become ceil(prefix / copy_part) copy parts; the partial part after
        that boundary is sent again with what follows, as before. The parts
        from the boundary on are this schedule's own, renumbered downwards,
        so the largest object stays `max_size`. Where big copy parts would
        not save requests (a small prefix), the plain schedule is kept."""
        if size >= self.max_size:
            prefix, first_tail = self.max_size, self.max_parts + 1
        else:
            at = self.part_at(size)
            prefix, first_tail = at.start, at.number
        copies = -(-prefix // self.copy_part)
        if copies >= first_tail - 1:
            return self
        return PrefixedSchedule(self, prefix, copies, shift=first_tail - 1 - copies)


@dataclass(frozen=True)
class PrefixedSchedule(Layout):
    """[0, prefix) in `copies` near-equal parts, then `plain`'s parts from `prefix` on.

    `prefix` is a boundary of `plain` and `copies` is below the number of
    plain parts it holds (built by `PartSchedule.after_publish`), so part
    numbers stay within 10,000 and every copy part is larger than the
    smallest plain part: none is below the 5 MiB minimum."""

    plain: PartSchedule
    prefix: int
    copies: int
    shift: int  # plain part number minus ours, for the parts after the prefix

    @property
    def max_size(self) -> int:
        return self.plain.max_size

    def _bound(self, i: int) -> int:
        return self.prefix * i // self.copies

    def part(self, number: int) -> PartRange:
        if 1 <= number <= self.copies:
            return PartRange(number, self._bound(number - 1), self._bound(number))
        if number < 1:
            raise ValueError(f"part number {number} outside 1..{self.plain.max_parts - self.shift}")
        rng = self.plain.part(number + self.shift)
        return PartRange(number, rng.start, rng.end)

    def part_at(self, offset: int) -> PartRange:
        if 0 <= offset < self.prefix:
            n = offset * self.copies // self.prefix + 1
            while self._bound(n) <= offset:
                n += 1
            return self.part(n)
        rng = self.plain.part_at(offset)
        return PartRange(rng.number - self.shift, rng.start, rng.end)


def schedule_for(config: UploadConfig) -> PartSchedule:
    """The layout of a mount's uploads: --part-size, and the floors tests may lower."""
    return PartSchedule(config.part_size, min_part=config.min_part_size, copy_part=config.copy_part_max)
