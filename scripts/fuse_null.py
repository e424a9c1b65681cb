#!/usr/bin/env python3
"""The FUSE ceiling: a pyfuse3 + trio filesystem that does no I/O.

    .venv/bin/python scripts/fuse_null.py MOUNTPOINT [--size 1GiB]

The root holds one read-only file `null` of --size bytes of zeros; any file
created accepts writes and discards them (only its size is kept). Runs in
the foreground until unmounted (fusermount3 -u MOUNTPOINT) or sent
SIGINT/SIGTERM. Same pyfuse3 settings as s3fsmpu where they matter for
throughput: st_blksize 1 MiB, no writeback cache, pyfuse3.main(min_tasks=4,
max_tasks=64), the kernel's read-ahead raised to 2 MiB. So `dd bs=1M` through it measures what the kernel, libfuse
and a Python/trio request loop can move with no storage behind them.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import stat
import sys
import time

import pyfuse3
import trio

from s3fsmpu.kernel_readahead import tune_read_ahead

BLKSIZE = 1 << 20
NULL_NAME = b"null"
NULL_INODE = pyfuse3.ROOT_INODE + 1


def parse_size(text: str) -> int:
    units = {"": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20,
             "g": 1 << 30, "gib": 1 << 30, "kb": 1000, "mb": 10**6, "gb": 10**9}
    t = text.strip().lower()
    num = t.rstrip("abcdefghijklmnopqrstuvwxyz")
    return int(float(num) * units[t[len(num):]])


class Node:
    __slots__ = ("inode", "name", "mode", "size", "mtime_ns", "lookups")

    def __init__(self, inode: int, name: bytes, mode: int, size: int = 0) -> None:
        self.inode, self.name, self.mode, self.size = inode, name, mode, size
        self.mtime_ns = time.time_ns()
        self.lookups = 0


class NullFS(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, null_size: int) -> None:
        super().__init__()
        self.nodes: dict[int, Node] = {
            pyfuse3.ROOT_INODE: Node(pyfuse3.ROOT_INODE, b"", stat.S_IFDIR | 0o755),
            NULL_INODE: Node(NULL_INODE, NULL_NAME, stat.S_IFREG | 0o444, null_size),
        }
        self.by_name: dict[bytes, int] = {NULL_NAME: NULL_INODE}
        self.next_inode = NULL_INODE + 1
        self.zeros: dict[int, bytes] = {}

    def _attr(self, node: Node) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = node.inode
        e.generation = 0
        e.entry_timeout = 1.0
        e.attr_timeout = 1.0
        e.st_mode = node.mode
        e.st_nlink = 2 if stat.S_ISDIR(node.mode) else 1
        e.st_uid = os.getuid()
        e.st_gid = os.getgid()
        e.st_rdev = 0
        e.st_size = node.size
        e.st_blksize = BLKSIZE
        e.st_blocks = (node.size + 511) // 512
        e.st_atime_ns = e.st_mtime_ns = e.st_ctime_ns = node.mtime_ns
        return e

    def _node(self, inode: int) -> Node:
        try:
            return self.nodes[inode]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    async def lookup(self, parent_inode, name, ctx=None):
        if parent_inode != pyfuse3.ROOT_INODE:
            raise pyfuse3.FUSEError(errno.ENOENT)
        if name == b".":
            return self._attr(self.nodes[pyfuse3.ROOT_INODE])
        inode = self.by_name.get(name)
        if inode is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(self.nodes[inode])

    async def getattr(self, inode, ctx=None):
        return self._attr(self._node(inode))

    async def setattr(self, inode, attr, fields, fh, ctx):
        node = self._node(inode)
        if fields.update_size:
            if inode == NULL_INODE:
                raise pyfuse3.FUSEError(errno.EACCES)
            node.size = attr.st_size
        if fields.update_mode:
            node.mode = stat.S_IFMT(node.mode) | stat.S_IMODE(attr.st_mode)
        if fields.update_mtime:
            node.mtime_ns = attr.st_mtime_ns
        return self._attr(node)

    async def opendir(self, inode, ctx):
        if inode != pyfuse3.ROOT_INODE:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    async def readdir(self, fh, start_id, token):
        entries = sorted(self.by_name.items(), key=lambda kv: kv[1])
        for name, inode in entries:
            if inode <= start_id:
                continue
            if not pyfuse3.readdir_reply(token, name, self._attr(self.nodes[inode]), inode):
                return

    async def releasedir(self, fh):
        pass

    async def open(self, inode, flags, ctx):
        node = self._node(inode)
        if inode == NULL_INODE and flags & (os.O_WRONLY | os.O_RDWR):
            raise pyfuse3.FUSEError(errno.EACCES)
        if flags & os.O_TRUNC and inode != NULL_INODE:
            node.size = 0
        return pyfuse3.FileInfo(fh=inode)

    async def create(self, parent_inode, name, mode, flags, ctx):
        if parent_inode != pyfuse3.ROOT_INODE:
            raise pyfuse3.FUSEError(errno.ENOENT)
        if name == NULL_NAME:
            raise pyfuse3.FUSEError(errno.EACCES)
        inode = self.by_name.get(name)
        if inode is None:
            inode = self.next_inode
            self.next_inode += 1
            self.nodes[inode] = Node(inode, name, stat.S_IFREG | (mode & 0o7777))
            self.by_name[name] = inode
        node = self.nodes[inode]
        node.size = 0
        return pyfuse3.FileInfo(fh=inode), self._attr(node)

    async def read(self, fh, off, size):
        node = self._node(fh)
        n = max(0, min(size, node.size - off))
        buf = self.zeros.get(n)
        if buf is None:
            buf = self.zeros[n] = bytes(n)
        return buf

    async def write(self, fh, off, buf):
        node = self._node(fh)
        end = off + len(buf)
        if end > node.size:
            node.size = end
        node.mtime_ns = time.time_ns()
        return len(buf)

    async def flush(self, fh):
        pass

    async def fsync(self, fh, datasync):
        pass

    async def release(self, fh):
        pass

    async def unlink(self, parent_inode, name, ctx):
        inode = self.by_name.get(name) if parent_inode == pyfuse3.ROOT_INODE else None
        if inode is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        if inode == NULL_INODE:
            raise pyfuse3.FUSEError(errno.EACCES)
        del self.by_name[name]
        self.nodes.pop(inode, None)

    async def forget(self, inode_list):
        pass

    async def statfs(self, ctx):
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = BLKSIZE
        s.f_blocks = s.f_bfree = s.f_bavail = 1 << 30
        s.f_files = s.f_ffree = s.f_favail = 1 << 20
        s.f_namemax = 255
        return s


async def _terminate_on_signal() -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            pyfuse3.terminate()
            return


async def _serve(mountpoint: str) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_terminate_on_signal)
        nursery.start_soon(tune_read_ahead, mountpoint)  # as s3fsmpu does: 1 MiB read requests
        await pyfuse3.main(min_tasks=4, max_tasks=64)
        nursery.cancel_scope.cancel()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mountpoint")
    p.add_argument("--size", default="1GiB", help="size of the file `null` (default 1GiB)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="fuse_null: %(message)s")
    logging.getLogger("s3fsmpu.kernel_readahead").setLevel(logging.DEBUG)
    fs = NullFS(parse_size(args.size))
    opts = set(pyfuse3.default_options) | {"fsname=fuse_null", "subtype=fuse_null"}
    pyfuse3.init(fs, args.mountpoint, opts)
    try:
        trio.run(_serve, args.mountpoint)
    finally:
        pyfuse3.close(unmount=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
