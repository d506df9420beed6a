"""Republish etcd changes of each table as ``<prefix>.<table>.on_change`` WAMP events.

A table is published only while some subscriber receives its topic: the router's subscription
meta-API tells which (``wamp.subscription.list``, ``get`` and ``list_subscribers`` on every
join, then ``on_create``, ``on_subscribe``, ``on_unsubscribe`` and ``on_delete``). Events carry
the etcd revision and key, so subscribers can order them.

Crossbar 26.10 announces a leaving session's ``on_unsubscribe`` and ``on_delete`` only after it
has cleared the session's id, so they name no session, and its ``on_delete`` may name a
subscription that others still follow (``Broker.detach`` announces every subscription of the
leaver with the flags of the last one). Such an event says only "this subscription changed":
the relay then asks the router who follows it now (``refresh``), on one router and on linked
routers alike, and takes the answer unless a later event about that subscription overtook it.

Any number of component instances may serve one router: per table, the instances elect one
publisher in etcd. The router retains the last event of each table, and the publisher keeps its
position (the last revision published, and the keys published at it) in etcd, so a new
publisher, or a new session after a router reconnect, continues exactly where the last one
stopped (see ``component.publisher``). While a table is published, the router is also asked
every ``AUDIT_INTERVAL`` seconds whether it still has a subscriber: under churn the meta events
alone can leave one on the books that is gone. A position is forgotten when the last subscriber
goes:
a later subscriber starts from "now" and loads the table with ``scan``. When etcd compacted
past the position, ``<prefix>.<table>.on_resync`` tells clients to reload.

Where routers are linked (``component.linked``), each router is served as if it were alone:
the instances attached to it elect a publisher for it (keys scoped by its node id), which
counts only its own subscribers (not the links' sessions) and publishes past the links, so the
exactly-once machinery above never spans two routers."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions, SubscribeOptions
from twisted.internet import defer
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger

from txetcd import Client

from .publisher import POSITION_INTERVAL, Position, TablePublisher, TableRows, observe

__all__ = ["EventRelay", "covers"]

log = Logger()

# Retained: the router keeps the last event of each table, which tells a new publisher where
# its predecessor stopped.
RETAINED = PublishOptions(acknowledge=True, retain=True)
FENCED = "wamp.close.killed"  # the close reason a detached publisher's session gets
FENCE_PATIENCE = 1.0  # seconds to wait for a killed publisher session to be gone
# Seconds between two checks with the router that a published table still has a subscriber:
# the meta events alone can leave a stale subscriber behind under churn (see ``audit``).
AUDIT_INTERVAL = 2.0
# Times a subscription is asked about again when a meta event overtook the answer; beyond, the
# audit corrects what remains.
REFRESH_TRIES = 5


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
class _Subscription:
    uri: str
    match: str
    sessions: set[int] = field(default_factory=set)
    changes: int = 0  # meta events seen about it: an answer asked before the last is stale


class EventRelay:
    """One session's publishers, campaigning and stopping as subscribers come and go."""

    def __init__(self, session: Any, prefix: str, tables: Mapping[str, TableRows], etcd: Client,
                 coordinator: Client | None = None,
                 position_interval: float = POSITION_INTERVAL,
                 clock: Any = None, node: str | None = None,
                 links: frozenset[str] = frozenset()) -> None:
        self.session = session
        self.prefix = prefix
        self.tables = tables
        self.etcd = etcd
        # Every timer of the relay and its publishers: the reactor the etcd client runs on,
        # unless told otherwise (a test's ``task.Clock``).
        self.clock: Any = clock if clock is not None else etcd.reactor
        # Elections and positions want short timeouts (a lease of a few seconds must be kept
        # alive through a stalled member), table watches and reads do not.
        self.coordinator = coordinator or etcd
        self.position_interval = position_interval
        self.subscriptions: dict[int, _Subscription] = {}
        self.publishers: dict[str, TablePublisher] = {}
        self.refreshing: set[int] = set()  # subscriptions the router is being asked about
        # etcd's revision as each published table became wanted here, being read (``settled``
        # holds the writes this instance serves until it is known).
        self.reading: set[defer.Deferred[int | None]] = set()
        self.auditing = LoopingCall(lambda: defer.ensureDeferred(self.audit()))
        self.auditing.clock = self.clock
        # Where routers are linked (``component.linked``): this router's node id, which scopes
        # the elections and positions (one publisher per table and router), and the roles of
        # the links' sessions, which subscribe here for subscribers on other routers. Those
        # routers have publishers of their own, so link sessions neither count as subscribers
        # nor receive the events: every event reaches each subscriber from its own router.
        self.node = node
        self.links = links
        self.options = RETAINED if not links else PublishOptions(
            acknowledge=True, retain=True, exclude_authrole=sorted(links))
        self.roles: dict[int, str | None] = {}  # session -> authrole (None: gone), once asked
        self.asking: dict[int, defer.Deferred[None]] = {}
        self.refused = False  # the router refused to say a session's role (logged once)

    def topic(self, table: str) -> str:
        return f"{self.prefix}.{table}.on_change"

    async def start(self) -> None:
        """Follow subscribers from now on, then bootstrap from the subscriptions that exist.
        Subscribers, not subscriptions: a topic with a retained event keeps its subscription
        after the last subscriber left."""
        for event in ("on_create", "on_subscribe", "on_unsubscribe", "on_delete"):
            await self.session.subscribe(getattr(self, event), f"wamp.subscription.{event}")
        listing = await self.session.call("wamp.subscription.list")
        for ids in listing.values():
            for sub_id in ids:
                await self.learn(sub_id)
        self.reconcile()
        self.auditing.start(AUDIT_INTERVAL, now=False)

    async def learn(self, sub_id: int) -> None:
        """Fetch a subscription's topic and subscribers (it may be gone by now)."""
        try:
            info = await self.session.call("wamp.subscription.get", sub_id)
            sessions = await self.session.call("wamp.subscription.list_subscribers", sub_id)
        except ApplicationError:
            return
        if info:
            known = self.subscriptions.setdefault(
                sub_id, _Subscription(info["uri"], info.get("match", "exact")))
            known.sessions.update(s for s in sessions or () if s != self.session.session_id)

    def on_create(self, session_id: int, info: dict[str, Any]) -> None:
        self.subscriptions.setdefault(info["id"], _Subscription(info["uri"],
                                                                info.get("match", "exact")))

    def on_subscribe(self, session_id: int | None, sub_id: int) -> None:
        known = self.subscriptions.get(sub_id)
        if known is None:  # created before this session followed the meta events
            if session_id != self.session.session_id:
                defer.ensureDeferred(self.learn(sub_id)).addCallback(lambda _: self.reconcile())
            return
        known.changes += 1
        if session_id is None:  # it left at once: who follows the subscription now?
            self.refresh(sub_id)
        elif session_id != self.session.session_id:  # not a publisher reading the retained event
            known.sessions.add(session_id)
            self.reconcile()

    def on_unsubscribe(self, session_id: int | None, sub_id: int) -> None:
        known = self.subscriptions.get(sub_id)
        if known is None:
            return
        known.changes += 1
        if session_id is None:  # a leaving session, not named: ask who follows it now
            self.refresh(sub_id)
        elif session_id in known.sessions:
            known.sessions.discard(session_id)
            self.forget_roles()
            self.reconcile()

    def on_delete(self, session_id: int | None, sub_id: int) -> None:
        known = self.subscriptions.get(sub_id)
        if known is not None:
            known.changes += 1
            # Possibly of a subscription others still follow (see the module docstring):
            # trusted, it would stop the publisher under their feet.
            self.refresh(sub_id)

    def refresh(self, sub_id: int) -> None:
        """Ask the router who follows ``sub_id`` now (it may be gone), unless it is being
        asked already: that answer is then stale, and asked again (``ask``)."""
        if sub_id not in self.refreshing:
            self.refreshing.add(sub_id)
            defer.ensureDeferred(self.ask(sub_id)).addBoth(
                lambda _: self.refreshing.discard(sub_id))

    async def ask(self, sub_id: int) -> None:
        """Take the router's word on a subscription's subscribers, or forget it if the router
        has no such subscription; an answer that a later meta event about the subscription
        overtook is asked again (then left to the audit)."""
        for _ in range(REFRESH_TRIES):
            known = self.subscriptions.get(sub_id)
            if known is None:
                return
            seen = known.changes
            try:
                sessions = set(await self.session.call("wamp.subscription.list_subscribers",
                                                       sub_id) or ())
            except ApplicationError as exc:
                if exc.error != ApplicationError.NO_SUCH_SUBSCRIPTION:
                    log.info("cannot ask the router about subscription {id}: {exc}", id=sub_id,
                             exc=exc)
                    return
                sessions = None  # deleted indeed
            except Exception:  # noqa: BLE001 - the session is ending: nothing to publish for
                return
            if self.subscriptions.get(sub_id) is not known:
                return
            if known.changes != seen:
                continue
            if sessions is None:
                del self.subscriptions[sub_id]
            else:
                known.sessions = sessions - {self.session.session_id, None}
            self.forget_roles()
            self.reconcile()
            return
        log.info("subscription {id} kept changing while asked about: left to the audit",
                 id=sub_id)

    def forget_roles(self) -> None:
        """Forget the roles of sessions that follow nothing here any more."""
        if self.roles:
            following = set().union(*(sub.sessions for sub in self.subscriptions.values()))
            for session_id in [s for s in self.roles if s not in following]:
                del self.roles[session_id]

    async def audit(self) -> None:
        """Ask the router whether each published table still has a subscriber, and stop the
        publishers of those that have none. The meta events can leave a subscriber that is
        gone on our books (an answer to ``learn`` overtaken by the ``on_unsubscribe`` it
        predates); an answer is used only if no meta event about the topic's subscriptions
        arrived while it was asked, so it is never older than what the events said (events
        about other topics do not hold it up)."""
        for name in list(self.publishers):
            topic = self.topic(name)
            seen = self.versions(topic)
            try:
                listeners: set[int] = set()
                for sub_id in await self.session.call("wamp.subscription.match", topic) or ():
                    listeners.update(await self.session.call(
                        "wamp.subscription.list_subscribers", sub_id) or ())
            except Exception as exc:  # noqa: BLE001 - refused, or the session is ending
                log.info("cannot check the subscribers of {topic}: {exc}", topic=topic, exc=exc)
                return
            listeners.discard(self.session.session_id)
            await self.learn_roles(listeners)
            if self.counted(listeners) or seen != self.versions(topic):
                continue
            for sub in self.subscriptions.values():
                if covers(sub.uri, sub.match, topic):
                    sub.sessions.clear()
            self.reconcile()

    def versions(self, topic: str) -> set[tuple[int, int]]:
        """The subscriptions on our books that cover ``topic``, with their event counts."""
        return {(sub_id, sub.changes) for sub_id, sub in self.subscriptions.items()
                if covers(sub.uri, sub.match, topic)}

    def reconcile(self) -> None:
        """Campaign to publish exactly the tables whose topic some subscriber receives."""
        for name in self.tables:
            topic = self.topic(name)
            wanted = any(covers(sub.uri, sub.match, topic) and self.counted(sub.sessions)
                         for sub in self.subscriptions.values())
            if wanted and name not in self.publishers:
                log.info("{table} has subscribers here: {who}", table=name, who={
                    s: self.roles.get(s, "?") for sub in self.subscriptions.values()
                    if covers(sub.uri, sub.match, topic) for s in sub.sessions})
                self.publishers[name] = TablePublisher(self, name, self.coordinator,
                                                       self.position_interval,
                                                       wanted_at=self.read_revision(name))
            elif not wanted and name in self.publishers:
                # Nobody listens: the next subscriber starts from now, not from here.
                log.info("nobody subscribes {table} here any more", table=name)
                self.publishers.pop(name).stop(forget=True)

    def counted(self, sessions: set[int]) -> bool:
        """Whether any of ``sessions`` is a subscriber to publish for: any, on a lone router;
        where routers are linked, one that is not a link's session. A session whose role is
        not known yet is asked about (``learn_roles``) and counts from the answer on."""
        if not self.links:
            return bool(sessions)
        unknown = [s for s in sessions if s not in self.roles]
        if unknown:
            defer.ensureDeferred(self.learn_roles(unknown)).addCallback(
                lambda _: self.reconcile())
        return any(self.roles.get(s) is not None and self.roles[s] not in self.links
                   for s in sessions)

    async def learn_roles(self, sessions: Any) -> None:
        """Ask the router the authrole of each of ``sessions`` not known yet (linked routers
        only). A session that is gone is not counted; a router that refuses to say
        (``wamp.session.get`` not permitted) makes every session count, so that a subscriber
        is never left without events."""
        if not self.links:
            return
        for session_id in [s for s in sessions if s not in self.roles]:
            asking = self.asking.get(session_id)
            if asking is None:
                asking = defer.ensureDeferred(self.ask_role(session_id))
                if not asking.called:
                    self.asking[session_id] = asking
            await observe(asking)

    async def ask_role(self, session_id: int) -> None:
        try:
            info = await self.session.call("wamp.session.get", session_id)
            self.roles[session_id] = (info or {}).get("authrole")
        except ApplicationError as exc:
            if exc.error == ApplicationError.NO_SUCH_SESSION:
                self.roles[session_id] = None
            else:
                if not self.refused:
                    log.warn("cannot ask the router who subscribes ({exc}): counting every "
                             "session as a subscriber, links too", exc=exc)
                self.refused = True
                self.roles[session_id] = ""
        except Exception:  # noqa: BLE001 - the session is ending: count it, to be safe
            self.roles[session_id] = ""
        finally:
            self.asking.pop(session_id, None)

    def read_revision(self, name: str) -> defer.Deferred[int | None]:
        """etcd's revision now, as ``name`` becomes wanted (None if it cannot be read). A
        publisher with no stored position starts after it rather than after the revision it
        reads once elected, a few round trips later, when a subscriber's first writes may have
        committed already; the writes this instance serves wait for it (``settled``).
        Shared by the publisher and the writes: each waits through ``observe``, so cancelling
        one waiter neither cancels the read nor is lost in it."""

        async def read() -> int | None:
            try:
                found = await self.etcd.get(self.tables[name].keyset, count_only=True)
            except Exception as exc:  # noqa: BLE001 - etcd unreachable: writes fail anyway
                log.info("cannot read the revision {table} became wanted at: {exc}",
                         table=name, exc=exc)
                return None
            return found.header.revision

        reading = defer.ensureDeferred(read())
        self.reading.add(reading)

        def done(revision: int | None) -> int | None:
            self.reading.discard(reading)
            return revision

        return reading.addCallback(done)

    async def settled(self) -> None:
        """Wait for the revision reads under way (see ``read_revision``)."""
        for reading in list(self.reading):
            await observe(reading)

    def publish(self, topic: str, **payload: Any) -> defer.Deferred[Any]:
        """Publish, retained; fires with the router's acknowledgement, fails if the session is
        gone."""
        return defer.maybeDeferred(self.session.publish, topic, options=self.options, **payload)

    async def fence(self, session_id: int, patience: float = FENCE_PATIENCE) -> None:
        """Detach a publisher's session from the router, so that nothing it still sends is
        published: an etcd lease can be lost by a process that does not know it yet. The router
        detaches a killed session once the peer answers its GOODBYE, so this asks again until
        the session is gone; a stalled peer, which cannot answer, gets ``patience`` seconds
        (it knows from its lease's deadline that it lost the lead once it runs again)."""
        deadline = self.clock.seconds() + patience
        while True:
            try:
                # Not wamp.close.normal: a session that leaves normally does not reconnect.
                await self.session.call("wamp.session.kill", session_id, FENCED,
                                        "another instance publishes these events now")
            except ApplicationError as exc:
                if exc.error == ApplicationError.NO_SUCH_SESSION:
                    return
                if exc.error == ApplicationError.NOT_AUTHORIZED:
                    log.warn("cannot detach the former publisher session {session} ({exc}): if "
                             "it still runs, it may publish an event again", session=session_id,
                             exc=exc)
                    return
                # Otherwise it is closing already: the peer has not answered yet.
            if self.clock.seconds() > deadline:
                log.info("former publisher session {session} does not answer the router",
                         session=session_id)
                return
            await deferLater(self.clock, 0.05, lambda: None)

    async def last_published(self, table: str) -> Position | None:
        """What the router retained of ``table``'s events: the last one it accepted."""
        topic = self.topic(table)
        seen: list[dict[str, Any]] = []
        try:
            subscription = await self.session.subscribe(
                lambda *args, **event: seen.append(event), topic,
                options=SubscribeOptions(get_retained=True))
            try:
                # One round trip: the router sent the retained event before answering it.
                await self.session.call("wamp.subscription.lookup", topic)
            finally:
                # An undo that fails (the subscription is gone already) must not replace why
                # the lookup ended: a cancelled read would become "nothing retained", and the
                # lead that was stopped would go on publishing.
                with contextlib.suppress(ApplicationError):
                    await subscription.unsubscribe()
        except ApplicationError as exc:
            log.warn("cannot read the retained event of {topic} ({exc}): continuing from the "
                     "stored position, which may repeat the last events", topic=topic, exc=exc)
            return None
        if not seen:
            return None
        last = seen[-1]  # anything after the retained event is newer still
        try:
            return Position(int(last["revision"]), through=self.tables[table].etcd_key(
                last["key"]))
        except (KeyError, TypeError, ValueError) as exc:
            log.warn("unreadable retained event of {topic}: {exc}", topic=topic, exc=exc)
            return None

    def stop(self) -> defer.Deferred[Any]:
        """The session ended: stop publishing and store the positions for the next session;
        fires when every publisher has."""
        if self.auditing.running:
            self.auditing.stop()
        stopped = [publisher.stop(forget=False) for publisher in self.publishers.values()]
        self.publishers.clear()
        return defer.DeferredList(stopped)
