"""Run blocking test code (hypothesis) inside pytest-twisted's reactor greenlet."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import greenlet
import pytest_twisted
from twisted.internet import defer
from twisted.internet import reactor as _reactor
from twisted.python.failure import Failure

reactor: Any = _reactor  # twisted's module-level reactor is typed as a bare module


def run_blocking(fn: Callable[[], Any]) -> defer.Deferred[Any]:
    """Run sync ``fn`` in a child greenlet of the reactor's, where ``blockon`` may wait.

    pytest-twisted runs every test body in the reactor greenlet, which cannot block; a child
    greenlet can: ``blockon`` switches back to the reactor until its Deferred fires.
    """
    done: defer.Deferred[Any] = defer.Deferred()

    def body() -> None:
        try:
            outcome: Any = fn()
        except BaseException:  # noqa: BLE001 - handed to the test through the Deferred
            outcome = Failure()
        reactor.callLater(0, done.callback, outcome)

    greenlet.greenlet(body).switch()
    return done


def wait(coro: Any) -> Any:
    """Block (in a ``run_blocking`` greenlet) until a coroutine or Deferred has a result."""
    return pytest_twisted.blockon(defer.ensureDeferred(coro))
