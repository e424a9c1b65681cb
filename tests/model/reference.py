"""The plain reference model of the filesystem and the rules that drive it (issue 8).

One hypothesis RuleBasedStateMachine, two ways to run its operations:

- tests/model/test_fs_model.py calls the filesystem core (S3Filesystem on the
  MemoryStore) the way the kernel calls it;
- tests/fuse/test_reference_mount.py makes plain syscalls on a real kernel
  mount of the `s3fsmpu` command on moto.

This module owns what both share: the model (path -> bytes, mode, mtime;
directory markers; open handles), the errno each operation must end with,
how each operation changes the model, and the comparison of the model with
the bucket and with what the filesystem shows. A subclass supplies the
operations (`op_*`), "another client" (`other_put`, `other_delete`), the
observations (`objects`, `uploads_left`, `observe`, `read_handles`) and the
sizes its strategies draw (`offset_values`, `length_values`, `size_values`):
a real mount's parts are at least 5 MiB, the core's 64 KiB.

Which directories exist is read from the bucket (after the bucket itself was
checked against the model): every prefix of a key, markers included, as S3
and the mount see them; a file being written whose directory exists only by
keys that went away is unreachable by path, as it is through the kernel.

Cases the VFS answers by itself without asking the filesystem (EINVAL for a
directory moved into itself, rename onto itself, ...) are not sent; neither
are directories' mtimes modelled.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from s3fsmpu import meta as metadata
from s3fsmpu.fs.core import Attr
from s3fsmpu.fs.inodes import Kind
from tests.core.harness import blob

T = TypeVar("T")
UID, GID = os.getuid(), os.getgid()
FILE_DEFAULT = stat.S_IFREG | 0o644
DIR_DEFAULT = stat.S_IFDIR | 0o755
NAMES = ("a", "b", "c")
PATHS = NAMES + tuple(f"{x}/{y}" for x in NAMES for y in NAMES)
# "another client" writes bytes no other write repeats, in every machine of the process:
# a mount's metadata cache is keyed by key + ETag and outlives one example
OTHER_WRITES = itertools.count()

modes = st.sampled_from([0o644, 0o600, 0o755, 0o640])
picks = st.integers(0, 7)
seeds = st.integers(0, 2**16)
mtimes = st.integers(0, 2**33).map(lambda s: s * 1_000_000_000 + 123_456_789)
# paths, and sizes in the scale of the machine that runs (its part size): from its class attributes
paths = st.runner().flatmap(lambda machine: machine.path_values)
offsets = st.runner().flatmap(lambda machine: machine.offset_values)
lengths = st.runner().flatmap(lambda machine: machine.length_values)
sizes = st.runner().flatmap(lambda machine: machine.size_values)


def scaled(part: int) -> tuple[st.SearchStrategy[int], st.SearchStrategy[int], st.SearchStrategy[int]]:
    """Offsets, lengths and sizes around parts of `part` bytes: part boundaries and anything up to 3 parts."""
    return (st.one_of(st.sampled_from([0, 1, part - 1, part, 2 * part + 7]), st.integers(0, 3 * part)),
            st.one_of(st.sampled_from([1, 100, part, part + 1]), st.integers(1, 2 * part)),
            st.one_of(st.sampled_from([0, 1, part - 1, part, part + 1, 2 * part]), st.integers(0, 3 * part)))


class Stored(Protocol):
    """An object in the bucket, as the checks read it."""

    data: bytes
    metadata: dict[str, str]


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


def meta_problem(path: str, f: MFile, obj: Stored) -> str | None:
    """How the object's metadata disagrees with the model's mode and mtime, if it does."""
    got = metadata.decode(obj.metadata, default_mode=FILE_DEFAULT, uid=UID, gid=GID, last_modified_ns=0)
    if got.mode != f.mode:
        return f"mode of {path!r} in the bucket: {got.mode:o}, model {f.mode:o}"
    if f.mtime_ns is not None and got.mtime_ns != f.mtime_ns:
        return f"mtime of {path!r} in the bucket: {got.mtime_ns}, model {f.mtime_ns}"
    return None


Observation = tuple[dict[str, Attr], dict[str, bytes], dict[str, Attr]]


class ReferenceModel(RuleBasedStateMachine):
    """The model, its rules and its checks; subclasses run the operations (see the module doc)."""

    path_values: st.SearchStrategy[str] = st.sampled_from(PATHS)
    offset_values: st.SearchStrategy[int]
    length_values: st.SearchStrategy[int]
    size_values: st.SearchStrategy[int]
    errors: tuple[type[BaseException], ...] = (OSError,)  # what a failed operation raises
    avoid: frozenset[str] = frozenset()  # names of tests of open bugs the rules step around
    close_flushes = False  # whether release() comes with a flush (close(2) through the kernel)

    def __init__(self) -> None:
        super().__init__()
        self.files: dict[str, MFile] = {}
        self.markers: dict[str, int | None] = {}  # directory -> mode in its marker (None: no metadata)
        self.handles: dict[int, MFile] = {}

    # ---- what a subclass supplies -------------------------------------------------
    def errno_of(self, exc: BaseException) -> int:
        return exc.errno  # type: ignore[attr-defined, no-any-return]

    def op_create(self, path: str, mode: int) -> tuple[int, bool | None]:
        """open(path, O_RDWR | O_CREAT | O_TRUNC, mode) -> (handle, created: True/False, or None: not known)."""
        raise NotImplementedError

    def op_open_rw(self, path: str) -> int:
        raise NotImplementedError

    def op_write(self, fh: int, offset: int, data: bytes) -> int:
        raise NotImplementedError

    def op_truncate(self, path: str, size: int) -> Attr | None:
        raise NotImplementedError

    def op_flush(self, fh: int) -> None:
        raise NotImplementedError

    def op_fsync(self, fh: int) -> None:
        raise NotImplementedError

    def op_release(self, fh: int) -> None:
        raise NotImplementedError

    def op_unlink(self, path: str) -> None:
        raise NotImplementedError

    def op_rename(self, src: str, dst: str) -> None:
        raise NotImplementedError

    def op_mkdir(self, path: str, mode: int) -> Attr | None:
        raise NotImplementedError

    def op_rmdir(self, path: str) -> None:
        raise NotImplementedError

    def op_setattr(self, path: str, **changes: int) -> Attr | None:
        """chmod (mode=) or utimens (mtime_ns=)."""
        raise NotImplementedError

    def op_apply_pending_metadata(self) -> None:
        """Attribute changes of closed files reach S3 (the mount does it about a second later)."""
        raise NotImplementedError

    def other_put(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    def other_delete(self, key: str) -> None:
        raise NotImplementedError

    def objects(self) -> Mapping[str, Stored]:
        """What is in the bucket now."""
        raise NotImplementedError

    def uploads_left(self) -> list[Any]:
        """Multipart uploads in progress, asked once no file is open."""
        raise NotImplementedError

    def settle(self) -> None:
        """Before a check: let background work of the last step finish where that can be awaited."""

    def observe(self, files: list[str]) -> Observation:
        """The tree (path -> attributes from the listing), the bytes of each of `files`
        read through a new descriptor, and their attributes from a lookup."""
        raise NotImplementedError

    def read_handles(self) -> dict[int, bytes]:
        """The bytes read through every open handle."""
        raise NotImplementedError

    def close(self) -> None:
        """Give back what the machine holds, without checking anything (after a failure too)."""

    # ---- running operations ---------------------------------------------------
    def _do(self, fn: Callable[[], T], expect: int | None = None) -> T | None:
        """Run `fn`; it must fail with errno `expect`, or succeed if None."""
        try:
            result = fn()
        except self.errors as exc:
            got = self.errno_of(exc)
            assert expect is not None, f"unexpected error: {exc!r}"
            assert got == expect, f"expected {errno.errorcode[expect]}, got {errno.errorcode.get(got)}: {exc!r}"
            return None
        assert expect is None, f"expected {errno.errorcode[expect]}, but the operation succeeded"
        return result

    # ---- what the model says is there -------------------------------------------
    def _dirs(self) -> set[str]:
        """Directories S3 shows: every prefix of a key that is there (markers included)."""
        return {a for key in self.objects() for a in ancestors(key)}

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

    def _target(self, path: str) -> tuple[int | None, str | None]:
        """What is at `path` ("file", "dir" or None), and the errno of an operation on it
        by name: that of the path walk, or ENOENT if nothing is there."""
        err = self._walk_error(path)
        kind = self._kind(path) if err is None else None
        return err or (errno.ENOENT if kind is None else None), kind

    def _below(self, path: str) -> bool:
        base = path + "/"
        return any(p.startswith(base) for p in self.files) or any(m.startswith(base) for m in self.markers)

    def _handle(self, pick: int) -> tuple[int, MFile]:
        fhs = sorted(self.handles)
        fh = fhs[pick % len(fhs)]
        return fh, self.handles[fh]

    def _opened(self, fh: int, f: MFile) -> None:
        f.handles.add(fh)
        self.handles[fh] = f

    # ---- rules: files ----------------------------------------------------------
    @rule(path=paths, mode=modes)
    def create(self, path: str, mode: int) -> None:
        """open(path, O_RDWR | O_CREAT | O_TRUNC, mode)."""
        err = self._walk_error(path)
        kind = self._kind(path) if err is None else None
        if kind == "dir":
            err = errno.EISDIR
        result = self._do(lambda: self.op_create(path, mode), err)
        if result is None:
            return
        fh, created = result
        assert created in (None, kind is None), f"create of {path!r}: created={created}, model: {kind}"
        if kind is None:
            f = self.files[path] = MFile(path, bytearray(), stat.S_IFREG | mode)
        else:
            f = self.files[path]
            f.data.clear()
            f.mtime_ns = None
        f.dirty = True
        self._opened(fh, f)
        self._check()

    @rule(path=paths)
    def open_rw(self, path: str) -> None:
        """open(path, O_RDWR): an update in place of an existing file."""
        err = self._walk_error(path) or {None: errno.ENOENT, "dir": errno.EISDIR, "file": None}[self._kind(path)]
        fh = self._do(lambda: self.op_open_rw(path), err)
        if fh is not None:
            self._opened(fh, self.files[path])
        self._check()

    def _write(self, fh: int, f: MFile, offset: int, data: bytes) -> None:
        n = self._do(lambda: self.op_write(fh, offset, data))
        assert n == len(data), f"wrote {n} of {len(data)} bytes"
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
        err, kind = self._target(path)
        if kind == "dir":
            return  # the kernel answers EISDIR itself
        attr = self._do(lambda: self.op_truncate(path, size), err)
        if err is not None:
            return
        f = self.files[path]
        del f.data[size:]
        f.data.extend(bytes(size - len(f.data)))
        if f.handles:
            f.dirty = True
        else:  # a closed file is published at once, with its attributes
            f.dirty = f.meta_pending = False
        assert attr is None or attr.size == size
        self._check()

    def _published(self, f: MFile) -> None:
        if f.path is not None:
            f.dirty = False

    def _durable(self, pick: int, op: Callable[[int], None]) -> None:
        """flush or fsync: what was written is in S3 when it returns."""
        fh, f = self._handle(pick)
        self._do(lambda: op(fh))
        self._published(f)
        self._check()

    @precondition(lambda self: self.handles)
    @rule(pick=picks)
    def flush(self, pick: int) -> None:
        self._durable(pick, self.op_flush)

    @precondition(lambda self: self.handles)
    @rule(pick=picks)
    def fsync(self, pick: int) -> None:
        self._durable(pick, self.op_fsync)

    @precondition(lambda self: self.handles)
    @rule(pick=picks)
    def release(self, pick: int) -> None:
        """close(): in the core a release without a flush first (the kernel's flush comes
        from a separate rule); through the kernel, flush and release."""
        fh, _ = self._handle(pick)
        self._release(fh)
        self._check()

    def _release(self, fh: int) -> None:
        f = self.handles.pop(fh)
        self._do(lambda: self.op_release(fh))
        f.handles.discard(fh)
        if not f.handles or self.close_flushes:
            self._published(f)

    # ---- rules: namespace -----------------------------------------------------
    @rule(path=paths)
    def unlink(self, path: str) -> None:
        err = self._walk_error(path) or {None: errno.ENOENT, "dir": errno.EISDIR, "file": None}[self._kind(path)]
        self._do(lambda: self.op_unlink(path), err)
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
        self._do(lambda: self.op_rename(src, dst), err)
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
                    self.files[f.path] = f  # a file being written stays as dirty as it was:
                    # it is published under the new name only, at its next flush (README)
            for m in sorted(self.markers):
                if m.startswith(src + "/"):
                    self.markers[dst + m[len(src):]] = self.markers.pop(m)
        self._check()

    @rule(path=paths, mode=modes)
    def mkdir(self, path: str, mode: int) -> None:
        err = self._walk_error(path) or (errno.EEXIST if self._kind(path) else None)
        attr = self._do(lambda: self.op_mkdir(path, mode), err)
        if err is None:
            self.markers[path] = stat.S_IFDIR | mode
            assert attr is None or attr.mode == stat.S_IFDIR | mode
        self._check()

    @rule(path=paths)
    def rmdir(self, path: str) -> None:
        err = self._walk_error(path)
        if err is None:
            kind = self._kind(path)
            err = {None: errno.ENOENT, "file": errno.ENOTDIR, "dir": None}[kind]
            if kind == "dir" and self._below(path):
                err = errno.ENOTEMPTY
        self._do(lambda: self.op_rmdir(path), err)
        if err is None:
            self.markers.pop(path, None)
        self._check()

    @rule(path=paths, mode=modes)
    def chmod(self, path: str, mode: int) -> None:
        err, kind = self._target(path)
        attr = self._do(lambda: self.op_setattr(path, mode=mode), err)
        if err is not None:
            return
        if kind == "file":
            f = self.files[path]
            f.mode = stat.S_IFREG | mode
            f.meta_pending = True
        else:
            self.markers[path] = stat.S_IFDIR | mode  # written at once
        assert attr is None or attr.mode == (stat.S_IFREG if kind == "file" else stat.S_IFDIR) | mode
        self._check()

    @rule(path=paths, mtime=mtimes)
    def utimens(self, path: str, mtime: int) -> None:
        err, kind = self._target(path)
        if kind == "dir":
            return  # directories' mtimes are not modelled
        attr = self._do(lambda: self.op_setattr(path, mtime_ns=mtime), err)
        if err is not None:
            return
        f = self.files[path]
        f.mtime_ns = mtime
        f.meta_pending = True
        assert attr is None or attr.mtime_ns == mtime
        self._check()

    @rule()
    def apply_pending_metadata(self) -> None:
        """What the mount's background loop does about a second after chmod/utimens."""
        self._do(self.op_apply_pending_metadata)
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
        data = b"other client %010d: " % next(OTHER_WRITES) + blob(size, seed)  # always a new ETag
        self.other_put(path, data)
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
            self.other_delete(path)
            self.files.pop(path).path = None
        elif path in self.markers:
            if any(p.startswith(path + "/") and f.handles for p, f in self.files.items()):
                return
            self.other_delete(path + "/")
            del self.markers[path]
        else:
            return
        self._check()

    # ---- checks -------------------------------------------------------------------
    def _check(self) -> None:
        self.settle()
        self._check_bucket()
        self._check_view(self.observe, own=True)
        self._check_handles()

    def _check_bucket(self) -> None:
        objects = self.objects()
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
                problem = meta_problem(p, f, obj)
                assert problem is None, problem
        if not self.handles:
            left = self.uploads_left()
            assert not left, f"uploads left in progress: {left}"

    def _check_view(self, observe: Callable[[list[str]], Observation], own: bool) -> None:
        """What a mount shows (`own`: the one that wrote; listings there know every attribute)."""
        files, dirs = self._visible()
        view, contents, attrs = observe(sorted(files))
        assert set(view) == set(files) | dirs, (
            f"the mount shows {sorted(view)}, the model {sorted(set(files) | dirs)}")
        for p, attr in view.items():
            if p in files:
                f = files[p]
                # from the listing (a mount that did not write the object shows default
                # attributes there until a lookup HEADs it), and from a lookup
                for a in (attr, attrs[p]) if own else (attrs[p],):
                    assert a.kind is Kind.FILE, p
                    assert a.size == len(f.data), f"size of {p!r}: {a.size}, model {len(f.data)}"
                    assert a.mode == f.mode, f"mode of {p!r}: {a.mode:o}, model {f.mode:o}"
                    if f.mtime_ns is not None:
                        assert a.mtime_ns == f.mtime_ns, f"mtime of {p!r}: {a.mtime_ns}, model {f.mtime_ns}"
                assert contents[p] == f.data, f"bytes of {p!r} read through the mount differ"
            else:
                assert attr.kind is Kind.DIR, p
                assert attr.mode == (self.markers.get(p) or DIR_DEFAULT), f"mode of directory {p!r}: {attr.mode:o}"

    def _check_handles(self) -> None:
        got = self.read_handles()
        for fh, f in self.handles.items():
            assert got[fh] == f.data, f"bytes read through open descriptor {fh} ({f.path!r}) differ"

    def _close_all(self) -> None:
        """The end of a sequence: every handle closed, every attribute change in S3."""
        for fh in sorted(self.handles):
            self._release(fh)
        self.apply_pending_metadata()


def replay(state: ReferenceModel, steps: tuple[tuple[str, dict[str, Any]], ...]) -> None:
    """Run a sequence of rules as hypothesis prints it, then the teardown."""
    try:
        for name, kw in steps:
            getattr(state, name)(**kw)
    except BaseException:
        state.close()
        raise
    state.teardown()
