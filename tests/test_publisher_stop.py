"""A publisher stopped while its lead starts up never publishes, and leaves nothing behind.

Under subscription churn (``test_hostile_load.py``) a publisher was stopped while it asked the
router for the retained event. The lookup was cancelled, the undo of its subscription failed
(the router had dropped the subscription), and that failure hid the cancellation: the stopped
lead went on, stored a position and kept the election (its lease kept alive) with nobody left to
stop it, so the table's next publisher waited behind it for good. Real etcd; the router is the
in-process stand-in of ``test_component_timing.py``, answering as Crossbar did then.
"""

from __future__ import annotations

from typing import Any

import pytest
from autobahn.wamp.exception import ApplicationError
from twisted.internet import defer, reactor
from twisted.internet.task import Clock

from component.events import EventRelay
from component.publisher import (
    Position,
    TablePublisher,
    election_name,
    observe,
    position_key,
)
from txetcd import Client, Election, KeyNotFound

from .test_component_timing import PREFIX, ROWS, Router, eventually, inline, unused_client

TABLE = "rows"
STOP_LIMIT = 10.0  # seconds for a stopped publisher to have resigned


class LookupPending(Router):
    """A router that has not answered the retained-event lookup yet, and that no longer knows
    the subscription made for it when asked to undo it."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.lookups: list[defer.Deferred[Any]] = []

    def call(self, uri: str, *args: Any) -> defer.Deferred[Any]:
        if uri == "wamp.subscription.lookup":
            pending: defer.Deferred[Any] = defer.Deferred()
            self.lookups.append(pending)
            return pending
        return super().call(uri, *args)

    def unsubscribe(self) -> defer.Deferred[None]:
        return defer.fail(ApplicationError(ApplicationError.NO_SUCH_SUBSCRIPTION))


class SwallowingRelay(EventRelay):
    """A relay whose retained read reports its cancellation as "nothing retained", as any
    start-up step of a lead might report a cancel as something else."""

    async def last_published(self, table: str) -> Position | None:
        try:
            return await super().last_published(table)
        except defer.CancelledError:
            return None


def test_a_cancelled_retained_read_stays_cancelled_when_its_undo_fails() -> None:
    clock = Clock()
    router = LookupPending(clock)
    relay = EventRelay(router, PREFIX, {TABLE: ROWS}, unused_client(), clock=clock)
    reading = defer.ensureDeferred(relay.last_published(TABLE))
    assert router.lookups and not reading.called
    reading.cancel()
    failures: list[Any] = []
    reading.addErrback(failures.append)
    assert failures and failures[0].check(defer.CancelledError), failures


@pytest.mark.parametrize("relay_kind", [EventRelay, SwallowingRelay],
                         ids=["read cancelled", "cancel reported as nothing retained"])
@inline
async def test_a_publisher_stopped_while_it_reads_the_retained_event_resigns(
        relay_kind: type[EventRelay], etcd_direct: Client) -> None:
    """Stopped (nobody subscribes) while the router has not answered the lookup, a publisher
    ends: nobody leads the table's election, no position is stored, nothing was published.
    Whatever the read reports (``SwallowingRelay``), the lead does not go on."""
    clock = Clock()
    router = LookupPending(clock)
    relay = relay_kind(router, PREFIX, {TABLE: ROWS}, etcd_direct, clock=clock)
    publisher = TablePublisher(relay, TABLE, etcd_direct, position_interval=60)
    try:
        await eventually(lambda: defer.succeed(bool(router.lookups)), timeout=30)
        assert publisher.leadership is not None  # it leads, and reads where to start
        # What stop() returns fires once the lead has resigned (``task.called`` does not say
        # that: a cancelled coroutine's Deferred counts as called while it still cleans up).
        # Observed, so that the time limit does not cancel the stop a second time: that would
        # end a lead that went on, and hide it.
        stopped = observe(publisher.stop(forget=True))
        stopped.addTimeout(STOP_LIMIT, reactor)
        await stopped
        with pytest.raises(KeyNotFound):
            await Election(etcd_direct, election_name(PREFIX, TABLE)).leader()
        assert not (await etcd_direct.get(position_key(PREFIX, TABLE))).kvs
        assert not router.published
    finally:
        publisher.stop(forget=True)
