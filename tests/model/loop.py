"""One trio run that outlives a sequence of synchronous calls.

Hypothesis's RuleBasedStateMachine calls its rules synchronously, one at a
time, while the filesystem core needs one long-lived trio run (its uploader
owns a nursery, its sessions own trio locks). `TrioLoop` runs trio in a
thread and executes each step in it with `trio.from_thread.run`, under a
generous `fail_after` so a hang fails the step instead of the whole suite.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

T = TypeVar("T")


class TrioLoop:
    def __init__(self, step_timeout: float = 60.0) -> None:
        self.step_timeout = step_timeout
        self.nursery: trio.Nursery | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="trio-loop", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _main(self) -> None:
        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            self._stop = trio.Event()
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                self._ready.set()
                await self._stop.wait()
                nursery.cancel_scope.cancel()

        try:
            trio.run(main)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread in close()
            self._error = exc
        finally:
            self._ready.set()

    def run(self, afn: Callable[..., Awaitable[T]], *args: Any, timeout: float | None = None) -> T:
        """Run `await afn(*args)` inside the trio run and return its result (or raise its error)."""
        limit = self.step_timeout if timeout is None else timeout

        async def step() -> T:
            with trio.fail_after(limit):
                return await afn(*args)

        if self._error is not None:
            raise RuntimeError("the trio run died") from self._error
        assert self._token is not None
        return trio.from_thread.run(step, trio_token=self._token)

    def close(self) -> None:
        """End the run (cancelling background tasks); re-raise anything that crashed it."""
        if self._stop is not None and self._token is not None and self._thread.is_alive():
            try:
                trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
            except trio.RunFinishedError:
                pass
        self._thread.join(60)
        assert not self._thread.is_alive(), "the trio run did not end"
        if self._error is not None:
            raise self._error
