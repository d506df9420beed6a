"""Republish etcd changes of each table as ``<prefix>.<table>.on_change`` WAMP events.

A table is published only while some subscription covers its topic: the router's subscription
meta-API tells which (``wamp.subscription.list``/``get`` on every join, then ``on_create`` and
``on_delete``). Events carry the etcd revision and key, so subscribers can order and
de-duplicate.

Any number of component instances may serve one router: per table, the instances elect one
publisher in etcd, and the publisher keeps its position (the last revision published, and the
keys published at it) in etcd, so a new publisher, or a new session after a router reconnect,
continues where the last one stopped (see ``component.publisher`` for the exact guarantee: no
loss and no repeat, except that a publisher crashing between a publish and the position update
leaves that one event to be sent again, with the same revision and key). A position is
forgotten when the last subscriber goes: a later subscriber starts from "now" and loads the
table with ``scan``. When etcd compacted past the position, ``<prefix>.<table>.on_resync``
tells clients to reload. Events are never retained (a retained event would keep the topic, and
so the etcd watch, alive forever).
"""

from __future__ import annotations

from typing import Any

from autobahn.wamp.types import PublishOptions

from procedures.table import Table
from txetcd import Client

from .publisher import TablePublisher

__all__ = ["EventRelay", "covers"]


def covers(uri: str, match: str, topic: str) -> bool:
    """Whether a subscription (``uri`` with its match policy) receives events on ``topic``."""
    if match == "exact":
        return uri == topic
    if match == "prefix":
        return topic.startswith(uri)
    if match == "wildcard":
        pattern, parts = uri.split("."), topic.split(".")
        if len(pattern) != len(parts):
            return False
        return all(p in ("", t) for p, t in zip(pattern, parts, strict=True))
    return False


class EventRelay:
    """One session's publishers, campaigning and stopping as subscriptions come and go."""

    def __init__(self, session: Any, prefix: str, tables: dict[str, Table], etcd: Client,
                 coordinator: Client | None = None) -> None:
        self.session = session
        self.prefix = prefix
        self.tables = tables
        self.etcd = etcd
        # Elections and positions want short timeouts (a lease of a few seconds must be kept
        # alive through a stalled member), table watches and reads do not.
        self.coordinator = coordinator or etcd
        self.subscriptions: dict[int, tuple[str, str]] = {}
        self.publishers: dict[str, TablePublisher] = {}

    def topic(self, table: str) -> str:
        return f"{self.prefix}.{table}.on_change"

    async def start(self) -> None:
        """Follow subscriptions from now on, then bootstrap from the ones that already exist."""
        await self.session.subscribe(self.on_create, "wamp.subscription.on_create")
        await self.session.subscribe(self.on_delete, "wamp.subscription.on_delete")
        listing = await self.session.call("wamp.subscription.list")
        for ids in listing.values():
            for sub_id in ids:
                info = await self.session.call("wamp.subscription.get", sub_id)
                if info:
                    self.subscriptions[info["id"]] = (info["uri"], info.get("match", "exact"))
        self.reconcile()

    def on_create(self, session_id: int, info: dict[str, Any]) -> None:
        self.subscriptions[info["id"]] = (info["uri"], info.get("match", "exact"))
        self.reconcile()

    def on_delete(self, session_id: int, sub_id: int) -> None:
        if self.subscriptions.pop(sub_id, None) is not None:
            self.reconcile()

    def reconcile(self) -> None:
        """Campaign to publish exactly the tables whose topic some subscription covers."""
        for name in self.tables:
            topic = self.topic(name)
            wanted = any(covers(uri, match, topic) for uri, match in self.subscriptions.values())
            if wanted and name not in self.publishers:
                self.publishers[name] = TablePublisher(self, name, self.coordinator)
            elif not wanted and name in self.publishers:
                # Nobody listens: the next subscriber starts from now, not from here.
                self.publishers.pop(name).stop(forget=True)

    async def publish(self, topic: str, **payload: Any) -> None:
        """Publish and wait for the router's acknowledgement (raises if the session is gone)."""
        await self.session.publish(topic, options=PublishOptions(acknowledge=True), **payload)

    def stop(self) -> None:
        """The session ended: stop publishing, keep the positions for the next session."""
        for publisher in self.publishers.values():
            publisher.stop(forget=False)
        self.publishers.clear()
