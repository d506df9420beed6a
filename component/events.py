"""Republish etcd changes of each table as ``<prefix>.<table>.on_change`` WAMP events.

A table is watched only while some subscription covers its topic: the router's subscription
meta-API tells which (``wamp.subscription.list``/``get`` on every join, then ``on_create`` and
``on_delete``). Events carry the etcd revision, so subscribers can order and de-duplicate.

What was published survives a reconnect to the router: the position (last revision, and the
keys of that revision already published) is kept per process, and a new session's watch starts
at that revision and skips what was sent, so nothing is lost or sent twice. A position is
forgotten when the last subscriber goes: a later subscriber starts from "now" and loads the
table with ``scan``. When etcd compacted past the position, ``<prefix>.<table>.on_resync``
tells clients to reload. Events are never retained (a retained event would keep the topic, and
so the etcd watch, alive forever).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from autobahn.wamp.types import PublishOptions
from twisted.logger import Logger

from procedures.table import Table
from txetcd import Client
from txetcd.watch import EventType, Watch, WatchCompacted, WatchEvent

__all__ = ["EventRelay", "covers"]

log = Logger()


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


@dataclass
class Position:
    """How far a table's events were published: a revision and the keys sent at it."""

    revision: int
    keys: set[bytes] = field(default_factory=set)


class EventRelay:
    """One session's watches, started and stopped as subscriptions come and go."""

    # Per process, across sessions: a router reconnect creates a new session, not a new process.
    positions: ClassVar[dict[tuple[Any, ...], Position]] = {}

    def __init__(self, session: Any, prefix: str, tables: dict[str, Table], etcd: Client) -> None:
        self.session = session
        self.prefix = prefix
        self.tables = tables
        self.etcd = etcd
        self.subscriptions: dict[int, tuple[str, str]] = {}
        self.watches: dict[str, Watch] = {}

    def topic(self, table: str) -> str:
        return f"{self.prefix}.{table}.on_change"

    def position_key(self, table: str) -> tuple[Any, ...]:
        return (tuple(self.etcd.transport.endpoints), self.etcd.namespace, self.prefix, table,
                self.tables[table].slot)

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
        """Watch exactly the tables whose topic some subscription covers."""
        for name in self.tables:
            topic = self.topic(name)
            wanted = any(covers(uri, match, topic) for uri, match in self.subscriptions.values())
            if wanted and name not in self.watches:
                self.watches[name] = self.watch(name)
            elif not wanted and name in self.watches:
                self.watches.pop(name).cancel()
                # Nobody listens: the next subscriber starts from now, not from here.
                self.positions.pop(self.position_key(name), None)

    def watch(self, name: str) -> Watch:
        position = self.positions.get(self.position_key(name))
        start = position.revision if position else None
        table = self.tables[name]
        return self.etcd.watch(table.keyset, lambda item: self.relay(name, item),
                               start_revision=start)

    def relay(self, name: str, item: WatchEvent | WatchCompacted) -> None:
        key = self.position_key(name)
        if isinstance(item, WatchCompacted):
            self.positions.pop(key, None)
            self.publish(f"{self.prefix}.{name}.on_resync", None,
                         compact_revision=item.compact_revision)
            return
        position = self.positions.get(key)
        if position and (item.revision < position.revision or (
                item.revision == position.revision and item.kv.key in position.keys)):
            return  # published by an earlier session of this process
        table = self.tables[name]
        try:
            wire_key = table.wire_key(item.kv.key)
            value = None if item.type == EventType.DELETE else table.values.decode(item.kv.value)
        except (TypeError, ValueError) as exc:
            # A row some other program wrote in a format this table cannot read.
            log.warn("skipping undecodable change in table {table} at revision {rev}: {exc}",
                     table=name, rev=item.revision, exc=exc)
            return
        self.publish(self.topic(name), (key, item.revision, item.kv.key),
                     type="delete" if item.type == EventType.DELETE else "put", key=wire_key,
                     value=value, revision=item.revision)

    def publish(self, topic: str, mark: tuple[Any, int, bytes] | None, **payload: Any) -> None:
        """Publish with acknowledgement; the position moves only once the router has it."""
        try:
            published = self.session.publish(topic, options=PublishOptions(acknowledge=True),
                                             **payload)
        except Exception as exc:  # noqa: BLE001 - the session is gone; the next one resumes
            log.info("not published on {topic} (session gone): {exc}", topic=topic, exc=exc)
            return
        if mark is not None:
            published.addCallback(lambda _: self.advance(*mark))
        published.addErrback(lambda failure: log.info("publish on {topic} failed: {err}",
                                                      topic=topic,
                                                      err=failure.getErrorMessage()))

    def advance(self, key: tuple[Any, ...], revision: int, etcd_key: bytes) -> None:
        if key[3] not in self.watches:
            return  # the table stopped being watched meanwhile: nothing to resume
        position = self.positions.get(key)
        if position is None or revision > position.revision:
            self.positions[key] = Position(revision, {etcd_key})
        elif revision == position.revision:
            position.keys.add(etcd_key)

    def stop(self) -> None:
        """The session ended: stop watching, keep positions for the next session."""
        for watch in self.watches.values():
            watch.cancel()
        self.watches.clear()
