"""The part-size schedule: fixed byte ranges per part number, growing so 10,000 parts hold enough."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3fsmpu.upload.schedule import (
    GIB,
    MAX_PART_SIZE,
    MAX_PARTS,
    MIB,
    MIN_PART_SIZE,
    PartRange,
    PartSchedule,
    PrefixedSchedule,
)

TIB = 1 << 40
DEFAULT = PartSchedule(8 * MIB)


def test_part_at_edges_of_first_parts() -> None:
    s = PartSchedule(8 * MIB)
    assert s.part_at(0) == PartRange(1, 0, 8 * MIB)
    assert s.part_at(8 * MIB - 1) == PartRange(1, 0, 8 * MIB)
    assert s.part_at(8 * MIB) == PartRange(2, 8 * MIB, 16 * MIB)
    assert s.part(1) == PartRange(1, 0, 8 * MIB)
    assert s.part(2) == PartRange(2, 8 * MIB, 16 * MIB)


def test_tier_boundary_doubles_part_size() -> None:
    s = PartSchedule(8 * MIB)
    boundary = 1000 * 8 * MIB
    assert s.part_at(boundary - 1) == PartRange(1000, boundary - 8 * MIB, boundary)
    assert s.part_at(boundary) == PartRange(1001, boundary, boundary + 16 * MIB)
    assert s.part(1001).size == 16 * MIB
    assert s.part(2001).size == 32 * MIB


def test_part_numbers_and_offsets_out_of_range() -> None:
    s = PartSchedule(8 * MIB)
    for bad in (0, -1, MAX_PARTS + 1):
        with pytest.raises(ValueError):
            s.part(bad)
    for bad_offset in (-1, s.max_size, s.max_size + 1):
        with pytest.raises(ValueError):
            s.part_at(bad_offset)
    assert s.part_at(s.max_size - 1).number == MAX_PARTS
    assert s.part(MAX_PARTS).end == s.max_size


def test_parts_touching_edges() -> None:
    s = PartSchedule(8 * MIB)
    p = 8 * MIB
    assert list(s.parts_touching(0, 0)) == []
    assert list(s.parts_touching(5, 3)) == []
    assert list(s.parts_touching(0, 1)) == [1]
    assert list(s.parts_touching(0, p)) == [1]
    assert list(s.parts_touching(p - 1, p)) == [1]
    assert list(s.parts_touching(p - 1, p + 1)) == [1, 2]
    assert list(s.parts_touching(p, 2 * p)) == [2]
    assert list(s.parts_touching(0, 3 * p + 1)) == [1, 2, 3, 4]


def test_parts_for_size_small_and_exact() -> None:
    s = PartSchedule(8 * MIB)
    assert s.parts_for_size(0) == []
    assert s.parts_for_size(1) == [PartRange(1, 0, 1)]
    assert s.parts_for_size(8 * MIB) == [PartRange(1, 0, 8 * MIB)]
    assert s.parts_for_size(8 * MIB + 1) == [PartRange(1, 0, 8 * MIB), PartRange(2, 8 * MIB, 8 * MIB + 1)]


def test_just_under_a_thousand_parts() -> None:
    size = 1000 * 8 * MIB - 1
    parts = DEFAULT.parts_for_size(size)
    assert len(parts) == 1000
    assert all(p.size == 8 * MIB for p in parts[:-1])
    assert parts[-1].size == 8 * MIB - 1
    assert parts[-1].end == size


def test_just_over_a_thousand_parts() -> None:
    size = 1000 * 8 * MIB + 1
    parts = DEFAULT.parts_for_size(size)
    assert len(parts) == 1001
    assert all(p.size == 8 * MIB for p in parts[:1000])
    assert parts[-1] == PartRange(1001, 1000 * 8 * MIB, size)
    # contiguous, starting at 0
    assert parts[0].start == 0
    assert all(a.end == b.start for a, b in zip(parts, parts[1:]))


def test_default_schedule_holds_at_least_5_tib() -> None:
    assert DEFAULT.max_size >= 5 * TIB
    # and that is what 10,000 parts really cover
    assert DEFAULT.part(MAX_PARTS).end == DEFAULT.max_size


def test_5_gib_first_part_reaches_s3_ceiling() -> None:
    s = PartSchedule(5 * GIB)
    assert s.max_size == 10_000 * 5 * GIB
    assert s.part(MAX_PARTS) == PartRange(MAX_PARTS, 9_999 * 5 * GIB, 10_000 * 5 * GIB)


def _tier_starts(s: PartSchedule) -> list[int]:
    return [n for n in range(1, MAX_PARTS + 1, 1000)] + [MAX_PARTS]


@settings(derandomize=True, max_examples=60, deadline=None)
@given(st.integers(MIN_PART_SIZE, MAX_PART_SIZE))
def test_no_part_exceeds_5_gib_and_parts_are_contiguous(first: int) -> None:
    s = PartSchedule(first)
    sizes = [s.part(n).size for n in _tier_starts(s)]
    assert max(sizes) <= MAX_PART_SIZE
    assert min(sizes) >= MIN_PART_SIZE
    assert sizes == sorted(sizes)  # never shrinks
    # contiguity across every tier boundary
    for n in range(1000, MAX_PARTS, 1000):
        assert s.part(n).end == s.part(n + 1).start
    assert s.part(1).start == 0
    assert s.part(MAX_PARTS).end == s.max_size


def test_below_min_part_size_is_rejected() -> None:
    with pytest.raises(ValueError):
        PartSchedule(MIN_PART_SIZE - 1)
    with pytest.raises(ValueError):
        PartSchedule(MAX_PART_SIZE + 1)
    PartSchedule(MIN_PART_SIZE)  # the limit itself is fine
    # the test-only knob: smaller parts only where asked for
    assert PartSchedule(64 << 10, min_part=64 << 10).part(2) == PartRange(2, 64 << 10, 128 << 10)
    with pytest.raises(ValueError):
        PartSchedule(64 << 10)


SCHEDULES = [PartSchedule(8 * MIB), PartSchedule(5 * MIB), PartSchedule(5 * GIB),
             PartSchedule(3 * GIB + 7), PartSchedule(1000, min_part=1)]


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.sampled_from(SCHEDULES), st.data())
def test_every_offset_maps_to_exactly_one_part(s: PartSchedule, data: st.DataObject) -> None:
    offset = data.draw(st.one_of(
        st.integers(0, s.max_size - 1),
        # near tier boundaries, where off-by-one errors live
        st.builds(lambda n, d: max(0, min(s.max_size - 1, s.part(n).start + d)),
                  st.sampled_from(_tier_starts(s)), st.integers(-2, 2)),
    ))
    p = s.part_at(offset)
    assert p.start <= offset < p.end
    assert s.part(p.number) == p
    if p.number > 1:
        assert not s.part(p.number - 1).start <= offset < s.part(p.number - 1).end
        assert s.part(p.number - 1).end == p.start
    if p.number < MAX_PARTS:
        assert s.part(p.number + 1).start == p.end
    assert list(s.parts_touching(offset, offset + 1)) == [p.number]
    sized = s.parts_for_size(offset + 1)
    assert len(sized) == p.number
    assert sized[-1] == PartRange(p.number, p.start, offset + 1)


@settings(derandomize=True, max_examples=200, deadline=None)
@given(st.integers(0, 10 + 10 + 20 + 20 + 40 + 40), st.integers(10, 100))
def test_the_layout_after_a_publish_tiles_the_same_object(published: int, copy_part: int) -> None:
    """Copy parts, then the plain parts renumbered: contiguous ranges from 0 to the
    same largest size, numbers 1..N, part_at agreeing with part, no copy part
    larger than `copy_part` or smaller than the first part."""
    plain = PartSchedule(10, min_part=1, max_parts=6, per_tier=2, copy_part=copy_part)
    layout = plain.after_publish(published)
    assert layout.max_size == plain.max_size
    parts = layout.parts_for_size(layout.max_size)
    assert [r.number for r in parts] == list(range(1, len(parts) + 1))
    assert parts[0].start == 0 and parts[-1].end == plain.max_size
    for a, b in zip(parts, parts[1:]):
        assert a.end == b.start
    for r in parts:
        assert layout.part(r.number) == r
        assert layout.part_at(r.start) == r and layout.part_at(r.end - 1) == r
    if isinstance(layout, PrefixedSchedule):
        copies = [r for r in parts if r.end <= layout.prefix]
        assert all(10 <= r.size <= copy_part for r in copies)
        assert len(copies) < len(plain.parts_for_size(layout.prefix))
        assert layout.prefix <= published
        assert parts[len(copies):] == [
            PartRange(r.number - layout.shift, r.start, r.end)
            for r in plain.parts_for_size(plain.max_size) if r.start >= layout.prefix
        ]
    else:
        assert layout is plain
