"""A store wrapper that fails chosen calls, for tests.

`FaultyStore(inner).fail("complete_multipart", S3Error("InternalError"), nth=1)`
makes the first Complete raise that error. With `after=True` the call
reaches the inner store first and its answer is lost: the shape of a
dropped response. `answer=` replaces a successful answer instead (an empty
200 is `answer=CompleteResult(None)`). Every call is counted in `calls`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from s3fsmpu.errors import S3Error
from s3fsmpu.store.wrapper import StoreWrapper


@dataclass
class Fault:
    op: str
    error: S3Error | None
    nth: int = 1  # first call (1-based) of `op` it applies to
    times: int | None = 1  # how many consecutive calls from nth; None = forever
    after: bool = False  # call the inner store first, then fail
    answer: Any = None  # replace a successful answer
    hits: int = 0

    def applies(self, count: int) -> bool:
        if count < self.nth:
            return False
        return self.times is None or count < self.nth + self.times


class FaultyStore(StoreWrapper):
    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.faults: list[Fault] = []
        self.calls: Counter[str] = Counter()

    def fail(self, op: str, error: S3Error | None = None, *, nth: int = 1, times: int | None = 1,
             after: bool = False, answer: Any = None) -> Fault:
        fault = Fault(op, error, nth, times, after, answer)
        self.faults.append(fault)
        return fault

    async def around(self, name: str, args: tuple[Any, ...], call: Callable[[], Awaitable[Any]]) -> Any:
        self.calls[name] += 1
        count = self.calls[name]
        fault = next((f for f in self.faults if f.op == name and f.applies(count)), None)
        if fault is None:
            return await call()
        fault.hits += 1
        if fault.after or fault.answer is not None:
            await call()  # the call lands; its answer is lost or replaced
            if fault.error is None:
                return fault.answer
        if fault.error is not None:
            raise fault.error
        return await call()


def transient(code: str = "InternalError") -> S3Error:
    return S3Error(code, message="injected", status=500 if code == "InternalError" else 503)

