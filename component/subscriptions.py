"""Subscribing in a way that a cancelled subscribe cannot turn into a protocol violation.

autobahn's ``subscribe`` returns a Deferred without a canceller: cancelling it leaves the
SUBSCRIBE with the router, which subscribes the session anyway. autobahn then drops the
SUBSCRIBED answer, so the router keeps a subscription the session does not know, and the first
EVENT on it (a retained event arrives at once) raises ``ProtocolError("EVENT received for
non-subscribed subscription ID")``, which aborts the whole session. Meanwhile the router counts
the session as a subscriber of that topic for as long as it lives.

``CancelSafeSubscriptions`` gives the session a ``subscribe`` whose cancel is an undo: the
caller's Deferred fails with ``CancelledError`` at once, the subscription is still completed
(so autobahn knows its id) and then unsubscribed, and events arriving in between are dropped.
"""

from __future__ import annotations

from typing import Any

from autobahn.wamp.request import Subscription
from twisted.internet import defer
from twisted.python.failure import Failure

__all__ = ["CancelSafeSubscriptions"]


class CancelSafeSubscriptions:
    """Mixin for an autobahn (Twisted) session: ``subscribe`` may be cancelled at any time."""

    def subscribe(self, handler: Any, topic: str | None = None, options: Any = None,
                  check_types: bool | None = None) -> Any:
        if not callable(handler):  # an object with decorated methods: autobahn's own way
            return super().subscribe(handler, topic, options, check_types)  # type: ignore[misc]
        cancelled = False

        def deliver(*args: Any, **kwargs: Any) -> Any:
            return None if cancelled else handler(*args, **kwargs)

        def cancel(_: defer.Deferred[Any]) -> None:
            nonlocal cancelled
            cancelled = True

        def settle(result: Any) -> Any:
            if not cancelled:
                answer.callback(result)
            elif isinstance(result, Subscription) and result.active:
                # Undo what the router did for a caller that no longer wants it.
                undo = defer.maybeDeferred(result.unsubscribe)
                undo.addErrback(lambda _: None)  # the session ended meanwhile: nothing to undo
            return None

        def failed(failure: Failure) -> None:
            if not cancelled:
                answer.errback(failure)

        answer: defer.Deferred[Any] = defer.Deferred(cancel)
        pending = super().subscribe(deliver, topic, options, check_types)  # type: ignore[misc]
        pending.addCallbacks(settle, failed)
        return answer
