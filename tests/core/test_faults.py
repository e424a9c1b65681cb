"""Failures injected by call count (store/faults.py), then the bucket inspected.

Every test ends by checking that no upload is left in progress and that no
wrong object exists (STYLE.md, habit 9).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from s3fsmpu.errors import S3Error, UploadFailed, to_errno
from s3fsmpu.store.base import Body, CompleteResult, PartResult, WriteMeta
from s3fsmpu.store.faults import FaultyStore, transient
from s3fsmpu.store.memory import MemoryStore
from tests.core.harness import PART, ROOT, Env, blob, expected_etag, run

DATA = blob(3 * PART + 1000, seed=42)


def faulty() -> tuple[FaultyStore, MemoryStore]:
    mem = MemoryStore(min_part_size=PART)
    return FaultyStore(mem), mem


def go(tmp_path: Path, store: FaultyStore, mem: MemoryStore, body, **kw) -> None:  # type: ignore[no-untyped-def]
    run(tmp_path, body, store=store, mem=mem, **kw)


def assert_clean(env: Env) -> None:
    assert env.mem.uploads == {}, f"uploads left in progress: {list(env.mem.uploads)}"


async def write_and_close(env: Env, name: str, data: bytes) -> None:
    fh = await env.create(name)
    await env.fs.write(fh, 0, data)
    await env.fs.flush(fh)
    await env.fs.release(fh)


def assert_object(env: Env, name: str, data: bytes) -> None:
    assert env.data(name) == data
    assert env.etag(name) == expected_etag(data)


# ---- Complete ---------------------------------------------------------------

def test_transient_complete_error_is_retried(tmp_path: Path) -> None:
    store, mem = faulty()
    store.fail("complete_multipart", transient("InternalError"))

    async def t(env: Env) -> None:
        await write_and_close(env, "f", DATA)
        assert_object(env, "f", DATA)
        assert store.calls["complete_multipart"] == 2
        assert env.uploader.stats.retries >= 1
        assert_clean(env)

    go(tmp_path, store, mem, t)


@pytest.mark.parametrize("code", ["SlowDown", "ServiceUnavailable", "RequestTimeout", "Timeout", "ConnectionError"])
def test_transient_complete_codes(tmp_path: Path, code: str) -> None:
    store, mem = faulty()
    store.fail("complete_multipart", S3Error(code, message="injected", status=200), times=2)

    async def t(env: Env) -> None:
        await write_and_close(env, "f", DATA)
        assert_object(env, "f", DATA)
        assert_clean(env)

    go(tmp_path, store, mem, t)


def test_lost_complete_response_is_settled_by_head(tmp_path: Path) -> None:
    store, mem = faulty()
    # the Complete lands, its answer is lost; the retry meets NoSuchUpload
    store.fail("complete_multipart", transient("InternalError"), after=True)

    async def t(env: Env) -> None:
        await write_and_close(env, "f", DATA)  # close() succeeds
        assert_object(env, "f", DATA)
        assert mem.calls["CompleteMultipartUpload"] == 2
        assert env.uploader.stats.settled_by_head == 1
        assert env.uploader.stats.failed == 0
        assert mem.calls["PutObject"] == 0  # no needless re-upload
        assert mem.calls["UploadPart"] == 4
        assert_clean(env)

    go(tmp_path, store, mem, t)


def test_lost_complete_response_of_an_overwrite(tmp_path: Path) -> None:
    store, mem = faulty()

    async def t(env: Env) -> None:
        await write_and_close(env, "f", blob(3 * PART, seed=1))  # an older object
        store.fail("complete_multipart", transient("InternalError"), after=True, nth=2)
        await write_and_close(env, "f", DATA)
        assert_object(env, "f", DATA)
        assert env.uploader.stats.settled_by_head == 1
        assert_clean(env)

    go(tmp_path, store, mem, t)


def test_empty_200_answer_to_complete(tmp_path: Path) -> None:
    store, mem = faulty()
    store.fail("complete_multipart", answer=CompleteResult(None))

    async def t(env: Env) -> None:
        await write_and_close(env, "f", DATA)
        assert_object(env, "f", DATA)
        assert env.uploader.stats.settled_by_head == 1
        assert_clean(env)

    go(tmp_path, store, mem, t)


def test_complete_answering_a_wrong_etag_is_not_trusted(tmp_path: Path) -> None:
    """A 200 with an ETag we did not compute: only HeadObject may say it is ours."""
    store, mem = faulty()
    store.fail("complete_multipart", answer=CompleteResult("0" * 32 + "-4"))

    async def t(env: Env) -> None:
        await write_and_close(env, "f", DATA)
        assert_object(env, "f", DATA)
        assert env.uploader.stats.settled_by_head == 1
        assert_clean(env)

    go(tmp_path, store, mem, t)


def test_invalid_part_once_is_repaired(tmp_path: Path) -> None:
    store, mem = faulty()
    store.fail("complete_multipart", S3Error("InvalidPart", message="injected", status=400))

    async def t(env: Env) -> None:
        await write_and_close(env, "f", DATA)
        assert_object(env, "f", DATA)
        assert env.uploader.stats.repaired == 1
        assert mem.calls["CreateMultipartUpload"] == 2
        assert mem.calls["AbortMultipartUpload"] == 1  # the refused upload
        assert mem.calls["UploadPart"] == 8  # every part again, from the local bytes
        assert_clean(env)

    go(tmp_path, store, mem, t)


def test_nosuchupload_on_first_complete_is_repaired(tmp_path: Path) -> None:
    store, mem = faulty()
    store.fail("complete_multipart", S3Error("NoSuchUpload", message="injected", status=404))

    async def t(env: Env) -> None:
        await write_and_close(env, "f", DATA)
        assert_object(env, "f", DATA)
        assert mem.calls["CreateMultipartUpload"] == 2
        assert_clean(env)

    go(tmp_path, store, mem, t)


def _recovery_files(env: Env) -> list[str]:
    root = os.path.join(env.config.cache_dir, "recovery")
    out = []
    for d, _, files in os.walk(root):
        out += [os.path.join(d, f) for f in files]
    return out


def test_invalid_part_every_time_new_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store, mem = faulty()
    store.fail("complete_multipart", S3Error("InvalidPart", message="injected", status=400), times=None)

    async def t(env: Env) -> None:
        fh = await env.create("f")
        await env.fs.write(fh, 0, DATA)
        with pytest.raises(UploadFailed) as info:
            await env.fs.flush(fh)
        failure = info.value
        assert to_errno(failure) == 5  # EIO
        assert "f" not in mem.objects
        assert_clean(env)
        # the written bytes are kept, and the error says where
        path = failure.recovery_path
        assert path is not None
        assert Path(path).is_relative_to(Path(env.config.cache_dir) / "recovery")
        assert Path(path).read_bytes() == DATA
        assert path in str(failure)
        assert _recovery_files(env) == [path]
        # failures stick: later writes and flushes raise the same error
        with pytest.raises(UploadFailed) as again:
            await env.fs.write(fh, 0, b"more")
        assert again.value is failure
        calls = dict(mem.calls)
        with pytest.raises(UploadFailed) as again:
            await env.fs.flush(fh)
        assert again.value is failure
        assert dict(mem.calls) == calls  # no new attempt
        await env.fs.release(fh)  # FUSE discards release errors; it must not raise
        assert Path(path).read_bytes() == DATA  # still there after close
        assert "f" not in mem.objects
        assert_clean(env)
        assert env.uploader.stats.failed == 1

    with caplog.at_level(logging.ERROR):
        go(tmp_path, store, mem, t)
    assert any("recovery" in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)


def test_invalid_part_every_time_overwrite_keeps_old_object(tmp_path: Path) -> None:
    store, mem = faulty()
    old = blob(2 * PART + 3, seed=9)

    async def t(env: Env) -> None:
        await write_and_close(env, "f", old)
        old_etag = env.etag("f")
        store.fail("complete_multipart", S3Error("InvalidPart", message="injected", status=400),
                   nth=2, times=None)
        fh = await env.create("f")
        await env.fs.write(fh, 0, DATA)
        with pytest.raises(UploadFailed) as info:
            await env.fs.flush(fh)
        await env.fs.release(fh)
        assert env.data("f") == old
        assert env.etag("f") == old_etag
        assert_clean(env)
        assert info.value.recovery_path is not None
        assert Path(info.value.recovery_path).read_bytes() == DATA

    go(tmp_path, store, mem, t)


def test_entity_too_small_fails_loudly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store, mem = faulty()
    store.fail("complete_multipart", S3Error("EntityTooSmall", message="injected", status=400), times=None)

    async def t(env: Env) -> None:
        fh = await env.create("f")
        await env.fs.write(fh, 0, DATA)
        with pytest.raises(UploadFailed) as info:
            await env.fs.flush(fh)
        assert "EntityTooSmall" in str(info.value)
        await env.fs.release(fh)
        assert store.calls["complete_multipart"] == 1  # a bug in us: never retried or repaired
        assert mem.calls["CreateMultipartUpload"] == 1
        assert "f" not in mem.objects
        assert_clean(env)
        assert Path(info.value.recovery_path or "").read_bytes() == DATA

    with caplog.at_level(logging.ERROR):
        go(tmp_path, store, mem, t)
    assert any("BUG" in r.getMessage() for r in caplog.records)


def test_real_entity_too_small_from_the_store(tmp_path: Path) -> None:
    """Parts smaller than the store's minimum: S3 refuses at Complete, and so must close()."""
    mem = MemoryStore(min_part_size=2 * PART)

    async def t(env: Env) -> None:
        fh = await env.create("f")
        await env.fs.write(fh, 0, DATA)
        with pytest.raises(UploadFailed):
            await env.fs.flush(fh)
        await env.fs.release(fh)
        assert "f" not in mem.objects
        assert mem.uploads == {}
        assert mem.calls["CompleteMultipartUpload"] == 1

    run(tmp_path, t, mem=mem)


