"""Two writers of one key through two mounts (or a mount and another client): no lost update.

Every publish carries what the mount knew at open: If-None-Match: * for a new
name, If-Match: <ETag> for a replaced or changed one. The loser's close() fails
(EIO), its bytes go to its recovery folder, the winner's object stays whole.
The in-memory store enforces the conditions as S3 does (including If-Match on
Complete, which moto ignores).
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from s3fsmpu.errors import NotFound, S3Error, UploadFailed, to_errno
from s3fsmpu.fs.core import S3Filesystem
from s3fsmpu.store.base import Body, Checksum, CompleteResult, Expect, PartRef, WriteMeta
from s3fsmpu.store.faults import FaultyStore
from s3fsmpu.store.memory import MemoryStore
from tests.core.harness import CREATE_FLAGS, PART, ROOT, Env, blob, run

SMALL, BIG = PART // 2, 3 * PART + 100  # one PutObject, and a multipart upload


async def open_and_write(fs: S3Filesystem, name: str, data: bytes, flags: int = CREATE_FLAGS) -> int:
    """What the kernel does for open(2): a lookup, then CREATE for a new name, else OPEN."""
    try:
        inode = (await fs.lookup(ROOT, name)).inode
    except NotFound:
        fh, _ = await fs.create(ROOT, name, 0o644, flags, os.getuid(), os.getgid())
    else:
        fh = await fs.open(inode, flags & ~os.O_CREAT)
    await fs.write(fh, 0, data)
    return fh


async def close(fs: S3Filesystem, fh: int) -> UploadFailed | None:
    """flush + release, as close() does: the flush's error is what the application sees."""
    try:
        await fs.flush(fh)
        return None
    except UploadFailed as exc:
        return exc
    finally:
        await fs.release(fh)


def recovered(failure: UploadFailed) -> bytes:
    assert failure.recovery_path is not None
    return Path(failure.recovery_path).read_bytes()


