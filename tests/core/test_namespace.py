"""Namespace operations of S3Filesystem on the memory store: what lands in the bucket."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
import trio

from s3fsmpu.errors import (
    Exists,
    IsADirectory,
    NameTooLong,
    NotADirectory,
    NotEmpty,
    NotFound,
    ReadOnly,
)
from s3fsmpu.fs.inodes import Kind
from s3fsmpu.meta import encode
from s3fsmpu.store.base import Expect, Body, ObjectInfo, WriteMeta
from s3fsmpu.store.memory import MemoryStore
from tests.core.harness import PART, ROOT, Env, blob, run, wait_until

UID, GID = os.getuid(), os.getgid()


async def put(env: Env, key: str, data: bytes, meta: dict[str, str] | None = None) -> None:
    await env.mem.put(key, Body(len(data), data=data), WriteMeta(meta or {}))


def test_lookup_and_readdir_of_existing_objects(tmp_path: Path) -> None:
    async def t(env: Env) -> None:
        await put(env, "top.txt", b"hello")
        await put(env, "implicit/child", b"c")  # a directory only by common prefix
        await put(env, "marked/", b"")  # a directory marker
        assert sorted(await env.listdir()) == ["implicit", "marked", "top.txt"]
        f = await env.fs.lookup(ROOT, "top.txt")
        assert (f.kind, f.size) == (Kind.FILE, 5)
        assert stat.S_ISREG(f.mode) and stat.S_IMODE(f.mode) == 0o644
        d = await env.fs.lookup(ROOT, "implicit")
        assert d.kind is Kind.DIR and stat.S_ISDIR(d.mode)
        assert (await env.fs.lookup(ROOT, "marked")).kind is Kind.DIR
        assert await env.listdir(inode=d.inode) == ["child"]
        with pytest.raises(NotFound):
            await env.fs.lookup(ROOT, "missing")
        assert await env.read_all(env.fs, "top.txt") == b"hello"

    run(tmp_path, t)


def test_attributes_from_s3fs_metadata(tmp_path: Path) -> None:
    async def t(env: Env) -> None:
        await put(env, "f", b"x", {"mode": str(0o100600), "uid": "123", "gid": "456", "mtime": "1700000000"})
        a = await env.fs.lookup(ROOT, "f")
        assert (a.mode, a.uid, a.gid, a.mtime_ns) == (0o100600, 123, 456, 1_700_000_000 * 10**9)

    run(tmp_path, t)


def test_garbage_metadata_gives_usable_attributes(tmp_path: Path) -> None:
    async def t(env: Env) -> None:
        await put(env, "f", b"x", {"uid": "nobody", "gid": "", "mode": "rw-r--r--"})
        a = await env.fs.lookup(ROOT, "f")
        assert isinstance(a.uid, int) and isinstance(a.gid, int)
        assert stat.S_ISREG(a.mode)

    run(tmp_path, t)


def test_readdir_pages_through_large_directories(tmp_path: Path) -> None:
    from s3fsmpu.store.memory import MemoryStore

    mem = MemoryStore(min_part_size=PART, page_size=7)
    names = [f"n{i:03d}" for i in range(40)]

    async def t(env: Env) -> None:
        for n in names:
            await put(env, "big/" + n, b"")
        await put(env, "big/zdir/inner", b"")
        d = await env.fs.lookup(ROOT, "big")
        assert await env.listdir(inode=d.inode) == [*names, "zdir"]

    run(tmp_path, t, mem=mem)


def test_readdir_shows_files_still_being_written(tmp_path: Path) -> None:
    async def t(env: Env) -> None:
        await put(env, "old", b"o")
        fh = await env.create("new")
        await env.fs.write(fh, 0, b"pending")
        assert sorted(await env.listdir()) == ["new", "old"]
        assert "new" not in env.mem.objects
        await env.fs.flush(fh)
        await env.fs.release(fh)
        assert sorted(await env.listdir(env.other_client())) == ["new", "old"]

    run(tmp_path, t)


def test_mkdir_rmdir(tmp_path: Path) -> None:
    async def t(env: Env) -> None:
        a = await env.fs.mkdir(ROOT, "d", 0o750, UID, GID)
        assert a.kind is Kind.DIR and a.mode == stat.S_IFDIR | 0o750
        marker = env.mem.objects["d/"]
        assert marker.data == b""
        assert marker.metadata["mode"] == str(stat.S_IFDIR | 0o750)
        with pytest.raises(Exists):
            await env.fs.mkdir(ROOT, "d", 0o755, UID, GID)
        other = env.other_client()
        oa = await other.lookup(ROOT, "d")
        assert oa.kind is Kind.DIR and oa.mode == stat.S_IFDIR | 0o750
        await env.fs.rmdir(ROOT, "d")
        assert "d/" not in env.mem.objects
        with pytest.raises(NotFound):
            await other.lookup(ROOT, "d")

    run(tmp_path, t)


def test_rmdir_not_empty(tmp_path: Path) -> None:
    async def t(env: Env) -> None:
        d = await env.fs.mkdir(ROOT, "d", 0o755, UID, GID)
        await env.write_file("f", b"x", parent=d.inode)
        with pytest.raises(NotEmpty):
            await env.fs.rmdir(ROOT, "d")
        assert "d/" in env.mem.objects
        await put(env, "e/sub/x", b"")  # only a deeper common prefix
        with pytest.raises(NotEmpty):
            await env.fs.rmdir(ROOT, "e")
        with pytest.raises(NotADirectory):
            await env.fs.rmdir(d.inode, "f")
        # a file still being written counts too
        e2 = await env.fs.mkdir(ROOT, "e2", 0o755, UID, GID)
        fh = await env.create("pending", parent=e2.inode)
        with pytest.raises(NotEmpty):
            await env.fs.rmdir(ROOT, "e2")
        await env.fs.flush(fh)
        await env.fs.release(fh)

    run(tmp_path, t)


def test_unlink(tmp_path: Path) -> None:
    async def t(env: Env) -> None:
        await env.write_file("f", blob(2 * PART))
        await env.fs.lookup(ROOT, "f")
        await env.fs.unlink(ROOT, "f")
        assert "f" not in env.mem.objects
        with pytest.raises(NotFound):
            await env.fs.lookup(ROOT, "f")
        with pytest.raises(NotFound):
            await env.fs.unlink(ROOT, "f")
        await env.fs.mkdir(ROOT, "d", 0o755, UID, GID)
        with pytest.raises(IsADirectory):
            await env.fs.unlink(ROOT, "d")

    run(tmp_path, t)


def test_unlink_while_open_does_not_resurrect_the_file(tmp_path: Path) -> None:
    async def t(env: Env) -> None:
        fh = await env.create("tmpfile")
        await env.fs.write(fh, 0, b"scratch data")
        await env.fs.unlink(ROOT, "tmpfile")
        await env.fs.write(fh, 12, b" more")
        await env.fs.flush(fh)
        await env.fs.release(fh)
        assert "tmpfile" not in env.mem.objects
        assert env.mem.uploads == {}
        with pytest.raises(NotFound):
            await env.other_client().lookup(ROOT, "tmpfile")

    run(tmp_path, t)


def test_file_with_a_hole_flushed_then_unlinked_stays_readable(tmp_path: Path) -> None:
    """After a flush, the hole is no base byte to fetch from the object (found by
    tests/fuse/test_reference_mount.py: reads of it failed with ENOENT once unlink had
    deleted the object)."""
    async def t(env: Env) -> None:
        fh = await env.create("f")
        await env.fs.write(fh, 0, b"head")
        await env.fs.write(fh, 100, b"tail")
        await env.fs.flush(fh)
        await env.fs.unlink(ROOT, "f")
        assert await env.fs.read(fh, 0, 200) == b"head" + bytes(96) + b"tail"
        await env.fs.release(fh)
        assert env.mem.objects == {}

    run(tmp_path, t)


def test_an_existing_file_open_for_writing_reads_whole_after_unlink(tmp_path: Path) -> None:
    """Found by tests/fuse/test_reference_mount.py (S3FSMPU_MODEL_RANDOM=1,
    --hypothesis-seed=387109): a file opened O_RDWR (its object the base of an in-place
    edit, fetched only where read) and unlinked read ENOENT, its object gone. Its
    bytes now come into the spool before the DELETE."""
    data = blob(3 * PART + 300, seed=1)

    async def t(env: Env) -> None:
        await env.write_file("f", data)
        attr = await env.fs.lookup(ROOT, "f")
        fh = await env.fs.open(attr.inode, os.O_RDWR)
        await env.fs.write(fh, 10, b"edit")
        await env.fs.unlink(ROOT, "f")
        assert env.mem.objects == {}
        edited = data[:10] + b"edit" + data[14:]
        assert await env.fs.read(fh, 0, len(data) + 1) == edited
        await env.fs.write(fh, len(data), b"more")
        await env.fs.flush(fh)
        assert await env.fs.read(fh, 0, len(data) + 10) == edited + b"more"
        await env.fs.release(fh)
        assert env.mem.objects == {} and env.mem.uploads == {}

    run(tmp_path, t)


def test_an_existing_file_open_for_writing_reads_whole_after_a_rename_over_it(tmp_path: Path) -> None:
    data = blob(2 * PART + 7, seed=2)

    async def t(env: Env) -> None:
        await env.write_file("f", data)
        await env.write_file("g", b"the new f")
        attr = await env.fs.lookup(ROOT, "f")
        fh = await env.fs.open(attr.inode, os.O_RDWR)
        await env.fs.lookup(ROOT, "g")
        await env.fs.rename(ROOT, "g", ROOT, "f")
        assert env.data("f") == b"the new f"
        assert await env.fs.read(fh, 0, len(data) + 1) == data
        await env.fs.release(fh)
        assert env.data("f") == b"the new f" and set(env.mem.objects) == {"f"}

    run(tmp_path, t)


def test_rename_file_replaces_target(tmp_path: Path) -> None:
    data = blob(3 * PART + 5)

    async def t(env: Env) -> None:
        await env.write_file("a", data)
        await env.write_file("b", b"old target")
        await env.fs.lookup(ROOT, "a")
        await env.fs.rename(ROOT, "a", ROOT, "b")
        assert "a" not in env.mem.objects
        assert env.data("b") == data
        with pytest.raises(NotFound):
            await env.fs.lookup(ROOT, "a")
        assert (await env.fs.lookup(ROOT, "b")).size == len(data)
        assert await env.read_all(env.other_client(), "b") == data

    run(tmp_path, t)


def test_rename_file_into_other_directory(tmp_path: Path) -> None:
    async def t(env: Env) -> None:
        d = await env.fs.mkdir(ROOT, "d", 0o755, UID, GID)
        await env.write_file("f", b"content")
        await env.fs.rename(ROOT, "f", d.inode, "g")
        assert env.data("d/g") == b"content"
        assert "f" not in env.mem.objects
        assert await env.listdir(inode=d.inode) == ["g"]

    run(tmp_path, t)


def test_rename_directory_moves_everything_below(tmp_path: Path) -> None:
    async def t(env: Env) -> None:
        d = await env.fs.mkdir(ROOT, "d", 0o755, UID, GID)
        await env.write_file("a", b"A", parent=d.inode)
        sub = await env.fs.mkdir(d.inode, "sub", 0o755, UID, GID)
        await env.write_file("b", blob(2 * PART), parent=sub.inode)
        await put(env, "d/implicit/c", b"C")
        await put(env, "dd", b"not below d")
        await env.fs.rename(ROOT, "d", ROOT, "e")
        assert sorted(env.mem.objects) == ["dd", "e/", "e/a", "e/implicit/c", "e/sub/", "e/sub/b"]
        assert env.data("e/sub/b") == blob(2 * PART)
        e = await env.fs.lookup(ROOT, "e")
        assert sorted(await env.listdir(inode=e.inode)) == ["a", "implicit", "sub"]
        with pytest.raises(NotFound):
            await env.fs.lookup(ROOT, "d")

    run(tmp_path, t)


def test_rename_directory_onto_non_empty_directory(tmp_path: Path) -> None:
    async def t(env: Env) -> None:
        await put(env, "a/x", b"1")
        await put(env, "b/y", b"2")
        with pytest.raises(NotEmpty):
            await env.fs.rename(ROOT, "a", ROOT, "b")
        assert sorted(env.mem.objects) == ["a/x", "b/y"]

    run(tmp_path, t)


def test_rename_of_open_file_then_write_on(tmp_path: Path) -> None:
    async def t(env: Env) -> None:
        fh = await env.create("a")
        await env.fs.write(fh, 0, b"first ")
        await env.fs.rename(ROOT, "a", ROOT, "b")
        await env.fs.write(fh, 6, b"second")
        await env.fs.flush(fh)
        await env.fs.release(fh)
        assert env.data("b") == b"first second"
        assert "a" not in env.mem.objects
        assert env.mem.uploads == {}

    run(tmp_path, t)


def test_rsync_temp_then_rename(tmp_path: Path) -> None:
    """rsync: write .name.XXXX, set mtime, rename over the target; the next run finds nothing to do."""
    data = blob(2 * PART + 3)
    mtime = 1_650_000_000_987_654_321

    async def t(env: Env) -> None:
        await env.write_file("name", b"stale version")
        fh = await env.create(".name.Ab12Cd", mode=0o600)
        await env.fs.write(fh, 0, data)
        await env.fs.flush(fh)
        await env.fs.release(fh)
        tmp = await env.fs.lookup(ROOT, ".name.Ab12Cd")
        await env.fs.setattr(tmp.inode, mode=0o644, mtime_ns=mtime)
        await env.fs.rename(ROOT, ".name.Ab12Cd", ROOT, "name")
        assert sorted(env.mem.objects) == ["name"]
        assert env.data("name") == data
        # a fresh mount (the next rsync run) sees the same size and mtime
        a = await env.other_client().lookup(ROOT, "name")
        assert (a.size, a.mtime_ns, a.mode) == (len(data), mtime, stat.S_IFREG | 0o644)

    run(tmp_path, t)


def test_chmod_chown_utimens_on_closed_file(tmp_path: Path) -> None:
    data = blob(2 * PART + 1)

    async def t(env: Env) -> None:
        await env.write_file("f", data)
        a = await env.fs.lookup(ROOT, "f")
        await env.fs.setattr(a.inode, mode=0o600, uid=4242, gid=4343, mtime_ns=1_600_000_000_000_000_001)
        # three changes, no request yet: they are coalesced into one copy
        assert env.mem.calls["CopyObject"] == 0
        assert (await env.fs.getattr(a.inode)).mode == stat.S_IFREG | 0o600
        await env.fs.apply_pending_metadata()
        assert env.mem.calls["CopyObject"] == 1
        obj = env.mem.objects["f"]
        assert obj.data == data
        assert obj.metadata["mode"] == str(stat.S_IFREG | 0o600)
        assert (obj.metadata["uid"], obj.metadata["gid"]) == ("4242", "4343")
        assert obj.metadata["mtime"] == "1600000000.000000001"
        assert env.mem.calls["CopyObject"] >= 1
        o = await env.other_client().lookup(ROOT, "f")
        assert (o.mode, o.uid, o.gid, o.mtime_ns) == (stat.S_IFREG | 0o600, 4242, 4343, 1_600_000_000_000_000_001)
        # a chmod alone keeps the mtime set before
        await env.fs.setattr(a.inode, mode=0o640)
        await env.fs.apply_pending_metadata()
        assert env.mem.objects["f"].metadata["mtime"] == "1600000000.000000001"
        assert env.mem.objects["f"].metadata["mode"] == str(stat.S_IFREG | 0o640)

    run(tmp_path, t)


class CopyAndHeadGates(MemoryStore):
    """CopyObject waits at a gate before it copies, HeadObject after it looked: until
    the test opens the gate of that call (`gates`)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.gates: dict[str, trio.Event] = {}
        self.arrived: dict[str, trio.Event] = {"copy": trio.Event(), "head": trio.Event()}

    async def _gate(self, name: str) -> None:
        if name in self.gates:
            self.arrived[name].set()
            await self.gates[name].wait()

    async def copy(self, src: str, dst: str, meta: WriteMeta | None = None,
                   src_etag: str | None = None, expect: Expect | None = None) -> str:
        await self._gate("copy")
        return await super().copy(src, dst, meta, src_etag, expect)

    async def head(self, key: str) -> ObjectInfo:
        info = await super().head(key)
        await self._gate("head")
        return info


