"""The disk data cache: hits only for the same (key, ETag, index), corrupt blocks
dropped and never returned, LRU eviction within the size and the free-space
floor, what a remount finds, forget, threads, and the index's memory per block."""

from __future__ import annotations

import errno
import logging
import os
import random
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from s3fsmpu.cache import BLOCK_SIZE, blockfile, disk, open_data_cache
from s3fsmpu.cache.disk import DiskDataCache

BS = 100  # block size of these tests: tiny blocks, real files


@pytest.fixture(autouse=True)
def no_stray_warnings(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A test that expects a WARNING takes it out of caplog.records; any other fails it."""
    caplog.set_level(logging.DEBUG, logger="s3fsmpu.cache")
    yield
    stray = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert stray == []


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The WARNINGs so far, consumed."""
    found = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    caplog.records[:] = [r for r in caplog.records if r.levelno < logging.WARNING]
    return found


def block_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.relative_to(root).parts[0] != disk.TMP)


def size_of(key: str, etag: str, index: int, data: bytes) -> int:
    return len(blockfile.header(key, etag, index, data)) + len(data)


def payload(key: str, etag: str, index: int, n: int = BS) -> bytes:
    return (f"{key}|{etag}|{index}|".encode() * n)[:n]


def test_a_block_comes_back_only_for_its_key_etag_and_index(tmp_path: Path) -> None:
    c = DiskDataCache(str(tmp_path), 10_000, BS)
    key = "dir/ü nicode/" + "k" * 900  # any UTF-8 key: names on disk are hashes
    c.put(key, '"e1"', 0, payload(key, "e1", 0))
    c.put(key, '"e1"', 1, b"last")  # the last block is shorter
    assert c.get(key, '"e1"', 0) == payload(key, "e1", 0)
    assert c.get(key, '"e1"', 1) == b"last"
    assert c.get(key, '"e2"', 0) is None  # a changed object never serves old bytes
    assert c.get(key, '"e1"', 2) is None
    assert c.get(key + "x", '"e1"', 0) is None
    assert c.usage() == sum(p.stat().st_size for p in block_files(tmp_path))
    assert len(c) == 2
    with pytest.raises(ValueError):
        c.put(key, '"e1"', 3, b"x" * (BS + 1))


def read_back(c: DiskDataCache, key: str, etag: str, index: int, into: bool) -> bytes | None:
    """The block through get, or through get_into (the reader's path) with its expected length."""
    if not into:
        return c.get(key, etag, index)
    buf = bytearray(len(payload(key, etag, index)))
    return bytes(buf) if c.get_into(key, etag, index, memoryview(buf)) else None


@pytest.mark.parametrize("into", [False, True])
@pytest.mark.parametrize("where", ["payload", "crc", "index", "key", "length"])
def test_a_flipped_byte_is_dropped_logged_and_never_returned(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, where: str, into: bool) -> None:
    c = DiskDataCache(str(tmp_path), 10_000, BS)
    data = payload("k", "e", 7)
    c.put("k", "e", 7, data)
    (path,) = block_files(tmp_path)
    raw = bytearray(path.read_bytes())
    # the length's top byte: a header asking for 2**56 bytes
    offset = {"payload": len(raw) - 1, "crc": 26, "index": 10, "key": 30, "length": 25}[where]
    raw[offset] ^= 0x01
    path.write_bytes(raw)
    assert read_back(c, "k", "e", 7, into) is None
    assert not path.exists()
    assert c.usage() == 0 and len(c) == 0
    (line,) = warnings(caplog)
    assert "block 7 of 'k'" in line
    assert read_back(c, "k", "e", 7, into) is None  # gone: no second WARNING
    c.put("k", "e", 7, data)  # refetched
    assert read_back(c, "k", "e", 7, into) == data


