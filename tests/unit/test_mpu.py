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
    # a part from a finished upload cannot be listed in the next one
    assert p.parts_to_send_at_flush() == [1, 2]


# ---- a model-based check --------------------------------------------------

events = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 450), st.integers(0, 120)),
        st.tuples(st.just("truncate"), st.integers(0, 500), st.just(0)),
        st.tuples(st.just("start"), st.integers(1, 6), st.just(0)),
        st.tuples(st.just("finish"), st.integers(0, 5), st.just(0)),
    ),
    max_size=40,
)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(events)
def test_flush_always_converges_to_current_bytes(evts: list[tuple[str, int, int]]) -> None:
    """Whatever happened, sending what flush asks for makes every part current.

    The model keeps the bytes' generation per byte; a part's upload is current
    when it saw the newest generation of each of its bytes.
    """
    p = plan()
    gen = [0] * 600  # generation of each byte
    clock = 0
    inflight: dict[int, tuple[int, int, list[int]]] = {}
    uploaded: dict[int, list[int]] = {}
    for kind, a, b in evts:
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
        elif inflight:
            n = sorted(inflight)[a % len(inflight)]
            version, length, seen = inflight.pop(n)
            p.part_uploaded(n, version, length, f"e{n}", f"e{n}", None)
            uploaded[n] = seen
    for n, (version, length, seen) in list(inflight.items()):
        p.part_uploaded(n, version, length, f"e{n}", f"e{n}", None)
        uploaded[n] = seen
    for n in p.parts_to_send_at_flush():
        rng, version = p.begin_part(n)
        p.part_uploaded(n, version, rng.size, f"e{n}", f"e{n}", None)
        uploaded[n] = gen[rng.start:rng.end]
    refs = p.complete_refs()
    want = [r.number for r in p.schedule.parts_for_size(p.size)]
    assert [r.number for r in refs] == want
    for r in p.schedule.parts_for_size(p.size):
        assert uploaded[r.number] == gen[r.start:r.end], f"part {r.number} is stale"
