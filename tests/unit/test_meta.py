"""Attributes in user metadata: s3fs-fuse and rclone compatible, nanosecond mtimes."""

from __future__ import annotations

import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3fsmpu.meta import NS, decode, encode, format_mtime, parse_mtime

FILE_DEFAULT = stat.S_IFREG | 0o644
LM = 1_600_000_000 * NS  # Last-Modified fallback


def _decode(meta: dict[str, str] | None, default_mode: int = FILE_DEFAULT):  # type: ignore[no-untyped-def]
    return decode(meta, default_mode=default_mode, uid=1000, gid=1001, last_modified_ns=LM)


def test_round_trip_with_nanoseconds() -> None:
    mode = stat.S_IFREG | 0o640
    mtime = 1_700_000_000_123_456_789
    meta = encode(mode, 42, 43, mtime)
    assert meta == {"mode": str(mode), "uid": "42", "gid": "43", "mtime": "1700000000.123456789"}
    a = _decode(meta)
    assert (a.mode, a.uid, a.gid, a.mtime_ns) == (mode, 42, 43, mtime)


def test_whole_second_mtime_written_like_s3fs() -> None:
    assert encode(FILE_DEFAULT, 0, 0, 1_700_000_000 * NS)["mtime"] == "1700000000"
    assert format_mtime(5) == "0.000000005"


def test_no_mtime_means_no_mtime_key() -> None:
    assert "mtime" not in encode(FILE_DEFAULT, 0, 0, None)


def test_s3fs_integer_mtime() -> None:
    # what s3fs-fuse writes: decimal mode with file-type bits, integer seconds
    a = _decode({"mode": "33188", "uid": "0", "gid": "0", "mtime": "1700000000"})
    assert a.mode == stat.S_IFREG | 0o644
    assert a.mtime_ns == 1_700_000_000 * NS
    assert (a.uid, a.gid) == (0, 0)


def test_rclone_float_mtime() -> None:
    a = _decode({"mtime": "1700000000.5"})
    assert a.mtime_ns == 1_700_000_000 * NS + NS // 2
    a = _decode({"mtime": "1700000000.123456789"})
    assert a.mtime_ns == 1_700_000_000_123_456_789


def test_missing_metadata_gives_defaults() -> None:
    for meta in (None, {}):
        a = _decode(meta)
        assert (a.mode, a.uid, a.gid, a.mtime_ns) == (FILE_DEFAULT, 1000, 1001, LM)
    d = _decode(None, default_mode=stat.S_IFDIR | 0o755)
    assert d.mode == stat.S_IFDIR | 0o755


def test_mode_without_type_bits_takes_default_type() -> None:
    a = _decode({"mode": str(0o600)})
    assert a.mode == stat.S_IFREG | 0o600
    d = _decode({"mode": str(0o700)}, default_mode=stat.S_IFDIR | 0o755)
    assert d.mode == stat.S_IFDIR | 0o700


def test_symlink_mode_survives() -> None:
    a = _decode({"mode": str(stat.S_IFLNK | 0o777)})
    assert stat.S_ISLNK(a.mode)


@pytest.mark.parametrize("bad", ["", "abc", "nan", "inf", "-inf", "1.2.3"])
def test_unparsable_mtime_falls_back_to_last_modified(bad: str) -> None:
    assert parse_mtime(bad) is None
    assert _decode({"mtime": bad}).mtime_ns == LM


@pytest.mark.parametrize("field", ["uid", "gid", "mode"])
@pytest.mark.parametrize("bad", ["abc"])
def test_garbage_numeric_fields_fall_back_to_defaults(field: str, bad: str) -> None:
    # metadata written by some other tool must never produce a None attribute
    a = _decode({field: bad})
    assert (a.mode, a.uid, a.gid) == (FILE_DEFAULT, 1000, 1001)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(
    st.integers(0, 0o7777),
    st.sampled_from([stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK]),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**62),
)
def test_round_trip_property(perm: int, kind: int, uid: int, gid: int, mtime_ns: int) -> None:
    a = _decode(encode(kind | perm, uid, gid, mtime_ns))
    assert (a.mode, a.uid, a.gid, a.mtime_ns) == (kind | perm, uid, gid, mtime_ns)


@settings(derandomize=True, max_examples=200, deadline=None)
@given(st.integers(-(2**40), -1))
def test_round_trip_before_1970(mtime_ns: int) -> None:
    # files from old archives carry pre-epoch mtimes; rsync compares them exactly
    assert parse_mtime(format_mtime(mtime_ns)) == mtime_ns