@pytest.mark.parametrize("code", ["InvalidPartOrder", "MalformedXML"])
def test_other_definitive_complete_codes_fail_without_retry(tmp_path: Path, code: str) -> None:
    store, mem = faulty()
    store.fail("complete_multipart", S3Error(code, message="injected", status=400), times=None)

    async def t(env: Env) -> None:
        fh = await env.create("f")
        await env.fs.write(fh, 0, DATA)
        with pytest.raises(UploadFailed):
            await env.fs.flush(fh)
        await env.fs.release(fh)
        assert store.calls["complete_multipart"] == 1
        assert "f" not in mem.objects
        assert_clean(env)

    go(tmp_path, store, mem, t)


def test_complete_transient_forever_fails_after_attempts(tmp_path: Path) -> None:
    store, mem = faulty()
    store.fail("complete_multipart", transient("InternalError"), times=None)

    async def t(env: Env) -> None:
        fh = await env.create("f")
        await env.fs.write(fh, 0, DATA)
        with pytest.raises(UploadFailed):
            await env.fs.flush(fh)
        await env.fs.release(fh)
        assert store.calls["complete_multipart"] == env.uploader.config.max_attempts
        assert "f" not in mem.objects
        assert_clean(env)

    go(tmp_path, store, mem, t)


# ---- parts, create, put -------------------------------------------------------

