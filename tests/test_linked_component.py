"""The component on two linked routers (``etcd-wamp init --nodes 2``'s layout), from outside.

Two router-only nodes linked as ``component.linked`` configures them, two standalone instances
attached to each (``"linked": true``; standalone, so that one can be killed alone), one etcd,
and readers and writers on both nodes speaking json, msgpack and cbor. Each router is served as
if it were alone: a publisher per table and router, calls answered on the caller's router.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from autobahn.wamp.exception import ApplicationError
from twisted.internet import reactor, threads
from twisted.internet.task import deferLater

from component.linked import node_name
from component.publisher import election_name, position_key
from txetcd import Client, Election, KeyNotFound, KeySet
from txetcd.embedded import EtcdProcess, stop_group

from . import wamp
from .linked import LinkedNodes, backend
from .wamp import connect, until_registered

# Elections and node restarts take a while here.
eventually = functools.partial(wamp.eventually, timeout=30.0, step=0.1)

inline = pytest_twisted.ensureDeferred
NAMESPACE = "linked/"
SERIALIZERS = ("json", "msgpack", "cbor")
NODES = [node_name(0), node_name(1)]


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)




class Deployment:
    """The linked nodes and the instances attached to them (pid -> (process, node index))."""

    def __init__(self, nodes: LinkedNodes) -> None:
        self.nodes = nodes
        self.instances: dict[int, tuple[Any, int]] = {}

    def spawn(self, index: int) -> Any:
        proc = self.nodes[index].start_component()
        self.instances[proc.pid] = (proc, index)
        return proc

    def kill(self, pid: int) -> int:
        """kill -9 an instance; returns its node's index."""
        proc, index = self.instances.pop(pid)
        proc.kill()
        proc.wait()
        return index

    def wait_ready(self, count: int = 2, timeout: float = 180.0) -> None:
        """Until ``count`` instances of each node logged that they serve."""
        deadline = time.monotonic() + timeout
        for node in self.nodes.nodes:
            log = node.workdir / "component.log"
            while not log.exists() or log.read_text(errors="replace").count(
                    "etcd component ready") < count:
                assert time.monotonic() < deadline, "instances not ready"
                time.sleep(0.2)


