"""Server-side copies above CopyObject's limit, and renames that need no copy at all."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import trio

from s3fsmpu.errors import S3Error
from s3fsmpu.fs.copy import copy_object
from s3fsmpu.retry import RetryPolicy
from s3fsmpu.store.base import Body, Checksum, CompleteResult, Expect, PartRef, WriteMeta
from s3fsmpu.store.faults import FaultyStore
from s3fsmpu.store.memory import MemoryStore
from tests.core.harness import PART, ROOT, Env, blob, run, wait_until

FAST = RetryPolicy(3, 0.001, 0.01)


def test_copy_above_the_limit_is_a_verified_multipart_copy():
    async def main() -> None:
        store = MemoryStore(min_part_size=1000)
        data = blob(10_500, 3)
        await store.put("src", Body(len(data), data=data), WriteMeta({"mode": "33188"}, "text/plain"))
        etag = await copy_object(store, "src", "dst", len(data), None, FAST, limit=4000, part_size=3000)
        assert store.calls["CopyObject"] == 0 and store.calls["UploadPartCopy"] == 4
        dst = store.objects["dst"]
        assert dst.data == data and dst.etag == etag and etag.endswith("-4")
        assert dst.metadata == {"mode": "33188"} and dst.content_type == "text/plain"
        await copy_object(store, "src", "small", len(data), WriteMeta({"a": "b"}), FAST, limit=20_000)
        assert store.calls["CopyObject"] == 1 and store.objects["small"].metadata == {"a": "b"}

    trio.run(main)


def test_failed_multipart_copy_is_aborted_and_leaves_no_object():
    async def main() -> None:
        mem = MemoryStore(min_part_size=1000)
        store = FaultyStore(mem)
        data = blob(9000, 4)
        await mem.put("src", Body(len(data), data=data), WriteMeta())
        store.fail("upload_part_copy", S3Error("AccessDenied"), nth=2)
        try:
            await copy_object(store, "src", "dst", len(data), None, FAST, limit=4000, part_size=3000)
        except S3Error as exc:
            assert exc.code == "AccessDenied"
        else:
            raise AssertionError("the copy should have failed")
        assert "dst" not in mem.objects and mem.uploads == {}
        assert mem.objects["src"].data == data

    trio.run(main)


def test_renamed_twice_before_its_upload_leaves_nothing_under_the_middle_name(tmp_path: Path) -> None:
    """Found by the reference model through the mount: a file being written, renamed over
    a closed file and then renamed on, left the closed file's object under the middle
    name (nothing was going to replace it any more)."""
    data = blob(100, 7)

    async def t(env: Env) -> None:
        await env.write_file("mid", b"closed file")
        await env.fs.lookup(ROOT, "mid")
        fh = await env.create("b")
        await env.fs.write(fh, 0, data)
        await env.fs.rename(ROOT, "b", ROOT, "mid")
        await env.fs.rename(ROOT, "mid", ROOT, "final")
        await env.fs.flush(fh)
        await env.fs.release(fh)
        assert sorted(env.mem.objects) == ["final"]
        assert env.data("final") == data

    run(tmp_path, t)


def test_rename_of_a_file_not_yet_uploading_needs_no_copy(tmp_path: Path) -> None:
    data = blob(PART // 2, 5)

    async def t(env: Env) -> None:
        fh = await env.create("draft")
        await env.fs.write(fh, 0, data)
        await env.fs.rename(ROOT, "draft", ROOT, "final")
        await env.fs.flush(fh)
        await env.fs.release(fh)
        assert env.mem.calls["CopyObject"] == 0 and env.mem.calls["DeleteObject"] == 0
        assert env.mem.objects["final"].data == data and "draft" not in env.mem.objects

    run(tmp_path, t)


class KeysWritten(MemoryStore):
    """Records every key a PutObject or Complete landed on, in order."""

    def __init__(self) -> None:
        super().__init__(min_part_size=PART)
        self.published: list[str] = []

    async def put(self, key: str, body: Body, meta: WriteMeta, expect: Expect | None = None) -> str:
        etag = await super().put(key, body, meta, expect)
        self.published.append(key)
        return etag

    async def complete_multipart(self, key: str, upload_id: str, parts: Sequence[PartRef],
                                 expect: Expect | None = None, checksum: Checksum | None = None) -> CompleteResult:
        result = await super().complete_multipart(key, upload_id, parts, expect, checksum)
        self.published.append(key)
        return result


def test_renamed_while_its_upload_runs_it_is_published_under_the_new_name_only(tmp_path: Path) -> None:
    """Issue 14: no detour through the old key. The upload bound to the old key is aborted
    and its parts go again from the spool."""
    mem = KeysWritten()
    data = blob(5 * PART + 100, 8)

    async def t(env: Env) -> None:
        fh = await env.create("draft")
        await env.fs.write(fh, 0, data[: 3 * PART])  # parts 1-3 go up now
        await wait_until(lambda: mem.calls["UploadPart"] >= 3)
        await env.fs.rename(ROOT, "draft", ROOT, "final")
        await env.fs.write(fh, 3 * PART, data[3 * PART:])
        await env.fs.flush(fh)
        await env.fs.release(fh)
        assert mem.published == ["final"]
        assert sorted(mem.objects) == ["final"] and env.data("final") == data
        assert mem.uploads == {}

    run(tmp_path, t, mem=mem)


def test_an_in_place_edit_renamed_midway_moves_its_base_and_publishes_once(tmp_path: Path) -> None:
    mem = KeysWritten()
    old = blob(4 * PART, 9)
    patch = b"P" * 1000

    async def t(env: Env) -> None:
        await env.write_file("doc", old)
        mem.published.clear()
        fh = await env.fs.open((await env.fs.lookup(ROOT, "doc")).inode, os.O_RDWR)
        await env.fs.write(fh, PART + 10, patch)
        await env.fs.rename(ROOT, "doc", ROOT, "doc2")
        await env.fs.write(fh, 3 * PART + 10, patch)
        await env.fs.flush(fh)
        await env.fs.release(fh)
        want = bytearray(old)
        want[PART + 10: PART + 10 + len(patch)] = patch
        want[3 * PART + 10: 3 * PART + 10 + len(patch)] = patch
        assert mem.published == ["doc2"]
        assert sorted(mem.objects) == ["doc2"] and env.data("doc2") == bytes(want)
        assert mem.uploads == {}

    run(tmp_path, t, mem=mem)
