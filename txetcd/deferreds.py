"""Deferred shapes that let one call serve ``yield`` (inlineCallbacks) and ``await`` alike.

txaioetcd's calls returned Deferreds (or coroutines), which an ``inlineCallbacks`` generator
can ``yield``; an object that is only awaitable would come back from ``yield`` unchanged, as a
silent misuse. ``started`` runs a coroutine method at once and returns its Deferred;
``LazyDeferred`` is a Deferred whose work starts when somebody first waits on it.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from twisted.internet import defer

__all__ = ["LazyDeferred", "started"]

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
