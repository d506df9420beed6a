"""Things acquired once (a granted lease, a held lock, a leadership), on either event loop.

Callers ``await`` them (acquire, get the object back) or use ``async with`` (acquire, release on
exit). Concurrent awaits share one acquisition; cancelling the last waiter cancels it. Futures
and tasks are the driver's own (Deferreds on Twisted, asyncio futures and tasks on asyncio).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, Self

from .interface import Driver

__all__ = ["Acquirable"]


class Acquirable:
    """Base of ``Lease``, ``Lock`` and ``Leadership``: ``_acquire``/``_release`` do the work."""

    def __init__(self, driver: Driver) -> None:
        self._driver = driver
        self._held = False
        self._waiters: list[Any] | None = None
        self._task: Any = None

    async def _acquire(self) -> None:
        raise NotImplementedError

    async def _release(self) -> None:
        raise NotImplementedError

    def _check_usable(self) -> None:
        """Raise if this object cannot be (re)acquired."""

    def _entered(self) -> None:
        """Called once acquired by ``async with`` (a lease starts its keepalive here)."""

    def acquire(self) -> Any:
        """A cancellable loop future that resolves to ``self`` once acquired."""
        driver = self._driver
        try:
            self._check_usable()
        except Exception as exc:  # noqa: BLE001 - handed to the caller through the future
            return self._settled(exc)
        if self._held:
            return self._settled(None)
        waiter: Any = None
        waiter = driver.future(lambda: self._cancel_waiter(waiter))
        if self._waiters is None:
            self._waiters = [waiter]
            self._task = driver.spawn(self._run())
        else:
            self._waiters.append(waiter)
        return waiter

    def _settled(self, error: BaseException | None) -> Any:
        future = self._driver.future()
        if error is None:
            self._driver.resolve(future, self)
        else:
            self._driver.fail(future, error)
        return future

    def _cancel_waiter(self, waiter: Any) -> None:
        if self._waiters is not None and waiter in self._waiters:
            self._waiters.remove(waiter)
            if not self._waiters and self._task is not None:
                self._task.cancel()

    async def _run(self) -> None:
        try:
            await self._acquire()
        except BaseException as exc:  # noqa: BLE001 - every waiter gets it, cancellation too
            self._acquired(exc)
        else:
            self._acquired(None)

    def _acquired(self, error: BaseException | None) -> None:
        waiters, self._waiters, self._task = self._waiters or [], None, None
        self._held = error is None
        for waiter in waiters:
            if error is None:
                self._driver.resolve(waiter, self)
            else:
                self._driver.fail(waiter, error)

    def __await__(self) -> Generator[Any, None, Self]:
        result: Self = yield from self.acquire().__await__()
        return result

    async def __aenter__(self) -> Self:
        acquired: Self = await self.acquire()
        self._entered()
        return acquired

    async def __aexit__(self, *exc_info: object) -> None:
        await self._release()
