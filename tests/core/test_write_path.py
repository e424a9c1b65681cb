"""The write path through S3Filesystem and the upload driver, on the memory store.

Every test checks what is really in the bucket (the memory store's objects,
uploads and call counts), not what the filesystem says about itself.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from s3fsmpu.errors import FileTooLarge, to_errno
from s3fsmpu.store.base import Body, PartResult, WriteMeta
from s3fsmpu.store.memory import MemoryStore, multipart_etag
from s3fsmpu.store.wrapper import StoreWrapper
from tests.core.harness import KIB, PART, ROOT, Env, blob, expected_etag, run, wait_until


class GatedStore(MemoryStore):
    """UploadPart waits at a gate (before reading its body) until the test opens it."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.gate: trio.Event | None = None
        self.waiting = 0
        self.max_waiting = 0

    async def upload_part(self, key: str, upload_id: str, number: int, body: Body) -> PartResult:
        if self.gate is not None:
            self.waiting += 1
            self.max_waiting = max(self.max_waiting, self.waiting)
            try:
                await self.gate.wait()
            finally:
                self.waiting -= 1
        return await super().upload_part(key, upload_id, number, body)


def assert_no_uploads(env: Env) -> None:
    assert env.mem.uploads == {}, f"uploads left in progress: {list(env.mem.uploads)}"


