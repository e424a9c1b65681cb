"""The background attribute self-copy against rename, unlink, overwrite and another client,
in every order the bucket could see their requests.

S3 (and moto) copy in two steps: read the source, then write the destination. A
DELETE that lands between them is undone, so a self-copy (k -> k) overlapping a
rename's or an unlink's DELETE brought k back ("unexpected object 'c' in the
bucket", once, in tests/fuse/test_reference_mount.py). Here every call that
changes the bucket stops before it takes effect, CopyObject also between its two
steps, and the test lets the stopped calls go one at a time, exploring every
choice (depth first, a fresh run per schedule).
"""

from __future__ import annotations

import stat
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from s3fsmpu.errors import S3FSError
from s3fsmpu.store.base import Body, Checksum, CompleteResult, Expect, PartRef, WriteMeta
from s3fsmpu.store.memory import MemoryStore
from tests.core.harness import PART, ROOT, Env, blob, run

OLD, NEW = blob(1000, 1), blob(3000, 2)
CHMOD = 0o600


class SteppedStore(MemoryStore):
    """Calls that change the bucket wait in `waiting` until the schedule lets them go.

    `dst_conditions=False` is a server that ignores conditional writes (If-Match on
    CopyObject's destination: moto, radosgw 16): only the mount's own ordering keeps
    its keys from coming back."""

    def __init__(self, dst_conditions: bool) -> None:
        super().__init__(min_part_size=PART)
        self.dst_conditions = dst_conditions
        self.stepping = False
        self.waiting: list[tuple[str, trio.Event]] = []

    async def step(self, label: str) -> None:
        if self.stepping:
            go = trio.Event()
            self.waiting.append((label, go))
            await go.wait()

    async def copy(self, src: str, dst: str, meta: WriteMeta | None = None,
                   src_etag: str | None = None, expect: Expect | None = None) -> str:
        await self.step(f"copy {src}->{dst}: read")
        return await super().copy(src, dst, meta, src_etag, expect if self.dst_conditions else None)

    async def between_copy_steps(self, src: str, dst: str) -> None:
        await self.step(f"copy {src}->{dst}: write")

    async def delete(self, key: str, etag: str | None = None) -> None:
        await self.step(f"delete {key}")
        await super().delete(key, etag if self.dst_conditions else None)

    async def put(self, key: str, body: Body, meta: WriteMeta, expect: Expect | None = None) -> str:
        await self.step(f"put {key}")
        return await super().put(key, body, meta, expect if self.dst_conditions else None)

    async def complete_multipart(self, key: str, upload_id: str, parts: Sequence[PartRef],
                                 expect: Expect | None = None, checksum: Checksum | None = None) -> CompleteResult:
        await self.step(f"complete {key}")
        return await super().complete_multipart(key, upload_id, parts, expect if self.dst_conditions else None,
                                                 checksum)


Race = Callable[[Env, int], Awaitable[None]]


async def rename_to_d(env: Env, inode: int) -> None:
    await env.fs.rename(ROOT, "c", ROOT, "d")


async def unlink(env: Env, inode: int) -> None:
    await env.fs.unlink(ROOT, "c")


async def overwrite(env: Env, inode: int) -> None:
    await env.write_file("c", NEW)


async def other_client_deletes(env: Env, inode: int) -> None:
    await env.mem.delete("c")


async def other_client_puts(env: Env, inode: int) -> None:
    await env.mem.put("c", Body(len(NEW), data=NEW), WriteMeta({"from": "other"}))


def check_rename(mem: MemoryStore) -> None:
    assert "c" not in mem.objects, "the old name came back"
    assert mem.objects["d"].data == OLD
    assert mem.objects["d"].metadata["mode"] == str(stat.S_IFREG | CHMOD), "the chmod was lost"


def check_gone(mem: MemoryStore) -> None:
    assert "c" not in mem.objects, "a deleted key came back"


def check_overwritten(mem: MemoryStore) -> None:
    assert mem.objects["c"].data == NEW
    assert mem.objects["c"].metadata["mode"] == str(stat.S_IFREG | 0o644), "the new file has the old attributes"


def check_other_put(mem: MemoryStore) -> None:
    assert mem.objects["c"].data == NEW
    assert mem.objects["c"].metadata == {"from": "other"}, "our attributes went onto their object"


