"""The mount-wide side of uploads: what every file being written shares.

`Uploader` holds the nursery that part uploads run in, the concurrency limit
(--upload-concurrency), the memory budget (--max-memory, shared with the
readers), the retry policy, the counters, and the open sessions, and says
what `s3fsmpu status` shows of them. One file being written is an
`UploadSession` (driver.py).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

import trio

from s3fsmpu.config import UploadConfig
from s3fsmpu.errors import S3Error, UploadFailed
from s3fsmpu.memory import MemoryBudget, memory_snapshot
from s3fsmpu.retry import RetryPolicy
from s3fsmpu.store.base import Expect, ObjectStore, WriteMeta
from s3fsmpu.upload.driver import UploadSession
from s3fsmpu.upload.schedule import schedule_for

log = logging.getLogger(__name__)


@dataclass
class UploadStats:
    started: int = 0
    completed: int = 0
    failed: int = 0
    retries: int = 0
    repaired: int = 0
    settled_by_head: int = 0
    completed_after_retry: int = 0
    parts_uploaded: int = 0
    parts_copied: int = 0
    bytes_uploaded: int = 0
    recovery_files: list[str] = field(default_factory=list)


class Uploader:
    def __init__(
        self, store: ObjectStore, config: UploadConfig, cache_dir: str, nursery: trio.Nursery,
        budget: MemoryBudget | None = None,
    ) -> None:
        """`budget`: the process's one memory budget, shared with the readers (memory.py)."""
        self.store = store
        self.config = config
        self.schedule = schedule_for(config)
        self.budget = budget if budget is not None else MemoryBudget(config.max_memory)
        self.limiter = trio.CapacityLimiter(config.concurrency)
        self.policy = RetryPolicy(config.max_attempts, config.backoff_base, config.backoff_max)
        self.cache_dir = cache_dir
        self.recovery_dir = os.path.join(cache_dir, "recovery")
        self.nursery = nursery
        self.sessions: set[UploadSession] = set()
        self.stats = UploadStats()
        self._warned_unconfirmed = False

    def open_session(self, key: str, meta: WriteMeta, expect: Expect | None = None) -> UploadSession:
        """`expect`: what the key holds as this mount knows it; the publish replaces only that."""
        session = UploadSession(self, key, meta, expect)
        self.sessions.add(session)
        return session

    def note_retry(self, _exc: S3Error) -> None:
        self.stats.retries += 1

    def note_unconfirmed_checksum(self) -> None:
        """A crc integrity mode on a server that does not echo the checksum (radosgw 16, moto):
        nothing here can tell whether it checked the bytes. Said once."""
        if not self._warned_unconfirmed:
            self._warned_unconfirmed = True
            algorithm = self.config.checksum_algorithm
            log.warning("the server does not confirm x-amz-checksum-%s: it may not check the bytes it "
                        "receives; --integrity md5 checks them on any S3 server", (algorithm or "").lower())

    def snapshot(self) -> dict[str, object]:
        """What `s3fsmpu status` shows: uploads in flight, failures, memory, totals."""
        now = time.monotonic()
        uploads = []
        for s in sorted(self.sessions, key=lambda s: s.key):
            if not (s.dirty or s._inflight or s.failed):
                continue
            age = now - s.opened_at
            uploads.append({
                "key": s.key,
                "upload_id": s.plan.upload_id,
                "bytes_written": s.plan.size,
                "bytes_sent": s.bytes_sent,
                "parts_done": s.plan.parts_done(),
                "parts_in_flight": len(s.plan.inflight()),
                "parts_so_far": s.plan.parts_so_far(),
                "mb_per_s": round(s.bytes_sent / 1e6 / age, 2) if age > 0 else 0.0,
                "age_s": round(age, 1),
                "state": "failed" if s.failed else ("retrying" if s.retrying else "uploading"),
                "recovery_file": s.failed.recovery_path if s.failed else None,
            })
        st = self.stats
        return {
            "uploads": uploads,
            **memory_snapshot(self.budget),
            "failures": list(st.recovery_files),
            "totals": {
                "completed": st.completed, "failed": st.failed, "retries": st.retries,
                "repaired": st.repaired, "settled_by_head": st.settled_by_head,
                "completed_after_retry": st.completed_after_retry, "parts_uploaded": st.parts_uploaded,
                "parts_copied": st.parts_copied, "bytes_uploaded": st.bytes_uploaded,
            },
        }

    async def drain(self) -> None:
        """At unmount: publish whatever is still dirty; failures are logged, not raised."""
        for session in list(self.sessions):
            try:
                await session.close()
            except UploadFailed:
                pass
