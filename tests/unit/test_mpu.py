"""MultipartPlan, the pure state machine of one file's multipart upload."""

from __future__ import annotations

import errno
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3fsmpu.errors import FileTooLarge, to_errno
from s3fsmpu.store.memory import multipart_etag
from s3fsmpu.upload.mpu import MultipartPlan
from s3fsmpu.upload.schedule import MIB, PartRange, PartSchedule

P = 100  # part size of the toy schedule


def plan() -> MultipartPlan:
    return MultipartPlan(PartSchedule(P, min_part=1))


def upload(p: MultipartPlan, number: int, md5: str | None = None) -> PartRange:
    """Play the driver: send part `number` and record S3's answer."""
    rng, version = p.begin_part(number)
    md5 = md5 or hashlib.md5(f"{number}:{version}".encode()).hexdigest()
    p.part_uploaded(number, version, rng.size, md5, md5, None)
    return rng


def test_part_ready_only_when_fully_written() -> None:
    p = plan()
    assert p.write(0, 50) == []
    assert p.write(60, 40) == []  # a gap at 50..60
    assert p.ready_parts() == []
    assert p.write(50, 10) == [1]
    assert p.ready_parts() == [1]


def test_write_spanning_parts() -> None:
    p = plan()
    assert p.write(0, 250) == [1, 2]  # part 3 only half written
    assert p.write(250, 50) == [3]
    assert p.size == 300


def test_out_of_order_writes() -> None:
    p = plan()
    assert p.write(200, 100) == [3]
    assert p.write(100, 100) == [2]
    assert p.write(0, 99) == []
    assert p.write(99, 1) == [1]
    assert p.ready_parts() == [1, 2, 3]
    assert p.size == 300


def test_uploaded_part_is_not_offered_again_until_rewritten() -> None:
    p = plan()
    assert p.write(0, 100) == [1]
    upload(p, 1)
    assert p.ready_parts() == []
    # rewritten after upload: no longer current, so it is sent again -- at flush,
    # not after every small write into an already complete part
    assert p.write(10, 5) == []
    assert p.ready_parts() == [1]
    assert p.parts_to_send_at_flush() == [1]
    upload(p, 1)
    assert p.ready_parts() == []
    assert p.parts_to_send_at_flush() == []


def test_part_in_flight_is_never_offered_twice() -> None:
    p = plan()
    assert p.write(0, 100) == [1]
    rng, version = p.begin_part(1)
    assert rng == PartRange(1, 0, 100)
    assert p.write(0, 100) == []  # rewritten while in flight: not offered again yet
    assert p.ready_parts() == []
    assert p.parts_to_send_at_flush() == []
    assert p.inflight() == [1]
    with pytest.raises(AssertionError):
        p.begin_part(1)
    p.part_uploaded(1, version, 100, "e1", "e1", None)
    # the upload that finished carried the old bytes: the part must go again
    assert p.inflight() == []
    assert p.ready_parts() == [1]
    assert p.parts_to_send_at_flush() == [1]


def test_abandoned_part_is_offered_again() -> None:
    p = plan()
    p.write(0, 100)
    p.begin_part(1)
    p.part_abandoned(1)
    assert p.ready_parts() == [1]


def test_single_put_for_small_files() -> None:
    p = plan()
    assert p.single_put()  # empty
    p.write(0, P - 1)
    assert p.single_put()
    p.write(P - 1, 1)
    assert not p.single_put()  # exactly one part: multipart
    q = plan()
    q.write(0, P)
    q.upload_id = "u"
    q.truncate(10)
    assert q.single_put()  # shrunk below one part after an upload started: one PUT


def test_flush_sends_partial_last_part_and_holes() -> None:
    p = plan()
    p.write(250, 20)  # parts 1, 2 are holes; part 3 partial
    assert p.size == 270
    assert p.parts_to_send_at_flush() == [1, 2, 3]
    rng, _ = p.begin_part(3)
    assert rng == PartRange(3, 200, 270)  # cut at the file size


def test_complete_refs_ascending_and_expected_etag() -> None:
    p = plan()
    p.write(0, 350)
    md5s = {n: hashlib.md5(bytes([n]) * 7).hexdigest() for n in range(1, 5)}
    for n in (3, 1, 4, 2):  # finish in any order
        upload(p, n, md5s[n])
    assert p.parts_to_send_at_flush() == []
    refs = p.complete_refs()
    assert [r.number for r in refs] == [1, 2, 3, 4]
    assert [r.etag for r in refs] == [md5s[n] for n in (1, 2, 3, 4)]
    assert p.expected_etag() == multipart_etag([md5s[n] for n in (1, 2, 3, 4)])
    assert p.expected_etag().endswith("-4")


