"""One publisher per table across all component instances, elected in etcd, resuming in etcd.

Every instance whose router has a subscriber for ``<prefix>.<table>.on_change`` campaigns in the
election ``<namespace>\\xff\\xffwamp/<prefix>/publisher/<table>`` with a lease of
``LEASE_TTL`` seconds. Only the leader watches the table and publishes. After each acknowledged
publish it records its position, "everything below revision R, and the keys already sent at R",
in the key ``...wamp/<prefix>/position/<table>`` with a txn guarded by its leader key
(``CompCreated(leader_key) == leader_rev``): a deposed leader can never move the position. A new
leader reads the position and watches from R, skipping the keys already sent at R.

Guarantee: no event is lost while its history is in etcd (compaction past the position is
announced with ``on_resync``), events of a table are published in revision order, and a router
restart or a leader that resigns cleanly repeats nothing. Limit: the publish and the position
update are two systems without a common commit. A leader that loses the lead after the router
accepted an event and before its position update committed leaves that one event to be
published again by its successor: when it is killed, stalls past its lease, or cannot reach a
working etcd member for longer than its lease (the chaos bench sees this after a member is
stopped with SIGSTOP). So across a change of publisher delivery is at-least-once, and a repeat
is always the last event before the change, with the same ``revision`` and ``key``:
subscribers that drop an event whose ``(revision, key)`` they have already seen get
exactly-once delivery.

Slot 65535 of the namespace is reserved for these keys; no table may use it.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cbor2
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.logger import Logger

from txetcd import Client, CompCreated, OpDel, OpSet, Unavailable
from txetcd.concurrency import Leadership, NotLeader
from txetcd.watch import EventType, WatchCompacted, WatchEvent

from .config import RESERVED_SLOT

if TYPE_CHECKING:
    from .events import EventRelay

__all__ = ["TablePublisher", "Position", "LEASE_TTL", "RESERVED_SLOT", "election_name",
           "position_key", "instance_id"]

log = Logger()

LEASE_TTL = 2  # seconds: a dead publisher is replaced within about TTL + one campaign round trip
_COORDINATION = RESERVED_SLOT.to_bytes(2, "big") + b"wamp/"
RETRY_DELAY = 0.2


def election_name(prefix: str, table: str) -> bytes:
    return _COORDINATION + f"{prefix}/publisher/{table}".encode()


def position_key(prefix: str, table: str) -> bytes:
    return _COORDINATION + f"{prefix}/position/{table}".encode()


def instance_id() -> bytes:
    """What a leader proclaims: enough for an operator (and the chaos bench) to find it."""
    return f"{socket.gethostname()}:{os.getpid()}".encode()


@dataclass
class Position:
    """Published: every event below ``revision``, and at ``revision`` the events of ``keys``."""

    revision: int
    keys: set[bytes] = field(default_factory=set)

    def covers(self, revision: int, key: bytes) -> bool:
        return revision < self.revision or (revision == self.revision and key in self.keys)

    def advance(self, revision: int, key: bytes) -> None:
        if revision > self.revision:
            self.revision, self.keys = revision, {key}
        else:
            self.keys.add(key)

    def encode(self) -> bytes:
        return cbor2.dumps({"revision": self.revision, "keys": sorted(self.keys)})

    @classmethod
    def decode(cls, data: bytes) -> Position:
        raw = cbor2.loads(data)
        return cls(int(raw["revision"]), {bytes(k) for k in raw.get("keys", ())})


class _Lost:
    """Queued when the leadership is lost or the watch ended, to end the publishing loop."""

    def __init__(self, reason: Any) -> None:
        self.reason = reason


async def _sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


class TablePublisher:
    """Campaigns for one table's election while wanted; publishes its changes while leading."""

    def __init__(self, relay: EventRelay, name: str, coordinator: Client) -> None:
        self.relay = relay
        self.name = name
        self.coordinator = coordinator
        self.election = coordinator.election(election_name(relay.prefix, name))
        self.position_key = position_key(relay.prefix, name)
        self.leadership: Leadership | None = None
        self.running = True
        self.forget = False
        self.task = defer.ensureDeferred(self.run())

    def stop(self, forget: bool) -> None:
        """Stop campaigning or publishing; ``forget`` (nobody subscribes any more) also deletes
        the position, so that a later subscriber starts from then, not from here."""
        self.running = False
        self.forget = forget
        self.task.cancel()

    async def run(self) -> None:
        while self.running:
            try:
                await self.lead()
            except defer.CancelledError:
                return
            except Exception as exc:  # noqa: BLE001 - any failure: give up the lead, campaign again
                log.info("publisher of {table}: {exc!r}; campaigning again", table=self.name,
                         exc=exc)
            if self.running:
                try:
                    await _sleep(RETRY_DELAY)
                except defer.CancelledError:
                    return

    async def lead(self) -> None:
        """Win the election, then publish from the stored position until the lead ends."""
        leadership = self.election.campaign(instance_id(), ttl=LEASE_TTL)
        await leadership
        self.leadership = leadership
        log.info("publishing {table} as elected leader", table=self.name)
        watch = None
        try:
            position = await self.load_position(leadership)
            queue: defer.DeferredQueue[Any] = defer.DeferredQueue()
            leadership.lost.addBoth(self.end_on, queue)
            table = self.relay.tables[self.name]
            watch = self.relay.etcd.watch(table.keyset, queue.put,
                                          start_revision=max(position.revision, 1))
            watch.done.addBoth(self.end_on, queue)
            while True:
                item = await queue.get()
                if isinstance(item, _Lost):
                    raise NotLeader(f"publishing {self.name} ended: {item.reason}")
                await self.relay_item(leadership, position, item)
        finally:
            if watch is not None:
                watch.cancel()
            self.leadership = None
            await self.step_down(leadership)

    @staticmethod
    def end_on(reason: Any, queue: defer.DeferredQueue[Any]) -> Any:
        """Wake the publishing loop with ``reason``; the Deferred keeps its result."""
        queue.put(_Lost(reason))
        return reason

    async def step_down(self, leadership: Leadership) -> None:
        """Resign (deleting the position first when nobody subscribes any more)."""
        try:
            if self.forget and not leadership.lost.called:
                await self.coordinator.txn(compare=[self.guard(leadership)],
                                           success=[OpDel(self.position_key)])
            await leadership.resign()
        except Exception as exc:  # noqa: BLE001 - the lease expires by itself anyway
            log.info("publisher of {table} could not resign cleanly: {exc!r}", table=self.name,
                     exc=exc)

    @staticmethod
    def guard(leadership: Leadership) -> CompCreated:
        return CompCreated(leadership.key, "==", leadership.revision)

    async def load_position(self, leadership: Leadership) -> Position:
        """The predecessor's position; none yet means "from now on", stored at once so that a
        successor continues from the same revision."""
        found = await self.coordinator.get(self.position_key)
        if found.kvs:
            return Position.decode(found.kvs[0].value)
        position = Position(found.header.revision + 1)
        await self.persist(leadership, position)
        return position

    async def persist(self, leadership: Leadership, position: Position) -> None:
        """Store the position if still leading; rewriting the same value is harmless, so a write
        of unknown outcome is simply sent again."""
        value = position.encode()
        while True:
            if leadership.lost.called:
                raise NotLeader(f"lost the lead of {self.name}")
            try:
                result = await self.coordinator.txn(compare=[self.guard(leadership)],
                                                    success=[OpSet(self.position_key, value)])
            except Unavailable as exc:
                log.info("position of {table} not stored yet ({exc}); again", table=self.name,
                         exc=exc)
                await _sleep(RETRY_DELAY)
                continue
            if not result.succeeded:
                raise NotLeader(f"another instance leads {self.name} now")
            return

    async def relay_item(self, leadership: Leadership, position: Position,
                         item: WatchEvent | WatchCompacted) -> None:
        relay = self.relay
        if isinstance(item, WatchCompacted):
            await relay.publish(f"{relay.prefix}.{self.name}.on_resync",
                                compact_revision=item.compact_revision)
            position.revision, position.keys = item.compact_revision, set()
            await self.persist(leadership, position)
            return
        if position.covers(item.revision, item.kv.key):
            return  # published before (by this leader's predecessor, or a replayed revision)
        if leadership.lost.called:
            raise NotLeader(f"lost the lead of {self.name}")
        table = relay.tables[self.name]
        try:
            wire_key = table.wire_key(item.kv.key)
            value = None if item.type == EventType.DELETE else table.values.decode(item.kv.value)
        except (TypeError, ValueError) as exc:
            # A row some other program wrote in a format this table cannot read.
            log.warn("skipping undecodable change in table {table} at revision {rev}: {exc}",
                     table=self.name, rev=item.revision, exc=exc)
        else:
            await relay.publish(relay.topic(self.name),
                                type="delete" if item.type == EventType.DELETE else "put",
                                key=wire_key, value=value, revision=item.revision)
        position.advance(item.revision, item.kv.key)
        await self.persist(leadership, position)
