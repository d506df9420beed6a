"""The event relay's and publisher's timers, driven by a ``task.Clock`` instead of waiting.

The relay and its publishers take their clock from the component (``EventRelay(clock=...)``),
so these tests move time by hand. The router side is a small in-process stand-in that answers
the few meta calls the relay makes; etcd is real (the publisher campaigns, watches and stores
its position in it). What is tested end to end through Crossbar lives in
``test_component_events.py``.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
import pytest_twisted
from autobahn.wamp.exception import ApplicationError
from twisted.internet import defer, reactor
from twisted.internet.task import Clock, deferLater

from component.events import AUDIT_INTERVAL, EventRelay
from component.publisher import POSITION_EVERY, Position, position_key
from procedures.wire import KeyWire, TableWire, ValueWire
from txetcd import Client
from txetcd.embedded import free_port
from txetcd.pmap import TableLayout

from . import wamp

inline = pytest_twisted.ensureDeferred
PREFIX = "t"
TOPIC = f"{PREFIX}.rows.on_change"


class Router:
    """Answers the relay's meta-API calls as a router with one subscriber on ``TOPIC`` would;
    holds every publish until the test acknowledges it."""

    session_id = 1

    def __init__(self, clock: Clock, gone_at: float = float("inf")) -> None:
        self.clock = clock
        self.gone_at = gone_at  # when a killed session has left the router
        self.kills: list[float] = []
        self.published: list[tuple[dict[str, Any], defer.Deferred[None]]] = []

    def call(self, uri: str, *args: Any) -> defer.Deferred[Any]:
        answers: dict[str, Any] = {
            "wamp.subscription.list": {"exact": [10], "prefix": [], "wildcard": []},
            "wamp.subscription.get": {"id": 10, "uri": TOPIC, "match": "exact"},
            "wamp.subscription.list_subscribers": [2],
            "wamp.subscription.match": [10],
            "wamp.subscription.lookup": 10,
        }
        if uri == "wamp.session.kill":
            self.kills.append(self.clock.seconds())
            if self.clock.seconds() >= self.gone_at:
                return defer.fail(ApplicationError(ApplicationError.NO_SUCH_SESSION))
            return defer.fail(ApplicationError("wamp.error.canceled"))  # still closing
        return defer.succeed(answers[uri])

    def subscribe(self, handler: Any, topic: str, options: Any = None) -> defer.Deferred[Any]:
        return defer.succeed(self)

    def unsubscribe(self) -> defer.Deferred[None]:
        return defer.succeed(None)

    def publish(self, topic: str, options: Any = None, **payload: Any) -> defer.Deferred[None]:
        ack: defer.Deferred[None] = defer.Deferred()
        self.published.append((payload, ack))
        return ack


ROWS = TableWire(TableLayout.of(7), KeyWire("string"), ValueWire("cbor"))


def relay_on(clock: Clock, router: Router, etcd: Client, interval: float = 0.1) -> EventRelay:
    return EventRelay(router, PREFIX, {"rows": ROWS}, etcd, position_interval=interval,
                      clock=clock)


def unused_client() -> Client:
    """A client the relay holds but these tests never let it use (nothing listens there)."""
    return Client(reactor, url=f"http://127.0.0.1:{free_port()}")


# Real time passes for etcd's answers, not for the relay (its clock stands still).
eventually = functools.partial(wamp.eventually, step=0.02)


def test_fence_asks_again_until_the_session_is_gone() -> None:
    """A killed session that is still closing is asked about again every 50 ms of the clock."""
    clock = Clock()
    router = Router(clock, gone_at=0.275)
    relay = relay_on(clock, router, unused_client())
    fenced = defer.ensureDeferred(relay.fence(42, patience=1.0))
    clock.pump([0.05] * 5)
    assert not fenced.called
    clock.pump([0.05] * 2)
    assert fenced.called and fenced.result is None
    assert router.kills == pytest.approx([0.05 * i for i in range(7)])


def test_fence_gives_a_stalled_session_its_patience_and_no_more() -> None:
    clock = Clock()
    router = Router(clock)  # never leaves: a stalled peer cannot answer the GOODBYE
    relay = relay_on(clock, router, unused_client())
    fenced = defer.ensureDeferred(relay.fence(42, patience=1.0))
    clock.pump([0.05] * 19)
    assert not fenced.called
    clock.pump([0.05] * 3)
    assert fenced.called
    assert 20 <= len(router.kills) <= 23


@inline
async def test_position_is_stored_once_per_interval_of_the_clock(etcd_direct: Client) -> None:
    """Acknowledged events move the stored position once ``POSITION_EVERY`` of them went out
    and the clock has moved by the position interval; the subscriber audit runs on the same
    clock."""
    clock = Clock()
    router = Router(clock)
    relay = relay_on(clock, router, etcd_direct, interval=5.0)
    await relay.start()
    assert [c.getTime() for c in clock.calls] == [AUDIT_INTERVAL]
    key = position_key(PREFIX, "rows")

    async def stored() -> Position | None:
        found = await etcd_direct.get(key)
        return Position.decode(found.kvs[0].value) if found.kvs else None

    start = await eventually(stored)  # a lead stores where it starts before it publishes

    async def publish(count: int) -> Any:
        """Write ``count`` rows one after another; acknowledge their events; the last write."""
        for i in range(count):
            written = await etcd_direct.set(ROWS.etcd_key(f"k{i}"), ROWS.values.encode({"v": i}))
        await eventually(lambda: defer.succeed(len(router.published) == count))
        payload, _ = router.published[-1]
        assert payload == {"type": "put", "key": f"k{count - 1}", "value": {"v": count - 1},
                           "revision": written.revision}
        for _, ack in router.published:
            ack.callback(None)
        router.published.clear()
        return written

    # Fewer events than POSITION_EVERY: no position write, however long the clock runs.
    await publish(POSITION_EVERY - 1)
    clock.advance(5.0)
    await deferLater(reactor, 0.2, lambda: None)  # real time: a write would have landed by now
    assert await stored() == start
    # The next one makes POSITION_EVERY: stored once the clock has moved by the interval.
    written = await publish(1)
    await deferLater(reactor, 0.2, lambda: None)
    assert await stored() == start  # the relay's clock has not moved

    async def moved() -> Position | None:
        now = await stored()
        return now if now != start else None

    clock.advance(5.0)
    position = await eventually(moved, timeout=3.0)  # not the 5 s of a global reactor
    assert position.revision == written.revision and position.keys == {ROWS.etcd_key("k0")}
    clock.advance(AUDIT_INTERVAL)  # the router still has the subscriber: keep publishing
    assert list(relay.publishers) == ["rows"]
    await relay.stop()