def test_complete_refs_refuses_stale_parts() -> None:
    p = plan()
    p.write(0, 200)
    upload(p, 1)
    upload(p, 2)
    p.write(150, 1)
    assert p.parts_to_send_at_flush() == [2]
    with pytest.raises(AssertionError):
        p.complete_refs()


def test_efbig_beyond_max_size() -> None:
    s = PartSchedule(8 * MIB)
    p = MultipartPlan(s)
    p.write(s.max_size - 1, 1)  # the last byte is fine
    assert p.size == s.max_size
    with pytest.raises(FileTooLarge) as info:
        p.write(s.max_size, 1)
    assert to_errno(info.value) == errno.EFBIG
    with pytest.raises(FileTooLarge):
        p.write(s.max_size - 1, 2)
    with pytest.raises(FileTooLarge):
        p.truncate(s.max_size + 1)
    assert p.size == s.max_size  # a refused write changes nothing


def test_efbig_small_schedule() -> None:
    s = PartSchedule(10, min_part=1, max_parts=4, per_tier=2)
    assert s.max_size == 10 + 10 + 20 + 20
    p = MultipartPlan(s)
    assert p.write(0, 60) == [1, 2, 3, 4]
    with pytest.raises(FileTooLarge):
        p.write(60, 1)


def test_truncate_shrink_makes_new_last_part_stale() -> None:
    p = plan()
    p.write(0, 300)
    for n in (1, 2, 3):
        upload(p, n)
    p.truncate(150)
    assert p.size == 150
    assert p.dirty
    assert p.parts_to_send_at_flush() == [2]  # part 1 unchanged, part 2 now 50 bytes
    rng = upload(p, 2)
    assert rng == PartRange(2, 100, 150)
    assert [r.number for r in p.complete_refs()] == [1, 2]


def test_truncate_grow_defines_zeros() -> None:
    p = plan()
    p.write(0, 50)
    p.truncate(250)
    assert p.size == 250
    assert p.written.covers(0, 250)
    assert p.parts_to_send_at_flush() == [1, 2, 3]


def test_truncate_to_zero_then_rewrite() -> None:
    p = plan()
    p.write(0, 200)
    upload(p, 1)
    upload(p, 2)
    p.truncate(0)
    assert p.size == 0
    assert p.parts_to_send_at_flush() == []
    assert p.write(0, 100) == [1]  # part 1 must go again: its bytes are new


def test_holes_are_not_base_bytes_once_published() -> None:
    """A hole is zeros known here; what an update did not write is the base's."""
    p = plan()
    p.write(0, 10)
    p.write(50, 10)  # a hole at 10..50
    p.published()
    assert p.missing_base(0, 60) == []
    p.write(150, 10)  # a hole at 60..150, past the new base
    p.published()
    assert p.missing_base(0, 160) == []
    u = plan()
    u.set_base(100)  # an update of a 100-byte object
    u.write(150, 10)
    u.published()
    assert u.missing_base(0, 160) == [(0, 100)]


def test_published_and_forget_upload() -> None:
    p = plan()
    p.write(0, 200)
    p.upload_id = "u1"
    upload(p, 1)
    upload(p, 2)
    p.published()
    assert p.upload_id is None and not p.dirty
    # a part from a finished upload cannot be listed in the next one: the
    # published bytes are copied, as one part now that they are the base
    assert p.parts_to_send_at_flush() == [1]
    assert p.copyable(1) and p.begin_part(1)[0] == PartRange(1, 0, 200)


# ---- writing on after a flush ---------------------------------------------

GIB = 1 << 30


def send_all_at_flush(p: MultipartPlan) -> dict[int, str]:
    """Play the driver's flush: copy what is copyable, upload the rest; the MD5s by part."""
    md5s = {}
    for n in p.parts_to_send_at_flush():
        copy = p.copyable(n)
        rng = upload(p, n)
        md5s[n] = p.parts[n].uploaded.md5_hex  # type: ignore[union-attr]
        if copy:
            md5s[n] = "copy:" + md5s[n]
    return md5s