def test_attributes_stay_while_their_copy_is_in_flight(tmp_path: Path) -> None:
    """A HEAD answered with the object as it was before the self-copy with new attributes
    must not bring back the old mode and mtime: not while the copy is in flight, nor when
    the answer arrives after it landed (found by tests/fuse/test_reference_mount.py:
    `stat` after `touch -d` showed the old mtime, then trusted for --attr-timeout)."""
    store = CopyAndHeadGates(min_part_size=PART)
    wanted = (stat.S_IFREG | 0o600, 1_600_000_000_000_000_001)

    async def t(env: Env) -> None:
        await env.write_file("f", b"old attributes")
        a = await env.fs.lookup(ROOT, "f")
        await env.fs.setattr(a.inode, mode=0o600, mtime_ns=wanted[1])
        store.gates["copy"] = trio.Event()
        env.nursery.start_soon(env.fs.apply_pending_metadata)
        await store.arrived["copy"].wait()
        got = await env.fs.getattr(a.inode)  # the copy is in flight
        assert (got.mode, got.mtime_ns) == wanted
        store.gates["copy"].set()
        await wait_until(lambda: store.objects["f"].metadata["mode"] == str(wanted[0]))

        later = (stat.S_IFREG | 0o640, wanted[1] + 1)
        await env.fs.setattr(a.inode, mode=0o640, mtime_ns=later[1])
        head_gate = store.gates["head"] = trio.Event()
        answers: list[tuple[int, int]] = []

        async def stat_() -> None:
            got = await env.fs.getattr(a.inode)
            answers.append((got.mode, got.mtime_ns))

        env.nursery.start_soon(stat_)
        await store.arrived["head"].wait()  # it has looked: the attributes before `later`
        del store.gates["head"]
        await env.fs.apply_pending_metadata()  # the copy with `later` lands
        head_gate.set()  # then the old answer arrives
        await wait_until(lambda: bool(answers))
        got = await env.fs.getattr(a.inode)
        assert answers == [later] and (got.mode, got.mtime_ns) == later

    run(tmp_path, t, mem=store, attr_timeout=0.0)


