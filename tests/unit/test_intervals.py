"""IntervalSet against a plain set-of-bytes model."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from s3fsmpu.upload.intervals import IntervalSet

LIMIT = 64

ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, LIMIT), st.integers(0, LIMIT)),
        st.tuples(st.just("truncate"), st.integers(0, LIMIT), st.just(0)),
    ),
    max_size=25,
)


def _apply(ivs: IntervalSet, model: set[int], op: tuple[str, int, int]) -> None:
    name, a, b = op
    if name == "add":
        ivs.add(a, b)
        model.update(range(a, b))
    else:
        ivs.truncate(a)
        model.difference_update({x for x in model if x >= a})


def _check(ivs: IntervalSet, model: set[int]) -> None:
    ranges = ivs.ranges()
    covered = {x for s, e in ranges for x in range(s, e)}
    assert covered == model
    # normalised: sorted, non-empty, disjoint and not even touching
    for s, e in ranges:
        assert s < e
    for (_, e1), (s2, _) in zip(ranges, ranges[1:]):
        assert e1 < s2
    assert bool(ivs) == bool(model)


@settings(derandomize=True, max_examples=400, deadline=None)
@given(ops, st.integers(0, LIMIT), st.integers(0, LIMIT))
def test_matches_byte_set_model(operations: list[tuple[str, int, int]], qs: int, qe: int) -> None:
    ivs, model = IntervalSet(), set()
    for op in operations:
        _apply(ivs, model, op)
        _check(ivs, model)
    assert ivs.covers(qs, qe) == all(x in model for x in range(qs, qe))


@settings(derandomize=True, max_examples=300, deadline=None)
@given(ops)
def test_covers_every_window(operations: list[tuple[str, int, int]]) -> None:
    ivs, model = IntervalSet(), set()
    for op in operations:
        _apply(ivs, model, op)
    for s in range(0, LIMIT + 1, 3):
        for e in range(s, LIMIT + 2, 5):
            assert ivs.covers(s, e) == all(x in model for x in range(s, e)), (s, e, ivs.ranges())


def test_examples() -> None:
    ivs = IntervalSet()
    assert not ivs
    assert ivs.covers(3, 3)  # empty range
    assert not ivs.covers(0, 1)
    ivs.add(10, 20)
    ivs.add(20, 30)  # touching merges
    assert ivs.ranges() == [(10, 30)]
    ivs.add(40, 50)
    ivs.add(0, 5)
    assert ivs.ranges() == [(0, 5), (10, 30), (40, 50)]
    assert ivs.covers(10, 30) and not ivs.covers(9, 30) and not ivs.covers(10, 31)
    ivs.add(4, 45)
    assert ivs.ranges() == [(0, 50)]
    ivs.truncate(25)
    assert ivs.ranges() == [(0, 25)]
    ivs.truncate(0)
    assert ivs.ranges() == []