@pytest.fixture(scope="module")
def deployment(etcd35: EtcdProcess,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    nodes = LinkedNodes(tmp_path_factory.mktemp("linked"), etcd35.url, count=2,
                        namespace=NAMESPACE, with_component=False)
    nodes.start()
    found = Deployment(nodes)
    try:
        for index in range(len(nodes)):
            found.spawn(index)
            found.spawn(index)
        found.wait_ready()
        yield found
    finally:
        for proc, _ in found.instances.values():
            stop_group(proc)
        nodes.stop()


@pytest.fixture
def coordinator(etcd35: EtcdProcess) -> Iterator[Client]:
    client = Client(reactor, endpoints=[etcd35.url], namespace=NAMESPACE.encode())
    yield client
    pytest_twisted.blockon(client.close())


async def publisher(client: Client, table: str, node: str | None) -> bytes | None:
    """The ``host:pid`` elected to publish ``table`` on router ``node`` (None: nobody)."""
    try:
        return (await Election(client, election_name("etcd", table, node)).leader()).value
    except KeyNotFound:
        return None


async def stopped(client: Client, table: str, node: str) -> bool:
    """Nobody publishes ``table`` on router ``node``, and its position is forgotten."""
    position = await client.get(position_key("etcd", table, node))
    return await publisher(client, table, node) is None and not position.kvs


def pid_of(owner: bytes) -> int:
    return int(owner.rsplit(b":", 1)[1])


Change = tuple[int, str]


async def readers(nodes: LinkedNodes, topic: str) -> tuple[list[Any], list[list[Change]]]:
    """On each node, a reader per serializer subscribed to ``topic``: sessions and events."""
    sessions, got = [], []
    for node in nodes.nodes:
        for serializer in SERIALIZERS:
            session = await connect(node.url, "reader", "reader-secret", serializer)
            events: list[Change] = []
            await session.subscribe(lambda events=events, **e: events.append(
                (e["revision"], str(e["key"]))), topic)
            sessions.append(session)
            got.append(events)
    return sessions, got


def leave(*sessions: Any) -> None:
    for session in sessions:
        if session.is_attached():
            session.leave()


async def all_received(got: list[list[Change]], written: list[Change]) -> None:
    """Each of ``got`` holds exactly ``written``, in order."""
    async def complete() -> bool:
        return all(len(events) >= len(written) for events in got)

    await eventually(complete)
    await sleep(0.5)  # a repeat would be here by now
    for events in got:
        assert events == written


@inline
async def test_every_subscriber_on_every_node_gets_each_change_once(
        deployment: Deployment, coordinator: Client) -> None:
    """Readers on both nodes (json, msgpack, cbor), writes through both: each reader gets every
    change once, in revision order, from its own router's publisher: one per node, each an
    instance attached to that node."""
    nodes = deployment.nodes
    writers = [await until_registered(await connect(node.url, "writer", "writer-secret"))
               for node in nodes.nodes]
    sessions, got = await readers(nodes, "etcd.settings.on_change")
    try:
        for index, node in enumerate(NODES):
            owner = await eventually(lambda node=node: publisher(coordinator, "settings", node))
            assert deployment.instances[pid_of(owner)][1] == index
        assert await publisher(coordinator, "settings", None) is None  # no global election
        # `etcd-wamp status` names each router's publisher; `etcd.status` on a node its own.
        status = await threads.deferToThread(
            subprocess.run, [str(Path(sys.executable).with_name("etcd-wamp")), "status",
                             "--etcd", deployment.nodes[0].extra["etcd"]["endpoints"][0],
                             "--namespace", NAMESPACE, "--json"],
            capture_output=True, text=True, timeout=60)
        tables = json.loads(status.stdout)["tables"]
        for index, node in enumerate(NODES):
            owner = tables[f"settings@{node}"]["publisher"]
            assert deployment.instances[pid_of(owner.encode())][1] == index
            answer = await writers[index].call("etcd.status")
            listed = {t["name"]: t["publisher"] for t in answer["tables"]}
            assert listed["settings"] == owner
        written = []
        for n in range(40):
            revision = await writers[n % 2].call("etcd.settings.put", f"k{n % 5}", n)
            written.append((revision, f"k{n % 5}"))
        await all_received(got, written)
    finally:
        leave(*writers, *sessions)
    # Every reader left: both routers' publishers stop and forget their positions. (A publisher
    # killed before it learnt that, as the next test kills one, would leave its position.)
    for node in NODES:
        await eventually(lambda node=node: stopped(coordinator, "settings", node))


@inline
async def test_a_nodes_publisher_killed_its_subscribers_continue_exactly_once(
        deployment: Deployment, coordinator: Client) -> None:
    """kill -9 node 1's publisher of a table while both nodes write: node 1's readers continue
    from node 1's retained event and stored position (another instance of node 1 takes over),
    node 2's never notice; every reader gets each change once, in order."""
    nodes = deployment.nodes
    writers = [await until_registered(await connect(node.url, "writer", "writer-secret"))
               for node in nodes.nodes]
    sessions, got = await readers(nodes, "etcd.users.on_change")
    try:
        owner = await eventually(lambda: publisher(coordinator, "users", NODES[0]))
        written = []

        async def write(count: int) -> None:
            for n in range(count):
                key = str(uuid.UUID(int=n % 7 + 1))
                revision = await writers[n % 2].call("etcd.users.put", key, {"n": n})
                written.append((revision, key))

        await write(20)
        assert deployment.kill(pid_of(owner)) == 0
        await write(20)  # while node 1 has no publisher, and once its successor leads
        async def successor() -> bytes | None:
            found = await publisher(coordinator, "users", NODES[0])
            return found if found != owner else None

        assert deployment.instances[pid_of(await eventually(successor))][1] == 0
        await write(10)
        await all_received(got, written)
    finally:
        leave(*writers, *sessions)
        deployment.spawn(0)


@inline
async def test_a_subscriber_on_one_node_starts_only_its_publisher_and_its_leaving_stops_it(
        deployment: Deployment, coordinator: Client) -> None:
    """A table subscribed only on node 2 is published by one of node 2's instances; node 1's
    instances see the topic subscribed by node 2's link only, and do not publish it. When the
    subscriber leaves, nobody publishes it any more and node 2's position is forgotten."""
    nodes = deployment.nodes
    reader = await connect(nodes[1].url, "reader", "reader-secret", "msgpack")
    writer = await until_registered(await connect(nodes[0].url, "writer", "writer-secret"))
    seen: list[int] = []
    try:
        subscription = await reader.subscribe(lambda **e: seen.append(e["revision"]),
                                              "etcd.people.on_change")
        owner = await eventually(lambda: publisher(coordinator, "people", NODES[1]))
        assert deployment.instances[pid_of(owner)][1] == 1
        revision = await writer.call("etcd.people.put", str(uuid.uuid4()),
                                     {"name": "ada", "email": f"{uuid.uuid4()}@example.org"})

        async def arrived() -> bool:
            return revision in seen

        await eventually(arrived)
        await sleep(2.5)  # longer than an audit: node 1 has had time to (wrongly) campaign
        assert await publisher(coordinator, "people", NODES[0]) is None
        await subscription.unsubscribe()

        await eventually(lambda: stopped(coordinator, "people", NODES[1]))
    finally:
        leave(reader, writer)


@inline
async def test_calls_on_every_node_are_answered_there_with_typed_errors(
        deployment: Deployment, coordinator: Client) -> None:
    """On each node and serializer: a good put and get work; a refused call (a key the table
    cannot take) gets the typed ``etcd.error.invalid_key`` and writes nothing (never the null
    result a link would answer). Calls do not cross links: a procedure registered on node 1
    only is ``wamp.error.no_such_procedure`` on node 2."""
    nodes = deployment.nodes
    users = KeySet(b"\x00\x01", prefix=True)  # the users table's rows (slot 1)
    found = await coordinator.get(users, count_only=True)
    before, rows = found.header.revision, found.count
    for node in nodes.nodes:
        for serializer in SERIALIZERS:
            session = await until_registered(await connect(node.url, "writer", "writer-secret",
                                                           serializer))
            try:
                key = f"{node.port}-{serializer}"
                revision = await session.call("etcd.settings.put", key, {"s": serializer})
                assert isinstance(revision, int) and revision > before
                row = await session.call("etcd.settings.get", key)
                assert row == {"s": serializer}
                with pytest.raises(ApplicationError) as refused:
                    await session.call("etcd.users.put", "not-a-uuid", {"n": 1})
                assert refused.value.error == "etcd.error.invalid_key", refused.value
            finally:
                session.leave()
    assert (await coordinator.get(users, count_only=True)).count == rows  # refusals wrote nothing
    only_on_1 = await backend(nodes[0])
    caller = await backend(nodes[1], "json")
    try:
        await only_on_1.register(lambda: "node1", "etcd.probe.only_on_node1")
        await sleep(1.0)  # a link that forwarded registrations would have by now
        assert await only_on_1.call("etcd.probe.only_on_node1") == "node1"
        with pytest.raises(ApplicationError) as missing:
            await caller.call("etcd.probe.only_on_node1")
        assert missing.value.error == "wamp.error.no_such_procedure"
    finally:
        leave(only_on_1, caller)


@inline
async def test_a_session_leaving_does_not_stop_the_events_others_still_follow(
        deployment: Deployment, coordinator: Client) -> None:
    """A session that follows a table and topics only it follows goes away: Crossbar may then
    announce ``on_delete`` of the table's subscription, which others still follow (see
    ``test_linked_routers``); the instances ask the router before believing it, so the
    remaining reader keeps receiving events. Tried until it happened twice, at most 40 times
    (the false announcement depends on the order of a set; the test checks that it did)."""
    nodes = deployment.nodes
    reader = await connect(nodes[0].url, "reader", "reader-secret", "cbor")
    writer = await until_registered(await connect(nodes[0].url, "writer", "writer-secret"))
    watcher = await backend(nodes[0])
    got: list[Change] = []
    try:
        await reader.subscribe(lambda **e: got.append((e["revision"], str(e["key"]))),
                               "etcd.settings.on_change")
        await eventually(lambda: publisher(coordinator, "settings", NODES[0]))
        deleted: list[int] = []
        await watcher.subscribe(lambda session, sub_id: deleted.append(sub_id),
                                "wamp.subscription.on_delete")
        shared = (await watcher.call("wamp.subscription.match", "etcd.settings.on_change"))[0]
        written = []
        for attempt in range(40):
            if deleted.count(shared) >= 2:
                break
            leaver = await backend(nodes[0])
            await leaver.subscribe(lambda **_: None, "etcd.settings.on_change")
            # Topics only the leaver follows (links forward no wamp.* topic, so none of
            # theirs keeps them), deleted when it goes; a different number each try, or the
            # tries of one router process tend to lay out the leaver's set alike, and then
            # either all of them bring the false on_delete or none does.
            for own in range(3 + attempt % 5):
                await leaver.subscribe(lambda *_: None,
                                       f"wamp.subscription.x_own{attempt}_{own}")
            await sleep(0.3)
            leaver._transport.abort()  # gone without unsubscribing, as a killed process
            await sleep(0.5)
            revision = await writer.call("etcd.settings.put", "left", attempt)
            written.append((revision, "left"))
        await sleep(2.5)  # an audit later, too
        revision = await writer.call("etcd.settings.put", "left", "last")
        written.append((revision, "left"))
        # Only this test's key: a publisher left running by an earlier test may first resend
        # older changes of other keys (seen ~40 % of runs; reported in the branch's report, not
        # what this test is about).
        await all_received([got], written)
        assert shared in deleted, "Crossbar announced no false on_delete in 40 tries"
    finally:
        leave(reader, writer, watcher)