def test_rename_carries_pending_attributes_in_its_one_copy(tmp_path: Path) -> None:
    """rsync's sequence after close: utimens, chmod, rename -> one CopyObject, one delete."""
    data = blob(100)

    async def t(env: Env) -> None:
        await env.write_file(".f.tmp", data)
        a = await env.fs.lookup(ROOT, ".f.tmp")
        await env.fs.setattr(a.inode, mtime_ns=1_500_000_000_000_000_000)
        await env.fs.setattr(a.inode, mode=0o600)
        await env.fs.rename(ROOT, ".f.tmp", ROOT, "f")
        await env.fs.apply_pending_metadata()
        assert env.mem.calls["CopyObject"] == 1 and env.mem.calls["DeleteObject"] == 1
        assert ".f.tmp" not in env.mem.objects
        obj = env.mem.objects["f"]
        assert obj.data == data
        assert obj.metadata["mode"] == str(stat.S_IFREG | 0o600)
        assert obj.metadata["mtime"] == "1500000000"

    run(tmp_path, t)


def test_chmod_directory(tmp_path: Path) -> None:
    async def t(env: Env) -> None:
        d = await env.fs.mkdir(ROOT, "d", 0o755, UID, GID)
        await env.fs.setattr(d.inode, mode=0o700)
        assert env.mem.objects["d/"].metadata["mode"] == str(stat.S_IFDIR | 0o700)
        assert (await env.other_client().lookup(ROOT, "d")).mode == stat.S_IFDIR | 0o700

    run(tmp_path, t)


