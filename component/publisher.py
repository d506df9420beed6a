"""One publisher per table across all component instances, elected in etcd; exactly once.

Every instance whose router has a subscriber for ``<prefix>.<table>.on_change`` campaigns in the
election ``<namespace>\\xff\\xffwamp/<prefix>/publisher/<table>`` with a lease of
``LEASE_TTL`` seconds. Only the leader watches the table and publishes.

What has been published is known in two places:

* **etcd**: the leader stores its position, "everything below revision R, and the keys already
  sent at R", in ``...wamp/<prefix>/position/<table>`` with a txn guarded by its leader key
  (``CompCreated(leader_key) == leader_rev``), so a deposed leader can never move it. Publishes
  are pipelined, and the position is written once per ``POSITION_EVERY`` events published (and
  at most every ``position_interval`` seconds), so that it costs etcd a few percent of the
  table's writes at any event rate; it may lag behind what the router accepted.
* **the router**: every event is published with ``retain``, so the router keeps the last one
  it accepted on the table's topic.

A lease can be lost by a process that does not know it yet (a stale etcd leader renewed it),
so the stored position also names the WAMP session of the lead that wrote it, written before
that lead publishes anything, and cleared when it resigns cleanly. A new leader first detaches
that session from the router (``wamp.session.kill``, until the router has let it go), then
subscribes once with ``get_retained`` to read the last event, makes one round trip to the
router so that it has arrived, and continues after the newer of the stored position and that
event. Events are published in revision order and etcd delivers the events of one revision
in the same order every time, so everything up to the retained event was published: nothing is
skipped, and nothing the router accepted is sent again, whichever instance dies. A router
restart forgets the retained event; the session that ends with it stores its exact position
before it resigns, and so does a lead whose lease lapsed (unless a successor has stored its
start since): only a router restart while the lapsed lead cannot reach etcd, before a
successor has read the retained event, repeats events, those published since the lead's last
position write. A subscriber that subscribes with ``get_retained`` receives the last change
first.

Where routers are linked (``"linked": true``, ``component.linked``), all of the above is per
router: the election and the position of a table are ``<table>@<node>`` (the node id of the
router the instance is attached to), so the publisher, its predecessor, the retained event and
the session to fence are always on one router.

Slot 65535 of the namespace is reserved for these keys; no table may use it.
"""

from __future__ import annotations

import collections
import contextlib
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import quote

import cbor2
from twisted.internet import defer
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from txetcd import (
    Client,
    Comp,
    CompCreated,
    CompModified,
    KeySet,
    OpDel,
    OpSet,
    TxnResult,
    Unavailable,
)
from txetcd.concurrency import Election, Leadership, NotLeader
from txetcd.pmap.layout import slot_prefix
from txetcd.watch import EventType, WatchCompacted, WatchEvent

from .config import RESERVED_SLOT

__all__ = ["TablePublisher", "TableRows", "Relay", "Position", "LEASE_TTL", "RESERVED_SLOT",
           "POSITION_INTERVAL", "POSITION_EVERY", "election_name", "position_key", "instance_id",
           "observe"]

log = Logger()

LEASE_TTL = 2  # seconds: a dead publisher is replaced within about TTL + one campaign round trip
POSITION_INTERVAL = 0.1  # seconds between two position writes, at least
# Events published between two position writes while a lead runs: the position costs etcd at
# most 1/32 (3 %) of the table's writes, at any rate. Exactly once does not rest on it: a new
# lead continues after the router's retained event, and a lead that ends cleanly stores its
# exact position; only a router lost together with the publisher's etcd can repeat these.
POSITION_EVERY = 32
MAX_IN_FLIGHT = 500  # publishes sent and not yet acknowledged by the router
_COORDINATION = slot_prefix(RESERVED_SLOT) + b"wamp/"
RETRY_DELAY = 0.2
# Seconds a lead that ends may take to store its final position (``store_final``); stopping the
# publisher does not cut it short, so that it is stored if etcd answers at all.
STEP_DOWN_PATIENCE = 10.0


def _scoped(table: str, node: str | None) -> str:
    """``table``, or ``table@node`` where routers are linked: each router has its own publisher
    (``component.linked``). A node id never contains "/" here, so no election's key range
    (``<name>/``) holds another's."""
    return table if node is None else f"{table}@{quote(node, safe='')}"


def election_name(prefix: str, table: str, node: str | None = None) -> bytes:
    return _COORDINATION + f"{prefix}/publisher/{_scoped(table, node)}".encode()


def position_key(prefix: str, table: str, node: str | None = None) -> bytes:
    return _COORDINATION + f"{prefix}/position/{_scoped(table, node)}".encode()


