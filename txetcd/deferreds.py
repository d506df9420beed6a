"""Deferred shapes that let one call serve ``yield`` (inlineCallbacks) and ``await`` alike.

txaioetcd's calls returned Deferreds (or coroutines), which an ``inlineCallbacks`` generator
can ``yield``; an object that is only awaitable would come back from ``yield`` unchanged, as a
silent misuse. ``started`` runs a coroutine method at once and returns its Deferred;
``LazyDeferred`` is a Deferred whose work starts when somebody first waits on it, and
``Acquiring`` is the one that ``Client.lease`` returns on Twisted.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from functools import wraps
from typing import Any, Generic, ParamSpec, TypeVar

from twisted.internet import defer

from .acquirable import Acquirable

__all__ = ["Acquiring", "LazyDeferred", "started"]

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


A = TypeVar("A", bound=Acquirable)


class Acquiring(LazyDeferred[A], Generic[A]):
    """What the Twisted ``client.lease(ttl)`` returns: a Deferred that fires with the granted
    lease, so ``yield`` in ``inlineCallbacks`` and ``await`` both get a usable object, and an
    async context manager (``async with`` also revokes it).

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