def test_directory_whose_marker_went_away_shows_the_defaults(tmp_path: Path) -> None:
    """The node stays while the kernel holds it: its attributes must follow S3
    (found by tests/fuse/test_reference_mount.py)."""
    async def t(env: Env) -> None:
        d = await env.fs.mkdir(ROOT, "d", 0o700, UID, GID)
        await env.fs.mkdir(d.inode, "sub", 0o755, UID, GID)
        await env.mem.delete("d/")  # another client; "d/sub/" keeps the directory
        assert (await env.fs.getattr(d.inode)).mode == stat.S_IFDIR | 0o755
        assert (await env.fs.lookup(ROOT, "d")).mode == stat.S_IFDIR | 0o755

    run(tmp_path, t, attr_timeout=0.0)


def test_symlink(tmp_path: Path) -> None:
    async def t(env: Env) -> None:
        a = await env.fs.symlink(ROOT, "link", "../some/target", UID, GID)
        assert a.kind is Kind.SYMLINK and stat.S_ISLNK(a.mode)
        obj = env.mem.objects["link"]
        # as s3fs-fuse stores it: the target as content, S_IFLNK in the mode
        assert obj.data == b"../some/target"
        assert stat.S_ISLNK(int(obj.metadata["mode"]))
        other = env.other_client()
        oa = await other.lookup(ROOT, "link")
        assert oa.kind is Kind.SYMLINK and oa.size == len(b"../some/target")
        assert await other.readlink(oa.inode) == "../some/target"
        with pytest.raises(Exists):
            await env.fs.symlink(ROOT, "link", "x", UID, GID)

    run(tmp_path, t)


