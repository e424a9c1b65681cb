"""A store wrapper that retries the idempotent calls of the filesystem core.

Lookups, listings, reads, deletes and the small PUTs of markers and
symlinks may be repeated safely, and S3 answers 503 SlowDown under load as
a matter of course: one such answer must not become EIO. Uploads keep
their own, more careful retry logic (upload/driver.py, completion.py).
"""

from __future__ import annotations

from typing import Any

from s3fsmpu.retry import RetryPolicy, retrying

IDEMPOTENT = frozenset({"head", "get_range", "list_page", "delete", "put", "list_uploads", "list_parts",
                        "check_bucket"})


class RetryingStore:
    def __init__(self, inner: Any, policy: RetryPolicy) -> None:
        self.inner = inner
        self.policy = policy

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)
        if name not in IDEMPOTENT:
            return target

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await retrying(lambda: target(*args, **kwargs), self.policy, name)

        return call
