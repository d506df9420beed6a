"""etcd changes republished as WAMP events, through a real Crossbar node and real etcd."""

from __future__ import annotations

import contextlib
import os
import signal
import struct
from collections.abc import Iterator
from typing import Any

import cbor2
import pytest
import pytest_twisted
from autobahn.twisted.component import Component
from autobahn.wamp.exception import ApplicationError
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater

from component.publisher import Position, election_name, position_key
from txetcd import Client, Election, KeyNotFound, KeySet
from txetcd.embedded import EtcdProcess, stop_group

from .test_etcdctl_interop import etcdctl
from .wamp import CrossbarNode, connect, eventually

inline = pytest_twisted.ensureDeferred
SETTINGS = struct.pack(">H", 2)  # the demo "settings" table: string keys, cbor values


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)




def watchers(etcd: EtcdProcess) -> int:
    return int(etcd.metric("etcd_debugging_mvcc_watcher_total"))


@pytest.fixture
def node(etcd35: EtcdProcess, tmp_path: Any) -> Iterator[CrossbarNode]:
    """The router alone, with the component standalone beside it (as a remote backend runs)."""
    crossbar = CrossbarNode(tmp_path, etcd35.url, with_component=False)
    crossbar.start()
    component = crossbar.start_component()
    try:
        yield crossbar
    finally:
        stop_group(component)
        crossbar.stop()


async def ready(node: CrossbarNode, authid: str = "writer") -> Any:
    session = await connect(node.url, authid, f"{authid}-secret")

    async def registered() -> bool:
        try:
            await session.call("etcd.status")
            return True
        except ApplicationError as exc:
            if exc.error not in ("wamp.error.no_such_procedure", "etcd.error.unavailable"):
                raise
            return False

    await eventually(registered, timeout=30)
    return session


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.resyncs: list[dict[str, Any]] = []

    def on_change(self, **event: Any) -> None:
        self.events.append(event)

    def on_resync(self, **info: Any) -> None:
        self.resyncs.append(info)


@inline
async def test_changes_from_wamp_and_direct_writes(node: CrossbarNode, etcd_direct: Client,
                                                   etcd35: EtcdProcess) -> None:
    session = await ready(node)
    reader = await ready(node, "reader")
    seen = Recorder()
    before = watchers(etcd35)
    subscription = await reader.subscribe(seen.on_change, "etcd.settings.on_change")
    await eventually(lambda: defer.succeed(watchers(etcd35) == before + 1))
    try:
        rev1 = await session.call("etcd.settings.put", "theme", {"dark": True})
        rev2 = (await etcd_direct.set(SETTINGS + b"lang", cbor2.dumps("en"))).revision
        rev3 = (await etcd_direct.delete(SETTINGS + b"theme")).header.revision
        await etcd_direct.set(struct.pack(">H", 1) + b"\x00" * 16, b"{}")  # another table: not here
        await eventually(lambda: defer.succeed(len(seen.events) >= 3))
        assert seen.events == [
            {"type": "put", "key": "theme", "value": {"dark": True}, "revision": rev1},
            {"type": "put", "key": "lang", "value": "en", "revision": rev2},
            {"type": "delete", "key": "theme", "value": None, "revision": rev3},
        ]
    finally:
        await subscription.unsubscribe()
    # The last subscriber left: the component stops watching etcd.
    await eventually(lambda: defer.succeed(watchers(etcd35) == before))
    session.leave()
    reader.leave()


@inline
async def test_a_write_right_after_the_first_subscribe_is_published(
        node: CrossbarNode, etcd35: EtcdProcess, etcd_direct: Client) -> None:
    """What the README's WAMP example does: subscribe, then write at once, with nobody else
    subscribed. The table's election is held by this test until the write is done, so the
    publisher is elected (and reads etcd) only after it, as on a loaded node: it starts after
    the revision read when the subscription became known, which the write waited for."""
    await (await ready(node)).leave()
    before = watchers(etcd35)
    election = Election(etcd_direct, election_name("etcd", "settings"))
    for serializer in ("json", "cbor", "msgpack"):
        holder = election.campaign(b"test:holding-the-election", ttl=10)
        await holder
        client = await connect(node.url, "writer", "writer-secret", serializer=serializer)
        seen = Recorder()
        subscription = await client.subscribe(seen.on_change, "etcd.settings.on_change")
        revision = await client.call("etcd.settings.put", f"first-{serializer}", 1)
        await holder.resign()  # now the component's publisher wins, after the write
        await eventually(lambda seen=seen: defer.succeed(seen.events))
        assert seen.events[0] == {"type": "put", "key": f"first-{serializer}", "value": 1,
                                  "revision": revision}, serializer
        await subscription.unsubscribe()
        client.leave()
        # Nobody subscribes any more: the publisher stops, and the next subscriber is first.
        await eventually(lambda: defer.succeed(watchers(etcd35) == before))