def test_symlink_written_by_s3fs_is_read(tmp_path: Path) -> None:
    async def t(env: Env) -> None:
        await put(env, "l", b"target/path", encode(stat.S_IFLNK | 0o777, 0, 0, 10**18))
        a = await env.fs.lookup(ROOT, "l")
        assert a.kind is Kind.SYMLINK
        assert await env.fs.readlink(a.inode) == "target/path"

    run(tmp_path, t)


def test_create_exclusive_on_existing(tmp_path: Path) -> None:
    async def t(env: Env) -> None:
        await put(env, "f", b"there")
        with pytest.raises(Exists):
            await env.fs.create(ROOT, "f", 0o644, os.O_WRONLY | os.O_CREAT | os.O_EXCL, UID, GID)
        assert env.data("f") == b"there"

    run(tmp_path, t)


def test_create_over_directory(tmp_path: Path) -> None:
    async def t(env: Env) -> None:
        await env.fs.mkdir(ROOT, "d", 0o755, UID, GID)
        await env.fs.lookup(ROOT, "d")
        with pytest.raises(IsADirectory):
            await env.create("d")

    run(tmp_path, t)


def test_names_and_keys_too_long(tmp_path: Path) -> None:
    async def t(env: Env) -> None:
        with pytest.raises(NameTooLong):
            await env.create("x" * 256)
        await env.create("y" * 255)  # the limit itself is fine
        parent = ROOT
        for i in range(4):  # 4 x 251 bytes + slashes: the key passes 1,024 bytes
            parent = (await env.fs.mkdir(parent, f"{i}" + "d" * 250, 0o755, UID, GID)).inode
        with pytest.raises(NameTooLong):
            await env.create("f" * 30, parent=parent)

    run(tmp_path, t)