def test_upload_part_slowdown_twice_is_retried(tmp_path: Path) -> None:
    store, mem = faulty()
    store.fail("upload_part", transient("SlowDown"), times=2)

    async def t(env: Env) -> None:
        await write_and_close(env, "f", DATA)
        assert_object(env, "f", DATA)
        assert store.calls["upload_part"] == 4 + 2
        assert mem.calls["UploadPart"] == 4
        assert env.uploader.stats.retries >= 2
        assert_clean(env)

    go(tmp_path, store, mem, t)


def test_upload_part_lost_answer_is_retried(tmp_path: Path) -> None:
    store, mem = faulty()
    store.fail("upload_part", S3Error("ConnectionError", message="dropped"), after=True, nth=2)

    async def t(env: Env) -> None:
        await write_and_close(env, "f", DATA)
        assert_object(env, "f", DATA)
        assert_clean(env)

    go(tmp_path, store, mem, t)


def test_upload_part_refused_fails_the_file(tmp_path: Path) -> None:
    store, mem = faulty()
    store.fail("upload_part", S3Error("AccessDenied", message="injected", status=403), nth=2, times=None)

    async def t(env: Env) -> None:
        fh = await env.create("f")
        with pytest.raises(UploadFailed) as info:
            # the failing part is found while writing or at the latest at flush
            for off in range(0, len(DATA), PART // 2):
                await env.fs.write(fh, off, DATA[off : off + PART // 2])
            await env.fs.flush(fh)
        failure = info.value
        with pytest.raises(UploadFailed) as again:
            await env.fs.flush(fh)
        assert again.value is failure
        await env.fs.release(fh)
        assert "f" not in mem.objects
        assert_clean(env)
        assert mem.calls["AbortMultipartUpload"] == 1
        assert failure.recovery_path is not None
        assert Path(failure.recovery_path).read_bytes() == DATA

    go(tmp_path, store, mem, t)


def test_upload_part_wrong_etag_is_not_accepted(tmp_path: Path) -> None:
    """The ETag S3 returns for a part is checked against the local MD5."""
    store, mem = faulty()
    store.fail("upload_part", answer=PartResult("f" * 32), times=None)

    async def t(env: Env) -> None:
        fh = await env.create("f")
        await env.fs.write(fh, 0, DATA)
        with pytest.raises(UploadFailed):
            await env.fs.flush(fh)
        await env.fs.release(fh)
        assert "f" not in mem.objects
        assert_clean(env)

    go(tmp_path, store, mem, t)


def test_create_multipart_transient_is_retried(tmp_path: Path) -> None:
    store, mem = faulty()
    store.fail("create_multipart", transient("SlowDown"), times=2)

    async def t(env: Env) -> None:
        await write_and_close(env, "f", DATA)
        assert_object(env, "f", DATA)
        assert mem.calls["CreateMultipartUpload"] == 1
        assert_clean(env)

    go(tmp_path, store, mem, t)


def test_single_put_transient_is_retried(tmp_path: Path) -> None:
    store, mem = faulty()
    store.fail("put", transient("InternalError"), times=2)

    async def t(env: Env) -> None:
        await write_and_close(env, "small", b"tiny file")
        assert env.data("small") == b"tiny file"
        assert store.calls["put"] == 3

    go(tmp_path, store, mem, t)


def test_single_put_refused_keeps_bytes(tmp_path: Path) -> None:
    store, mem = faulty()

    async def t(env: Env) -> None:
        await mem.put("small", Body(3, data=b"old"), WriteMeta())
        store.fail("put", S3Error("AccessDenied", message="injected", status=403), times=None)
        fh = await env.create("small")
        await env.fs.write(fh, 0, b"new bytes")
        with pytest.raises(UploadFailed) as info:
            await env.fs.flush(fh)
        await env.fs.release(fh)
        assert env.data("small") == b"old"
        assert Path(info.value.recovery_path or "").read_bytes() == b"new bytes"
        assert env.uploader.stats.failed == 1

    go(tmp_path, store, mem, t)


def test_failed_file_does_not_affect_others(tmp_path: Path) -> None:
    store, mem = faulty()
    store.fail("complete_multipart", S3Error("EntityTooSmall", message="injected"), times=1)

    async def t(env: Env) -> None:
        fh = await env.create("bad")
        await env.fs.write(fh, 0, DATA)
        with pytest.raises(UploadFailed):
            await env.fs.flush(fh)
        await env.fs.release(fh)
        await write_and_close(env, "good", DATA)
        assert_object(env, "good", DATA)
        # and the failed name can be written again from scratch
        await write_and_close(env, "bad", b"second try")
        assert env.data("bad") == b"second try"
        assert (await env.other_client().lookup(ROOT, "bad")).size == len(b"second try")
        assert_clean(env)

    go(tmp_path, store, mem, t)


def test_sse_kms_lost_complete_settled_by_upload_token(tmp_path: Path) -> None:
    """Where ETags are not MD5s, HeadObject recognises our object by its upload token."""
    store, mem = faulty()
    store.fail("complete_multipart", transient("InternalError"), after=True)

    async def t(env: Env) -> None:
        await write_and_close(env, "f", DATA)
        assert env.data("f") == DATA
        assert "s3fsmpu-token" in mem.objects["f"].metadata
        assert env.uploader.stats.settled_by_head == 1
        assert env.uploader.stats.failed == 0
        assert_clean(env)

    go(tmp_path, store, mem, t, sse="aws:kms")


def test_sse_kms_lost_complete_does_not_claim_someone_elses_object(tmp_path: Path) -> None:
    """The Complete is lost before it lands, and another client writes the key: not ours."""
    store, mem = faulty()

    async def t(env: Env) -> None:
        await write_and_close(env, "f", b"x" * len(DATA))  # same size, different token
        # first Complete fails without landing; the retry meets NoSuchUpload
        store.fail("complete_multipart", transient("InternalError"), nth=2)
        store.fail("complete_multipart", S3Error("NoSuchUpload", message="injected", status=404), nth=3)
        await write_and_close(env, "f", DATA)
        assert env.data("f") == DATA  # repaired from the local bytes, not mistaken
        assert_clean(env)

    go(tmp_path, store, mem, t, sse="aws:kms")
