"""Fault soak of the filesystem core (issue 8): a few percent of all store calls fail.

FaultyStore wraps the MemoryStore and, for every operation, fails a random
few percent of its calls (chosen by call count from a seeded RNG, so the
fault plan is fixed per seed): transient codes (InternalError, SlowDown,
ServiceUnavailable), lost responses (`after=True`: the call lands and its
answer is lost), definitive refusals of writes (AccessDenied) and
InvalidPart on Complete. A few hundred random file operations run through
S3Filesystem: new files (sequential or random-offset writes, mid-way
flushes, truncates), in-place updates and appends, renames and unlinks.

The contract checked after every operation and at the end: a file whose
close() succeeded is exactly in the bucket; a writer that got an error has
its intended bytes in the recovery folder (the UploadFailed names the file)
and the bucket holds either the earlier version or the intended one, never
anything else; after shutdown no multipart upload is left, the spool is
empty, and another client reads exactly what the model says.

Files are worked on one after the other (their part uploads still run
concurrently), so a seed always meets the same faults at the same calls.
S3FSMPU_SLOW=1 runs 60 seeds instead of 8, and 200 seeds at a 12% fault rate.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from s3fsmpu.errors import S3Error, S3FSError, UploadFailed
from s3fsmpu.store.faults import FaultyStore
from s3fsmpu.store.memory import MemoryStore
from tests.core.harness import CREATE_FLAGS, PART, ROOT, Env, blob, run

SLOW = os.environ.get("S3FSMPU_SLOW") == "1"
SEEDS = range(60 if SLOW else 8)
HIGH_RATE_SEEDS = range(200)
FILES = 8
SESSIONS = 4
FAULT_RATE = 0.03
CALLS = 600  # faults are planned for the first CALLS calls of each operation

OPS = ("head", "get_range", "list_page", "put", "copy", "delete", "create_multipart", "upload_part",
       "upload_part_copy", "complete_multipart", "abort_multipart")
# chunk GETs into reused buffers: planned from a stream of their own, so that the
# workload each seed draws after the plan stays what it was before they existed
LATER_OPS = ("get_range_into",)
WRITES = ("put", "create_multipart", "upload_part", "upload_part_copy")
TRANSIENT = ("InternalError", "SlowDown", "ServiceUnavailable")


def plan_faults(store: FaultyStore, rng: random.Random, rate: float, ops: tuple[str, ...] = OPS) -> None:
    for op in ops:
        for nth in range(1, CALLS):
            roll = rng.random()
            if roll >= rate:
                continue
            if op == "complete_multipart" and roll < rate / 3:
                store.fail(op, S3Error("InvalidPart", message="injected", status=400), nth=nth)
            elif op in WRITES and roll < rate / 6:
                store.fail(op, S3Error("AccessDenied", message="injected", status=403), nth=nth)
            else:
                code = rng.choice(TRANSIENT)
                # a lost CreateMultipartUpload answer orphans an upload: its own test below
                lost = rng.random() < 0.3 and op != "create_multipart"
                store.fail(op, S3Error(code, message="injected", status=503), nth=nth, after=lost)


@dataclass
class Model:
    """What the bucket must hold: key -> bytes (None: no object)."""

    good: dict[str, bytes | None] = field(default_factory=dict)
    errors: int = 0
    recovered: int = 0
    successes: int = 0
    faults_hit: int = 0

    def adopt(self, env: Env, name: str, *allowed: bytes | None) -> None:
        """After an error: the bucket holds one of `allowed`; that is what it holds from now on."""
        obj = env.mem.objects.get(name)
        got = obj.data if obj is not None else None
        assert got in allowed, (
            f"{name!r} after an error: bucket holds {None if got is None else len(got)} bytes, "
            f"allowed: {[None if a is None else len(a) for a in allowed]}")
        self.good[name] = got


def check_bucket(env: Env, model: Model) -> None:
    for name, data in model.good.items():
        obj = env.mem.objects.get(name)
        if data is None:
            assert obj is None, f"{name!r} should not exist"
        else:
            assert obj is not None, f"{name!r} missing from the bucket"
            assert obj.data == data, f"{name!r}: {len(obj.data)} bytes in the bucket, expected {len(data)}"


def check_recovery(exc: BaseException, intended: bytes) -> None:
    """An upload error names a recovery file holding exactly the intended bytes."""
    assert isinstance(exc, UploadFailed), f"an upload failure that is not UploadFailed: {exc!r}"
    assert exc.recovery_path is not None, f"no recovery file for {exc}"
    kept = Path(exc.recovery_path).read_bytes()
    assert kept == intended, f"recovery file {exc.recovery_path}: {len(kept)} bytes, intended {len(intended)}"


async def write_session(env: Env, model: Model, name: str, rng: random.Random, update: bool) -> None:
    """One open .. close of `name`: the writes a program makes, then the verdict."""
    before = model.good.get(name)
    content = bytearray(before or b"") if update else bytearray()
    try:
        if update:
            inode = (await env.fs.lookup(ROOT, name)).inode
            fh = await env.fs.open(inode, os.O_RDWR)
        else:
            fh, _ = await env.fs.create(ROOT, name, 0o644, CREATE_FLAGS, os.getuid(), os.getgid())
    except S3FSError:  # a failed lookup or open: nothing was written, nothing changed
        model.errors += 1
        model.adopt(env, name, before)
        return
    error: BaseException | None = None
    published = before  # what a successful mid-way flush put there
    try:
        for _ in range(rng.randint(1, 6)):
            kind = rng.random()
            if kind < 0.6:
                off = len(content) if (not update and rng.random() < 0.7) else rng.randint(0, len(content) + PART)
                data = blob(rng.choice([1, 1000, PART - 1, PART, PART + 1, rng.randint(1, 3 * PART)]),
                            rng.randrange(1 << 30))
                await env.fs.write(fh, off, data)
                content[len(content):off] = bytes(max(0, off - len(content)))
                content[off : off + len(data)] = data
            elif kind < 0.8:
                size = rng.randint(0, len(content) + PART)
                await env.fs.setattr(await inode_of(env, name), size=size)
                del content[size:]
                content.extend(bytes(size - len(content)))
            else:
                await env.fs.flush(fh)
                published = bytes(content)
                model.good[name] = published
                check_bucket(env, model)
        await env.fs.flush(fh)
    except S3FSError as exc:
        error = exc
    finally:
        await env.fs.release(fh)  # FUSE discards release errors; its flush is a retry of the same failure
    intended = bytes(content)
    if error is None:
        model.successes += 1
        model.good[name] = intended
        check_bucket(env, model)
        return
    model.errors += 1
    if isinstance(error, UploadFailed):
        check_recovery(error, intended)
        model.recovered += 1
    model.adopt(env, name, published, intended)


async def inode_of(env: Env, name: str) -> int:
    node = env.fs.inodes.by_path(name)
    assert node is not None and node.writer is not None  # open here: no lookup needed (as the kernel)
    return node.inode


async def rename(env: Env, model: Model, src: str, dst: str) -> None:
    data, old = model.good.get(src), model.good.get(dst)
    try:
        await env.fs.lookup(ROOT, src)
        await env.fs.rename(ROOT, src, ROOT, dst)
    except S3FSError:
        model.errors += 1
        # the copy may have landed, and the delete too (a lost answer): never anything else
        model.adopt(env, dst, old, data)
        model.adopt(env, src, data, None if model.good[dst] == data else data)
        return
    model.good[dst], model.good[src] = data, None
    check_bucket(env, model)


async def unlink(env: Env, model: Model, name: str) -> None:
    try:
        await env.fs.lookup(ROOT, name)
        await env.fs.unlink(ROOT, name)
    except S3FSError:
        model.errors += 1
        model.adopt(env, name, model.good.get(name), None)
        return
    model.good[name] = None
    check_bucket(env, model)


def soak(seed: int, tmp_path: Path, rate: float = FAULT_RATE) -> Model:
    rng = random.Random(seed)
    random.seed(seed)  # retry jitter
    mem = MemoryStore(min_part_size=PART)
    store = FaultyStore(mem)
    plan_faults(store, rng, rate)
    plan_faults(store, random.Random(f"{seed}-later"), rate, LATER_OPS)
    model = Model()

    async def body(env: Env) -> None:
        names = [f"f{i}" for i in range(FILES)]
        for _ in range(FILES * SESSIONS):
            name = rng.choice(names)
            exists = model.good.get(name) is not None
            roll = rng.random()
            if exists and roll < 0.1:
                await rename(env, model, name, rng.choice([n for n in names if n != name]))
            elif exists and roll < 0.15:
                await unlink(env, model, name)
            else:
                await write_session(env, model, name, rng, update=exists and roll < 0.5)
        model.faults_hit = sum(f.hits for f in store.faults)
        store.faults.clear()
        await env.fs.shutdown()
        assert mem.uploads == {}, f"uploads left after shutdown: {list(mem.uploads)}"
        spool = Path(env.config.cache_dir) / "spool"
        assert not spool.exists() or list(spool.iterdir()) == [], "spool files left"
        check_bucket(env, model)
        other = env.other_client()
        names_now = sorted(await env.listdir(other))
        assert names_now == sorted(n for n, d in model.good.items() if d is not None)
        for n in names_now:
            assert await env.read_all(other, n) == model.good[n], n
        other.metacache.close()

    run(tmp_path, body, store=store, mem=mem, timeout=120, attr_timeout=0.0, concurrency=4)
    return model


@pytest.mark.parametrize("seed", SEEDS)
def test_fault_soak(seed: int, tmp_path: Path) -> None:
    model = soak(seed, tmp_path)
    assert model.faults_hit > 0 and model.successes >= FILES  # faults bit, and real work was done


def test_fault_soak_meets_every_kind_of_failure(tmp_path: Path) -> None:
    """Across the default seeds the soak meets failures with recovery files, not only retries."""
    totals = Model()
    for seed in SEEDS[:4]:
        m = soak(seed, tmp_path / str(seed))
        totals.errors += m.errors
        totals.recovered += m.recovered
        totals.faults_hit += m.faults_hit
    assert totals.recovered > 0 and totals.faults_hit > 10 * totals.recovered


@pytest.mark.skipif(not SLOW, reason="long soak: S3FSMPU_SLOW=1")
@pytest.mark.parametrize("seed", HIGH_RATE_SEEDS)
def test_fault_soak_high_rate(seed: int, tmp_path: Path) -> None:
    """12% of all calls fail. (Seeds 22, 43 and 126 found the bug pinned by
    test_update_whose_lost_complete_cannot_be_settled.)"""
    soak(seed, tmp_path, rate=0.12)


def test_lost_create_multipart_answer_leaves_no_upload(tmp_path: Path) -> None:
    """Regression test: found here, fixed since.

    CreateMultipartUpload lands but its answer is lost (a dropped connection):
    the retry creates a second upload and the file completes through it, but the
    first upload id was never seen, so nothing aborts it. After a clean shutdown an
    incomplete upload is left in the bucket, which the README promises never happens
    ("a clean unmount leaves no incomplete multipart upload behind").
    (upload/driver.py _ensure_created: `retrying(create_multipart)` with no
    reconciliation, e.g. ListMultipartUploads for the key after a retried Create.)
    """
    mem = MemoryStore(min_part_size=PART)
    store = FaultyStore(mem)
    store.fail("create_multipart", S3Error("InternalError", message="injected", status=500), after=True)
    data = blob(3 * PART, seed=1)

    async def body(env: Env) -> None:
        await env.write_file("f", data)
        assert env.data("f") == data
        await env.fs.shutdown()
        assert mem.uploads == {}, f"uploads left after shutdown: {list(mem.uploads.values())}"

    run(tmp_path, body, store=store, mem=mem)


def test_update_whose_lost_complete_cannot_be_settled(tmp_path: Path) -> None:
    """Regression test: found by the soak at a 12% fault rate, fixed since.

    An in-place update (open r+, write a
    few bytes) whose first Complete lands but loses its answer; the retry meets
    NoSuchUpload and the HeadObject meant to settle it fails with a transient
    SlowDown. completion.py (complete_upload -> _settle) does not retry that HEAD and
    returns REPAIR ("NoSuchUpload on Complete"); the repair copies the unchanged
    parts from the old object with UploadPartCopy guarded by the old ETag, but the key
    already holds the new object: 412, close() fails with EIO although S3 holds
    exactly the intended bytes, and the recovery file cannot be completed either
    ("it holds only the changed ranges"): it differs from what was written.
    Either outcome is fine for the contract -- success, or an error with the intended
    bytes in the recovery file -- this is neither.
    """
    mem = MemoryStore(min_part_size=PART)
    store = FaultyStore(mem)
    old = blob(3 * PART + 100, seed=1)
    intended = bytearray(old)
    intended[10:20] = b"0123456789"

    async def body(env: Env) -> None:
        await env.write_file("f", old)
        inode = (await env.fs.lookup(ROOT, "f")).inode
        fh = await env.fs.open(inode, os.O_RDWR)
        await env.fs.write(fh, 10, b"0123456789")
        completes = store.calls["complete_multipart"]
        store.fail("complete_multipart", S3Error("InternalError", message="injected", status=500),
                   nth=completes + 1, after=True)
        store.fail("head", S3Error("SlowDown", message="injected", status=503), nth=store.calls["head"] + 1)
        error: UploadFailed | None = None
        try:
            await env.fs.flush(fh)
        except UploadFailed as exc:
            error = exc
        await env.fs.release(fh)
        assert env.data("f") == bytes(intended)  # the first Complete landed
        if error is not None:  # then the bytes must be kept, whole
            check_recovery(error, bytes(intended))
        await env.fs.shutdown()
        assert mem.uploads == {}

    run(tmp_path, body, store=store, mem=mem)


@pytest.mark.parametrize("op", ["list_page", "head", "get_range", "delete"])
def test_one_transient_error_outside_uploads_is_retried(op: str, tmp_path: Path) -> None:
    """Regression test: fixed since.

    Seen as EIO from `mkdir`/`open` in the 60 s load test, when moto answered one
    ListObjectsV2 with HTTP 500: only uploads, copies and Complete retry transient
    errors. Lookups (HeadObject, ListObjectsV2), reads (GetObject) and unlink
    (DeleteObject) call the store once (store/boto3_store.py: "one attempt per call.
    Retrying is the caller's job"; fs/core.py and fs/reader.py never retry), so a single
    503 SlowDown -- which S3 sends under load as a matter of course -- is EIO for the
    application.
    """
    mem = MemoryStore(min_part_size=PART)
    store = FaultyStore(mem)
    data = blob(3 * PART + 5, seed=3)

    async def body(env: Env) -> None:
        await env.write_file("f", data)
        env.fs.forget((await env.fs.lookup(ROOT, "f")).inode, 1)
        store.fail(op, S3Error("SlowDown", message="injected", status=503), nth=store.calls[op] + 1)
        if op == "delete":
            await env.fs.lookup(ROOT, "f")
            await env.fs.unlink(ROOT, "f")
            assert "f" not in mem.objects
        elif op == "list_page":
            assert await env.listdir() == ["f"]
        else:  # a lookup (HeadObject), then reads (GetObject)
            assert await env.read_all(env.fs, "f") == data
        assert store.faults[0].hits == 1

    run(tmp_path, body, store=store, mem=mem, attr_timeout=0.0)