def test_read_only_mount(tmp_path: Path) -> None:
    async def t(env: Env) -> None:
        await put(env, "f", b"x")
        ro = env.other_client()
        a = await ro.lookup(ROOT, "f")
        with pytest.raises(ReadOnly):
            await ro.create(ROOT, "g", 0o644, os.O_WRONLY | os.O_CREAT, UID, GID)
        with pytest.raises(ReadOnly):
            await ro.open(a.inode, os.O_WRONLY)
        with pytest.raises(ReadOnly):
            await ro.unlink(ROOT, "f")
        with pytest.raises(ReadOnly):
            await ro.mkdir(ROOT, "d", 0o755, UID, GID)
        assert sorted(env.mem.objects) == ["f"]

    run(tmp_path, t)


def test_read_large_object_sequentially_and_randomly(tmp_path: Path) -> None:
    data = blob(3 << 20, seed=11)

    async def t(env: Env) -> None:
        await put(env, "big", data)
        a = await env.fs.lookup(ROOT, "big")
        fh = await env.fs.open(a.inode, os.O_RDONLY)
        out = b""
        while len(out) < len(data):
            out += await env.fs.read(fh, len(out), 128 << 10)
        assert out == data
        for off in (5, (1 << 20) + 7, len(data) - 3, 0):
            assert await env.fs.read(fh, off, 1000) == data[off : off + 1000]
        assert await env.fs.read(fh, len(data), 10) == b""
        await env.fs.release(fh)

    run(tmp_path, t)


def test_shutdown_publishes_open_files(tmp_path: Path) -> None:
    data = blob(2 * PART + 17)

    async def t(env: Env) -> None:
        fh = await env.create("unclosed")
        await env.fs.write(fh, 0, data)
        await env.fs.shutdown()
        assert env.data("unclosed") == data
        assert env.mem.uploads == {}

    run(tmp_path, t)


def test_rename_directory_with_a_file_still_being_written(tmp_path: Path) -> None:
    async def t(env: Env) -> None:
        d = await env.fs.mkdir(ROOT, "d", 0o755, UID, GID)
        fh = await env.create("f", parent=d.inode)
        await env.fs.write(fh, 0, b"written before the rename")
        await env.fs.rename(ROOT, "d", ROOT, "e")
        await env.fs.write(fh, 25, b", and after")
        await env.fs.flush(fh)
        await env.fs.release(fh)
        assert sorted(env.mem.objects) == ["e/", "e/f"]
        assert env.data("e/f") == b"written before the rename, and after"
        assert env.mem.uploads == {}

    run(tmp_path, t)


