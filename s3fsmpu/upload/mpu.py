"""The multipart upload of one file as a pure state machine.

All transitions live here; no I/O, no trio. The driver tells it what was
written and what S3 answered; it says which parts are ready to upload,
what Complete must list and which ETag S3 must answer with.

A part is ready early when every byte of its fixed range has been written;
each write bumps the version of the parts it touches, so a part written
again after (or while) it uploads is uploaded again, and a part number is
never sent twice at once. At flush, every part up to the file size that
has no current upload is sent (holes are zeros), then Complete lists
them all in ascending order from this record, never from ListParts.

An update of an existing object (or writing on after a flush) has a base:
bytes [0, base_size) equal the base object wherever they were not written.
A part never written since (version 0) lying within the base is copied
server-side (UploadPartCopy) instead of sent; a part partly written is
completed from the base with a ranged GET of just its missing bytes.

After a publish the layout changes (`schedule.after_publish`): the
published prefix is a few big copy parts (up to 5 GiB each), and the fixed
parts follow, renumbered. A later change inside that prefix (a write or a
truncate) falls back to the plain layout for the rest of this upload: the
prefix is then copied part by part as before, and parts already sent for
what follows are sent again under their plain numbers. The driver waits
until no part is in flight before such a change (`breaks_prefix`), so the
same upload carries on and no part number is ever sent twice at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from s3fsmpu.checksums import combine
from s3fsmpu.errors import FileTooLarge
from s3fsmpu.store.base import PartRef
from s3fsmpu.store.memory import multipart_etag
from s3fsmpu.upload.intervals import IntervalSet
from s3fsmpu.upload.schedule import Layout, PartRange, PartSchedule, PrefixedSchedule


@dataclass(frozen=True)
class UploadedPart:
    version: int
    length: int
    etag: str
    md5_hex: str | None  # None: not computed (the crc integrity modes)
    checksum: str | None


@dataclass
class PartState:
    version: int = 0
    uploaded: UploadedPart | None = None
    inflight: bool = False


class MultipartPlan:
    def __init__(self, schedule: PartSchedule, size: int = 0) -> None:
        self.schedule = schedule
        self.layout: Layout = schedule  # the plain schedule, or big copy parts then it
        self.size = size
        self.written = IntervalSet()
        self.parts: dict[int, PartState] = {}
        self.upload_id: str | None = None
        self.dirty = False
        self.base_size = 0  # bytes [0, base_size) are the base object's unless written

    # ---- what the application did -----------------------------------------
    def write(self, offset: int, length: int) -> list[int]:
        """Record a write; return the part numbers that just became ready to upload."""
        end = offset + length
        if end > self.schedule.max_size:
            raise FileTooLarge(f"write beyond the largest object size ({self.schedule.max_size} bytes)")
        if length == 0:
            return []
        if self.breaks_prefix(offset):
            self._fall_back()
        touched = self.layout.parts_touching(offset, end)
        was_full = {n: self._full(n) for n in touched}
        self.written.add(offset, end)
        self.size = max(self.size, end)
        self.dirty = True
        ready = []
        for n in touched:
            self._state(n).version += 1
            # upload early when this write completed the part; a part written
            # again later is sent at flush, not after every small write
            if not was_full[n] and self._ready_early(n):
                ready.append(n)
        return ready

    def load(self, offset: int, length: int) -> None:
        """Existing bytes of the object (opened to change it): known, not new."""
        self.written.add(offset, offset + length)
        self.size = max(self.size, offset + length)

    def truncate(self, size: int) -> None:
        if size > self.schedule.max_size:
            raise FileTooLarge(f"size beyond the largest object size ({self.schedule.max_size} bytes)")
        lo, hi = sorted((size, self.size))
        if self.breaks_prefix(lo):
            self._fall_back()
        # base bytes cut off are gone for good: growing again gives zeros, not them
        self.base_size = min(self.base_size, size)
        # the bytes between are now defined: zeros when growing, gone when shrinking
        self.written.truncate(lo)
        if size > lo:
            self.written.add(lo, size)
        for n in self.layout.parts_touching(lo, max(hi, lo + 1)):
            self._state(n).version += 1
        self.size = size
        self.dirty = True

    # ---- what the driver does ---------------------------------------------
    def begin_part(self, number: int) -> tuple[PartRange, int]:
        """Mark `number` in flight; return the byte range to send and its version."""
        st = self._state(number)
        assert not st.inflight, f"part {number} is already in flight"
        st.inflight = True
        rng = self.layout.part(number)
        if rng.end > self.size:
            rng = PartRange(number, rng.start, self.size)
        return rng, st.version

    def part_uploaded(self, number: int, version: int, length: int, etag: str, md5_hex: str | None,
                      checksum: str | None) -> None:
        st = self._state(number)
        st.inflight = False
        st.uploaded = UploadedPart(version, length, etag, md5_hex, checksum)

    def part_abandoned(self, number: int) -> None:
        self._state(number).inflight = False

    def ready_parts(self) -> list[int]:
        """Parts fully written whose current bytes were not sent yet."""
        return [n for n in sorted(self.parts) if self._ready_early(n)]

    def parts_to_send_at_flush(self) -> list[int]:
        return [
            r.number
            for r in self.layout.parts_for_size(self.size)
            if not self._state(r.number).inflight and not self._current(r)
        ]

    def parts_done(self) -> int:
        return sum(1 for n in self.parts if self._current(self._final_range(n)))

    def parts_so_far(self) -> int:
        return len(self.layout.parts_for_size(self.size))

    def inflight(self) -> list[int]:
        return [n for n, st in self.parts.items() if st.inflight]

    def single_put(self) -> bool:
        """A file smaller than its first part is one PutObject (even after a truncate)."""
        return self.size < self.schedule.part(1).size

    def complete_refs(self) -> list[PartRef]:
        refs = []
        for r in self.layout.parts_for_size(self.size):
            up = self._state(r.number).uploaded
            assert up is not None and self._current(r), f"part {r.number} is not uploaded"
            refs.append(PartRef(r.number, up.etag, up.checksum))
        return refs

    def expected_etag(self) -> str:
        md5s = []
        for r in self.layout.parts_for_size(self.size):
            up = self._state(r.number).uploaded
            assert up is not None and up.md5_hex is not None
            md5s.append(up.md5_hex)
        return multipart_etag(md5s)

    def whole_checksum(self, algorithm: str) -> str | None:
        """The object's checksum, combined from its parts' (None if a part has none: a copied
        part from a server that did not say it)."""
        parts = []
        for r in self.layout.parts_for_size(self.size):
            up = self._state(r.number).uploaded
            assert up is not None
            if up.checksum is None:
                return None
            parts.append((up.checksum, up.length))
        return combine(algorithm, parts)

    def set_base(self, size: int) -> None:
        """The object is now `size` bytes of a base object; nothing is written since."""
        self.base_size = size
        self.size = size
        self.parts.clear()
        self.upload_id = None
        self.dirty = False
        self.layout = self.schedule

    def copyable(self, number: int) -> bool:
        """Never written since the base, and all of its range is base bytes."""
        st = self._state(number)
        rng = self._final_range(number)
        return st.version == 0 and rng.end <= self.base_size and rng.size > 0

    def settled_through(self, number: int) -> int:
        """The last part n >= `number` such that parts number+1..n are uploaded or left
        to a server-side copy: their bytes are needed locally no more."""
        last = self.layout.part_at(self.size - 1).number if self.size else 0
        while number < last and ((st := self.parts.get(number + 1)) is not None and st.uploaded is not None
                                 or self.copyable(number + 1)):
            number += 1
        return number

    def missing_base(self, start: int, end: int) -> list[tuple[int, int]]:
        """Sub-ranges of [start, end) that are base bytes not present locally."""
        end = min(end, self.base_size)
        if end <= start:
            return []
        gaps, pos = [], start
        for s, e in self.written.ranges():
            if e <= pos:
                continue
            if s >= end:
                break
            if s > pos:
                gaps.append((pos, s))
            pos = max(pos, e)
        if pos < end:
            gaps.append((pos, end))
        return gaps

    def _final_range(self, number: int) -> PartRange:
        rng = self.layout.part(number)
        return PartRange(number, rng.start, min(rng.end, self.size)) if rng.end > self.size else rng

    def forget_upload(self) -> None:
        """The upload is finished or lost: its parts cannot be listed in another one."""
        self.upload_id = None
        for st in self.parts.values():
            st.uploaded = None

    def published(self) -> None:
        """The object in S3 is now exactly what was written: it is the new base. Bytes
        past the old base that were never written (holes) are zeros known here, not
        bytes to fetch from the new object, which an unlink may delete while the file
        stays open."""
        if self.size > self.base_size:
            self.written.add(self.base_size, self.size)
        self.set_base(self.size)
        self.layout = self.schedule.after_publish(self.size)

    def breaks_prefix(self, offset: int) -> bool:
        """A change from `offset` on would fall inside the big copy parts: the layout
        goes back to plain parts, which the driver allows only with no part in flight."""
        return isinstance(self.layout, PrefixedSchedule) and offset < self.layout.prefix

    def _fall_back(self) -> None:
        """Back to the plain layout within the same upload. Parts after the prefix map
        one to one to plain parts; they keep their versions (what was written since the
        publish) but not their uploads, which were numbered differently."""
        layout = self.layout
        assert isinstance(layout, PrefixedSchedule)
        assert not self.inflight(), "the layout changes only with no part in flight"
        self.parts = {
            n + layout.shift: PartState(st.version)
            for n, st in self.parts.items()
            if n > layout.copies and st.version
        }
        self.layout = self.schedule

    # ---- helpers ----------------------------------------------------------
    def _state(self, number: int) -> PartState:
        st = self.parts.get(number)
        if st is None:
            st = self.parts[number] = PartState()
        return st

    def _current(self, rng: PartRange) -> bool:
        st = self._state(rng.number)
        up = st.uploaded
        return up is not None and up.version == st.version and up.length == rng.size

    def _full(self, number: int) -> bool:
        rng = self.layout.part(number)
        return self.written.covers(rng.start, rng.end)

    def _ready_early(self, number: int) -> bool:
        st = self._state(number)
        rng = self.layout.part(number)
        return (
            not st.inflight
            and self.written.covers(rng.start, rng.end)
            and not self._current(rng)
        )