def assert_legal(p: MultipartPlan, min_part: int = 5 * MIB) -> None:
    """S3's rules for Complete: numbers 1..N, ranges tiling the object, sizes within limits."""
    refs = p.complete_refs()
    assert [r.number for r in refs] == list(range(1, len(refs) + 1))
    ranges = p.layout.parts_for_size(p.size)
    assert ranges[0].start == 0 and ranges[-1].end == p.size
    assert all(a.end == b.start for a, b in zip(ranges, ranges[1:]))
    assert all(min_part <= r.size <= 5 * GIB for r in ranges[:-1])
    assert 0 < ranges[-1].size <= 5 * GIB


def test_writing_on_after_a_flush_copies_the_prefix_in_few_big_parts() -> None:
    """10 GiB published, 100 MiB appended: 2 copy parts of 5 GiB, then 16 MiB parts."""
    p = MultipartPlan(PartSchedule(8 * MIB))
    p.write(0, 10 * GIB)
    p.published()
    ready = p.write(10 * GIB, 100 * MIB)
    assert ready == [3, 4, 5, 6, 7, 8]  # full 16 MiB parts upload early, numbered after the copies
    for n in ready:
        upload(p, n)
    sent = send_all_at_flush(p)
    assert sorted(n for n, m in sent.items() if m.startswith("copy:")) == [1, 2]
    assert sorted(sent) == [1, 2, 9]  # the last, partial part goes at flush
    refs = p.complete_refs()
    assert len(refs) == 9
    assert [p.layout.part(n).size for n in (1, 2)] == [5 * GIB, 5 * GIB]
    assert_legal(p)
    md5s = [p.parts[r.number].uploaded.md5_hex for r in refs]  # type: ignore[union-attr]
    assert [r.etag for r in refs] == md5s
    assert p.expected_etag() == multipart_etag(md5s)
    assert p.expected_etag().endswith("-9")


def test_the_partial_last_part_of_the_published_prefix_is_sent_again() -> None:
    """Published 10 GiB + 3 MiB: copies end at the 10 GiB part boundary, and the 3 MiB
    after it (local bytes, no GET) go with the appended bytes in one 16 MiB part."""
    p = MultipartPlan(PartSchedule(8 * MIB))
    p.write(0, 10 * GIB + 3 * MIB)
    p.published()
    assert p.layout.parts_for_size(p.size)[-1] == PartRange(3, 10 * GIB, 10 * GIB + 3 * MIB)
    assert p.missing_base(10 * GIB, 10 * GIB + 16 * MIB) == []
    assert p.write(10 * GIB + 3 * MIB, 13 * MIB) == [3]
    assert not p.copyable(3)
    assert [p.copyable(n) for n in (1, 2)] == [True, True]
    send_all_at_flush(p)
    assert len(p.complete_refs()) == 3
    assert_legal(p)


def test_a_small_published_prefix_keeps_the_plain_layout() -> None:
    """Where big copy parts save nothing (one part before the boundary) nothing changes."""
    s = PartSchedule(8 * MIB)
    p = MultipartPlan(s)
    p.write(0, 12 * MIB)
    p.published()
    assert p.layout is s


@pytest.mark.parametrize("first", [5 * MIB, 8 * MIB, 5 * GIB])
@pytest.mark.parametrize("published", [8 * MIB * 3, 10 * GIB + 1, 3 << 40, -1])
def test_after_a_flush_the_file_can_still_grow_to_the_largest_size(first: int, published: int) -> None:
    s = PartSchedule(first)
    published = s.max_size - 1 if published < 0 else min(published, s.max_size - 1)
    layout = s.after_publish(published)
    assert layout.max_size == s.max_size
    last = layout.part_at(s.max_size - 1)
    assert last.number <= 10_000 and last.end == s.max_size
    for r in (layout.part(1), layout.part_at(published), last):
        assert 5 * MIB <= r.size <= 5 * GIB
    p = MultipartPlan(s)
    p.write(0, published)
    p.published()
    p.write(s.max_size - 1, 1)  # the last byte is still fine
    with pytest.raises(FileTooLarge):
        p.write(s.max_size, 1)