def instance_id() -> bytes:
    """What a leader proclaims: enough for an operator (and the chaos bench) to find it."""
    return f"{socket.gethostname()}:{os.getpid()}".encode()


class TableRows(Protocol):
    """What publishing a table's changes needs of it: its keys in etcd, and its rows in their
    WAMP form (``procedures.wire.TableWire`` is one; raises ``ValueError`` for a row it cannot
    deliver)."""

    @property
    def keyset(self) -> KeySet: ...

    def etcd_key(self, key: Any) -> bytes: ...

    def wire_key(self, etcd_key: bytes) -> Any: ...

    def wire_value(self, data: bytes) -> Any: ...


class Relay(Protocol):
    """What a publisher needs of the session that relays its events (``EventRelay``)."""

    session: Any
    prefix: str
    tables: Mapping[str, TableRows]
    etcd: Client
    clock: Any  # an IReactorTime (the reactor, or a test's task.Clock)
    node: str | None  # the router's node id where routers are linked: one publisher per router

    def topic(self, table: str) -> str: ...

    def publish(self, topic: str, **payload: Any) -> defer.Deferred[Any]: ...

    async def fence(self, session_id: int) -> None: ...

    async def last_published(self, table: str) -> Position | None: ...


@dataclass
class Position:
    """Published: every event below ``revision``, and at ``revision`` the events of ``keys``
    and, if ``through`` is set, every event up to the one of key ``through`` in etcd's order."""

    revision: int
    keys: set[bytes] = field(default_factory=set)
    through: bytes | None = None

    def covers(self, revision: int, key: bytes) -> bool:
        """Whether the event ``(revision, key)`` was published; ask in etcd's order."""
        if revision != self.revision:
            return revision < self.revision
        if self.through is not None:
            if key == self.through:
                self.through = None  # the events after it at this revision are new
            self.keys.add(key)
            return True
        return key in self.keys

    def advance(self, revision: int, key: bytes) -> None:
        """Record the event ``(revision, key)`` as published; an older one changes nothing."""
        if revision > self.revision:
            self.revision, self.keys = revision, {key}
        elif revision == self.revision:
            self.keys.add(key)

    def newest(self, other: Position) -> Position:
        """The later of two positions (both true: events go out in revision order)."""
        if other.revision != self.revision:
            return (self if self.revision > other.revision else other).copy()
        return Position(self.revision, self.keys | other.keys, self.through or other.through)

    def copy(self) -> Position:
        return Position(self.revision, set(self.keys), self.through)

    def encode(self, publisher: int | None = None) -> bytes:
        """The stored form, with the WAMP session that may still be publishing after it."""
        return cbor2.dumps({"revision": self.revision, "keys": sorted(self.keys),
                            "publisher": publisher})

    @classmethod
    def decode(cls, data: bytes) -> Position:
        raw = cbor2.loads(data)
        return cls(int(raw["revision"]), {bytes(k) for k in raw.get("keys", ())})

    @staticmethod
    def publisher(data: bytes) -> int | None:
        """The session recorded with a stored position (None: it resigned cleanly)."""
        session = cbor2.loads(data).get("publisher")
        return int(session) if session is not None else None


class _Lost:
    """Queued when the leadership is lost, the watch ended or a publish failed."""

    def __init__(self, reason: Any) -> None:
        self.reason = reason


@dataclass
class _Sent:
    """One watch event on its way: published (or skipped) once ``done``."""

    revision: int
    key: bytes
    done: bool = False


def observe(shared: defer.Deferred[Any]) -> defer.Deferred[Any]:
    """A Deferred that fires with ``shared``'s result and can be cancelled on its own: Twisted
    cancels what a cancelled coroutine awaits, and a shared Deferred cancelled that way would
    fail every other waiter (or, if an errback consumed the CancelledError, resume the
    cancelled one as if nothing happened). A failure goes to the waiter (and to no later
    one: it is handled here)."""
    waiter: defer.Deferred[Any] = defer.Deferred()

    def deliver(result: Any) -> Any:
        if isinstance(result, Failure):
            if not waiter.called:
                waiter.errback(result)
            return None
        if not waiter.called:
            waiter.callback(result)
        return result

    shared.addBoth(deliver)
    return waiter


async def _sleep(clock: Any, seconds: float) -> None:
    await deferLater(clock, seconds, lambda: None)