def test_chmod_while_the_upload_is_running(tmp_path: Path) -> None:
    data = blob(3 * PART + 1)

    async def t(env: Env) -> None:
        fh = await env.create("f")
        await env.fs.write(fh, 0, data[: 3 * PART])  # parts upload: the upload exists
        a = await env.fs.lookup(ROOT, "f")
        await env.fs.setattr(a.inode, mode=0o600)
        await env.fs.write(fh, 3 * PART, data[3 * PART :])
        await env.fs.flush(fh)
        await env.fs.release(fh)
        assert env.data("f") == data
        assert env.mem.objects["f"].metadata["mode"] == str(stat.S_IFREG | 0o600)
        assert env.mem.uploads == {}
        assert (await env.other_client().lookup(ROOT, "f")).mode == stat.S_IFREG | 0o600

    run(tmp_path, t)


async def _put_multipart(env: Env, key: str, data: bytes) -> str:
    """An object uploaded by some other client as a multipart upload."""
    from s3fsmpu.store.base import PartRef

    uid = await env.mem.create_multipart(key, WriteMeta())
    refs = []
    for n, off in enumerate(range(0, len(data), PART), 1):
        chunk = data[off : off + PART]
        res = await env.mem.upload_part(key, uid, n, Body(len(chunk), data=chunk))
        refs.append(PartRef(n, res.etag or ""))
    return (await env.mem.complete_multipart(key, uid, refs)).etag or ""


def test_read_after_chmod_of_multipart_object(tmp_path: Path) -> None:
    data = blob(3 * PART + 5)

    async def t(env: Env) -> None:
        await _put_multipart(env, "big", data)
        a = await env.fs.lookup(ROOT, "big")
        await env.fs.setattr(a.inode, mode=0o600)  # `chmod 600 big && cat big`
        fh = await env.fs.open(a.inode, os.O_RDONLY)
        assert await env.fs.read(fh, 0, len(data) + 10) == data
        await env.fs.release(fh)

    run(tmp_path, t)


def test_read_after_rename_of_multipart_object(tmp_path: Path) -> None:
    data = blob(3 * PART + 5)

    async def t(env: Env) -> None:
        await _put_multipart(env, "big", data)
        a = await env.fs.lookup(ROOT, "big")
        await env.fs.rename(ROOT, "big", ROOT, "moved")  # `mv big moved && cat moved`
        b = await env.fs.lookup(ROOT, "moved")
        assert b.inode == a.inode
        fh = await env.fs.open(b.inode, os.O_RDONLY)
        assert await env.fs.read(fh, 0, len(data) + 10) == data
        await env.fs.release(fh)

    run(tmp_path, t)


def test_key_of_exactly_1024_bytes_is_allowed(tmp_path: Path) -> None:
    async def t(env: Env) -> None:
        parent = ROOT
        for i in range(4):  # 4 x (250 bytes + "/") = 1,004 bytes
            parent = (await env.fs.mkdir(parent, f"{i}" + "d" * 249, 0o755, UID, GID)).inode
        await env.write_file("f" * 20, b"x", parent=parent)  # key of exactly 1,024 bytes
        (key,) = [k for k in env.mem.objects if not k.endswith("/")]
        assert len(key.encode()) == 1024
        with pytest.raises(NameTooLong):
            await env.create("f" * 21, parent=parent)  # 1,025 bytes

    run(tmp_path, t)


def test_a_directory_another_client_replaced_with_a_file_lists_as_a_file(tmp_path: Path) -> None:
    """Found by the reference model through the mount (--hypothesis-seed=23838): the listing
    kept the directory's inode for the name, so readdir said directory and lstat file."""
    async def t(env: Env) -> None:
        d = await env.fs.mkdir(ROOT, "d", 0o755, os.getuid(), os.getgid())
        await env.mem.delete("d/")  # another client: the directory goes, a file comes
        await env.mem.put("d", Body(4, data=b"file"), WriteMeta())
        fh = env.fs.opendir(ROOT)
        entries = {e.name: e.attr async for e in env.fs.readdir(fh, 0)}
        env.fs.releasedir(fh)
        assert entries["d"].kind is Kind.FILE and entries["d"].size == 4
        assert entries["d"].inode != d.inode
        assert (await env.fs.lookup(ROOT, "d")).kind is Kind.FILE
        assert env.data("d") == b"file"

    run(tmp_path, t, attr_timeout=0.0)
