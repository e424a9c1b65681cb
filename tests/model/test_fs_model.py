"""A reference model of the whole filesystem core (STYLE.md habit 10, issue 8).

A hypothesis RuleBasedStateMachine drives S3Filesystem on the MemoryStore
(64 KiB parts, attr_timeout=0 so every answer is fresh) through random
sequences of create, write, append, truncate, flush, fsync, release,
open, rename (files and directories), unlink, mkdir, rmdir, chmod,
utimens, applying pending attribute changes, and "another client"
putting or deleting objects straight in the store. A plain model (path ->
bytes, mode, mtime; directory markers) is compared after every step with:

- the bucket: every closed or freshly flushed file holds exactly the model's
  bytes, and its metadata (once pending attribute changes were applied)
  decodes to the model's mode and mtime; every marker is there; no key is
  there that the model does not know; no upload is left once no file is open;
- what the mount shows: the tree from a recursive readdir of the root, each
  entry's kind, size and mode, lookup + getattr of every path, the bytes of
  every file read through a new descriptor, and of every open descriptor.

Which directories exist is read from the bucket (after the bucket itself was
checked against the model): every prefix of a key, markers included, as S3
and the mount see them; a file being written whose directory exists only by
keys that went away is unreachable by path, as it is through the kernel.

Operations are issued the way the kernel issues them: names are looked up
before they are opened, renamed or removed, and the lookups are forgotten
afterwards; cases the VFS answers by itself (EISDIR for a file renamed
over a directory, EINVAL for a directory moved into itself) are not sent.

The default run is 60 sequences of 25 steps; S3FSMPU_SLOW=1 runs 500
sequences of 60 steps. Shrunk failures are kept at the end as named tests
(`run_steps` replays hypothesis's printout). While a bug they pin is open, its
test's name goes into KNOWN_BUGS and the random model steps around it (each
rule checks `self.avoid`), so that it keeps looking for new ones.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from s3fsmpu import meta as metadata
from s3fsmpu.config import MountConfig, S3Location
from s3fsmpu.errors import Exists, NotADirectory, NotFound, S3FSError, to_errno
from s3fsmpu.fs.core import Attr, S3Filesystem
from s3fsmpu.fs.inodes import Kind
from s3fsmpu.store.base import Body, WriteMeta
from s3fsmpu.store.memory import MemoryStore
from s3fsmpu.upload.driver import Uploader
from tests.core.harness import PART, ROOT, blob, upload_config
from tests.model.loop import TrioLoop

SLOW = os.environ.get("S3FSMPU_SLOW") == "1"
# The model steps around the s3fsmpu bugs pinned by the named tests at the end of
# this module (they fail until fixed), so that it keeps finding new ones; each
# named test walks into its own bug. S3FSMPU_MODEL_KNOWN_BUGS=1 walks into all.
KNOWN_BUGS: frozenset[str] = frozenset()  # none open right now; add a named test's name to steer around it
AVOID = frozenset() if os.environ.get("S3FSMPU_MODEL_KNOWN_BUGS") == "1" else KNOWN_BUGS
UID, GID = os.getuid(), os.getgid()
FILE_DEFAULT = stat.S_IFREG | 0o644
DIR_DEFAULT = stat.S_IFDIR | 0o755
NAMES = ("a", "b", "c")
PATHS = NAMES + tuple(f"{x}/{y}" for x in NAMES for y in NAMES)
CHUNK = 100 * 1024

paths = st.sampled_from(PATHS)
modes = st.sampled_from([0o644, 0o600, 0o755, 0o640])
offsets = st.one_of(st.sampled_from([0, 1, PART - 1, PART, 2 * PART + 7]), st.integers(0, 3 * PART))
lengths = st.one_of(st.sampled_from([1, 100, PART, PART + 1]), st.integers(1, 2 * PART))
sizes = st.one_of(st.sampled_from([0, 1, PART - 1, PART, PART + 1, 2 * PART]), st.integers(0, 3 * PART))
picks = st.integers(0, 7)
seeds = st.integers(0, 2**16)
mtimes = st.integers(0, 2**33).map(lambda s: s * 1_000_000_000 + 123_456_789)


@dataclass(eq=False)
class MFile:
    """One file (inode) of the model."""

    path: str | None  # None: unlinked or replaced while open (an orphan)
    data: bytearray
    mode: int
    mtime_ns: int | None = None  # known after utimens; writes stamp "now"
    handles: set[int] = field(default_factory=set)
    dirty: bool = False  # written since it was last published: S3 may hold an older version
    meta_pending: bool = False  # chmod/utimens that S3 may not have yet


def ancestors(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


class FilesystemModel(RuleBasedStateMachine):
    avoid: frozenset[str] = AVOID  # known bugs not to walk into

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="s3fsmpu-model-")
        self.mem = MemoryStore(min_part_size=PART)
        self.config = MountConfig(S3Location("bucket"), self.tmp + "/mnt", upload=upload_config(),
                                  cache_dir=self.tmp + "/cache", attr_timeout=0.0)
        self.loop = TrioLoop()
        self.fs: S3Filesystem = self.loop.run(self._setup)
        self.files: dict[str, MFile] = {}
        self.markers: dict[str, int | None] = {}  # directory -> mode in its marker (None: no metadata)
        self.handles: dict[int, MFile] = {}
        self.other_writes = 0

    async def _setup(self) -> S3Filesystem:
        assert self.loop.nursery is not None
        self.uploader = Uploader(self.mem, self.config.upload, self.config.cache_dir, self.loop.nursery)
        return S3Filesystem(self.mem, self.config, self.uploader, self.loop.nursery)

    # ---- running operations ---------------------------------------------------
    async def _lookup(self, path: str, held: list[int]) -> Attr:
        """The kernel's path walk: one lookup per component, each held until the op is done."""
        inode, attr = ROOT, None
        for name in path.split("/"):
            if attr is not None and attr.kind is not Kind.DIR:
                raise NotADirectory(path)  # the kernel's path walk stops here
            attr = await self.fs.lookup(inode, name)
            held.append(attr.inode)
            inode = attr.inode
        assert attr is not None
        return attr

    async def _parent(self, path: str, held: list[int]) -> tuple[int, str]:
        parent, _, name = path.rpartition("/")
        if not parent:
            return ROOT, name
        attr = await self._lookup(parent, held)
        if attr.kind is not Kind.DIR:
            raise NotADirectory(parent)
        return attr.inode, name

    def _do(self, op: Callable[[list[int]], Awaitable[Any]], expect: int | None = None) -> Any:
        """Run `op` in the trio loop; it must fail with errno `expect`, or succeed if None."""
        held: list[int] = []

        async def run() -> Any:
            try:
                return await op(held)
            finally:
                for inode in held:
                    self.fs.forget(inode, 1)

        try:
            result = self.loop.run(run)
        except S3FSError as exc:
            got = to_errno(exc)
            assert expect is not None, f"unexpected error: {exc!r}"
            assert got == expect, f"expected {errno.errorcode[expect]}, got {errno.errorcode.get(got)}: {exc!r}"
            return None
        assert expect is None, f"expected {errno.errorcode[expect]}, but the operation succeeded"
        return result

    # ---- what the model says is there -------------------------------------------
    def _dirs(self) -> set[str]:
        """Directories S3 shows: every prefix of a key that is there (markers included)."""
        return {a for key in self.mem.objects for a in ancestors(key)}

    def _visible(self) -> tuple[dict[str, MFile], set[str]]:
        dirs = self._dirs()
        files = {p: f for p, f in self.files.items() if all(a in dirs for a in ancestors(p))}
        return files, dirs

    def _kind(self, path: str) -> str | None:
        files, dirs = self._visible()
        return "file" if path in files else "dir" if path in dirs else None

    def _walk_error(self, path: str) -> int | None:
        """The errno of the lookups leading to `path`'s parent, or None."""
        files, dirs = self._visible()
        for a in ancestors(path):
            if a in files:
                return errno.ENOTDIR
            if a not in dirs:
                return errno.ENOENT
        return None

    def _below(self, path: str) -> bool:
        base = path + "/"
        return any(p.startswith(base) for p in self.files) or any(m.startswith(base) for m in self.markers)

    def _handle(self, pick: int) -> tuple[int, MFile]:
        fhs = sorted(self.handles)
        fh = fhs[pick % len(fhs)]
        return fh, self.handles[fh]

    # ---- rules: files ----------------------------------------------------------
    @rule(path=paths, mode=modes)
    def create(self, path: str, mode: int) -> None:
        """open(path, O_RDWR | O_CREAT | O_TRUNC, mode) as the kernel sends it."""
        err = self._walk_error(path)
        kind = self._kind(path) if err is None else None

        async def op(held: list[int]) -> tuple[str, int | None]:
            parent, name = await self._parent(path, held)
            try:
                attr = await self.fs.lookup(parent, name)
            except NotFound:
                fh, attr = await self.fs.create(parent, name, mode, os.O_RDWR | os.O_CREAT | os.O_TRUNC, UID, GID)
                held.append(attr.inode)
                return "created", fh
            held.append(attr.inode)
            if attr.kind is Kind.DIR:
                return "dir", None  # the kernel answers EISDIR itself
            return "opened", await self.fs.open(attr.inode, os.O_RDWR | os.O_TRUNC)

        result = self._do(op, err)
        if result is None:
            return
        how, fh = result
        assert how == {None: "created", "file": "opened", "dir": "dir"}[kind], (how, kind)
        if fh is None:
            return
        if how == "created":
            f = self.files[path] = MFile(path, bytearray(), stat.S_IFREG | mode)
        else:
            f = self.files[path]
            f.data.clear()
            f.mtime_ns = None
        f.dirty = True
        f.handles.add(fh)
        self.handles[fh] = f
        self._check()

    @rule(path=paths)
    def open_rw(self, path: str) -> None:
        """open(path, O_RDWR): an update in place of an existing file."""
        err = self._walk_error(path) or {None: errno.ENOENT, "dir": errno.EISDIR, "file": None}[self._kind(path)]

        async def op(held: list[int]) -> int:
            attr = await self._lookup(path, held)
            return await self.fs.open(attr.inode, os.O_RDWR)

        fh = self._do(op, err)
        if fh is not None:
            f = self.files[path]
            f.handles.add(fh)
            self.handles[fh] = f
        self._check()

    def _write(self, fh: int, f: MFile, offset: int, data: bytes) -> None:
        n = self._do(lambda held: self.fs.write(fh, offset, data))
        assert n == len(data)
        if offset > len(f.data):
            f.data.extend(bytes(offset - len(f.data)))
        f.data[offset : offset + len(data)] = data
        f.dirty = True
        f.mtime_ns = None

    @precondition(lambda self: self.handles)
    @rule(pick=picks, offset=offsets, length=lengths, seed=seeds)
    def write(self, pick: int, offset: int, length: int, seed: int) -> None:
        fh, f = self._handle(pick)
        self._write(fh, f, offset, blob(length, seed))
        self._check()

    @precondition(lambda self: self.handles)
    @rule(pick=picks, length=lengths, seed=seeds)
    def append(self, pick: int, length: int, seed: int) -> None:
        fh, f = self._handle(pick)
        self._write(fh, f, len(f.data), blob(length, seed))
        self._check()

    @rule(path=paths, size=sizes)
    def truncate(self, path: str, size: int) -> None:
        """truncate(path, size): setattr with a size."""
        err = self._walk_error(path)
        kind = self._kind(path) if err is None else None
        if kind == "dir":
            return  # the kernel answers EISDIR itself
        if kind is None and err is None:
            err = errno.ENOENT

        async def op(held: list[int]) -> Attr:
            attr = await self._lookup(path, held)
            return await self.fs.setattr(attr.inode, size=size)

        attr = self._do(op, err)
        if attr is None:
            return
        f = self.files[path]
        del f.data[size:]
        f.data.extend(bytes(size - len(f.data)))
        if f.handles:
            f.dirty = True
        else:  # a closed file is published at once, with its attributes
            f.dirty = f.meta_pending = False
        assert attr.size == size
        self._check()

    def _published(self, f: MFile) -> None:
        if f.path is not None:
            f.dirty = False

    @precondition(lambda self: self.handles)
    @rule(pick=picks)
    def flush(self, pick: int) -> None:
        fh, f = self._handle(pick)
        self._do(lambda held: self.fs.flush(fh))
        self._published(f)
        self._check()

    @precondition(lambda self: self.handles)
    @rule(pick=picks)
    def fsync(self, pick: int) -> None:
        fh, f = self._handle(pick)
        self._do(lambda held: self.fs.fsync(fh))
        self._published(f)
        self._check()

    @precondition(lambda self: self.handles)
    @rule(pick=picks)
    def release(self, pick: int) -> None:
        """close() without a flush first (the kernel's flush comes from a separate rule)."""
        fh, f = self._handle(pick)
        self._release(fh)
        self._check()

    def _release(self, fh: int) -> None:
        f = self.handles.pop(fh)
        self._do(lambda held: self.fs.release(fh))
        f.handles.discard(fh)
        if not f.handles:
            self._published(f)

    # ---- rules: namespace -----------------------------------------------------
    @rule(path=paths)
    def unlink(self, path: str) -> None:
        err = self._walk_error(path) or {None: errno.ENOENT, "dir": errno.EISDIR, "file": None}[self._kind(path)]

        async def op(held: list[int]) -> None:
            await self._lookup(path, held)
            parent, name = await self._parent(path, held)
            await self.fs.unlink(parent, name)

        self._do(op, err)
        if err is None:
            self.files.pop(path).path = None
        self._check()

    @rule(src=paths, dst=paths)
    def rename(self, src: str, dst: str) -> None:
        err = self._walk_error(src) or self._walk_error(dst)
        ks = kd = None
        if err is None:
            ks, kd = self._kind(src), self._kind(dst)
            if ks is None:
                err = errno.ENOENT
            elif (src == dst or dst.startswith(src + "/") or src.startswith(dst + "/")
                  or (ks == "file" and kd == "dir") or (ks == "dir" and kd == "file")):
                return  # the VFS answers these itself (0, EINVAL, ENOTEMPTY, EISDIR, ENOTDIR)
            elif ks == "dir" and kd == "dir" and self._below(dst):
                err = errno.ENOTEMPTY

        async def op(held: list[int]) -> None:
            sp, sn = await self._parent(src, held)  # both parents first, as the VFS does
            dp, dn = await self._parent(dst, held)
            held.append((await self.fs.lookup(sp, sn)).inode)
            try:
                held.append((await self.fs.lookup(dp, dn)).inode)
            except NotFound:
                pass
            await self.fs.rename(sp, sn, dp, dn)

        self._do(op, err)
        if err is not None:
            self._check()
            return
        if ks == "file":
            f = self.files.pop(src)
            old = self.files.pop(dst, None)
            if old is not None:
                old.path = None  # replaced: an orphan if it is still open
            f.path = dst
            self.files[dst] = f
            if not f.handles:
                f.meta_pending = False  # the copy carries changed attributes
        else:
            self.markers[dst] = self.markers.pop(src, None)  # the new directory always gets a marker
            for p in sorted(self.files):
                if p.startswith(src + "/"):
                    f = self.files.pop(p)
                    f.path = dst + p[len(src):]
                    self.files[f.path] = f
                    if f.handles:
                        f.dirty = False  # published under the old name, then moved
            for m in sorted(self.markers):
                if m.startswith(src + "/"):
                    self.markers[dst + m[len(src):]] = self.markers.pop(m)
        self._check()

    @rule(path=paths, mode=modes)
    def mkdir(self, path: str, mode: int) -> None:
        err = self._walk_error(path) or (errno.EEXIST if self._kind(path) else None)

        async def op(held: list[int]) -> Attr:
            parent, name = await self._parent(path, held)
            try:
                held.append((await self.fs.lookup(parent, name)).inode)
            except NotFound:
                pass
            else:
                raise Exists(path)  # the kernel answers EEXIST itself
            attr = await self.fs.mkdir(parent, name, mode, UID, GID)
            held.append(attr.inode)
            return attr

        attr = self._do(op, err)
        if attr is not None:
            self.markers[path] = stat.S_IFDIR | mode
            assert attr.mode == stat.S_IFDIR | mode
        self._check()

    @rule(path=paths)
    def rmdir(self, path: str) -> None:
        err = self._walk_error(path)
        if err is None:
            kind = self._kind(path)
            err = {None: errno.ENOENT, "file": errno.ENOTDIR, "dir": None}[kind]
            if kind == "dir" and self._below(path):
                err = errno.ENOTEMPTY

        async def op(held: list[int]) -> None:
            if (await self._lookup(path, held)).kind is not Kind.DIR:
                raise NotADirectory(path)  # the kernel answers ENOTDIR itself
            parent, name = await self._parent(path, held)
            await self.fs.rmdir(parent, name)

        self._do(op, err)
        if err is None:
            self.markers.pop(path, None)
        self._check()

    @rule(path=paths, mode=modes)
    def chmod(self, path: str, mode: int) -> None:
        err = self._walk_error(path)
        kind = self._kind(path) if err is None else None
        if err is None and kind is None:
            err = errno.ENOENT

        async def op(held: list[int]) -> Attr:
            attr = await self._lookup(path, held)
            return await self.fs.setattr(attr.inode, mode=mode)

        attr = self._do(op, err)
        if attr is None:
            return
        if kind == "file":
            f = self.files[path]
            f.mode = stat.S_IFREG | mode
            f.meta_pending = True
            assert attr.mode == f.mode
        else:
            self.markers[path] = stat.S_IFDIR | mode  # written at once
            assert attr.mode == stat.S_IFDIR | mode
        self._check()

    @rule(path=paths, mtime=mtimes)
    def utimens(self, path: str, mtime: int) -> None:
        err = self._walk_error(path)
        kind = self._kind(path) if err is None else None
        if kind == "dir":
            return  # directories' mtimes are not modelled
        if err is None and kind is None:
            err = errno.ENOENT

        async def op(held: list[int]) -> Attr:
            attr = await self._lookup(path, held)
            return await self.fs.setattr(attr.inode, mtime_ns=mtime)

        attr = self._do(op, err)
        if attr is None:
            return
        f = self.files[path]
        f.mtime_ns = mtime
        f.meta_pending = True
        assert attr.mtime_ns == mtime
        self._check()

    @rule()
    def apply_pending_metadata(self) -> None:
        """What the mount's background loop does about a second after chmod/utimens."""
        self._do(lambda held: self.fs.apply_pending_metadata())
        for f in self.files.values():
            if not f.handles:
                f.meta_pending = False
        self._check()

    # ---- rules: another client ---------------------------------------------------
    @rule(path=paths, size=sizes, seed=seeds)
    def other_client_puts(self, path: str, size: int, seed: int) -> None:
        """Another client writes an object (no s3fs metadata) where no directory is."""
        f = self.files.get(path)
        if (path in self._dirs() or self._below(path) or any(a in self.files for a in ancestors(path))
                or (f is not None and (f.handles or f.meta_pending))):
            return  # not a clean overwrite of a closed file or a new name: not modelled
        data = b"other client %d: " % self.other_writes + blob(size, seed)  # always a new ETag
        self.other_writes += 1
        self.loop.run(self.mem.put, path, Body(len(data), data=data), WriteMeta({}))
        if f is None:
            f = self.files[path] = MFile(path, bytearray(), FILE_DEFAULT)
        f.data[:] = data
        f.mode, f.mtime_ns = FILE_DEFAULT, None
        self._check()

    @rule(path=paths)
    def other_client_deletes(self, path: str) -> None:
        """Another client deletes a closed file, or a directory's marker."""
        f = self.files.get(path)
        if f is not None:
            if f.handles or f.meta_pending:
                return
            self.loop.run(self.mem.delete, path)
            self.files.pop(path).path = None
        elif path in self.markers:
            if any(p.startswith(path + "/") and f.handles for p, f in self.files.items()):
                return
            self.loop.run(self.mem.delete, path + "/")
            del self.markers[path]
        else:
            return
        self._check()

    # ---- checks -------------------------------------------------------------------
    async def _idle(self) -> None:
        """Let part uploads started by the last step finish: later steps stay deterministic."""
        for session in list(self.uploader.sessions):
            await session._idle.wait()

    def _check(self) -> None:
        self.loop.run(self._idle)
        self._check_bucket()
        self._check_mount(self.fs, own=True)

    def _check_bucket(self) -> None:
        objects = self.mem.objects
        for key in objects:
            if key.endswith("/"):
                assert key[:-1] in self.markers, f"unexpected marker {key!r} in the bucket"
            else:
                assert key in self.files, f"unexpected object {key!r} in the bucket"
        for m, mode in self.markers.items():
            assert m + "/" in objects, f"marker of {m!r} missing from the bucket"
            got = metadata.decode(objects[m + "/"].metadata, default_mode=DIR_DEFAULT, uid=UID, gid=GID,
                                  last_modified_ns=0)
            assert got.mode == (mode or DIR_DEFAULT), f"mode of {m!r} in the bucket: {got.mode:o}"
        for p, f in self.files.items():
            if f.dirty:
                continue  # written since its last flush: S3 may hold any earlier version
            assert p in objects, f"{p!r} missing from the bucket"
            obj = objects[p]
            assert obj.data == f.data, f"{p!r} in the bucket: {len(obj.data)} bytes, model {len(f.data)}"
            if not f.handles and not f.meta_pending:
                got = metadata.decode(obj.metadata, default_mode=FILE_DEFAULT, uid=UID, gid=GID,
                                      last_modified_ns=0)
                assert got.mode == f.mode, f"mode of {p!r} in the bucket: {got.mode:o}, model {f.mode:o}"
                if f.mtime_ns is not None:
                    assert got.mtime_ns == f.mtime_ns, f"mtime of {p!r} in the bucket"
        if not self.handles:
            assert self.mem.uploads == {}, f"uploads left in progress: {list(self.mem.uploads.values())}"

    def _check_mount(self, fs: S3Filesystem, own: bool) -> None:
        files, dirs = self._visible()
        view, contents, attrs = self.loop.run(self._observe, fs, sorted(files))
        assert set(view) == set(files) | dirs, (
            f"the mount shows {sorted(view)}, the model {sorted(set(files) | dirs)}")
        for p, attr in view.items():
            if p in files:
                f = files[p]
                # from readdir (a mount that did not write the object shows default
                # attributes there until a lookup HEADs it), and from lookup + getattr
                for a in (attr, attrs[p]) if own else (attrs[p],):
                    assert a.kind is Kind.FILE, p
                    assert a.size == len(f.data), f"size of {p!r}: {a.size}, model {len(f.data)}"
                    assert a.mode == f.mode, f"mode of {p!r}: {a.mode:o}, model {f.mode:o}"
                    if f.mtime_ns is not None:
                        assert a.mtime_ns == f.mtime_ns, f"mtime of {p!r}"
                assert contents[p] == f.data, f"bytes of {p!r} read through the mount differ"
            else:
                assert attr.kind is Kind.DIR, p
                assert attr.mode == (self.markers.get(p) or DIR_DEFAULT), f"mode of directory {p!r}: {attr.mode:o}"
        if own:
            got = self.loop.run(self._read_handles)
            for fh, f in self.handles.items():
                assert got[fh] == f.data, f"bytes read through open descriptor {fh} ({f.path!r}) differ"

    async def _observe(
        self, fs: S3Filesystem, files: list[str]
    ) -> tuple[dict[str, Attr], dict[str, bytes], dict[str, Attr]]:
        """readdir from the root down; then lookup, getattr and the bytes of every file."""
        view: dict[str, Attr] = {}

        async def visit(inode: int, path: str) -> None:
            fh = fs.opendir(inode)
            try:
                entries = [e async for e in fs.readdir(fh, 0)]
            finally:
                fs.releasedir(fh)
            for e in entries:
                p = f"{path}/{e.name}" if path else e.name
                assert p not in view, f"{p!r} listed twice"
                view[p] = e.attr
                if e.attr.kind is Kind.DIR:
                    attr = await fs.lookup(inode, e.name)  # the kernel looks it up before opening it
                    try:
                        await visit(attr.inode, p)
                    finally:
                        fs.forget(attr.inode, 1)

        await visit(ROOT, "")
        contents: dict[str, bytes] = {}
        attrs: dict[str, Attr] = {}
        for p in files:
            held: list[int] = []
            try:
                inode = ROOT
                for name in p.split("/"):
                    attr = await fs.lookup(inode, name)
                    held.append(attr.inode)
                    inode = attr.inode
                attrs[p] = await fs.getattr(inode)
                assert attrs[p] == attr, f"lookup and getattr of {p!r} disagree: {attr} {attrs[p]}"
                fh = await fs.open(inode, os.O_RDONLY)
                try:
                    out = bytearray()
                    while chunk := await fs.read(fh, len(out), CHUNK):
                        out += chunk
                finally:
                    await fs.release(fh)
                contents[p] = bytes(out)
            finally:
                for i in held:
                    fs.forget(i, 1)
        return view, contents, attrs

    async def _read_handles(self) -> dict[int, bytes]:
        return {fh: await self.fs.read(fh, 0, len(f.data) + CHUNK) for fh, f in self.handles.items()}

    # ---- the end: everything closed, published, and seen by another client -----------
    def teardown(self) -> None:
        try:
            for fh in sorted(self.handles):
                self._release(fh)
            self.apply_pending_metadata()
            self.loop.run(self.fs.shutdown)
            assert self.mem.uploads == {}, f"uploads left after shutdown: {list(self.mem.uploads)}"
            spool = os.path.join(self.config.cache_dir, "spool")
            assert not os.path.isdir(spool) or os.listdir(spool) == [], f"spool files left: {os.listdir(spool)}"
            assert not os.path.exists(os.path.join(self.config.cache_dir, "recovery"))
            other_config = MountConfig(self.config.location, self.tmp + "/other", cache_dir=self.tmp + "/other-cache",
                                       read_only=True, attr_timeout=0.0)
            other = self.loop.run(self._other_client, other_config)
            try:
                self._check_mount(other, own=False)
            finally:
                self.loop.run(self._close_cache, other)
        finally:
            self.loop.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    async def _close_cache(self, fs: S3Filesystem) -> None:
        fs.metacache.close()

    async def _other_client(self, config: MountConfig) -> S3Filesystem:
        return S3Filesystem(self.mem, config, None, self.loop.nursery)


