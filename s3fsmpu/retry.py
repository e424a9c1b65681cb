"""One retry loop for every S3 call that may be retried: transient codes only,
exponential backoff with full jitter, bounded in attempts and logged."""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import trio

from s3fsmpu.errors import S3Error

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    base: float = 0.2
    cap: float = 5.0

    def delay(self, attempt: int) -> float:
        """Sleep before attempt number `attempt + 1` (attempt counts from 1)."""
        return random.uniform(0, min(self.cap, self.base * 2 ** (attempt - 1)))


async def retrying(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    what: str,
    on_retry: Callable[[S3Error], None] | None = None,
) -> T:
    """Run `call` until it succeeds, a non-transient error occurs, or attempts run out."""
    attempt = 1
    while True:
        try:
            return await call()
        except S3Error as exc:
            if not exc.transient or attempt >= policy.attempts:
                raise
            log.warning("retrying %s after %s (attempt %d of %d)", what, exc, attempt + 1, policy.attempts)
            if on_retry is not None:
                on_retry(exc)
            await trio.sleep(policy.delay(attempt))
            attempt += 1
