"""A subscriber that leaves and one that comes right after, through a real Crossbar node.

Crossbar 26.10 sends the ``wamp.subscription.on_unsubscribe`` and ``on_delete`` of a session
that leaves (GOODBYE, or its connection closing, as a browser page's does) after it cleared the
session's id: they name no session (``None``), and ``on_delete`` may name a subscription others
still follow. The relay now asks the router who follows the subscription. Before, such a leaver
stayed on its books as a subscriber until the periodic audit, so the table's publisher outlived
its last subscriber (in tests/test_explorer.py the next page found it still running after the
test's wipe had deleted its election key: no publisher shown for over 30 s); and where an
``on_delete`` was believed at once, the next subscriber's subscription had to be learnt anew,
and a change written right after its subscribe could be missed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from autobahn.wamp.exception import ApplicationError
from twisted.internet import defer
from twisted.internet.task import Clock

from component.events import EventRelay
from component.publisher import position_key
from procedures.wire import KeyWire, TableWire, ValueWire
from txetcd import Client
from txetcd.embedded import EtcdProcess
from txetcd.pmap import TableLayout

from .linked import backend
from .test_component_timing import unused_client
from .typed import SERIALIZERS
from .wamp import CrossbarNode, connect, eventually, until_registered

inline = pytest_twisted.ensureDeferred
TOPIC = "etcd.settings.on_change"
TABLES = ("settings", "users", "people")  # the demo's
SETTINGS = TableWire(TableLayout.of(2), KeyWire("string"), ValueWire("cbor"))  # the demo table


def goes(session: Any, how: str) -> None:
    """The session leaves: with GOODBYE, or its connection closes (a page that is closed)."""
    if how == "goodbye":
        session.leave()
    else:
        session._transport.abort()


# Both ways a session can go, over the three serializers.
WAYS = dict(zip(SERIALIZERS, ["abort", "goodbye", "abort"], strict=True))


@inline
async def test_the_next_subscriber_gets_changes_and_the_last_one_stops_the_publisher(
        node: CrossbarNode) -> None:
    """The shipped node: a reader leaves, another subscribes right after and gets the next
    change within a few seconds; once it leaves too, nobody publishes the table (``status``,
    what ops' ``status`` and the explorer's store panel show). Before the fix, a leaver's
    on_delete (true or not) made the relay forget the table's subscription, so the next
    subscriber's was learnt anew, and a write sent right after its subscribe could commit
    before the publisher's start was read: missed (4 runs of 4 failed here)."""
    for serializer in SERIALIZERS:
        writer = await until_registered(await connect(node.url, "writer", "writer-secret",
                                                      serializer))

        async def nobody_publishes(writer: Any = writer) -> bool:
            status = await writer.call("etcd.status")
            return next(t["publisher"] for t in status["tables"] if t["name"] == "settings") \
                is None

        for turn in range(2):  # A, then B right after A left
            reader = await connect(node.url, "reader", "reader-secret", serializer)
            # Like the explorer's page: topics only it follows, deleted when it goes (then
            # Crossbar mostly announces on_delete of the table's topic too, though it stays).
            for table in TABLES:
                await reader.subscribe(lambda **_: None, f"etcd.{table}.on_resync")
            got: list[int] = []
            await reader.subscribe(lambda got=got, **event: got.append(event["revision"]),
                                   TOPIC)
            # At once: the subscriber's next change must reach it.
            revision = await writer.call("etcd.settings.put", f"next-{serializer}", turn)
            await eventually(lambda got=got, revision=revision: revision in got, timeout=5)
            goes(reader, WAYS[serializer])
        await eventually(nobody_publishes)
        writer.leave()


@pytest.fixture
def router(etcd35: EtcdProcess, tmp_path: Any) -> Iterator[CrossbarNode]:
    """The shipped node's router alone: the relay runs in the test (its audit never runs)."""
    with CrossbarNode(tmp_path, etcd35.url, with_component=False).running() as crossbar:
        yield crossbar


