"""A publisher's lead that ends stores its exact position even when its session ends meanwhile.

The router's retained event is lost with a router restart, and the next lead then continues
from the stored position: a lead that ended without storing it repeats what it published since
its last position write. Real etcd; the publisher's relay is scripted here so that the session
ends exactly while the final position write is on its way (a proxy holds that write back).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from twisted.internet import defer, reactor

from component.publisher import Position, TablePublisher, position_key
from txetcd import Client, KeySet
from txetcd.embedded import EtcdProcess

from .faults import ThreadProxy
from .test_component_events import inline
from .wamp import eventually

TABLE = "stepdown"
ROWS = b"stepdown/"


class Rows:
    """The table's rows: keys under ``ROWS``, values as they are."""

    keyset = KeySet(ROWS, prefix=True)

    def etcd_key(self, key: Any) -> bytes:
        return ROWS + key.encode()

    def wire_key(self, etcd_key: bytes) -> Any:
        return etcd_key[len(ROWS):].decode()

    def wire_value(self, data: bytes) -> Any:
        return data


class Session:
    session_id: int | None = 7001


class ScriptedRelay:
    """A router whose session acknowledges every publish until ``gone``, then fails them."""

    prefix = "etcd"
    node: str | None = None

    def __init__(self, etcd: Client) -> None:
        self.session = Session()
        self.tables: Mapping[str, Any] = {TABLE: Rows()}
        self.etcd = etcd
        self.clock = reactor
        self.published: list[dict[str, Any]] = []
        self.gone = False

    def topic(self, table: str) -> str:
        return f"etcd.{table}.on_change"

    def publish(self, topic: str, **payload: Any) -> defer.Deferred[Any]:
        if self.gone:
            return defer.fail(ConnectionError("the WAMP session is gone"))
        self.published.append(payload)
        return defer.succeed(None)

    async def fence(self, session_id: int) -> None:
        return None

    async def last_published(self, table: str) -> Position | None:
        return None  # the router restarted: nothing retained


@inline
async def test_a_lead_stopped_while_storing_its_final_position_still_stores_it(
        etcd35: EtcdProcess, etcd_direct: Client) -> None:
    proxy = ThreadProxy("127.0.0.1", etcd35.client_port)
    coordinator = Client(reactor, url=proxy.url, namespace=b"app/", timeout=1.0)
    relay = ScriptedRelay(etcd_direct)
    # A 60 s interval: the stored position stays where the lead started.
    publisher = TablePublisher(relay, TABLE, coordinator, position_interval=60)
    stored_key = position_key("etcd", TABLE)

    async def stored() -> Position | None:
        found = await etcd_direct.get(stored_key)
        return Position.decode(found.kvs[0].value) if found.kvs else None

    try:
        start = await eventually(lambda: defer.ensureDeferred(stored()), timeout=30)
        written = [(await etcd_direct.set(ROWS + b"k%d" % i, b"v")).revision for i in range(5)]
        await eventually(lambda: defer.succeed(len(relay.published) == 5), timeout=30)
        assert start.revision < written[0]
        # The session ends: a publish fails, and the lead's final position write is held back.
        proxy.swallow = base64.b64encode(b"app/" + stored_key)
        relay.gone = True
        await etcd_direct.set(ROWS + b"k5", b"v")
        await eventually(lambda: defer.succeed(proxy.swallowed > 0), timeout=30)
        # Now the session's end stops the publisher, as ``EventRelay.stop`` does.
        stopping = publisher.stop(forget=False)
        proxy.swallow = None
        await stopping
        final = await stored()
        assert final is not None and final.revision == written[-1], (final, written)
    finally:
        publisher.stop(forget=False)
        await coordinator.close()
        proxy.close()