def test_multipart_object_bytes_and_etag(tmp_path: Path) -> None:
    data = blob(5 * PART + PART // 2)

    async def t(env: Env) -> None:
        await env.write_file("big", data)
        assert env.data("big") == data
        assert env.etag("big") == expected_etag(data)
        assert env.etag("big").endswith("-6")
        c = env.mem.calls
        assert (c["CreateMultipartUpload"], c["UploadPart"], c["CompleteMultipartUpload"]) == (1, 6, 1)
        assert c["PutObject"] == 0
        assert_no_uploads(env)
        # any other client sees it at once
        other = env.other_client()
        assert (await other.lookup(ROOT, "big")).size == len(data)
        assert await env.read_all(other, "big") == data

    run(tmp_path, t)


def test_parts_upload_while_the_writer_goes_on(tmp_path: Path) -> None:
    data = blob(5 * PART + 100)

    async def t(env: Env) -> None:
        fh = await env.create("f")
        for i in range(5):
            await env.fs.write(fh, i * PART, data[i * PART : (i + 1) * PART])
        # no flush yet: the five complete parts go up in the background
        def parts_stored() -> list[int]:
            return sorted(n for up in env.mem.uploads.values() for n in up.parts)

        await wait_until(lambda: parts_stored() == [1, 2, 3, 4, 5])
        assert len(env.mem.uploads) == 1
        assert env.mem.calls["UploadPart"] == 5
        assert env.mem.calls["CompleteMultipartUpload"] == 0
        assert "f" not in env.mem.objects
        await env.fs.write(fh, 5 * PART, data[5 * PART :])
        await env.fs.flush(fh)
        # only the short last part was left for flush
        assert env.mem.calls["UploadPart"] == 6
        assert env.data("f") == data
        await env.fs.release(fh)
        assert_no_uploads(env)

    run(tmp_path, t)


def test_memory_budget_backpressure(tmp_path: Path) -> None:
    store = GatedStore(min_part_size=PART)
    data = blob(8 * PART)

    async def t(env: Env) -> None:
        store.gate = trio.Event()
        fh = await env.create("big")
        done: list[int] = []

        async def writer() -> None:
            for i in range(8):
                await env.fs.write(fh, i * PART, data[i * PART : (i + 1) * PART])
                done.append(i)

        env.nursery.start_soon(writer)
        await wait_until(lambda: store.waiting == 2)
        await trio.testing.wait_all_tasks_blocked()
        # two parts hold the whole budget; the third write waits for one of them
        assert done == [0, 1]
        assert env.uploader.budget.used == 2 * PART

        # the budget is shared: another file's writer waits too
        fh2 = await env.create("other")
        other_done = trio.Event()

        async def writer2() -> None:
            await env.fs.write(fh2, 0, blob(PART, 5))
            other_done.set()

        env.nursery.start_soon(writer2)
        await trio.testing.wait_all_tasks_blocked()
        assert not other_done.is_set()
        assert done == [0, 1]

        store.gate.set()
        await wait_until(lambda: len(done) == 8 and other_done.is_set())
        await env.fs.flush(fh)
        await env.fs.release(fh)
        await env.fs.flush(fh2)
        await env.fs.release(fh2)
        assert store.max_waiting <= 2
        assert env.uploader.budget.used == 0
        assert env.data("big") == data
        assert env.data("other") == blob(PART, 5)
        assert_no_uploads(env)

    run(tmp_path, t, store=store, mem=store, max_memory=2 * PART)


def test_out_of_order_writes(tmp_path: Path) -> None:
    data = blob(7 * PART + 333, seed=3)
    rnd = random.Random(7)
    pieces = []
    off = 0
    while off < len(data):
        n = rnd.randint(1, 40 * KIB)
        pieces.append((off, data[off : off + n]))
        off += n
    rnd.shuffle(pieces)

    async def t(env: Env) -> None:
        fh = await env.create("shuffled")
        for off, chunk in pieces:
            assert await env.fs.write(fh, off, chunk) == len(chunk)
        await env.fs.flush(fh)
        await env.fs.release(fh)
        assert env.data("shuffled") == data
        assert env.etag("shuffled") == expected_etag(data)
        assert_no_uploads(env)

    run(tmp_path, t)


def test_holes_are_zeros_multipart(tmp_path: Path) -> None:
    async def t(env: Env) -> None:
        fh = await env.create("sparse")
        await env.fs.write(fh, 3 * PART + 10, b"end")
        await env.fs.write(fh, 5, b"start")
        # a file still being written reads back what was written, holes as zeros
        assert await env.fs.read(fh, 0, 12) == b"\0" * 5 + b"start" + b"\0" * 2
        await env.fs.flush(fh)
        await env.fs.release(fh)
        want = bytearray(3 * PART + 13)
        want[5:10] = b"start"
        want[3 * PART + 10 :] = b"end"
        assert env.data("sparse") == bytes(want)
        assert env.etag("sparse") == expected_etag(bytes(want))

    run(tmp_path, t)


def test_holes_are_zeros_single_put(tmp_path: Path) -> None:
    async def t(env: Env) -> None:
        fh = await env.create("small")
        await env.fs.write(fh, 100, b"x")
        await env.fs.flush(fh)
        await env.fs.release(fh)
        assert env.data("small") == b"\0" * 100 + b"x"

    run(tmp_path, t)


def test_flush_with_nothing_new_is_a_noop(tmp_path: Path) -> None:
    data = blob(2 * PART + 10)

    async def t(env: Env) -> None:
        fh = await env.create("f")
        await env.fs.write(fh, 0, data)
        await env.fs.flush(fh)
        before = Counter(env.mem.calls)
        etag = env.etag("f")
        # a forked child closing its copy, dd closing its dup, ...
        for _ in range(3):
            await env.fs.flush(fh)
        fh2 = await env.fs.open((await env.fs.lookup(ROOT, "f")).inode, os.O_RDONLY)
        await env.fs.flush(fh2)
        await env.fs.release(fh2)
        await env.fs.release(fh)
        assert env.mem.calls == before
        assert env.etag("f") == etag

    run(tmp_path, t)


def test_small_file_is_one_put(tmp_path: Path) -> None:
    data = blob(PART - 1)

    async def t(env: Env) -> None:
        await env.write_file("small", data)
        c = env.mem.calls
        assert c["PutObject"] == 1
        assert c["CreateMultipartUpload"] == c["UploadPart"] == c["CompleteMultipartUpload"] == 0
        assert env.data("small") == data
        assert env.etag("small") == hashlib.md5(data).hexdigest()

    run(tmp_path, t)


def test_exactly_one_part(tmp_path: Path) -> None:
    data = blob(PART)

    async def t(env: Env) -> None:
        await env.write_file("one", data)
        assert env.data("one") == data
        # a one-part multipart upload (ETag ending in -1) or a plain PUT: both are fine
        assert env.etag("one") in (expected_etag(data), hashlib.md5(data).hexdigest())
        assert_no_uploads(env)

    run(tmp_path, t)


def test_empty_file(tmp_path: Path) -> None:
    async def t(env: Env) -> None:
        fh = await env.create("empty")
        await env.fs.flush(fh)
        await env.fs.release(fh)
        assert env.data("empty") == b""
        assert env.etag("empty") == hashlib.md5(b"").hexdigest()
        other = env.other_client()
        assert (await other.lookup(ROOT, "empty")).size == 0

    run(tmp_path, t)


def test_empty_file_replaces_existing_object(tmp_path: Path) -> None:
    async def t(env: Env) -> None:
        await env.write_file("f", blob(3 * PART))
        fh = await env.create("f")  # O_TRUNC, nothing written
        await env.fs.flush(fh)
        await env.fs.release(fh)
        assert env.data("f") == b""

    run(tmp_path, t)


def test_part_rewritten_after_upload_is_uploaded_again(tmp_path: Path) -> None:
    data = bytearray(blob(3 * PART + 50))

    async def t(env: Env) -> None:
        fh = await env.create("f")
        await env.fs.write(fh, 0, bytes(data))
        plan = env.fs.inodes.by_path("f").writer.plan  # type: ignore[union-attr]
        await wait_until(lambda: sum(len(u.parts) for u in env.mem.uploads.values()) == 3
                         and not plan.inflight())
        await env.fs.write(fh, 10, b"REWRITTEN")
        data[10:19] = b"REWRITTEN"
        await env.fs.flush(fh)
        await env.fs.release(fh)
        assert env.data("f") == bytes(data)
        assert env.etag("f") == expected_etag(bytes(data))
        assert env.mem.calls["UploadPart"] == 5  # 3 early, part 1 again, the tail

    run(tmp_path, t)


def test_part_rewritten_while_its_upload_is_in_flight(tmp_path: Path) -> None:
    store = GatedStore(min_part_size=PART)
    old, new = blob(PART, 1), blob(PART, 2)

    async def t(env: Env) -> None:
        store.gate = trio.Event()
        fh = await env.create("f")
        await env.fs.write(fh, 0, old)  # part 1 complete: its upload starts and waits
        await env.fs.write(fh, PART, b"tail")
        await wait_until(lambda: store.waiting == 1)
        await env.fs.write(fh, 0, new)  # rewritten while that upload is in flight
        store.gate.set()
        await env.fs.flush(fh)
        await env.fs.release(fh)
        assert env.data("f") == new + b"tail"
        assert_no_uploads(env)

    run(tmp_path, t, store=store, mem=store)


def test_write_after_flush_continues_the_object(tmp_path: Path) -> None:
    first, second = blob(3 * PART + 7, 1), blob(2 * PART, 2)

    async def t(env: Env) -> None:
        fh = await env.create("log")
        await env.fs.write(fh, 0, first)
        await env.fs.flush(fh)
        assert env.data("log") == first
        await env.fs.write(fh, len(first), second)
        await env.fs.flush(fh)
        assert env.data("log") == first + second
        await env.fs.release(fh)
        assert env.data("log") == first + second
        assert_no_uploads(env)

    run(tmp_path, t)


def test_write_after_flush_does_not_resend_the_prefix(tmp_path: Path) -> None:
    """SPEC: writing on after a flush copies the completed prefix server-side."""
    first = blob(6 * PART, 1)

    async def t(env: Env) -> None:
        fh = await env.create("log")
        await env.fs.write(fh, 0, first)
        await env.fs.flush(fh)
        sent = env.uploader.stats.bytes_uploaded
        await env.fs.write(fh, len(first), b"appended")
        await env.fs.flush(fh)
        await env.fs.release(fh)
        assert env.data("log") == first + b"appended"
        resent = env.uploader.stats.bytes_uploaded - sent
        assert resent < len(first), f"the whole prefix ({resent} bytes) was uploaded again"
        assert env.mem.calls["UploadPartCopy"] >= 1

    run(tmp_path, t)


def test_writing_on_after_a_flush_copies_the_prefix_in_few_big_parts(tmp_path: Path) -> None:
    """SPEC: the published prefix is copied in a few big UploadPartCopy parts (up to
    copy_part_max each), not one per part; the parts after it follow the schedule."""
    first, second, third = blob(40 * PART, 1), blob(3 * PART + PART // 2, 2), blob(PART, 3)

    async def t(env: Env) -> None:
        fh = await env.create("log")
        await env.fs.write(fh, 0, first)
        await env.fs.flush(fh)
        assert env.mem.calls["UploadPartCopy"] == 0
        sent = env.uploader.stats.bytes_uploaded
        await env.fs.write(fh, len(first), second)
        await env.fs.flush(fh)
        # 40 parts published: 5 copies of 8 parts each, then 4 parts of the schedule
        assert env.mem.calls["UploadPartCopy"] == 5
        assert env.uploader.stats.bytes_uploaded - sent == len(second)
        data = first + second
        assert env.data("log") == data
        copies = [data[i * 8 * PART : (i + 1) * 8 * PART] for i in range(5)]
        assert env.etag("log") == multipart_etag(
            [hashlib.md5(c).hexdigest() for c in copies]
            + [hashlib.md5(data[i : i + PART]).hexdigest() for i in range(40 * PART, len(data), PART)]
        )
        assert env.etag("log").endswith("-9")
        # again: the copies end at the last part boundary (43 parts: 6 copies); the
        # half part after it is sent again with what follows
        sent = env.uploader.stats.bytes_uploaded
        await env.fs.write(fh, len(data), third)
        await env.fs.flush(fh)
        await env.fs.release(fh)
        assert env.mem.calls["UploadPartCopy"] == 5 + 6
        assert env.uploader.stats.bytes_uploaded - sent == PART // 2 + len(third)
        assert env.data("log") == data + third
        assert env.etag("log").endswith("-8")
        assert_no_uploads(env)

    run(tmp_path, t, copy_part_max=8 * PART)


def test_a_write_into_the_copied_prefix_waits_for_parts_in_flight_and_falls_back(tmp_path: Path) -> None:
    """Documented fallback: a change inside the big copy parts renumbers the parts (the
    plain layout, copied part by part), so it waits until no part is in flight; the
    parts already sent for the appended bytes are sent again under their new numbers."""
    store = GatedStore(min_part_size=PART)
    first, second = blob(20 * PART, 1), blob(2 * PART, 2)

    async def t(env: Env) -> None:
        fh = await env.create("f")
        await env.fs.write(fh, 0, first)
        await env.fs.flush(fh)
        store.gate = trio.Event()
        await env.fs.write(fh, len(first), second)  # 2 parts, uploads start and wait
        await wait_until(lambda: store.waiting == 2)
        done = trio.Event()

        async def rewrite() -> None:
            await env.fs.write(fh, 5 * PART + 10, b"changed")
            done.set()

        env.nursery.start_soon(rewrite)
        await trio.testing.wait_all_tasks_blocked()
        assert not done.is_set(), "the change renumbered parts while their uploads were in flight"
        store.gate.set()
        await done.wait()
        await env.fs.flush(fh)
        await env.fs.release(fh)
        data = bytearray(first + second)
        data[5 * PART + 10 : 5 * PART + 17] = b"changed"
        assert env.data("f") == bytes(data)
        assert env.etag("f") == expected_etag(bytes(data))  # the plain layout
        assert env.mem.calls["UploadPartCopy"] == 19  # every unchanged part, one by one
        assert env.mem.calls["UploadPart"] == 20 + 2 + 1 + 2
        assert_no_uploads(env)

    run(tmp_path, t, store=store, mem=store, copy_part_max=8 * PART)


def test_reads_while_writing_see_written_bytes(tmp_path: Path) -> None:
    data = blob(2 * PART + 5)

    async def t(env: Env) -> None:
        fh = await env.create("f")
        await env.fs.write(fh, 0, data)
        assert await env.fs.read(fh, PART - 3, 10) == data[PART - 3 : PART + 7]
        assert await env.fs.read(fh, len(data) - 2, 100) == data[-2:]
        assert await env.fs.read(fh, len(data) + 10, 100) == b""
        attr = await env.fs.getattr((await env.fs.lookup(ROOT, "f")).inode)
        assert attr.size == len(data)
        await env.fs.flush(fh)
        await env.fs.release(fh)

    run(tmp_path, t)


def test_efbig_beyond_schedule(tmp_path: Path) -> None:
    async def t(env: Env) -> None:
        max_size = env.uploader.schedule.max_size
        fh = await env.create("huge")
        await env.fs.write(fh, 0, b"ok")
        with pytest.raises(FileTooLarge) as info:
            await env.fs.write(fh, max_size - 1, b"xx")
        assert to_errno(info.value) == errno.EFBIG
        # not sticky: the file goes on normally
        await env.fs.write(fh, 2, b"!")
        await env.fs.flush(fh)
        await env.fs.release(fh)
        assert env.data("huge") == b"ok!"

    run(tmp_path, t)


def test_truncate_open_file(tmp_path: Path) -> None:
    data = blob(4 * PART)

    async def t(env: Env) -> None:
        fh = await env.create("f")
        await env.fs.write(fh, 0, data)
        plan = env.fs.inodes.by_path("f").writer.plan  # type: ignore[union-attr]
        await wait_until(lambda: env.mem.calls["UploadPart"] == 4 and not plan.inflight())
        inode = (await env.fs.lookup(ROOT, "f")).inode
        attr = await env.fs.setattr(inode, size=PART + 10)
        assert attr.size == PART + 10
        await env.fs.flush(fh)
        await env.fs.release(fh)
        assert env.data("f") == data[: PART + 10]
        assert env.etag("f") == expected_etag(data[: PART + 10])
        assert_no_uploads(env)

    run(tmp_path, t)


def test_truncate_to_zero_after_the_upload_started(tmp_path: Path) -> None:
    """Found by test_model.py: [truncate 64 KiB, write 1 byte, truncate 0, flush]."""

    async def t(env: Env) -> None:
        fh = await env.create("f")
        await env.fs.write(fh, 0, blob(PART))  # part 1 complete: the multipart upload starts
        inode = (await env.fs.lookup(ROOT, "f")).inode
        await env.fs.setattr(inode, size=0)
        await env.fs.flush(fh)  # an empty object, not a Complete without parts
        await env.fs.release(fh)
        assert env.data("f") == b""
        assert_no_uploads(env)

    run(tmp_path, t)


def test_truncate_closed_file_shrink_and_grow(tmp_path: Path) -> None:
    data = blob(3 * PART + 1)

    async def t(env: Env) -> None:
        await env.write_file("f", data)
        inode = (await env.fs.lookup(ROOT, "f")).inode
        await env.fs.setattr(inode, size=PART + 1)
        assert env.data("f") == data[: PART + 1]
        await env.fs.setattr(inode, size=2 * PART)
        assert env.data("f") == data[: PART + 1] + b"\0" * (PART - 1)
        await env.fs.setattr(inode, size=0)
        assert env.data("f") == b""
        assert_no_uploads(env)

    run(tmp_path, t)


def test_modify_existing_object_in_place(tmp_path: Path) -> None:
    data = bytearray(blob(3 * PART + 9))

    async def t(env: Env) -> None:
        await env.write_file("f", bytes(data))
        inode = (await env.fs.lookup(ROOT, "f")).inode
        fh = await env.fs.open(inode, os.O_RDWR)
        await env.fs.write(fh, PART + 3, b"patch")
        data[PART + 3 : PART + 8] = b"patch"
        await env.fs.write(fh, len(data), b"appended")
        data.extend(b"appended")
        await env.fs.flush(fh)
        await env.fs.release(fh)
        assert env.data("f") == bytes(data)
        assert_no_uploads(env)

    run(tmp_path, t)


def test_open_for_writing_and_close_unchanged_leaves_nothing_behind(tmp_path: Path) -> None:
    data = blob(3 * PART + 9)

    async def t(env: Env) -> None:
        await env.write_file("f", data)
        etag = env.etag("f")
        inode = (await env.fs.lookup(ROOT, "f")).inode
        fh = await env.fs.open(inode, os.O_RDWR)
        assert await env.fs.read(fh, 0, 10) == data[:10]
        await env.fs.flush(fh)
        await env.fs.release(fh)
        assert env.data("f") == data
        assert env.etag("f") == etag
        assert_no_uploads(env)

    run(tmp_path, t)


def test_many_files_concurrently(tmp_path: Path) -> None:
    files = {f"f{i}": blob(i * PART // 2 + i, seed=i) for i in range(8)}

    async def t(env: Env) -> None:
        async with trio.open_nursery() as n:
            for name, data in files.items():
                n.start_soon(env.write_file, name, data, 7 * KIB)
        for name, data in files.items():
            assert env.data(name) == data, name
        assert_no_uploads(env)
        assert env.uploader.budget.used == 0
        assert sorted(await env.listdir()) == sorted(files)

    run(tmp_path, t, max_memory=3 * PART, concurrency=2)


def test_spool_is_removed_after_a_verified_upload(tmp_path: Path) -> None:
    async def t(env: Env) -> None:
        await env.write_file("a", blob(2 * PART + 1))
        await env.write_file("b", b"small")
        spool = os.path.join(env.config.cache_dir, "spool")
        assert os.listdir(spool) == []
        assert env.uploader.sessions == set()
        assert not os.path.exists(os.path.join(env.config.cache_dir, "recovery"))

    run(tmp_path, t)


def _resident_bytes(path: str) -> int:
    """How much of `path` the page cache holds (util-linux fincore)."""
    out = subprocess.run(["fincore", "--noheadings", "--bytes", "--output", "RES", path],
                         capture_output=True, text=True, check=True).stdout
    return int(out.strip())


class SlowParts(StoreWrapper):
    """Part uploads take a while, as they do over a network."""

    def wraps(self, name: str) -> bool:
        return name == "upload_part"

    async def around(self, name: str, args: tuple[Any, ...], call: Any) -> Any:
        await trio.sleep(0.3)
        return await call()


def _spool_residency_after_parts(tmp_path: Path, spool_resident: int) -> tuple[int, bytes]:
    """Write 8 parts and a tail, wait for the 8 uploads; return the spool's resident bytes
    then, and the spool's content. The object must end up exact either way."""
    mem = MemoryStore(min_part_size=PART)
    data = blob(8 * PART + 100)
    seen: list[tuple[int, bytes]] = []

    async def t(env: Env) -> None:
        fh = await env.create("f")
        await env.fs.write(fh, 0, data)
        await wait_until(lambda: env.uploader.stats.parts_uploaded == 8)
        [spool] = os.listdir(os.path.join(env.config.cache_dir, "spool"))
        path = os.path.join(env.config.cache_dir, "spool", spool)
        resident = _resident_bytes(path)
        with open(path, "rb") as f:
            seen.append((resident, f.read()))
        await env.fs.flush(fh)
        assert env.data("f") == data
        await env.fs.release(fh)

    run(tmp_path, t, store=SlowParts(mem), mem=mem, spool_resident=spool_resident)
    assert seen[0][1] == data  # the bytes are all still in the spool, on disk or cached
    return seen[0]


def test_uploaded_parts_leave_the_page_cache(tmp_path: Path) -> None:
    """A big file's spool must not fill the page cache: uploaded parts are handed back."""
    fstype = subprocess.run(["stat", "-f", "-c", "%T", str(tmp_path)], capture_output=True, text=True).stdout
    if fstype.strip() == "tmpfs":
        pytest.skip("tmpfs pages are the file itself: there is no page cache to give back")
    resident, _ = _spool_residency_after_parts(tmp_path, spool_resident=2 * PART)
    assert resident <= 4 * KIB  # the 8 uploaded parts are gone from memory; only the unsent tail stays


def test_a_small_spool_stays_in_the_page_cache(tmp_path: Path) -> None:
    """Below spool_resident nothing is written back: a short-lived spool never touches the disk."""
    resident, data = _spool_residency_after_parts(tmp_path, spool_resident=16 * PART)
    assert resident >= len(data)


def test_prefix_location_keys(tmp_path: Path) -> None:
    async def t(env: Env) -> None:
        attr = await env.fs.mkdir(ROOT, "d", 0o755, os.getuid(), os.getgid())
        await env.write_file("f", b"data", parent=attr.inode)
        assert sorted(env.mem.objects) == ["sub/dir/d/", "sub/dir/d/f"]
        assert env.mem.objects["sub/dir/d/f"].data == b"data"

    run(tmp_path, t, location="bucket:sub/dir")


def test_metadata_rides_on_the_upload(tmp_path: Path) -> None:
    async def t(env: Env) -> None:
        fh = await env.create("f", mode=0o640)
        await env.fs.write(fh, 0, b"abc")
        inode = (await env.fs.lookup(ROOT, "f")).inode
        await env.fs.setattr(inode, mode=0o600, mtime_ns=1_700_000_000_123_456_789)
        await env.fs.flush(fh)
        await env.fs.release(fh)
        assert env.mem.calls["CopyObject"] == 0  # no extra request
        meta = env.mem.objects["f"].metadata
        assert meta["mode"] == str(0o100600)
        assert meta["mtime"] == "1700000000.123456789"
        assert meta["uid"] == str(os.getuid())

    run(tmp_path, t)


def test_session_direct_api(tmp_path: Path) -> None:
    """The driver on its own: UploadSession write/flush/close without the filesystem."""
    data = blob(3 * PART + 1)

    async def t(env: Env) -> None:
        s = env.uploader.open_session("direct/key", WriteMeta({"mode": "33188"}, "text/plain"))
        assert await s.write(0, data) == len(data)
        assert s.size == len(data) and s.dirty
        await s.flush()
        assert not s.dirty
        obj = env.mem.objects["direct/key"]
        assert obj.data == data
        assert obj.metadata == {"mode": "33188"} and obj.content_type == "text/plain"
        await s.close()
        assert env.uploader.stats.completed == 1
        assert env.uploader.stats.parts_uploaded == 4
        assert env.uploader.stats.bytes_uploaded == len(data)

    run(tmp_path, t)