@inline
async def test_a_leaving_subscriber_is_gone_from_the_books_without_the_audit(
        router: CrossbarNode, etcd_direct: Client) -> None:
    """The relay on a real router, with a clock that stands still, so its periodic audit never
    corrects what the meta events left on its books. Per serializer: A subscribes and gets a
    change, leaves; B subscribes right after and gets the next change; B leaves: nobody
    publishes the table any more and its position is forgotten. Before the fix the leavers
    stayed on the books and the publisher ran on for ever (failed here every run, with main's
    relay and with last session's ask-first one)."""
    relay_session = await backend(router)
    relay = EventRelay(relay_session, "etcd", {"settings": SETTINGS}, etcd_direct,
                       position_interval=0, clock=Clock())
    await relay.start()
    stored = position_key("etcd", "settings")

    async def forgotten() -> bool:
        return not (await etcd_direct.get(stored)).kvs

    async def subscriber(serializer: str, explorer: bool) -> tuple[Any, list[int]]:
        """A session following the table, once its publisher reads where to start."""
        session = await backend(router, serializer)
        got: list[int] = []
        await session.subscribe(lambda **event: got.append(event["revision"]), TOPIC)
        if explorer:
            await session.subscribe(lambda **_: None, "etcd.settings.on_resync")
        await eventually(lambda: any(session.session_id in sub.sessions
                                     for sub in relay.subscriptions.values()))
        await relay.settled()  # where a new publisher starts from is read
        return session, got

    async def write(got: list[int], key: str) -> None:
        revision = (await etcd_direct.set(SETTINGS.etcd_key(key), b"\xf5")).revision
        await eventually(lambda: revision in got, timeout=5)

    try:
        for n, serializer in enumerate(SERIALIZERS):
            a, got_a = await subscriber(serializer, explorer=n == 0)
            await write(got_a, f"a-{serializer}")
            goes(a, WAYS[serializer])
            b, got_b = await subscriber(serializer, explorer=False)  # right after
            await write(got_b, f"b-{serializer}")
            goes(b, WAYS[serializer])
            await eventually(lambda: "settings" not in relay.publishers, timeout=10)
            await eventually(forgotten)
    finally:
        await relay.stop()
        relay_session.leave()


class HeldRouter:
    """Answers ``list_subscribers`` only when the test says, so that meta events can arrive
    between a question and its answer, as they may from a real router."""

    session_id = 1

    def __init__(self) -> None:
        self.asked: list[defer.Deferred[Any]] = []

    def call(self, uri: str, *args: Any) -> defer.Deferred[Any]:
        assert uri == "wamp.subscription.list_subscribers" and args == (10,), uri
        self.asked.append(defer.Deferred())
        return self.asked[-1]


@inline
async def test_an_answer_older_than_a_later_event_is_asked_again() -> None:
    """A leaver's unnamed ``on_unsubscribe`` makes the relay ask; B subscribes before the
    answer (which predates B) arrives: that answer is not taken, the next one is. A false
    ``on_delete`` keeps the subscription; a true one (the router has no such subscription)
    forgets it and stops the publisher."""
    etcd = unused_client()
    router = HeldRouter()
    relay = EventRelay(router, "etcd", {"settings": SETTINGS}, etcd, clock=Clock())
    try:
        relay.on_create(7, {"id": 10, "uri": TOPIC, "match": "exact"})
        relay.on_subscribe(7, 10)
        assert list(relay.publishers) == ["settings"]
        relay.on_unsubscribe(None, 10)  # A left
        relay.on_subscribe(8, 10)  # B, right after
        relay.on_delete(None, 10)  # Crossbar's false announcement: asked with the first
        assert len(router.asked) == 1
        router.asked[0].callback([])  # the router's answer before B subscribed
        assert len(router.asked) == 2 and list(relay.publishers) == ["settings"]
        router.asked[1].callback([8])
        assert relay.subscriptions[10].sessions == {8} and list(relay.publishers) == ["settings"]
        relay.on_unsubscribe(None, 10)  # B left too, the subscription with it
        router.asked[2].errback(ApplicationError(ApplicationError.NO_SUCH_SUBSCRIPTION))
        assert 10 not in relay.subscriptions and not relay.publishers
    finally:
        await relay.stop()
        await etcd.close()
