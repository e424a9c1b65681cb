"""Builds the whole stack without a kernel: MemoryStore -> Uploader -> S3Filesystem.

Tests are plain functions calling `run(tmp_path, body, ...)`; `body(env)`
is async and gets an `Env` with the filesystem, the store and the
uploader. Parts are tiny (64 KiB) so multipart uploads cost nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from s3fsmpu.config import MountConfig, S3Location, UploadConfig
from s3fsmpu.fs.core import S3Filesystem
from s3fsmpu.fs.inodes import ROOT_INODE
from s3fsmpu.store.conditional import ConditionalWrites
from s3fsmpu.store.memory import MemoryStore, multipart_etag
from s3fsmpu.upload.schedule import Layout
from s3fsmpu.upload.uploader import Uploader

KIB = 1 << 10
PART = 64 * KIB
ROOT = ROOT_INODE
FILE_MODE = stat.S_IFREG | 0o644
CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC


def blob(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def expected_etag(data: bytes, part: int = PART, layout: Layout | None = None) -> str:
    """The multipart ETag of `data` cut into fixed `part`-sized parts, or as `layout` cuts it."""
    if layout is None:
        chunks = [data[i : i + part] for i in range(0, len(data), part)]
    else:
        chunks = [data[r.start : r.end] for r in layout.parts_for_size(len(data))]
    return multipart_etag([hashlib.md5(c).hexdigest() for c in chunks])


def upload_config(**kw: Any) -> UploadConfig:
    base: dict[str, Any] = dict(
        part_size=PART, min_part_size=PART, max_memory=64 * PART, concurrency=8,
        backoff_base=0.001, backoff_max=0.01, max_attempts=6,
    )
    base.update(kw)
    return UploadConfig(**base)


@dataclass
class Env:
    fs: S3Filesystem
    store: Any  # the store the filesystem talks to (maybe a FaultyStore)
    mem: MemoryStore  # the memory store underneath: what is really "in S3"
    uploader: Uploader
    config: MountConfig
    nursery: trio.Nursery

    def key(self, path: str) -> str:
        return self.config.location.prefix + path

    def data(self, path: str) -> bytes:
        return self.mem.objects[self.key(path)].data

    def etag(self, path: str) -> str:
        return self.mem.objects[self.key(path)].etag

    def second_mount(self, **upload_kw: Any) -> S3Filesystem:
        """Another writable mount of the same bucket (its own cache dir), as on a second host."""
        up = dataclasses.replace(self.config.upload, **upload_kw)
        cfg = dataclasses.replace(self.config, mountpoint=self.config.mountpoint + "-b", upload=up,
                                  cache_dir=self.config.cache_dir + "-b")
        return writer_mount(self.mem, cfg, self.nursery)[0]

    def other_client(self) -> S3Filesystem:
        """A second, read-only mount of the same bucket: what any other client sees."""
        cfg = MountConfig(self.config.location, self.config.mountpoint + "-other",
                          upload=self.config.upload, cache_dir=self.config.cache_dir + "-other",
                          read_only=True, attr_timeout=0.0)
        return S3Filesystem(self.mem, cfg, None)

    async def create(self, name: str, parent: int = ROOT, mode: int = 0o644,
                     flags: int = CREATE_FLAGS) -> int:
        fh, _attr = await self.fs.create(parent, name, mode, flags, os.getuid(), os.getgid())
        return fh

    async def write_file(self, name: str, data: bytes, chunk: int = 16 * KIB, parent: int = ROOT) -> None:
        """create, write sequentially, flush, release: what `cp` does."""
        fh = await self.create(name, parent)
        for off in range(0, len(data), chunk):
            await self.fs.write(fh, off, data[off : off + chunk])
        await self.fs.flush(fh)
        await self.fs.release(fh)

    async def read_all(self, fs: S3Filesystem, name: str, parent: int = ROOT) -> bytes:
        attr = await fs.lookup(parent, name)
        fh = await fs.open(attr.inode, os.O_RDONLY)
        out = b""
        while True:
            chunk = await fs.read(fh, len(out), 100 * KIB)
            if not chunk:
                break
            out += chunk
        await fs.release(fh)
        assert len(out) == attr.size
        return out

    async def listdir(self, fs: S3Filesystem | None = None, inode: int = ROOT) -> list[str]:
        fs = fs or self.fs
        fh = fs.opendir(inode)
        names = [e.name async for e in fs.readdir(fh, 0)]
        fs.releasedir(fh)
        return names


def run(
    tmp_path: Path,
    body: Callable[[Env], Awaitable[None]],
    *,
    store: Any = None,
    mem: MemoryStore | None = None,
    location: str = "bucket",
    timeout: float = 20.0,
    attr_timeout: float = 1.0,
    read_ahead: int = 32 << 20,
    **upload_kw: Any,
) -> None:
    mem = mem or MemoryStore(min_part_size=PART)
    store = store if store is not None else mem
    up = upload_config(**upload_kw)
    cfg = MountConfig(S3Location.parse(location), str(tmp_path / "mnt"), upload=up,
                      cache_dir=str(tmp_path / "cache"), attr_timeout=attr_timeout, read_ahead=read_ahead)

    async def main() -> None:
        with trio.fail_after(timeout):
            async with trio.open_nursery() as nursery:
                fs, uploader = writer_mount(store, cfg, nursery)
                await body(Env(fs, store, mem, uploader, cfg, nursery))

    trio.run(main)


def writer_mount(store: Any, cfg: MountConfig, nursery: trio.Nursery) -> tuple[S3Filesystem, Uploader]:
    """The stack mount.serve builds over `store`: conditional writes as --conflicts says."""
    conditional = ConditionalWrites(store, cfg.upload.conflicts == "fail")
    uploader = Uploader(conditional, cfg.upload, cfg.cache_dir, nursery)
    return S3Filesystem(conditional, cfg, uploader), uploader


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Let background tasks (and their worker threads) run until `predicate` holds."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.001)
