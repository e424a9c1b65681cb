"""The one shape of every store decorator: forward everything, wrap some calls.

Subclasses say which calls they wrap (`wraps`) and what happens around each
(`around`); the fault, retry and metrics wrappers differ only there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any


class StoreWrapper:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def wraps(self, name: str) -> bool:
        return True

    async def around(self, name: str, args: tuple[Any, ...], call: Callable[[], Awaitable[Any]]) -> Any:
        return await call()

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)
        if name.startswith("_") or not callable(target) or not self.wraps(name):
            return target

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self.around(name, (*args, *kwargs.values()), lambda: target(*args, **kwargs))

        return call