RACES: dict[str, tuple[Race, Callable[[MemoryStore], None]]] = {
    "rename": (rename_to_d, check_rename),
    "unlink": (unlink, check_gone),
    "overwrite": (overwrite, check_overwritten),
    "other-delete": (other_client_deletes, check_gone),
    "other-put": (other_client_puts, check_other_put),
}


def one_schedule(tmp_path: Path, race: Race, prefix: list[int],
                 dst_conditions: bool) -> tuple[list[int], list[str], MemoryStore]:
    """Run with the choices in `prefix` (then the first waiting call each time); the
    number of calls there was to choose from at each step, and the order taken."""
    store = SteppedStore(dst_conditions)
    options: list[int] = []
    order: list[str] = []

    async def t(env: Env) -> None:
        await env.write_file("c", OLD)
        inode = (await env.fs.lookup(ROOT, "c")).inode
        await env.fs.setattr(inode, mode=CHMOD)  # pending: the loop copies it later
        store.stepping = True
        done = [False, False]

        async def task(i: int, fn: Callable[[], Awaitable[Any]]) -> None:
            try:
                await fn()
            except (S3FSError, OSError):
                pass  # a refused step is a legal outcome; the bucket says whether it was right
            done[i] = True

        def choose(n: int) -> int:
            i = prefix[len(options)] if len(options) < len(prefix) else 0
            options.append(n)
            return min(i, n - 1)

        tasks = [lambda: env.fs.apply_pending_metadata(), lambda: race(env, inode)]
        first = choose(2)  # which one starts first: it may take the node before the other asks
        order.append("self-copy first" if first == 0 else "race first")
        for i in (first, 1 - first):
            env.nursery.start_soon(task, i, tasks[i])
            await trio.testing.wait_all_tasks_blocked(cushion=0.005)
        while not all(done):
            await trio.testing.wait_all_tasks_blocked(cushion=0.005)
            if not store.waiting:
                continue
            label, go = store.waiting.pop(choose(len(store.waiting)))
            order.append(label)
            go.set()
        store.stepping = False
        await env.fs.apply_pending_metadata()  # what is left to apply

    run(tmp_path, t, mem=store, attr_timeout=60.0)
    return options, order, store


def schedules(tmp_path: Path, race: Race, dst_conditions: bool) -> list[tuple[list[str], MemoryStore]]:
    """Every schedule, depth first over the choices."""
    out = []
    prefix: list[int] = []
    while True:
        options, order, store = one_schedule(tmp_path / str(len(out)), race, prefix, dst_conditions)
        out.append((order, store))
        choices = (prefix + [0] * len(options))[: len(options)]
        while choices and choices[-1] + 1 >= options[len(choices) - 1]:
            choices.pop()
        if not choices:
            return out
        choices[-1] += 1
        prefix = choices
        assert len(out) < 500, "more schedules than this test can run"


OWN = ["rename", "unlink", "overwrite"]


@pytest.mark.parametrize(("name", "dst_conditions"),
                         [(n, d) for n in OWN for d in (False, True)]
                         + [(n, True) for n in RACES if n not in OWN])
def test_self_copy_in_every_order(tmp_path: Path, name: str, dst_conditions: bool) -> None:
    """The mount's own operations never meet its self-copy, on any server; another
    client's DELETE or PUT is guarded by the copy's conditions where the server takes
    them (where it does not, the window is one CopyObject: README, many clients)."""
    race, check = RACES[name]
    runs = schedules(tmp_path, race, dst_conditions)
    assert len(runs) >= 2
    for order, store in runs:
        try:
            check(store)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; requests in the order {order}") from None
        assert store.uploads == {}, order


def test_the_stepped_store_finds_the_resurrection_without_the_locks(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The test above can fail: with the node locks made no-ops, an unlink's DELETE lands
    between the self-copy's two steps in one of the schedules and the key comes back."""
    from contextlib import asynccontextmanager

    from s3fsmpu.fs import node_locks

    @asynccontextmanager
    async def no_lock(self: Any, *nodes: Any) -> Any:
        yield

    monkeypatch.setattr(node_locks.NodeLocks, "hold", no_lock)
    monkeypatch.setattr(node_locks.NodeLocks, "busy", lambda self, node: False)
    runs = schedules(tmp_path, unlink, dst_conditions=False)
    assert any("c" in store.objects for _, store in runs)

