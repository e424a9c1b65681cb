"""The pyfuse3 Operations adapter: converts arguments, delegates, maps errors.

Only `pyfuse3.FUSEError` leaves a handler; `_errors` chooses the errno in
one place (via errors.to_errno) and logs what S3 said. Upload failures
surface from flush and fsync, because FUSE discards errors from release.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import pyfuse3

from s3fsmpu.config import kernel_timeout
from s3fsmpu.errors import NotFound, S3Error, S3FSError, UploadFailed, first_error, to_errno
from s3fsmpu.fs.core import Attr, S3Filesystem

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")


def _errors(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except (NotFound, KeyError) as exc:
            log.debug("%s: %s", fn.__name__, exc)
            raise pyfuse3.FUSEError(errno.ENOENT) from None
        except UploadFailed as exc:
            # already logged once at ERROR by the upload driver
            raise pyfuse3.FUSEError(to_errno(exc)) from None
        except BaseExceptionGroup as group:  # from a nursery: report its first error of ours
            first = first_error(group)
            if not isinstance(first, (S3FSError, OSError)):
                raise
            log.warning("%s failed: %s", fn.__name__, first)
            raise pyfuse3.FUSEError(to_errno(first)) from None
        except (S3Error, S3FSError, OSError) as exc:
            code = to_errno(exc)
            level = logging.DEBUG if code in (errno.ENOENT, errno.EEXIST, errno.ENOTEMPTY) else logging.WARNING
            log.log(level, "%s failed: %s", fn.__name__, exc)
            raise pyfuse3.FUSEError(code) from None

    return wrapper


def _name(raw: bytes) -> str:
    return os.fsdecode(raw)


class FuseOperations(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, fs: S3Filesystem) -> None:
        super().__init__()
        self.fs = fs
        self.timeout = kernel_timeout(fs.config.attr_timeout)

    def _entry(self, attr: Attr) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = attr.inode
        e.generation = 0
        e.entry_timeout = self.timeout
        e.attr_timeout = self.timeout
        e.st_mode = attr.mode
        e.st_nlink = attr.nlink
        e.st_uid = attr.uid
        e.st_gid = attr.gid
        e.st_rdev = 0
        e.st_size = attr.size
        e.st_blksize = attr.blksize
        e.st_blocks = (attr.size + 511) // 512
        e.st_atime_ns = e.st_mtime_ns = e.st_ctime_ns = attr.mtime_ns
        return e

    @_errors
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return self._entry(await self.fs.lookup(parent_inode, _name(name)))

    async def forget(self, inode_list: Any) -> None:
        for inode, count in inode_list:
            self.fs.forget(inode, count)

    @_errors
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return self._entry(await self.fs.getattr(inode))

    @_errors
    async def setattr(self, inode: int, attr: Any, fields: Any, fh: Any, ctx: Any) -> pyfuse3.EntryAttributes:
        mtime = attr.st_mtime_ns if fields.update_mtime else None
        result = await self.fs.setattr(
            inode,
            size=attr.st_size if fields.update_size else None,
            mode=attr.st_mode if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
            mtime_ns=mtime,
        )
        return self._entry(result)

    @_errors
    async def opendir(self, inode: int, ctx: Any) -> int:
        return self.fs.opendir(inode)

    @_errors
    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        async for entry in self.fs.readdir(fh, start_id):
            if not pyfuse3.readdir_reply(token, os.fsencode(entry.name), self._entry(entry.attr), entry.next_id):
                return
            self.fs.readdir_accepted(entry, fh)

    async def releasedir(self, fh: int) -> None:
        self.fs.releasedir(fh)

    @_errors
    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        return self._entry(await self.fs.mkdir(parent_inode, _name(name), mode & ~ctx.umask, ctx.uid, ctx.gid))

    @_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self.fs.rmdir(parent_inode, _name(name))

    @_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self.fs.unlink(parent_inode, _name(name))

    @_errors
    async def rename(self, parent_old: int, name_old: bytes, parent_new: int, name_new: bytes,
                     flags: int, ctx: Any) -> None:
        if flags:
            raise pyfuse3.FUSEError(errno.EINVAL)  # RENAME_NOREPLACE/EXCHANGE need atomicity S3 lacks
        await self.fs.rename(parent_old, _name(name_old), parent_new, _name(name_new))

    @_errors
    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        return self._entry(await self.fs.symlink(parent_inode, _name(name), os.fsdecode(target), ctx.uid, ctx.gid))

    @_errors
    async def readlink(self, inode: int, ctx: Any) -> bytes:
        return os.fsencode(await self.fs.readlink(inode))

    @_errors
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: Any) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        if not stat.S_ISREG(mode) and stat.S_IFMT(mode):
            raise pyfuse3.FUSEError(errno.EOPNOTSUPP)
        fh, attr = await self.fs.create(parent_inode, _name(name), mode & ~ctx.umask, flags, ctx.uid, ctx.gid)
        return self._file_info(fh), self._entry(attr)

    @_errors
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        return self._file_info(await self.fs.open(inode, flags))

    def _file_info(self, fh: int) -> pyfuse3.FileInfo:
        keep_cache, direct_io = self.fs.page_cache(fh)
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep_cache, direct_io=direct_io)

    @_errors
    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:  # type: ignore[override]
        # pyfuse3 replies from any buffer (PyObject_GetBuffer); its stub says bytes
        return await self.fs.read(fh, off, size)

    @_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self.fs.write(fh, off, buf)

    @_errors
    async def flush(self, fh: int) -> None:
        await self.fs.flush(fh)

    @_errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self.fs.fsync(fh)

    async def release(self, fh: int) -> None:
        try:
            await self.fs.release(fh)
        except Exception as exc:  # noqa: BLE001 - FUSE discards release errors; flush reported them
            log.debug("release: %s", exc)

    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_blocks = s.f_bfree = s.f_bavail = 1 << 40  # 4 PiB: S3 has no fixed size
        s.f_files = s.f_ffree = s.f_favail = 1 << 32
        s.f_namemax = 255
        return s

    @_errors
    async def access(self, inode: int, mode: int, ctx: Any) -> bool:
        return True  # default_permissions: the kernel checks modes