@inline
async def test_events_of_one_revision_arrive_in_etcd_order(node: CrossbarNode,
                                                           etcd_direct: Client,
                                                           etcd35: EtcdProcess) -> None:
    """Several changes at one revision (a txn, or puts the client batched into one) arrive in
    etcd's order, the txn's op order, not sorted by key (the chaos check once assumed that)."""
    session = await ready(node)
    seen = Recorder()
    before = watchers(etcd35)
    await session.subscribe(seen.on_change, "etcd.settings.on_change")
    await eventually(lambda: defer.succeed(watchers(etcd35) == before + 1))
    try:
        ops = [{"table": "settings", "op": "put", "key": key, "value": n}
               for n, key in enumerate(["zeta", "alpha", "mid"])]
        rev1 = await session.call("etcd.txn", ops)
        # A read goes at once (nothing is in flight); the two puts of the same reactor turn
        # queue behind it and the client sends them as one txn, in issue order.
        _, *batched = await defer.gatherResults(
            [etcd_direct.get(SETTINGS + b"omega")]
            + [etcd_direct.set(SETTINGS + key, cbor2.dumps(key)) for key in (b"omega", b"beta")])
        rev2 = batched[0].revision
        assert batched[1].revision == rev2 > rev1
        await eventually(lambda: defer.succeed(len(seen.events) >= 5))
        assert [(e["revision"], e["key"]) for e in seen.events] == [
            (rev1, "zeta"), (rev1, "alpha"), (rev1, "mid"), (rev2, "omega"), (rev2, "beta")]
    finally:
        session.leave()


@inline
async def test_prefix_subscription_covers_every_table(node: CrossbarNode, etcd_direct: Client,
                                                      etcd35: EtcdProcess) -> None:
    session = await ready(node)
    seen = Recorder()
    before = watchers(etcd35)
    from autobahn.wamp.types import SubscribeOptions

    await session.subscribe(lambda *a, **kw: seen.on_change(**kw), "etcd.",
                            options=SubscribeOptions(match="prefix"))
    await eventually(lambda: defer.succeed(watchers(etcd35) == before + 3))  # all 3 tables
    try:
        import uuid

        user = str(uuid.uuid4())
        await etcd_direct.set(struct.pack(">H", 1) + uuid.UUID(user).bytes, b'{"n": 1}')
        await eventually(lambda: defer.succeed(seen.events))
        assert seen.events[0]["key"] == user and seen.events[0]["value"] == {"n": 1}
    finally:
        session.leave()
    await eventually(lambda: defer.succeed(watchers(etcd35) == before))


@inline
async def test_router_and_etcd_restarts_lose_and_repeat_nothing(
        node: CrossbarNode, etcd_direct: Client, etcd35: EtcdProcess) -> None:
    seen = Recorder()
    committed: list[int] = []

    async def subscribed_reader() -> Any:
        reader = await ready(node, "reader")
        await reader.subscribe(seen.on_change, "etcd.settings.on_change")
        return reader

    async def write(i: int) -> None:
        committed.append((await etcd_direct.set(SETTINGS + b"k%03d" % i,
                                           cbor2.dumps(i))).revision)

    reader = await subscribed_reader()
    await sleep(0.5)  # let the component start its watch
    for i in range(5):
        await write(i)
    await eventually(lambda: defer.succeed(len(seen.events) == 5))

    # The router goes away; writes go on directly in etcd meanwhile.
    node.stop()
    for i in range(5, 10):
        await write(i)
    node.start()
    reader = await subscribed_reader()
    await eventually(lambda: defer.succeed(len(seen.events) >= 10), timeout=30)

    # etcd dies under the running watch and comes back.
    etcd35.kill()
    etcd35.start()
    # start() blocked the reactor: let it see the old pooled connections close first, or the
    # next write would go out on one of them and end with an unknown outcome.
    await sleep(0.2)
    for i in range(10, 15):
        await write(i)
    await eventually(lambda: defer.succeed(len(seen.events) >= 15), timeout=30)
    await sleep(0.5)  # a repeat would show up here
    assert [e["revision"] for e in seen.events] == committed
    assert [e["value"] for e in seen.events] == list(range(15))
    reader.leave()


