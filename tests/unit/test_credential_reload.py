"""The reload-and-retry rule for credentials S3 stops accepting (store/credential_reload.py)."""

from __future__ import annotations

import logging
import threading

import pytest

from s3fsmpu.errors import S3Error, to_errno
from s3fsmpu.store.credential_reload import CredentialReloader, rotation_code


class Chain:
    """A credential chain whose answer the test rotates; counts its loads."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.loads = 0

    def load(self) -> tuple[str, str, None]:
        self.loads += 1
        return (self.key, "secret-" + self.key, None)


class Server:
    """Accepts only the chain's current key, as S3 after a rotation."""

    def __init__(self, reloader: CredentialReloader, chain: Chain, code: str = "InvalidAccessKeyId",
                 operation: str = "PutObject", status: int = 403) -> None:
        self.reloader, self.chain, self.code, self.operation, self.status = reloader, chain, code, operation, status
        self.requests = 0

    def request(self) -> str:
        self.requests += 1
        if self.reloader.current[0] != self.chain.key:
            raise S3Error(self.code, "k", "refused", self.operation, self.status)
        return "ok"


def setup(code: str = "InvalidAccessKeyId", operation: str = "PutObject", status: int = 403):
    chain = Chain("A")
    clock = [0.0]
    reloader = CredentialReloader(chain.load(), lambda: chain.load(), lambda c: c, interval=5.0, clock=lambda: clock[0])
    return chain, clock, reloader, Server(reloader, chain, code, operation, status)


@pytest.mark.parametrize("code", ["ExpiredToken", "InvalidAccessKeyId", "InvalidToken", "SignatureDoesNotMatch",
                                  "TokenRefreshRequired"])
def test_a_rotated_key_is_reloaded_once_and_the_request_retried(code: str, caplog) -> None:
    chain, _, reloader, server = setup(code, status=400 if "Token" in code else 403)
    assert reloader.call(server.request, "PutObject") == "ok"
    chain.key = "B"
    with caplog.at_level(logging.INFO, "s3fsmpu.store.credential_reload"):
        assert reloader.call(server.request, "PutObject") == "ok"
    assert server.requests == 3 and chain.loads == 2
    assert reloader.current[0] == "B"
    lines = [r for r in caplog.records if "reloaded" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO and code in lines[0].getMessage()


def test_a_bodiless_403_to_head_counts_but_access_denied_does_not() -> None:
    assert rotation_code(S3Error("403", "k", "", "HeadObject", 403)) == "403"
    assert rotation_code(S3Error("AccessDenied", "", "", "HeadBucket", 403)) == "AccessDenied"
    assert rotation_code(S3Error("AccessDenied", "k", "", "PutObject", 403)) is None
    assert rotation_code(S3Error("NoSuchKey", "k", "", "GetObject", 404)) is None
    chain, _, reloader, server = setup("403", "HeadObject")
    chain.key = "B"
    assert reloader.call(server.request, "HeadObject") == "ok"


def test_nothing_newer_is_not_retried_and_keeps_its_code_and_errno(caplog) -> None:
    chain, _, reloader, server = setup("InvalidAccessKeyId")
    chain.key = "B"
    reloader.current = ("revoked", "x", None)
    chain.load = lambda: ("revoked", "x", None)  # type: ignore[method-assign]
    with caplog.at_level(logging.INFO, "s3fsmpu.store.credential_reload"), pytest.raises(S3Error) as info:
        reloader.call(server.request, "PutObject")
    assert server.requests == 1  # the same credentials are not sent again
    assert info.value.code == "InvalidAccessKeyId"
    assert to_errno(info.value) == to_errno(S3Error("InvalidAccessKeyId"))
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "InvalidAccessKeyId" in errors[0].getMessage()


def test_access_denied_costs_no_reload() -> None:
    chain, _, reloader, server = setup("AccessDenied")
    chain.key = "B"
    with pytest.raises(S3Error):
        reloader.call(server.request, "PutObject")
    assert chain.loads == 1 and server.requests == 1


def test_reloads_at_most_once_per_interval(caplog) -> None:
    chain, clock, reloader, server = setup()
    chain.key = "B"
    assert reloader.call(server.request, "PutObject") == "ok"
    chain.key = "C"
    clock[0] = 4.0  # within the interval: refused, no reload
    with pytest.raises(S3Error):
        reloader.call(server.request, "PutObject")
    assert chain.loads == 2
    clock[0] = 5.5
    assert reloader.call(server.request, "PutObject") == "ok"
    assert chain.loads == 3


def test_a_failing_chain_keeps_s3s_answer(caplog) -> None:
    chain, _, reloader, server = setup()
    chain.key = "B"

    def broken() -> None:
        raise RuntimeError("credential_process exited 1")

    chain.load = broken  # type: ignore[method-assign, assignment]
    with caplog.at_level(logging.ERROR), pytest.raises(S3Error) as info:
        reloader.call(server.request, "PutObject")
    assert info.value.code == "InvalidAccessKeyId"
    assert "credential_process exited 1" in caplog.text and "InvalidAccessKeyId" in caplog.text


def test_concurrent_refusals_reload_once_and_all_retry() -> None:
    """Worker threads refused together: one reloads, the others retry with its result."""
    chain, _, reloader, _ = setup()
    refused = threading.Barrier(8)
    gate = threading.Lock()
    first_round: set[int] = set()

    def request() -> str:
        stale = reloader.current[0] != chain.key  # judged as S3 would, at signing time
        me = threading.get_ident()
        with gate:
            first = me not in first_round
            first_round.add(me)
        if first:
            refused.wait(10)  # every thread has sent the old key before any reload
        if stale:
            raise S3Error("InvalidAccessKeyId", "k", "", "PutObject", 403)
        return "ok"

    chain.key = "B"
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(reloader.call(request, "PutObject")))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert results == ["ok"] * 8
    assert chain.loads == 2 and reloader.generation == 1