class TablePublisher:
    """Campaigns for one table's election while wanted; publishes its changes while leading."""

    def __init__(self, relay: Relay, name: str, coordinator: Client,
                 position_interval: float = POSITION_INTERVAL,
                 wanted_at: defer.Deferred[int | None] | None = None) -> None:
        self.relay = relay
        self.clock = relay.clock
        # etcd's revision as the table became wanted (``EventRelay.read_revision``): where to
        # start when no position is stored.
        self.wanted_at = wanted_at
        self.name = name
        self.table = relay.tables[name]
        self.coordinator = coordinator
        self.position_interval = position_interval
        self.election = Election(coordinator, election_name(relay.prefix, name, relay.node))
        self.position_key = position_key(relay.prefix, name, relay.node)
        self.published = Position(0)  # what the router accepted in this lead
        self.stored = Position(0)  # what its last position write (as leader) stored
        self.stored_at = 0  # etcd's revision of that write in this lead (0: none yet)
        self.unstored = 0  # events published since the position written last
        self.sent: collections.deque[_Sent] = collections.deque()
        self.waiter: tuple[int, defer.Deferred[None]] | None = None  # (fewer than, wakes)
        self.storing: defer.Deferred[None] | None = None
        self.writing: defer.Deferred[Any] | None = None  # the position write etcd may apply
        self.queue: defer.DeferredQueue[Any] = defer.DeferredQueue()
        self.leadership: Leadership | None = None
        self.running = True
        self.forget = False
        self.stepping_down = False  # storing the final position: not to be cut short
        self.task = defer.ensureDeferred(self.run())

    def stop(self, forget: bool) -> defer.Deferred[None]:
        """Stop campaigning or publishing; ``forget`` (nobody subscribes any more) also deletes
        the position, so that a later subscriber starts from then, not from here. Fires when
        the position is stored and the lead resigned."""
        self.running = False
        self.forget = forget
        if not self.stepping_down:
            # A lead stepping down already stores its position and resigns; cancelled, it
            # would drop that write, and a router restart then repeats its events.
            self.task.cancel()
        return self.task.addErrback(lambda _: None)

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
                    await _sleep(self.clock, RETRY_DELAY)
                except defer.CancelledError:
                    return

    # -- leading -----------------------------------------------------------------------------

    async def lead(self) -> None:
        """Win the election, then publish from what was published until the lead ends."""
        leadership = self.election.campaign(instance_id(), ttl=LEASE_TTL)
        await leadership
        self.leadership = leadership
        log.info("publishing {table} as elected leader", table=self.name)
        watch = None
        queue: defer.DeferredQueue[Any] = defer.DeferredQueue()
        self.queue = queue
        self.sent.clear()
        # Nothing to store until this lead has read where to start: what an earlier lead
        # published is stale by now, and storing it would move the position back.
        self.published = self.stored = Position(0)
        self.stored_at = self.unstored = 0
        try:
            stored, predecessor = await self.load_position(leadership)
            if predecessor is not None and predecessor != self.relay.session.session_id:
                # It did not resign: it may be stalled, not dead, and publish once it wakes.
                await self.relay.fence(predecessor)
            retained = await self.relay.last_published(self.name)
            if not self.running:
                # Stopped while it read where to start, by a cancel that a step reported as
                # something else: a stopped lead must not publish, nor hold the election.
                raise defer.CancelledError(f"the publisher of {self.name} was stopped")
            start = stored.newest(retained) if retained is not None else stored.copy()
            log.info("publisher of {table} (session {session}) starts after revision {start} "
                     "(stored {stored}, retained {retained})", table=self.name,
                     session=self.relay.session.session_id, start=start.revision,
                     stored=stored.revision, retained=retained and retained.revision)
            # Moves on with each acknowledgement, and with each event skipped below.
            self.published = Position(start.revision, set(start.keys))
            # From here on a successor fences this session before it reads the router.
            await self.persist(leadership, self.published.copy())
            leadership.lost.addBoth(self.end_on, queue)
            watch = self.relay.etcd.watch(self.table.keyset, queue.put,
                                          start_revision=max(start.revision, 1))
            watch.done.addBoth(self.end_on, queue)
            while True:
                item = await queue.get()
                if isinstance(item, _Lost):
                    raise NotLeader(f"publishing {self.name} ended: {item.reason}")
                await self.relay_item(leadership, start, item)
        finally:
            if watch is not None:
                watch.cancel()
            self.leadership = None
            self.stepping_down = True
            try:
                await self.step_down(leadership)
            finally:
                self.stepping_down = False

    @staticmethod
    def end_on(reason: Any, queue: defer.DeferredQueue[Any]) -> Any:
        """Wake the publishing loop with ``reason``; the Deferred keeps its result."""
        queue.put(_Lost(reason))
        return reason

    async def relay_item(self, leadership: Leadership, start: Position,
                         item: WatchEvent | WatchCompacted) -> None:
        relay = self.relay
        if isinstance(item, WatchCompacted):
            await self.in_flight_below(1)
            await relay.publish(f"{relay.prefix}.{self.name}.on_resync",
                                compact_revision=item.compact_revision)
            self.published = Position(item.compact_revision)
            # Rare, and the retained on_change event is older: store it now.
            self.position_changed(leadership, force=True)
            return
        key = item.kv.key
        if start.covers(item.revision, key):
            self.published.advance(item.revision, key)
            return  # published before (by a predecessor, or a replayed revision)
        if not leadership.alive:
            raise NotLeader(f"lost the lead of {self.name}")
        await self.in_flight_below(MAX_IN_FLIGHT)
        sent = _Sent(item.revision, key)
        self.sent.append(sent)
        try:
            wire_key = self.table.wire_key(key)
            value = None if item.type == EventType.DELETE else self.table.wire_value(
                item.kv.value)
        except (TypeError, ValueError) as exc:
            # A row some other program wrote in a format this table cannot read.
            log.warn("skipping undecodable change in table {table} at revision {rev}: {exc}",
                     table=self.name, rev=item.revision, exc=exc)
            self.finished(None, sent, leadership)
            return
        ack = relay.publish(relay.topic(self.name),
                            type="delete" if item.type == EventType.DELETE else "put",
                            key=wire_key, value=value, revision=item.revision)
        ack.addCallbacks(self.finished, self.publish_failed, callbackArgs=(sent, leadership),
                         errbackArgs=(leadership,))

    def finished(self, _: Any, sent: _Sent, leadership: Leadership) -> None:
        """An event was acknowledged (or skipped): advance over every finished one in order."""
        sent.done = True
        if leadership is not self.leadership:
            return  # acknowledged after its lead ended; the next lead asks the router anyway
        while self.sent and self.sent[0].done:
            done = self.sent.popleft()
            self.published.advance(done.revision, done.key)
            self.unstored += 1
        if self.waiter is not None and len(self.sent) < self.waiter[0]:
            _, wake = self.waiter
            self.waiter = None
            wake.callback(None)
        self.position_changed(leadership)

    def publish_failed(self, failure: Any, leadership: Leadership) -> None:
        """The session is gone or the router refused: end this lead (its position is exact)."""
        if leadership is not self.leadership:
            return
        self.queue.put(_Lost(failure.value))
        if self.waiter is not None:
            _, wake = self.waiter
            self.waiter = None
            wake.errback(failure)

    async def in_flight_below(self, limit: int) -> None:
        """Wait until fewer than ``limit`` events are unacknowledged."""
        if len(self.sent) >= limit:
            wake: defer.Deferred[None] = defer.Deferred()
            self.waiter = (limit, wake)
            await wake

    # -- the stored position -----------------------------------------------------------------

    def position_changed(self, leadership: Leadership, force: bool = False) -> None:
        """Store the position soon once ``POSITION_EVERY`` events went out since the last
        write, with at most one write in flight."""
        if force:
            self.unstored = max(self.unstored, POSITION_EVERY)
        if self.storing is None and self.unstored >= POSITION_EVERY:
            self.storing = defer.ensureDeferred(self.store_changes(leadership))

    async def store_changes(self, leadership: Leadership) -> None:
        try:
            while self.unstored >= POSITION_EVERY:
                if self.position_interval:
                    # Let more acknowledgements come in.
                    await _sleep(self.clock, self.position_interval)
                self.unstored = 0  # those published from here on go in the next write
                await self.persist(leadership, self.published.copy())
        except defer.CancelledError:
            pass
        except Exception as exc:  # noqa: BLE001 - deposed or etcd gone: end this lead
            self.queue.put(_Lost(exc))
        finally:
            self.storing = None

    async def step_down(self, leadership: Leadership) -> None:
        """Store the position (or delete it when nobody subscribes any more), then resign."""
        if self.storing is not None:
            self.storing.cancel()
        storing = defer.ensureDeferred(self.store_final(leadership))
        storing.addTimeout(STEP_DOWN_PATIENCE, self.clock)
        try:
            await storing
        except Exception as exc:  # noqa: BLE001 - resigning matters more
            log.info("publisher of {table} could not store its position: {exc!r}",
                     table=self.name, exc=exc)
        try:
            # Always: a lead that is not resigned keeps its lease alive, and with it the
            # election, for as long as this process lives.
            await leadership.resign()
        except Exception as exc:  # noqa: BLE001 - the lease is revoked or expires anyway
            log.info("publisher of {table} could not resign cleanly: {exc!r}", table=self.name,
                     exc=exc)

    async def store_final(self, leadership: Leadership) -> None:
        """The exact position as a lead ends: the router's retained event, which a successor
        would otherwise continue after, is lost if the router restarts before the successor
        has read it. A lead whose lease lapsed stores it too, unless a successor wrote since."""
        # A write still on its way holds an older position: it must not land after this one.
        await self.written()
        if self.forget:
            if leadership.alive:
                await self.coordinator.txn(compare=[self.guard(leadership)],
                                           success=[OpDel(self.position_key)])
            return
        if not self.published.revision:
            return  # this lead never got as far as reading its start
        await self.settle_in_flight()
        if leadership.alive:
            try:
                # The exact position, and no session to fence: this one stops here.
                await self.persist(leadership, self.published.copy(), resigning=True)
                return
            except NotLeader:
                pass  # deposed: etcd expired the lease before our clock did
        await self.store_after_lapse()

    async def store_after_lapse(self) -> None:
        """Store what this lead published after its lease lapsed, if the position is still
        this lead's last write (no successor has written its start since). True, since the
        router acknowledged all of it; a successor fences this session all the same, as
        something sent may still arrive."""
        if not self.stored_at:
            return
        deadline = self.clock.seconds() + LEASE_TTL

        def in_time() -> None:
            if self.clock.seconds() > deadline:
                raise NotLeader(f"etcd did not answer in time for {self.name}")

        result = await self.write_position(
            CompModified(self.position_key, "==", self.stored_at),
            self.published.encode(self.relay.session.session_id), in_time)
        if result.succeeded:
            log.info("publisher of {table} lost its lease; stored its position, revision "
                     "{revision}", table=self.name, revision=self.published.revision)
        else:
            log.info("publisher of {table} lost its lease; a successor has stored its own "
                     "start", table=self.name)

    async def written(self) -> None:
        """Wait (briefly) until the position write in flight, if any, has been answered."""
        if self.writing is None or self.writing.called:
            return
        waiting = observe(self.writing)
        waiting.addTimeout(LEASE_TTL / 2, self.clock)
        with contextlib.suppress(Exception):
            await waiting

    async def settle_in_flight(self) -> None:
        """Wait (briefly) for the acknowledgements still due; a failed publish ends it too."""
        waiting = defer.ensureDeferred(self.in_flight_below(1))
        waiting.addTimeout(LEASE_TTL / 2, self.clock)
        with contextlib.suppress(Exception):
            await waiting

    @staticmethod
    def guard(leadership: Leadership) -> CompCreated:
        return CompCreated(leadership.key, "==", leadership.revision)

    async def load_position(self, leadership: Leadership) -> tuple[Position, int | None]:
        """The stored position and the session that stored it; none yet means "from now on"."""
        found = await self.coordinator.get(self.position_key)
        if found.kvs:
            data = found.kvs[0].value
            return Position.decode(data), Position.publisher(data)
        since = await observe(self.wanted_at) if self.wanted_at is not None else None
        # From when the table became wanted here (the subscriber's first writes that this
        # instance serves come after that), else from now on.
        return Position((found.header.revision if since is None else since) + 1), None

    async def persist(self, leadership: Leadership, position: Position,
                      resigning: bool = False) -> None:
        """Store ``position`` if still leading (until the lease runs out); rewriting the same
        value is harmless, so a write of unknown outcome is simply sent again."""
        def leading() -> None:
            if not leadership.alive:
                raise NotLeader(f"lost the lead of {self.name}")

        result = await self.write_position(
            self.guard(leadership),
            position.encode(None if resigning else self.relay.session.session_id), leading)
        if not result.succeeded:
            raise NotLeader(f"another instance leads {self.name} now")
        self.stored, self.stored_at = position, result.header.revision

    async def write_position(self, compare: Comp, value: bytes,
                             go_on: Callable[[], None]) -> TxnResult:
        """Write ``value`` at the position key if ``compare`` holds. Rewriting the same value
        is harmless, so a write of unknown outcome is sent again, for as long as ``go_on()``
        does not raise."""
        while True:
            go_on()
            try:
                # Not cancelled with its waiter: a write that was sent may still be applied,
                # and must be before a position is forgotten (``step_down``).
                self.writing = self.coordinator.txn(compare=[compare],
                                                    success=[OpSet(self.position_key, value)])
                result: TxnResult = await observe(self.writing)
                return result
            except Unavailable as exc:
                log.info("position of {table} not stored yet ({exc}); again", table=self.name,
                         exc=exc)
                await _sleep(self.clock, RETRY_DELAY)
