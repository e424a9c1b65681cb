"""`s3fsmpu uploads`: find (and with --abort, abort) incomplete multipart uploads.

Pages through ListMultipartUploads to the very end (goofys and geesefs read
only the first 1,000), then lists or aborts with bounded concurrency.
"""

from __future__ import annotations

import time
from typing import TextIO

import trio

from s3fsmpu.errors import S3Error
from s3fsmpu.store.base import ObjectStore, UploadInfo

CONCURRENCY = 16


async def all_uploads(store: ObjectStore, prefix: str) -> list[UploadInfo]:
    found: list[UploadInfo] = []
    key_marker: str | None = None
    id_marker: str | None = None
    while True:
        page = await store.list_uploads(prefix, key_marker, id_marker)
        found.extend(page.uploads)
        if page.next_key_marker is None:
            return found
        if (page.next_key_marker, page.next_upload_id_marker) == (key_marker, id_marker):
            raise S3Error("BadPaging", prefix, "ListMultipartUploads did not advance", "ListMultipartUploads")
        key_marker, id_marker = page.next_key_marker, page.next_upload_id_marker


async def run_uploads(store: ObjectStore, prefix: str, abort: bool, older_than: float | None,
                      out: TextIO) -> int:
    uploads = await all_uploads(store, prefix)
    if older_than is not None:
        cutoff = time.time() - older_than
        uploads = [u for u in uploads if u.initiated < cutoff]
    limiter = trio.CapacityLimiter(CONCURRENCY)
    sizes: dict[str, tuple[int, int]] = {}
    failures: list[str] = []

    async def one(u: UploadInfo) -> None:
        async with limiter:
            try:
                if abort:
                    await store.abort_multipart(u.key, u.upload_id)
                else:
                    parts = await store.list_parts(u.key, u.upload_id)
                    sizes[u.upload_id] = (len(parts), sum(p.size for p in parts))
            except S3Error as exc:
                if exc.code != "NoSuchUpload":  # finished or aborted meanwhile: nothing to do
                    failures.append(f"{u.key} {u.upload_id}: {exc}")

    async with trio.open_nursery() as nursery:
        for u in uploads:
            nursery.start_soon(one, u)

    if abort:
        out.write(f"aborted {len(uploads) - len(failures)} incomplete upload(s)\n")
    else:
        out.write(f"{'INITIATED':20} {'PARTS':>5} {'BYTES':>12}  {'UPLOAD ID':36}  KEY\n")
        for u in uploads:
            parts, nbytes = sizes.get(u.upload_id, (0, 0))
            when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(u.initiated))
            out.write(f"{when:20} {parts:>5} {nbytes:>12}  {u.upload_id:36}  {u.key}\n")
        out.write(f"{len(uploads)} incomplete upload(s); remove with --abort\n")
    for line in failures:
        out.write(f"failed: {line}\n")
    return 1 if failures else 0