FilesystemModel.TestCase.settings = settings(
    derandomize=True,
    max_examples=500 if SLOW else 60,
    stateful_step_count=60 if SLOW else 25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestFilesystemModel = FilesystemModel.TestCase


# ---- shrunk failures found by the model, kept as named tests ------------------------------


def run_steps(*steps: tuple[str, dict[str, Any]], bug: str | None = None) -> None:
    """Replay a sequence of rules as hypothesis prints it, then the teardown; walk into
    known bug `bug` (default: the calling test's name), around the others."""
    state = FilesystemModel()
    state.avoid = KNOWN_BUGS - {bug or sys._getframe(1).f_code.co_name}
    try:
        for name, kw in steps:
            getattr(state, name)(**kw)
    except BaseException:
        state.loop.close()
        shutil.rmtree(state.tmp, ignore_errors=True)
        raise
    state.teardown()


def test_unlinked_open_file_is_not_listed() -> None:
    """Regression test: found here, fixed since.

    a file unlinked while open is listed in the mount root as "\\0deleted\\0a".

    core.py DirHandle._add_local_pending (and _list_small_dir) list every node with a
    writer whose path has no "/", and InodeTable.unlink_path renames the node to
    "\\0deleted\\0<path>", which has none for a file in the root.
    """
    run_steps(
        ("create", dict(path="a", mode=0o644)),
        ("unlink", dict(path="a")),
    )


def test_file_replaced_by_rename_while_open_does_not_come_back() -> None:
    """Regression test: found here, fixed since.

    rename(a, b) over a file b that is open for writing in the mount: when b's
    descriptor closes, its writer (never discarded, unlike in unlink) publishes the
    replaced contents under b, over the renamed file: the bucket ends with b empty.
    (core.py rename -> InodeTable.move(..) -> unlink_path(new) keeps the target's writer.)
    """
    run_steps(
        ("create", dict(path="a", mode=0o644)),
        ("create", dict(path="b", mode=0o644)),
        ("write", dict(pick=0, offset=0, length=1, seed=0)),  # into a
        ("rename", dict(src="a", dst="b")),
    )


def test_mtime_of_a_multipart_upload_is_the_one_shown() -> None:
    """Regression test: found here, fixed since.

    a file whose first part uploads while it is written gets the metadata of the
    moment CreateMultipartUpload was sent (mtime = create time), while flush caches
    the newer one (mtime = last write) as the object's metadata (core.py _published ->
    metacache.put): a lookup answered from the listing and a getattr answered by HEAD
    show different mtimes for the same object, and so do two mounts.
    """
    run_steps(
        ("create", dict(path="a", mode=0o644)),
        ("append", dict(pick=0, length=PART, seed=0)),
        ("flush", dict(pick=0)),
        ("release", dict(pick=0)),
    )


def test_flush_of_an_unlinked_file_does_not_poison_the_metadata_cache() -> None:
    """Regression test: found here, fixed since.

    flush of a descriptor of a file unlinked while open, after a new file of the
    same name and the same contents (here: empty) was created and chmod-ed, puts the
    unlinked file's metadata (mode 644) into the metadata cache under the new object's
    key + ETag (core.py flush -> _published -> metacache.put, also after a no-op
    flush). Listings, in this mount and after remounts, then show mode 644 for an
    object whose metadata says 600, while a HEAD says 600.
    """
    run_steps(
        ("create", dict(path="a", mode=0o644)),  # fh 1
        ("fsync", dict(pick=0)),  # published: an empty object
        ("unlink", dict(path="a")),  # fh 1 stays open
        ("create", dict(path="a", mode=0o644)),  # fh 2: a new, empty file
        ("chmod", dict(path="a", mode=0o600)),
        ("fsync", dict(pick=1)),  # published with mode 600
        ("fsync", dict(pick=0)),  # a no-op flush of fh 1 caches mode 644 for it
    )


def test_write_on_after_its_directory_was_renamed() -> None:
    """Regression test: found here, fixed since.

    rename of a directory holding a file open for writing whose published version
    is a multipart object: the copy gives the object a new ETag, but the writer is
    retargeted with the node's old one (core.py rename -> writer.retarget(key, n.etag);
    _rename_dir never updates the nodes' ETags). The next flush of a partial write
    copies the unchanged parts with UploadPartCopy guarded by the stale ETag: 412,
    and close() fails with EIO (the bytes go to the recovery folder).
    """
    run_steps(
        ("mkdir", dict(path="a", mode=0o755)),
        ("create", dict(path="a/b", mode=0o644)),
        ("write", dict(pick=0, offset=0, length=2 * PART + 100, seed=1)),
        ("flush", dict(pick=0)),  # a 3-part object
        ("rename", dict(src="a", dst="c")),
        ("write", dict(pick=0, offset=5, length=10, seed=2)),
        ("flush", dict(pick=0)),
    )


def test_chmod_and_utimens_of_a_file_being_written_are_kept() -> None:
    """Regression test: found by the model, fixed since. A regression of the fix
    for test_mtime_of_a_multipart_upload_is_the_one_shown:
    utimens (or chmod) of a file being written whose multipart upload has started
    (core.py setattr: set the new attributes, flush, then mark them pending):
    the flush's _published() resets mode/uid/gid/mtime to the metadata sent at
    CreateMultipartUpload because meta_pending is set only afterwards, so setattr
    answers the old mtime, and the pending self-copy later writes the old values:
    `touch -d` / `chmod` of a file being written is silently lost.
    """
    run_steps(
        ("create", dict(path="a", mode=0o644)),
        ("append", dict(pick=0, length=PART, seed=0)),  # part 1 uploads: the upload started
        ("utimens", dict(path="a", mtime=1_000_000_000_123_456_789)),
    )


def test_chmod_of_a_file_being_written_is_kept() -> None:
    """The same bug as above, for chmod."""
    run_steps(
        ("create", dict(path="a", mode=0o644)),
        ("append", dict(pick=0, length=PART, seed=0)),
        ("chmod", dict(path="a", mode=0o600)),
    )
