"""Deferred shapes that let one call serve ``yield`` (inlineCallbacks) and ``await`` alike.

txaioetcd's calls returned Deferreds (or coroutines), which an ``inlineCallbacks`` generator
can ``yield``; an object that is only awaitable would come back from ``yield`` unchanged, as a
silent misuse. ``started`` runs a coroutine method at once and returns its Deferred;
``LazyDeferred`` is a Deferred whose work starts when somebody first waits on it.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Generator
from functools import wraps
from typing import Any, Generic, ParamSpec, Self, TypeVar

from twisted.internet import defer
from twisted.python.failure import Failure

__all__ = ["Acquirable", "Acquiring", "LazyDeferred", "started"]

P = ParamSpec("P")
T = TypeVar("T")


def started(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, defer.Deferred[T]]:
    """Run a coroutine method at once and return its Deferred, as txaioetcd's methods did: the
    call takes effect whether or not the caller awaits it (``lease.revoke()`` alone revokes)."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> defer.Deferred[T]:
        return defer.ensureDeferred(fn(*args, **kwargs))

    return wrapper


class LazyDeferred(defer.Deferred[T]):
    """A Deferred whose work (``_begin()``) starts when it is first waited on: ``yield``,
    ``await``, ``addCallback`` and friends; cancelling it cancels that work."""

    def __init__(self) -> None:
        super().__init__(self._cancel_work)
        self._work: defer.Deferred[T] | None = None

    def _begin(self) -> defer.Deferred[T]:
        raise NotImplementedError

    def _start(self) -> None:
        if self._work is None and not self.called:
            self._work = self._begin()
            self._work.chainDeferred(self)

    def _cancel_work(self, _self: defer.Deferred[T]) -> None:
        if self._work is not None:
            self._work.cancel()

    # Every way of waiting on a Deferred (yield, await, chaining) goes through one of these.
    def addCallbacks(self, *args: Any, **kwargs: Any) -> Any:  # noqa: N802 - Twisted's name
        self._start()
        return super().addCallbacks(*args, **kwargs)

    def addCallback(self, *args: Any, **kwargs: Any) -> Any:  # noqa: N802
        self._start()
        return super().addCallback(*args, **kwargs)

    def addErrback(self, *args: Any, **kwargs: Any) -> Any:  # noqa: N802
        self._start()
        return super().addErrback(*args, **kwargs)

    def addBoth(self, *args: Any, **kwargs: Any) -> Any:  # noqa: N802
        self._start()
        return super().addBoth(*args, **kwargs)


class Acquirable:
    """Something acquired once (a granted lease, a held lock, a leadership) that callers either
    ``await`` (acquire, get it back) or use in ``async with`` (acquire, then release on exit).

    Concurrent awaits share one acquisition; cancelling the last waiter cancels it.
    """

    def __init__(self) -> None:
        self._held = False
        self._waiters: list[defer.Deferred[Any]] | None = None
        self._task: defer.Deferred[Any] | None = None

    async def _acquire(self) -> None:
        raise NotImplementedError

    async def _release(self) -> None:
        raise NotImplementedError

    def _check_usable(self) -> None:
        """Raise if this object cannot be (re)acquired."""

    def _entered(self) -> None:
        """Called once acquired by ``async with`` (a lease starts its keepalive here)."""

    def acquiring(self) -> Acquiring[Self]:
        """A Deferred of this object once acquired that is also an async context manager."""
        return Acquiring(self)

    def acquire(self) -> defer.Deferred[Self]:
        """A cancellable Deferred that fires with ``self`` once acquired."""
        try:
            self._check_usable()
        except Exception:
            return defer.fail()
        if self._held:
            return defer.succeed(self)
        waiter: defer.Deferred[Self] = defer.Deferred(self._cancel_waiter)
        if self._waiters is None:
            self._waiters = [waiter]
            self._task = defer.ensureDeferred(self._acquire())
            self._task.addBoth(self._acquired)
        else:
            self._waiters.append(waiter)
        return waiter

    def _cancel_waiter(self, waiter: defer.Deferred[Any]) -> None:
        if self._waiters is not None and waiter in self._waiters:
            self._waiters.remove(waiter)
            if not self._waiters and self._task is not None:
                self._task.cancel()

    def _acquired(self, result: Any) -> None:
        waiters, self._waiters, self._task = self._waiters or [], None, None
        self._held = not isinstance(result, Failure)
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(self)

    def __await__(self) -> Generator[Any, None, Self]:
        return self.acquire().__await__()

    async def __aenter__(self) -> Self:
        acquired = await self.acquire()
        self._entered()
        return acquired

    async def __aexit__(self, *exc_info: object) -> None:
        await self._release()


A = TypeVar("A", bound=Acquirable)


class Acquiring(LazyDeferred[A], Generic[A]):
    """What ``client.lease(ttl)`` and ``client.lock(name)`` return: a Deferred that fires with
    the granted lease (the held lock), so ``yield`` in ``inlineCallbacks`` and ``await`` both
    get a usable object, and an async context manager (``async with`` also releases it).

    The acquisition starts when the Deferred is first waited on (``yield``, ``await``,
    ``addCallback``, ``async with``); attributes of the object itself (``acquire()``, ``lost``,
    ...) are reachable through it.
    """

    def __init__(self, target: A) -> None:
        super().__init__()
        self.target = target

    def __repr__(self) -> str:
        return f"<Acquiring {self.target!r}>"

    def __getattr__(self, name: str) -> Any:
        # Deferred's own internals probe for missing attributes (``result``): never forward those.
        if name.startswith("_") or name == "result":
            raise AttributeError(name)
        return getattr(self.target, name)

    def _begin(self) -> defer.Deferred[A]:
        return self.target.acquire()

    async def __aenter__(self) -> A:
        acquired: A = await self
        acquired._entered()
        return acquired

    async def __aexit__(self, *exc_info: object) -> None:
        await self.target._release()
