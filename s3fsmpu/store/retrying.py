"""A store wrapper that retries the idempotent calls of the filesystem core.

Lookups, listings, reads, deletes and the small PUTs of markers and
symlinks may be repeated safely, and S3 answers 503 SlowDown under load as
a matter of course: one such answer must not become EIO. Uploads keep
their own, more careful retry logic (upload/driver.py, completion.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from s3fsmpu.retry import RetryPolicy, retrying
from s3fsmpu.store.wrapper import StoreWrapper

IDEMPOTENT = frozenset({"head", "get_range", "get_range_into", "list_page", "delete", "put", "list_uploads",
                        "list_parts", "check_bucket"})


class RetryingStore(StoreWrapper):
    def __init__(self, inner: Any, policy: RetryPolicy) -> None:
        super().__init__(inner)
        self.policy = policy

    def wraps(self, name: str) -> bool:
        return name in IDEMPOTENT

    async def around(self, name: str, args: tuple[Any, ...], call: Callable[[], Awaitable[Any]]) -> Any:
        return await retrying(call, self.policy, name)