@inline
async def test_history_compacted_while_away_publishes_resync(
        node: CrossbarNode, etcd_direct: Client) -> None:
    seen = Recorder()

    async def subscribed_reader() -> Any:
        reader = await ready(node, "reader")
        await reader.subscribe(seen.on_resync, "etcd.settings.on_resync")
        await reader.subscribe(seen.on_change, "etcd.settings.on_change")
        return reader

    await subscribed_reader()
    await sleep(0.5)
    await etcd_direct.set(SETTINGS + b"a", cbor2.dumps(1))
    await eventually(lambda: defer.succeed(seen.events))

    node.stop()  # while the router is away, history the component still needs is compacted
    await etcd_direct.set(SETTINGS + b"b", cbor2.dumps(2))
    latest = (await etcd_direct.set(SETTINGS + b"c", cbor2.dumps(3))).revision
    await etcd_direct.compact(latest, physical=True)
    node.start()
    reader = await subscribed_reader()
    resync = await eventually(lambda: defer.succeed(seen.resyncs), timeout=30)
    assert resync[0]["compact_revision"] == latest
    # Nothing older than the compaction is replayed as if it were complete.
    assert [e["key"] for e in seen.events] in (["a"], ["a", "c"])
    reader.leave()


class Deployment:
    """A router with standalone instances, a reader on the settings table and its election:
    what the takeover tests share."""

    def __init__(self, etcd: EtcdProcess, client: Client, workdir: Any, instances: int,
                 **settings: Any) -> None:
        self.node = CrossbarNode(workdir, etcd.url, with_component=False)
        self.node.extra.update(settings)
        self.node.start()
        self.instances = [self.node.start_component() for _ in range(instances)]
        self.client = client
        self.election = Election(client, election_name("etcd", "settings"))
        self.seen = Recorder()
        self.committed: list[int] = []
        self.reader: Any = None

    async def subscribe(self) -> None:
        self.reader = await ready(self.node, "reader")
        await self.reader.subscribe(self.seen.on_change, "etcd.settings.on_change")

    async def published(self, count: int) -> bytes:
        """Subscribe, wait for a lead, and have it publish ``count`` changes; the lead."""
        await self.subscribe()
        leader: bytes = await eventually(self.leader, timeout=30)
        for i in range(count):
            await self.write(i)
        await self.delivered(count)
        return leader

    async def write(self, i: int) -> None:
        self.committed.append((await self.client.set(SETTINGS + b"k%03d" % i,
                                                     cbor2.dumps(i))).revision)

    async def delivered(self, count: int) -> None:
        await eventually(lambda: defer.succeed(len(self.seen.events) >= count), timeout=30)

    async def more_arrive_once(self, first: int, count: int) -> None:
        """Write ``count`` more changes; then every change committed so far has arrived once,
        in order."""
        for i in range(first, first + count):
            await self.write(i)
        await self.delivered(first + count)
        await sleep(0.5)  # a late repeat would show up here
        assert [e["revision"] for e in self.seen.events] == self.committed

    async def leader(self) -> bytes | None:
        try:
            return (await self.election.leader()).value
        except KeyNotFound:
            return None

    async def new_leader(self, old: bytes) -> bytes:
        return await eventually(lambda: defer.ensureDeferred(self._other_leader(old)),
                                timeout=30)

    async def _other_leader(self, old: bytes) -> bytes | None:
        now = await self.leader()
        return now if now not in (None, old) else None

    def instance(self, leader: bytes) -> Any:
        return next(p for p in self.instances if leader.endswith(b":%d" % p.pid))

    async def stored(self) -> tuple[Position, int | None]:
        """The stored position and the publisher session recorded with it."""
        found = await self.client.get(position_key("etcd", "settings"))
        data = found.kvs[0].value
        return Position.decode(data), Position.publisher(data)

    def stop(self) -> None:
        if self.reader is not None:
            self.reader.leave()
        for proc in self.instances:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
            stop_group(proc)
        self.node.stop()


@inline
async def test_takeover_after_kill_repeats_nothing_the_router_accepted(
        etcd35: EtcdProcess, etcd_direct: Client, tmp_path: Any) -> None:
    """The only instance is killed while its stored position lags far behind what it published
    (``position_interval`` of 60 s); the next one continues after the event the router
    retained, not from the stored position."""
    setup = Deployment(etcd35, etcd_direct, tmp_path, 1, position_interval=60)
    try:
        leader = await setup.published(20)
        # Lagging behind: a position at revision R with no keys covers nothing at R.
        assert (await setup.stored())[0].revision <= setup.committed[0]
        victim = setup.instance(leader)
        victim.kill()
        victim.wait()
        setup.instances.append(setup.node.start_component())
        await setup.new_leader(leader)
        await setup.more_arrive_once(20, 5)
    finally:
        setup.stop()


