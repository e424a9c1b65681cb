"""A directory of 100,000 keys through the core API: LIST-bound, bounded memory (issue 17).

A complete readdir costs about one ListObjectsV2 per 1,000 entries and no
HEAD per entry; afterwards a lookup of a missing name costs no request, and
what the filesystem keeps once the kernel forgot the entries is the packed
listing (under 150 bytes an entry), not a Node per entry.
"""

from __future__ import annotations

import gc
import tracemalloc
from bisect import bisect_left, bisect_right
from contextlib import aclosing
from pathlib import Path

import pytest

from s3fsmpu.errors import NotFound
from s3fsmpu.fs.core import S3Filesystem
from s3fsmpu.store.base import ListPage, ObjectInfo
from s3fsmpu.store.memory import MemoryStore, StoredObject
from tests.core.harness import PART, ROOT, Env, run

N = 100_000
SUBDIRS = 10


class BigDirStore(MemoryStore):
    """The memory store, with a list_page that starts at the token: a page costs O(page), not
    O(bucket), so 100 pages of a 100,000-key directory take a second, not minutes."""

    async def list_page(
        self, prefix: str, delimiter: str | None = "/", token: str | None = None, max_keys: int = 1000
    ) -> ListPage:
        await self._op("ListObjectsV2")
        keys = sorted(self.objects)  # already in order: linear
        i = bisect_right(keys, token) if token is not None else bisect_left(keys, prefix)
        entries: list[tuple[str, ObjectInfo | None]] = []
        while i < len(keys) and keys[i].startswith(prefix) and len(entries) <= max_keys:
            key, i = keys[i], i + 1
            rest = key[len(prefix):]
            if delimiter and delimiter in rest:
                common = prefix + rest.split(delimiter, 1)[0] + delimiter
                if (token is None or common > token) and (not entries or entries[-1][0] != common):
                    entries.append((common, None))
                continue
            obj = self.objects[key]
            entries.append((key, ObjectInfo(key, len(obj.data), obj.etag, obj.last_modified)))
        page, more = entries[:max_keys], len(entries) > max_keys
        return ListPage([info for _, info in page if info is not None],
                        [name for name, info in page if info is None], page[-1][0] if more and page else None)


def big_store() -> BigDirStore:
    mem = BigDirStore(min_part_size=PART)
    for i in range(N):
        mem.objects[f"big/f{i:06d}"] = StoredObject(b"x" * (i % 7), f'"{i:032x}"', {}, None, 1.7e9 + i)
    for i in range(SUBDIRS):
        mem.objects[f"big/d{i}/x"] = StoredObject(b"", '"0"', {}, None, 1.7e9)
    return mem


def kept_bytes() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def readdir_all(fs: S3Filesystem, inode: int, accept: bool) -> list[int]:
    """What the kernel does for `ls`: readdir(plus) to the end; with `accept`, it keeps each entry."""
    fh = fs.opendir(inode)
    inodes = []
    async for entry in fs.readdir(fh, 0):
        if accept:
            fs.readdir_accepted(entry, fh)
        inodes.append(entry.attr.inode)
    fs.releasedir(fh)
    return inodes


def test_100k_listing_is_list_bound_and_memory_bounded(tmp_path: Path) -> None:
    mem = big_store()

    async def body(env: Env) -> None:
        fs = env.fs
        big = await fs.lookup(ROOT, "big")
        mem.calls.clear()
        tracemalloc.start()
        try:
            base = kept_bytes()
            inodes = await readdir_all(fs, big.inode, accept=True)  # readdirplus: the kernel holds each
            assert len(inodes) == N + SUBDIRS
            # one LIST per 1,000 entries (+1 for the last short page); HEADs only for the markers
            # of the subdirectories, none per file
            assert mem.calls["ListObjectsV2"] <= N // 1000 + 2, mem.calls
            assert mem.calls["HeadObject"] <= SUBDIRS, mem.calls
            mem.calls.clear()
            # within NEGATIVE_TTL of the listing, misses are answered from it
            for name in ("nope", "f100000", "f0000001", "d10", "F000001"):
                with pytest.raises(NotFound):
                    await fs.lookup(big.inode, name)
            assert sum(mem.calls.values()) == 0, mem.calls
            for inode in inodes:
                fs.forget(inode, 1)
            del inodes
            kept = kept_bytes() - base
        finally:
            tracemalloc.stop()
        # the kernel forgot them all: the inode table is back to the root and `big`
        assert {n.path for n in fs.inodes.nodes()} == {"", "big"}
        # what stays is the packed listing: ~90 bytes an entry (the dict of Nodes was ~700)
        print(f"kept after releasedir + forget: {kept} bytes, {kept / N:.1f} per entry")
        assert kept < 150 * N, kept

        mem.calls.clear()
        attr = await fs.lookup(big.inode, "f000123")
        assert attr.size == 123 % 7
        sub = await fs.lookup(big.inode, "d3")
        assert sub.kind.value == "dir"
        # a listed object without cached metadata gets one HEAD (mode, mtime), never a LIST
        assert mem.calls["ListObjectsV2"] == 0 and mem.calls["HeadObject"] <= 1, mem.calls

    run(tmp_path, body, mem=mem, timeout=600, attr_timeout=600.0)


def test_open_directory_holds_one_page_not_every_entry(tmp_path: Path) -> None:
    """Plain readdir (the kernel keeps nothing): halfway through, the handle and the listing
    being packed hold ~100 bytes an entry so far, and no inode is left behind at releasedir."""
    mem = big_store()

    async def body(env: Env) -> None:
        fs = env.fs
        big = await fs.lookup(ROOT, "big")
        fh = fs.opendir(big.inode)
        tracemalloc.start()
        try:
            base = kept_bytes()
            count = 0
            async with aclosing(fs.readdir(fh, 0)) as entries:
                async for _entry in entries:
                    count += 1
                    if count == N // 2:
                        break
            held = kept_bytes() - base
        finally:
            tracemalloc.stop()
        print(f"held halfway: {held} bytes, {held / count:.1f} per entry")
        assert held < 150 * count + 2_000_000, held
        async for _entry in fs.readdir(fh, count):  # the kernel goes on from its offset
            count += 1
        assert count == N + SUBDIRS
        fs.releasedir(fh)
        assert {n.path for n in fs.inodes.nodes()} == {"", "big"}
        # a rewinddir lists again from the start
        assert len(await readdir_all(fs, big.inode, accept=False)) == N + SUBDIRS

    run(tmp_path, body, mem=mem, timeout=600, attr_timeout=600.0)