@pytest.mark.parametrize("size", [SMALL, BIG])
@pytest.mark.parametrize("existing", [False, True], ids=["new-key", "overwrite"])
def test_two_mounts_write_one_key_exactly_one_wins(tmp_path: Path, size: int, existing: bool,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    a_data, b_data = blob(size, 1), blob(size, 2)

    async def t(env: Env) -> None:
        if existing:
            await env.write_file("k", b"before")
        b = env.second_mount()
        fa = await open_and_write(env.fs, "k", a_data)
        fb = await open_and_write(b, "k", b_data)
        assert await close(b, fb) is None  # B first: it replaces what both knew
        with caplog.at_level(logging.ERROR):
            failure = await close(env.fs, fa)
        assert failure is not None and to_errno(failure) == errno.EIO
        assert env.data("k") == b_data  # the winner, whole
        assert recovered(failure) == a_data  # the loser's bytes, kept
        assert env.mem.uploads == {}
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "conflict" in errors[0] and env.etag("k") in errors[0], errors

    run(tmp_path, t)


def test_overwrite_mode_is_last_writer_wins(tmp_path: Path) -> None:
    async def t(env: Env) -> None:
        b = env.second_mount()
        fa = await open_and_write(env.fs, "k", blob(BIG, 1))
        fb = await open_and_write(b, "k", blob(BIG, 2))
        assert await close(b, fb) is None
        assert await close(env.fs, fa) is None
        assert env.data("k") == blob(BIG, 1)

    run(tmp_path, t, conflicts="overwrite")


@pytest.mark.parametrize("size", [SMALL, BIG])
def test_an_in_place_change_of_a_replaced_object_fails(tmp_path: Path, size: int) -> None:
    """Append to what this mount knew, while another client replaced it: theirs stays."""
    theirs = blob(size, 9)

    async def t(env: Env) -> None:
        await env.write_file("k", blob(size, 1))
        fh = await env.fs.open((await env.fs.lookup(ROOT, "k")).inode, os.O_WRONLY)
        await env.mem.put("k", Body(len(theirs), data=theirs), WriteMeta())
        await env.fs.write(fh, size, b"appended")
        failure = await close(env.fs, fh)
        assert failure is not None
        assert env.data("k") == theirs

    run(tmp_path, t)


def test_writing_on_after_a_flush_replaces_our_own_version(tmp_path: Path) -> None:
    """After a publish the condition is our own new ETag: fsync, write on, close all work."""
    async def t(env: Env) -> None:
        fh = await open_and_write(env.fs, "k", blob(BIG, 1))
        await env.fs.fsync(fh)
        await env.fs.write(fh, BIG, b"more")
        assert await close(env.fs, fh) is None
        assert env.data("k") == blob(BIG, 1) + b"more"
        # and again through another open of the same mount
        fh = await open_and_write(env.fs, "k", b"third", os.O_WRONLY | os.O_TRUNC)
        assert await close(env.fs, fh) is None
        assert env.data("k") == b"third"

    run(tmp_path, t)


@pytest.mark.parametrize("op", ["put", "complete_multipart"])
def test_a_lost_answer_of_a_conditional_write_is_settled_as_ours(tmp_path: Path, op: str) -> None:
    """The retry of a create-only write that landed gets 412: HEAD shows it is ours."""
    mem = MemoryStore(min_part_size=PART)
    store = FaultyStore(mem)
    store.fail(op, S3Error("Timeout", message="injected"), after=True)
    data = blob(SMALL if op == "put" else BIG, 4)

    async def t(env: Env) -> None:
        fh = await open_and_write(env.fs, "k", data)
        assert await close(env.fs, fh) is None
        assert env.data("k") == data and mem.uploads == {}

    run(tmp_path, t, store=store, mem=mem)


def test_rename_does_not_replace_a_target_another_client_wrote(tmp_path: Path) -> None:
    async def t(env: Env) -> None:
        await env.write_file("src", b"ours")
        await env.write_file("dst", b"old target")
        await env.fs.lookup(ROOT, "dst")  # the mount knows the target it replaces
        await env.mem.put("dst", Body(6, data=b"theirs"), WriteMeta())
        with pytest.raises(S3Error) as info:
            await env.fs.rename(ROOT, "src", ROOT, "dst")
        assert info.value.code == "PreconditionFailed"
        assert env.data("dst") == b"theirs" and env.data("src") == b"ours"

    run(tmp_path, t)


def test_unlink_keeps_a_version_another_client_wrote_since(tmp_path: Path) -> None:
    """Their write came after our unlink in time: the name holds their object."""
    async def t(env: Env) -> None:
        await env.write_file("k", b"ours")
        await env.fs.lookup(ROOT, "k")
        await env.mem.put("k", Body(6, data=b"theirs"), WriteMeta())
        await env.fs.unlink(ROOT, "k")
        assert env.data("k") == b"theirs"

    run(tmp_path, t)


@pytest.mark.parametrize("op", ["put", "complete_multipart"])
def test_a_server_without_conditional_writes_gets_one_warning_and_the_fallback(
        tmp_path: Path, op: str, caplog: pytest.LogCaptureFixture) -> None:
    mem = MemoryStore(min_part_size=PART)
    store = FaultyStore(mem)
    store.fail(op, S3Error("NotImplemented", message="A header you provided implies functionality "
                           "that is not implemented", status=501))

    async def t(env: Env) -> None:
        with caplog.at_level(logging.WARNING):
            for name in ("a", "b"):
                data = blob(SMALL if op == "put" else BIG, len(name))
                fh = await open_and_write(env.fs, name, data)
                assert await close(env.fs, fh) is None
                assert env.data(name) == data
        warnings = [r for r in caplog.records if "conditional writes" in r.getMessage()]
        assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
        assert store.calls[op] == 3  # refused once, sent again without; the second file without

    run(tmp_path, t, store=store, mem=mem)


def test_mkdir_and_symlink_of_a_name_another_client_just_made_are_eexist(tmp_path: Path) -> None:
    from s3fsmpu.errors import Exists

    async def t(env: Env) -> None:
        await env.listdir()  # a fresh listing: the names are known absent
        await env.mem.put("d/", Body(0, data=b""), WriteMeta())
        await env.mem.put("l", Body(1, data=b"x"), WriteMeta())
        fs = env.fs
        fs._known_absent = lambda d, n: True  # type: ignore[method-assign]
        fs._exists = _never  # type: ignore[method-assign]
        with pytest.raises(Exists):
            await fs.mkdir(ROOT, "d", 0o755, os.getuid(), os.getgid())
        with pytest.raises(Exists):
            await fs.symlink(ROOT, "l", "target", os.getuid(), os.getgid())
        assert env.data("l") == b"x"

    run(tmp_path, t)


async def _never(path: str) -> bool:
    """What a mount that looked just before the other client wrote would answer."""
    return False


class RequiresConditionalWrites(MemoryStore):
    """A bucket whose policy requires conditional writes, as AWS enforces it: PutObject,
    Complete and CopyObject without If-None-Match/If-Match are AccessDenied, and a
    CopyObject with them is NotImplemented (AWS documents both)."""

    @staticmethod
    def _require(key: str, expect: Expect | None, op: str) -> None:
        if expect is None:
            raise S3Error("AccessDenied", key, "conditional writes required", op, 403)

    async def put(self, key: str, body: Body, meta: WriteMeta, expect: Expect | None = None) -> str:
        self._require(key, expect, "PutObject")
        return await super().put(key, body, meta, expect)

    async def complete_multipart(self, key: str, upload_id: str, parts: Sequence[PartRef],
                                 expect: Expect | None = None, checksum: Checksum | None = None) -> CompleteResult:
        self._require(key, expect, "CompleteMultipartUpload")
        return await super().complete_multipart(key, upload_id, parts, expect, checksum)

    async def copy(self, src: str, dst: str, meta: WriteMeta | None = None,
                   src_etag: str | None = None, expect: Expect | None = None) -> str:
        self._require(dst, expect, "CopyObject")
        raise S3Error("NotImplemented", dst, "conditional CopyObject", "CopyObject", 501)


def test_a_bucket_that_requires_conditional_writes_takes_every_workload(tmp_path: Path) -> None:
    """cp, rsync's temp-then-rename with attributes, append, truncate, mkdir, symlink,
    a directory rename: all carry their conditions; renames copy as multipart uploads."""
    mem = RequiresConditionalWrites(min_part_size=PART)
    small, big = blob(SMALL, 1), blob(BIG, 2)

    async def t(env: Env) -> None:
        await env.write_file("small", small)
        await env.write_file(".big.tmp", big)
        attr = await env.fs.lookup(ROOT, ".big.tmp")
        await env.fs.setattr(attr.inode, mode=0o600, mtime_ns=1_500_000_000_000_000_000)
        await env.fs.rename(ROOT, ".big.tmp", ROOT, "big")
        fh = await open_and_write(env.fs, "small", b"", os.O_WRONLY | os.O_APPEND)
        await env.fs.write(fh, SMALL, b"appended")
        assert await close(env.fs, fh) is None
        await env.fs.setattr((await env.fs.lookup(ROOT, "big")).inode, size=PART + 5)
        await env.fs.setattr((await env.fs.lookup(ROOT, "small")).inode, mode=0o640)
        await env.fs.apply_pending_metadata()
        d = await env.fs.mkdir(ROOT, "d", 0o755, os.getuid(), os.getgid())
        await env.fs.symlink(d.inode, "l", "../small", os.getuid(), os.getgid())
        await env.fs.rename(ROOT, "d", ROOT, "e")
        await env.write_file("empty", b"")
        await env.fs.rename(ROOT, "empty", ROOT, "empty2")
        assert env.data("small") == small + b"appended"
        assert env.mem.objects["small"].metadata["mode"] == str(0o100640)
        assert env.data("big") == big[: PART + 5]
        assert env.mem.objects["big"].metadata["mode"] == str(0o100600)
        assert env.data("e/l") == b"../small" and "e/" in env.mem.objects
        assert env.data("empty2") == b""
        assert sorted(env.mem.objects) == ["big", "e/", "e/l", "empty2", "small"]
        assert env.mem.uploads == {}

    run(tmp_path, t, mem=mem)


def test_a_name_another_client_deleted_is_created_anew(tmp_path: Path) -> None:
    """Found by the reference model through the mount: the mount still knew the deleted
    object's ETag, so the new file's PutObject carried If-Match on it and close() was EIO."""
    async def t(env: Env) -> None:
        await env.write_file("c", b"first")
        await env.mem.delete("c")  # another client
        with pytest.raises(NotFound):
            await env.fs.lookup(ROOT, "c")
        fh = await open_and_write(env.fs, "c", b"second")
        assert await close(env.fs, fh) is None
        assert env.data("c") == b"second"

    run(tmp_path, t, attr_timeout=0.0)


class WantsBareETags(MemoryStore):
    """radosgw 16 (Ceph pacific), measured: PutObject with If-Match compares the header
    with its unquoted ETag, so the standard quoted form never matches (412)."""

    async def put(self, key: str, body: Body, meta: WriteMeta, expect: Expect | None = None) -> str:
        if expect is not None and expect.etag is not None and expect.quoted:
            await self._op("PutObject")
            raise S3Error("PreconditionFailed", key, "At least one of the pre-conditions you specified "
                          "did not hold", "PutObject", 412)
        return await super().put(key, body, meta, expect)


def test_a_server_that_wants_bare_etags_in_if_match_gets_them(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """Appends, overwrites and directory chmod on radosgw 16 failed with EIO as conflicts."""
    mem = WantsBareETags(min_part_size=PART)

    async def t(env: Env) -> None:
        await env.write_file("f", b"first")
        with caplog.at_level(logging.WARNING):
            fh = await open_and_write(env.fs, "f", b"", os.O_WRONLY | os.O_APPEND)
            await env.fs.write(fh, 5, b" appended")
            assert await close(env.fs, fh) is None
            fh = await open_and_write(env.fs, "f", b"third")  # O_TRUNC overwrite
            assert await close(env.fs, fh) is None
            d = await env.fs.mkdir(ROOT, "d", 0o755, os.getuid(), os.getgid())
            await env.fs.setattr(d.inode, mode=0o700)
        assert env.data("f") == b"third"
        assert env.mem.objects["d/"].metadata["mode"] == str(0o40700)
        assert len([r for r in caplog.records if "without quotes" in r.getMessage()]) == 1
        assert mem.calls["HeadObject"] <= 2  # asked once, when the quirk showed
        # a real conflict is still one
        await env.mem.put("f", Body(6, data=b"theirs"), WriteMeta())
        fh = await open_and_write(env.fs, "f", b"mine", os.O_WRONLY | os.O_TRUNC | os.O_CREAT)
        failure = await close(env.fs, fh)
        assert failure is not None and env.data("f") == b"theirs"

    run(tmp_path, t, mem=mem, attr_timeout=60.0)