@inline
async def test_a_leader_key_deleted_by_hand_repeats_and_loses_nothing(
        etcd35: EtcdProcess, etcd_direct: Client, tmp_path: Any) -> None:
    """An operator deletes the publishing instance's election key with ``etcdctl`` (a prefix
    wiped by hand) while changes keep coming, and its stored position lags far behind
    (``position_interval`` of 60 s): a lead under a new key takes over, and every change
    arrives once, in order, whichever instance leads then."""
    setup = Deployment(etcd35, etcd_direct, tmp_path, 2, position_interval=60)
    try:
        await setup.published(20)
        old = (await setup.election.leader()).key
        etcdctl(etcd35, "del", b"app/" + old)
        for i in range(20, 30):  # while the lead learns it lost its key
            await setup.write(i)

        async def led_under_another_key() -> bool:
            try:
                return bool((await setup.election.leader()).key != old)
            except KeyNotFound:
                return False

        await eventually(lambda: defer.ensureDeferred(led_under_another_key()), timeout=30)
        await setup.more_arrive_once(30, 5)
    finally:
        setup.stop()


@inline
async def test_a_lead_whose_lease_lapsed_stores_its_position_for_after_a_router_restart(
        etcd35: EtcdProcess, etcd_direct: Client, tmp_path: Any) -> None:
    """etcd expires the publisher's lease (revoked here), and the router restarts, forgetting
    its retained event, before another lead has stored where it starts: the lead that lapsed
    stored what it published (its last position write lags far behind, with a
    ``position_interval`` of 60 s), so the next lead repeats none of it."""
    setup = Deployment(etcd35, etcd_direct, tmp_path, 1, position_interval=60)
    blocker: Any = None
    try:
        await setup.published(20)
        assert (await setup.stored())[0].revision < setup.committed[-1]  # lagging behind
        # The test campaigns too, so that the lapsed instance cannot lead again at once.
        blocker = setup.election.campaign(b"test", ttl=30)
        await etcd_direct.lease_revoke((await setup.election.leader()).lease)
        await blocker
        # Once stepped down, the instance campaigns again, behind the test.
        candidates = KeySet(election_name("etcd", "settings") + b"/", prefix=True)
        await eventually(lambda: defer.ensureDeferred(etcd_direct.get(
            candidates, count_only=True)).addCallback(lambda found: found.count == 2),
            timeout=30)
        assert (await setup.stored())[0].revision == setup.committed[-1]
        setup.node.stop()
        setup.node.start()
        await setup.subscribe()
        await blocker.resign()
        await setup.more_arrive_once(20, 5)
    finally:
        setup.stop()


async def backend_session(node: CrossbarNode) -> Any:
    """A session on the node's unix socket, where it joins as the component's role."""
    joined: defer.Deferred[Any] = defer.Deferred()
    comp = Component(transports=[{"type": "rawsocket", "serializer": "cbor", "max_retries": 0,
                                  "endpoint": {"type": "unix", "path": str(node.socket_path)}}],
                     realm="realm1")
    comp.on_join(lambda session, details: joined.callback(session))
    comp.start(reactor)
    return await joined


@inline
async def test_stalled_publisher_is_detached_and_repeats_nothing_when_it_wakes(
        etcd35: EtcdProcess, etcd_direct: Client, tmp_path: Any) -> None:
    """A publisher stalled past its lease (SIGSTOP) may still believe it leads when it wakes:
    its successor detaches its WAMP session first, so nothing it sends then is published."""
    setup = Deployment(etcd35, etcd_direct, tmp_path, 2)
    try:
        leader = await setup.published(1)
        _, first_session = await setup.stored()
        assert first_session is not None
        stalled = setup.instance(leader)
        os.kill(stalled.pid, signal.SIGSTOP)
        for i in range(1, 4):
            await setup.write(i)
        await setup.delivered(4)
        await setup.new_leader(leader)
        assert (await setup.stored())[1] not in (None, first_session)
        os.kill(stalled.pid, signal.SIGCONT)
        backend = await backend_session(setup.node)

        async def detached() -> bool:
            try:  # (this would detach it, but too late for the assertion)
                await backend.call("wamp.session.kill", first_session)
            except ApplicationError as exc:
                return exc.error == ApplicationError.NO_SUCH_SESSION
            raise AssertionError("the stalled publisher's session was still attached")

        await eventually(detached)
        for i in range(4, 6):
            await setup.write(i)
        await setup.delivered(6)
        await sleep(1.0)  # the woken instance had events to send: none may show up
        assert [e["revision"] for e in setup.seen.events] == setup.committed
        assert stalled.poll() is None  # detached, it joins again as a standby: it did not exit
        backend.leave()
    finally:
        setup.stop()