@pytest.mark.parametrize("into", [False, True])
@pytest.mark.parametrize("keep", [0, 10, 40, -1, None])
def test_a_short_or_long_file_is_dropped(tmp_path: Path, caplog: pytest.LogCaptureFixture, keep: int | None,
                                         into: bool) -> None:
    """Through get (the whole block) and get_into (the reader's buffer) alike."""
    c = DiskDataCache(str(tmp_path), 10_000, BS)
    c.put("k", "e", 0, payload("k", "e", 0))
    (path,) = block_files(tmp_path)
    raw = path.read_bytes()
    path.write_bytes(raw + b"\0" if keep is None else raw[:keep])
    if into:
        assert not c.get_into("k", "e", 0, memoryview(bytearray(BS)))
    else:
        assert c.get("k", "e", 0) is None
    assert not path.exists() and c.usage() == 0
    assert len(warnings(caplog)) == 1


def test_a_block_that_cannot_be_opened_for_want_of_file_descriptors_is_kept(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """EMFILE says nothing about the block: this read misses, the block stays."""
    c = DiskDataCache(str(tmp_path), 10_000, BS)
    c.put("k", "e", 0, payload("k", "e", 0))

    def no_fds(*args: Any, **kwargs: Any) -> int:
        raise OSError(errno.EMFILE, "Too many open files")

    with monkeypatch.context() as m:
        m.setattr(disk.os, "open", no_fds)
        assert read_back(c, "k", "e", 0, into=True) is None
    assert len(warnings(caplog)) == 1
    assert len(c) == 1 and block_files(tmp_path)
    assert read_back(c, "k", "e", 0, into=True) == payload("k", "e", 0)


def test_a_block_of_the_older_format_is_dropped_without_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """After an upgrade the cache dir holds version-1 blocks (8 MiB each): each is dropped
    when met, as a corrupt one is, but it is no news worth a WARNING per block."""
    c = DiskDataCache(str(tmp_path), 10_000, BS)
    c.put("k", "e", 0, payload("k", "e", 0))
    (path,) = block_files(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[4] = blockfile.VERSION - 1
    path.write_bytes(raw)
    buf = bytearray(len(payload("k", "e", 0)))
    assert not c.get_into("k", "e", 0, memoryview(buf))
    assert not path.exists() and c.usage() == 0
    assert warnings(caplog) == []
    c.put("k", "e", 0, payload("k", "e", 0))
    assert c.get_into("k", "e", 0, memoryview(buf)) and buf == payload("k", "e", 0)


def test_eviction_keeps_within_the_size_and_drops_the_least_recently_used(tmp_path: Path) -> None:
    one = size_of("a", "e", 0, payload("a", "e", 0))
    c = DiskDataCache(str(tmp_path), 3 * one, BS)
    for key in "abc":
        c.put(key, "e", 0, payload(key, "e", 0))
    assert c.usage() == 3 * one
    assert c.get("a", "e", 0) is not None  # a is now the most recent; b the least
    c.put("d", "e", 0, payload("d", "e", 0))
    assert c.get("b", "e", 0) is None
    assert [c.get(k, "e", 0) is not None for k in "acd"] == [True, True, True]
    c.put("a", "e", 0, payload("a", "e", 0))  # already there: counts as a use, no rewrite
    c.put("e", "e", 0, payload("e", "e", 0))
    assert c.get("c", "e", 0) is None
    assert c.usage() <= 3 * one
    assert c.usage() == sum(p.stat().st_size for p in block_files(tmp_path))


def test_free_disk_below_the_floor_evicts_even_within_the_size(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    one = size_of("k0", "e", 0, payload("k0", "e", 0))
    total = 100 * one
    others = 90 * one  # the rest of the disk: 10% free before the cache writes anything

    def fake_disk(path: str) -> tuple[int, int]:
        held = sum(p.stat().st_size for p in block_files(tmp_path))
        return total - others - held, total

    monkeypatch.setattr(disk, "disk_space", fake_disk)
    c = DiskDataCache(str(tmp_path), 50 * one, BS)
    for i in range(10):
        c.put(f"k{i}", "e", 0, payload(f"k{i}", "e", 0))
        free, _ = fake_disk(str(tmp_path))
        assert free >= 0.05 * total
    assert c.usage() == 5 * one  # 5% of the disk, well under the 50 blocks allowed
    assert [c.get(f"k{i}", "e", 0) is not None for i in range(10)] == [False] * 5 + [True] * 5
    others = 96 * one  # someone else filled the disk: nothing fits, nothing fails
    c.put("late", "e", 0, payload("late", "e", 0))
    assert c.get("late", "e", 0) is None
    assert c.usage() == 0 and block_files(tmp_path) == []


def test_a_remount_finds_the_blocks_in_lru_order_and_trims_to_a_smaller_size(tmp_path: Path) -> None:
    root = str(tmp_path)
    c = DiskDataCache(root, 10_000, BS)
    for key in "abc":
        c.put(key, "e", 0, payload(key, "e", 0))
    held = c.usage()
    for t, key in enumerate("abc"):  # written at t = 1000, 1001, 1002 seconds
        os.utime(c._path(blockfile.block_digest(key, "e", 0)), (1000 + t, 1000 + t))
    assert c.get("a", "e", 0) is not None  # a read makes a the newest, on disk too
    stale = tmp_path / disk.TMP / "crashed-put"
    stale.write_bytes(b"half a block")
    os.utime(stale, (1000, 1000))

    again = DiskDataCache(root, 10_000, BS)
    assert again.usage() == held and len(again) == 3
    assert [again.get(k, "e", 0) for k in "abc"] == [payload(k, "e", 0) for k in "abc"]
    assert not stale.exists()

    for t, key in enumerate("abc"):
        os.utime(again._path(blockfile.block_digest(key, "e", 0)), (1000 + t, 1000 + t))
    again.get("a", "e", 0)
    smaller = DiskDataCache(root, 2 * held // 3, BS)  # room for two: b, the least recent, goes
    assert [smaller.get(k, "e", 0) is not None for k in "abc"] == [True, False, True]
    assert smaller.usage() == sum(p.stat().st_size for p in block_files(tmp_path)) <= 2 * held // 3


def test_forget_drops_every_version_of_a_key_and_only_that_key(tmp_path: Path) -> None:
    c = DiskDataCache(str(tmp_path), 10_000, BS)
    for etag, index in [("v1", 0), ("v1", 1), ("v2", 0)]:
        c.put("doomed", etag, index, payload("doomed", etag, index))
    c.put("kept", "v1", 0, payload("kept", "v1", 0))
    c.forget("doomed")
    c.forget("never-cached")
    assert [c.get("doomed", e, i) for e, i in [("v1", 0), ("v1", 1), ("v2", 0)]] == [None] * 3
    assert c.get("kept", "v1", 0) == payload("kept", "v1", 0)
    assert c.usage() == size_of("kept", "v1", 0, payload("kept", "v1", 0))
    assert len(block_files(tmp_path)) == 1
    assert len(DiskDataCache(str(tmp_path), 10_000, BS)) == 1  # and a remount agrees


def test_a_failing_disk_skips_the_put_with_one_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    c = DiskDataCache(str(tmp_path), 10_000, BS)

    def full(*args: object, **kwargs: object) -> tuple[int, str]:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(disk.tempfile, "mkstemp", full)
    for i in range(3):
        c.put("k", "e", i, b"x")  # never raises
    assert len(warnings(caplog)) == 1  # once, not once per block
    monkeypatch.undo()
    c.put("k", "e", 0, b"x")
    assert c.get("k", "e", 0) == b"x" and c.get("k", "e", 1) is None


@pytest.mark.parametrize("into", [False, True])
def test_threads_keep_the_index_and_the_files_in_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      into: bool) -> None:
    c = DiskDataCache(str(tmp_path), 6 * (BS + 40), BS)  # 6 of the 12 blocks fit: evictions
    for name in ("replace", "rename", "unlink"):  # widen the windows between a file and its entry
        monkeypatch.setattr(disk.os, name, slowly(getattr(os, name)))
    wrong: list[tuple[str, str, int]] = []
    errors: list[BaseException] = []
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible

    def work(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(500):
                key, etag, index = f"k{rng.randrange(2)}", f"e{rng.randrange(2)}", rng.randrange(3)
                op = rng.random()
                if op < 0.45:
                    c.put(key, etag, index, payload(key, etag, index))
                elif op < 0.85:
                    got = read_back(c, key, etag, index, into)
                    if got is not None and got != payload(key, etag, index):
                        wrong.append((key, etag, index))
                else:
                    c.forget(key)
        except BaseException as exc:  # noqa: BLE001  # a thread's exception would otherwise only be printed
            errors.append(exc)

    try:
        threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == [] and wrong == []
    assert_index_matches_files(c, tmp_path)
    assert c.usage() <= c.max_bytes


def test_a_forget_during_a_puts_rename_waits_for_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = DiskDataCache(str(tmp_path), 10_000, BS)
    renamed, release = threading.Event(), threading.Event()
    replace = os.replace

    def held(src: str, dst: str) -> None:  # the put stops between its file and its index entry
        replace(src, dst)
        renamed.set()
        release.wait(5)

    monkeypatch.setattr(disk.os, "replace", held)
    putter = threading.Thread(target=c.put, args=("k", "e", 0, b"data"))
    putter.start()
    assert renamed.wait(5)
    forgetter = threading.Thread(target=c.forget, args=("k",))
    forgetter.start()
    forgetter.join(0.2)
    release.set()
    putter.join()
    forgetter.join()
    assert_index_matches_files(c, tmp_path)


def assert_index_matches_files(c: DiskDataCache, root: Path) -> None:
    files = block_files(root)
    assert {bytes.fromhex("".join(p.relative_to(root).parts)) for p in files} == set(c._lru)
    assert c.usage() == sum(p.stat().st_size for p in files)


def slowly(fn: Callable[..., None]) -> Callable[..., None]:
    def slow(*args: Any, **kwargs: Any) -> None:
        time.sleep(0.0003)  # other threads run here and...
        fn(*args, **kwargs)
        time.sleep(0.0003)  # ...here

    return slow


def test_the_index_costs_under_200_bytes_a_block(tmp_path: Path) -> None:
    c = DiskDataCache(str(tmp_path), 1 << 50, BLOCK_SIZE)
    n = 100_000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        # as a remount finds them, every digest and size a fresh object: 64-block
        # objects whose keys are 20 to 119 bytes long, each with a short last block
        c._adopt([(i, blockfile.block_digest(f"{i // 64:0{20 + i // 64 % 100}d}", '"etag"', i % 64),
                   int(str(BLOCK_SIZE + 30 + 26 + i // 64 % 100 - (i % 64 == 63) * (i % 4099))))
                  for i in range(n)])
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(c) == n
    print(f"{(after - before) / n:.0f} bytes a block")
    assert (after - before) / n < 200


def test_a_chunk_is_whole_blocks_and_each_bucket_has_its_own_directory(tmp_path: Path) -> None:
    from s3fsmpu.cache import MIN_SIZE
    from s3fsmpu.fs.reader import CHUNK

    assert CHUNK % BLOCK_SIZE == 0 and MIN_SIZE >= CHUNK
    assert open_data_cache(str(tmp_path), 0, "scope") is None
    a = open_data_cache(str(tmp_path), 1 << 30, "http://h|bucket-a")
    b = open_data_cache(str(tmp_path), 1 << 30, "http://h|bucket-b")
    assert a is not None and b is not None
    assert Path(a.root).parent == Path(b.root).parent == tmp_path / "data"
    assert a.root != b.root
    a.put("k", "e", 0, b"a")
    assert b.get("k", "e", 0) is None