def test_a_write_into_the_copied_prefix_falls_back_to_the_plain_layout() -> None:
    """Documented fallback: the rest of this upload uses plain parts; what was sent
    for the appended bytes under the big-copy numbering is sent again."""
    s = PartSchedule(P, min_part=1, copy_part=300)
    p = MultipartPlan(s)
    p.write(0, 600)
    p.published()
    assert p.layout.parts_for_size(600)[:2] == [PartRange(1, 0, 300), PartRange(2, 300, 600)]
    assert p.write(600, 100) == [3]  # plain part 7, numbered 3 after the two copies
    rng = upload(p, 3)
    assert rng == PartRange(3, 600, 700)
    assert p.breaks_prefix(599) and not p.breaks_prefix(600)
    with pytest.raises(AssertionError):  # the driver must let parts in flight land first
        q = MultipartPlan(s)
        q.write(0, 600)
        q.published()
        q.write(600, 100)
        q.begin_part(3)
        q.write(10, 1)
    assert p.write(150, 10) == []
    assert p.layout is s
    # plain parts: 2 changed, 7 appended (not current: it went up as number 3)
    send = p.parts_to_send_at_flush()
    assert send == [1, 2, 3, 4, 5, 6, 7]
    assert [n for n in send if p.copyable(n)] == [1, 3, 4, 5, 6]
    send_all_at_flush(p)
    assert_legal(p, min_part=P)


def test_a_truncate_into_the_copied_prefix_falls_back() -> None:
    p = MultipartPlan(PartSchedule(P, min_part=1, copy_part=300))
    p.write(0, 600)
    p.published()
    p.truncate(650)  # past the prefix: no change of layout
    assert p.breaks_prefix(0)
    p.truncate(420)
    assert not p.breaks_prefix(0)
    assert [n for n in p.parts_to_send_at_flush() if p.copyable(n)] == [1, 2, 3, 4]
    send_all_at_flush(p)
    assert_legal(p, min_part=P)


# ---- a model-based check --------------------------------------------------

events = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 450), st.integers(0, 120)),
        st.tuples(st.just("truncate"), st.integers(0, 500), st.just(0)),
        st.tuples(st.just("start"), st.integers(1, 6), st.just(0)),
        st.tuples(st.just("finish"), st.integers(0, 5), st.just(0)),
        st.tuples(st.just("publish"), st.just(0), st.just(0)),
    ),
    max_size=40,
)


@settings(derandomize=True, max_examples=400, deadline=None)
@given(events)
def test_flush_always_converges_to_current_bytes(evts: list[tuple[str, int, int]]) -> None:
    """Whatever happened, sending what flush asks for makes every part current.

    The model keeps the bytes' generation per byte; a part's upload is current
    when it saw the newest generation of each of its bytes, and a copy sees
    them as they were at the last publish. Publishes switch to big copy
    parts (at most 200 bytes here) and changes inside them fall back.
    """
    p = MultipartPlan(PartSchedule(P, min_part=1, copy_part=200))
    gen = [0] * 600  # generation of each byte
    base: list[int] = []  # generations as published
    clock = 0
    inflight: dict[int, tuple[int, int, list[int]]] = {}
    uploaded: dict[int, list[int]] = {}

    def land(n: int) -> None:
        version, length, seen = inflight.pop(n)
        p.part_uploaded(n, version, length, f"e{n}", f"e{n}", None)
        uploaded[n] = seen

    def flush() -> None:
        for n in list(inflight):
            land(n)
        for n in p.parts_to_send_at_flush():
            copy = p.copyable(n)
            rng, version = p.begin_part(n)
            p.part_uploaded(n, version, rng.size, f"e{n}", f"e{n}", None)
            uploaded[n] = (base if copy else gen)[rng.start:rng.end]
        refs = p.complete_refs()
        layout = p.layout.parts_for_size(p.size)
        assert [r.number for r in refs] == [r.number for r in layout] == list(range(1, len(refs) + 1))
        assert all(r.size >= P for r in layout[:-1])
        for r in layout:
            assert uploaded[r.number] == gen[r.start:r.end], f"part {r.number} is stale"

    for kind, a, b in evts:
        if kind in ("write", "truncate") and p.breaks_prefix(a if kind == "write" else min(a, p.size)):
            for n in list(inflight):  # the driver's _before_change
                land(n)
        if kind == "write":
            clock += 1
            ready = p.write(a, b)
            for i in range(a, a + b):
                gen[i] = clock
            for n in ready:
                assert n not in inflight
        elif kind == "truncate":
            clock += 1
            lo, hi = sorted((a, p.size))
            p.truncate(a)
            for i in range(lo, max(hi, a)):
                gen[i] = clock
        elif kind == "start":
            if a in p.ready_parts():
                rng, version = p.begin_part(a)
                inflight[a] = (version, rng.size, gen[rng.start:rng.end])
        elif kind == "publish":
            if p.dirty and not p.single_put():
                flush()
                p.published()
                base, uploaded = gen[: p.size], {}
        elif inflight:
            land(sorted(inflight)[a % len(inflight)])
    if not p.single_put():
        flush()
