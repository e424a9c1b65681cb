"""`s3fsmpu uploads` logic on the memory store, which pages at 1,000 as S3 does."""

from __future__ import annotations

import io
import time

import trio

from s3fsmpu.store.base import WriteMeta
from s3fsmpu.store.memory import MemoryStore
from s3fsmpu.uploads_cmd import all_uploads, run_uploads


def test_pages_past_the_first_1000_and_aborts_all():
    async def main() -> None:
        store = MemoryStore()
        for i in range(2500):
            await store.create_multipart(f"p/{i:05d}", WriteMeta())
        await store.create_multipart("other/x", WriteMeta())
        found = await all_uploads(store, "p/")
        assert len(found) == 2500 and len({u.upload_id for u in found}) == 2500
        assert store.calls["ListMultipartUploads"] == 3
        out = io.StringIO()
        assert await run_uploads(store, "p/", True, None, out) == 0
        assert "aborted 2500" in out.getvalue()
        assert [u.key for u in store.uploads.values()] == ["other/x"]

    trio.run(main)


def test_older_than_keeps_young_uploads():
    async def main() -> None:
        store = MemoryStore()
        old_id = await store.create_multipart("a/old", WriteMeta())
        store.uploads[old_id].initiated = time.time() - 3 * 86400
        young_id = await store.create_multipart("a/young", WriteMeta())
        out = io.StringIO()
        await run_uploads(store, "a/", True, 86400, out)
        assert "aborted 1" in out.getvalue()
        assert list(store.uploads) == [young_id]
        listing = io.StringIO()
        await run_uploads(store, "a/", False, None, listing)
        assert "a/young" in listing.getvalue() and "1 incomplete upload(s)" in listing.getvalue()

    trio.run(main)
