"""Reloading credentials S3 stopped accepting, and retrying the refused request once.

botocore refreshes temporary credentials by itself when their provider says
when they expire (credential_process, assume-role, SSO, container, IMDS).
Static keys -- environment variables, the shared credentials file -- it
reads once, so a mount outliving a rotation of that file (a sidecar
rewriting ~/.aws/credentials every hour) would be refused for ever after.
This module owns what happens when S3 refuses a request with a code that
rotation explains: reload boto3's chain (at most once per `interval`, for
all worker threads together), swap the result in, and retry the request once
-- only if the credentials really changed, so a genuine refusal costs no
second request. An authentication failure means S3 did nothing, so the retry
is safe even for Complete or a conditional copy.

Plain Python, thread-safe, no botocore and no trio: the boto3 store supplies
the loader and calls `call` from its worker threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from s3fsmpu.errors import S3Error

log = logging.getLogger(__name__)
C = TypeVar("C")
T = TypeVar("T")

# Codes that mean "these credentials are no longer (or not yet) the current
# ones". SignatureDoesNotMatch is included: a secret rotated under the same
# access key id (as MinIO or Ceph administrators can do) answers exactly
# that. It can also mean a broken request, but then the reloaded credentials
# are the same ones and nothing is retried. AccessDenied is not here: it is
# a policy answer, and new keys of the same identity would not change it.
ROTATION_CODES = frozenset({
    "ExpiredToken", "ExpiredTokenException", "InvalidAccessKeyId", "InvalidToken",
    "TokenRefreshRequired", "RequestExpired", "SignatureDoesNotMatch",
})

RELOAD_INTERVAL = 5.0


def rotation_code(exc: BaseException) -> str | None:
    """The S3 code of `exc` if stale credentials may explain it, else None.

    Answers to HEAD have no body, so an expired or deleted key shows there
    as a bare 403, indistinguishable from a policy denial: it counts, and a
    real denial costs one chain reload per interval and no retry.
    """
    if not isinstance(exc, S3Error):
        return None
    if exc.code in ROTATION_CODES or (exc.status == 403 and exc.operation.startswith("Head")):
        return exc.code
    return None


class CredentialReloader(Generic[C]):
    """The current credentials of the chain, replaced when S3 refuses them.

    `identity(c)` is (access key, secret, token): two loads with the same
    identity are the same credentials, whatever objects carry them.
    """

    def __init__(
        self,
        current: C,
        load: Callable[[], C | None],
        identity: Callable[[C], tuple[str | None, ...]],
        interval: float = RELOAD_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.current = current
        self.generation = 0  # bumped on every swap
        self._load = load
        self._identity = identity
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last_reload: float | None = None

    def reload_after(self, code: str, operation: str, generation: int) -> bool:
        """After a refusal of a request signed in `generation`: is one retry worth it?

        Yes if another thread swapped the credentials since, or if a reload
        (not within `interval` of the last one) finds different ones.
        """
        with self._lock:
            if self.generation != generation:
                return True
            now = self._clock()
            if self._last_reload is not None and now - self._last_reload < self.interval:
                return False
            self._last_reload = now
            old = self.current
            try:
                fresh = self._load()
            except Exception as exc:  # noqa: BLE001 - a broken chain must not hide S3's answer
                log.error("S3 answered %s to %s; reloading credentials failed: %s", code, operation, exc)
                return False
            if fresh is None or self._identity(fresh) == self._identity(old):
                level = logging.WARNING if code == "403" else logging.ERROR
                log.log(level, "S3 answered %s to %s; the credential chain has nothing newer "
                        "(access key %s), not retried", code, operation, _tail(self._identity(old)[0]))
                return False
            self.current = fresh
            self.generation += 1
        log.info("credentials reloaded after S3 answered %s to %s: access key %s replaces %s",
                 code, operation, _tail(self._identity(fresh)[0]), _tail(self._identity(old)[0]))
        return True

    def call(self, fn: Callable[[], T], operation: str) -> T:
        """fn(), retried once with reloaded credentials if rotation explains its failure."""
        generation = self.generation
        try:
            return fn()
        except S3Error as exc:
            code = rotation_code(exc)
            if code is None or not self.reload_after(code, operation, generation):
                raise
        try:
            return fn()
        except S3Error as exc:
            code = rotation_code(exc)
            if code is not None:
                log.error("S3 still answers %s to %s with reloaded credentials", code, operation)
            raise


def _tail(access_key: str | None) -> str:
    """Enough of an access key id to tell keys apart in a log, not the whole id."""
    return "..." + (access_key or "")[-4:]
