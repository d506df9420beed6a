"""What crosses Crossbar's router-to-router links, and what does not: minimal reproductions.

Three router-only nodes of the repo's config, each linked to both others as
``component.linked`` configures them, except that here the links forward registrations too
(``forward_local_invocations``, off in the shipped config, to show why), and plain WAMP
sessions in the component's role (``backend``, on each node's local socket). Each test answers
one question of the README's "Linked routers" table; the component's own behaviour across
links is tested in ``tests/test_linked_component.py``.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallOptions, PublishOptions, RegisterOptions, SubscribeOptions
from twisted.internet import reactor
from twisted.internet.task import deferLater

from txetcd.embedded import EtcdProcess

from .linked import LinkedNodes, backend
from .wamp import eventually

inline = pytest_twisted.ensureDeferred


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


# The links forward a subscription a moment after the router reported it (a meta event, then
# a SUBSCRIBE on the other node): wait that long before publishing.
LINK_DELAY = 1.0
TRIES = 30  # of a leaver, until Crossbar's false on_delete shows (see its test)


def leaver_only_topics(attempt: int) -> list[str]:
    """Topics only the leaver of that test's ``attempt`` follows, all under the
    ``wamp.subscription.`` prefix the backend role may follow: links forward no ``wamp.``
    topic, so each is deleted when the leaver goes. Their number changes from one attempt to
    the next, and with it the size and layout of the set Crossbar walks: with the same two
    every time, a CI run saw the shared topic walked last in all 30 attempts."""
    return [f"wamp.subscription.pad{attempt}.{n}" for n in range(4 + attempt * 7 % 23)]


@pytest.fixture(scope="module")
def linked(etcd35: EtcdProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LinkedNodes]:
    nodes = LinkedNodes(tmp_path_factory.mktemp("linked"), etcd35.url, count=3,
                        with_component=False, forward_calls=True)
    nodes.start()
    try:
        yield nodes
    finally:
        nodes.stop()


async def sessions(linked: LinkedNodes) -> list[Any]:
    return [await backend(node) for node in linked.nodes]


def leave(*all: Any) -> None:
    for session in all:
        if session.is_attached():
            session.leave()


@inline
async def test_events_cross_once(linked: LinkedNodes) -> None:
    """An event published on A reaches subscribers on A, B and C once each; none comes back."""
    a, b, c = await sessions(linked)
    got: dict[str, list[int]] = collections.defaultdict(list)
    try:
        for name, session in (("a", a), ("b", b), ("c", c)):
            await session.subscribe(lambda n, name=name: got[name].append(n), "etcd.probe.once")
        await sleep(LINK_DELAY)
        for n in range(20):
            await a.publish("etcd.probe.once", n, options=PublishOptions(acknowledge=True,
                                                                         exclude_me=False))
        await eventually(lambda: all(len(got[k]) >= 20 for k in "abc"))
        await sleep(0.5)  # a duplicate would arrive by now
        assert {k: got[k] for k in "abc"} == {k: list(range(20)) for k in "abc"}
    finally:
        leave(a, b, c)


@inline
async def test_an_event_published_past_the_links_stays_on_its_router(
        linked: LinkedNodes) -> None:
    """Published with ``exclude_authrole=["rlink"]`` (what the component does on linked
    routers), an event reaches the subscribers of its own router only: the link's session that
    would carry it to the other routers is excluded. A user's own event crosses as before."""
    a, b, _ = await sessions(linked)
    got: dict[str, list[str]] = collections.defaultdict(list)
    try:
        for name, session in (("a", a), ("b", b)):
            await session.subscribe(lambda n, name=name: got[name].append(n), "etcd.probe.past")
        a2 = await backend(linked[0])
        await sleep(LINK_DELAY)
        await a2.publish("etcd.probe.past", "local", options=PublishOptions(
            acknowledge=True, exclude_authrole=["rlink"]))
        await a2.publish("etcd.probe.past", "everywhere", options=PublishOptions(
            acknowledge=True))
        await eventually(lambda: got["b"] == ["everywhere"])
        await sleep(0.5)  # "local" would have crossed by now
        assert got == {"a": ["local", "everywhere"], "b": ["everywhere"]}
        leave(a2)
    finally:
        leave(a, b, _)


@inline
async def test_calls_cross_to_a_procedure_on_one_node(linked: LinkedNodes) -> None:
    """A call on B reaches a procedure registered only on A."""
    a, b, _ = await sessions(linked)
    try:
        await a.register(lambda x: ("a", x), "etcd.probe.only_a")
        await sleep(LINK_DELAY)
        assert await b.call("etcd.probe.only_a", 1) == ["a", 1]
    finally:
        leave(a, b, _)


@inline
async def test_progressive_results_do_not_cross(linked: LinkedNodes) -> None:
    """A call forwarded by a link reaches the callee without progress (as from a caller that
    did not ask for it): a caller on B that asked gets no chunks, only the final result."""
    a, b, _ = await sessions(linked)
    try:
        async def rows(details: Any = None) -> list[int]:
            if details.progress:
                details.progress([1, 2])
                return []
            return [1, 2]

        await a.register(rows, "etcd.probe.progress", options=RegisterOptions(
            details_arg="details"))
        await sleep(LINK_DELAY)
        chunks: list[Any] = []
        on_a = await a.call("etcd.probe.progress", options=CallOptions(on_progress=chunks.append))
        assert (on_a, chunks) == ([], [[1, 2]])
        chunks.clear()
        on_b = await b.call("etcd.probe.progress", options=CallOptions(on_progress=chunks.append))
        assert (on_b, chunks) == ([1, 2], [])
    finally:
        leave(a, b, _)


@inline
async def test_errors_do_not_cross(linked: LinkedNodes) -> None:
    """A call forwarded by a link that fails on the callee's node (an application error, or
    the callee gone) answers the caller with a null *result*: the link swallows the error."""
    a, b, _ = await sessions(linked)
    try:
        def refuse() -> None:
            raise ApplicationError("etcd.error.refused", "no")

        await a.register(refuse, "etcd.probe.refuse")
        await sleep(LINK_DELAY)
        with pytest.raises(ApplicationError) as on_a:
            await a.call("etcd.probe.refuse")
        assert on_a.value.error == "etcd.error.refused"
        assert await b.call("etcd.probe.refuse") is None
    finally:
        leave(a, b, _)


@inline
async def test_roundrobin_spans_nodes_and_is_not_local_first(linked: LinkedNodes) -> None:
    """Registered roundrobin on A (twice) and B: a call on B goes to B's callee or to the link
    to A (a link is one more callee), never local-first. Which callees a node has depends on
    the order they came in: a link registers its node's procedure on the others only when the
    registration is *created* on its node, so a node whose callee joined a registration a
    link created first (meta events of link sessions are not published) is not forwarded."""
    a1, b, c = await sessions(linked)
    a2 = await backend(linked[0])
    landed: collections.Counter[str] = collections.Counter()
    try:
        rr = RegisterOptions(invoke="roundrobin")
        for name, session in (("a1", a1), ("a2", a2)):
            await session.register(lambda name=name: landed.update([name]) or name,
                                   "etcd.probe.rr", options=rr)
        await sleep(LINK_DELAY)  # A's links register on B and C
        await b.register(lambda: landed.update(["b"]) or "b", "etcd.probe.rr", options=rr)
        await sleep(LINK_DELAY)
        for _ in range(30):
            await b.call("etcd.probe.rr")
        # B has two callees: its own and the link to A (which spreads over a1 and a2).
        assert landed["b"] == 15 and landed["a1"] + landed["a2"] == 15, landed
        landed.clear()
        for _ in range(30):
            await c.call("etcd.probe.rr")
        # C has only A's link: B's callee joined a registration A's link had created on B,
        # so B's link never heard of it.
        assert landed["b"] == 0 and landed["a1"] + landed["a2"] == 30, landed
    finally:
        leave(a1, a2, b, c)


@inline
async def test_meta_api_shows_remote_subscribers_as_link_sessions(linked: LinkedNodes) -> None:
    """B's subscription meta-API sees a subscriber on A only as a session of A's link (role
    ``rlink``): the topic, but not who or how many."""
    a, b, _ = await sessions(linked)
    created: list[Any] = []
    try:
        await b.subscribe(lambda session, info: created.append(info),
                          "wamp.subscription.on_create")
        await a.subscribe(lambda: None, "etcd.probe.meta")
        await eventually(lambda: any(i["uri"] == "etcd.probe.meta" for i in created))
        ids = await b.call("wamp.subscription.match", "etcd.probe.meta")
        subscribers = await b.call("wamp.subscription.list_subscribers", ids[0])
        assert len(subscribers) >= 1 and a.session_id not in subscribers
        roles = {(await b.call("wamp.session.get", s))["authrole"] for s in subscribers}
        assert roles == {"rlink"}
    finally:
        leave(a, b, _)


@inline
async def test_link_subscriptions_outlive_the_last_subscriber(linked: LinkedNodes) -> None:
    """A subscriber on A that leaves does not take its topic off A or B: A's link subscribed on
    B, B's and C's links then subscribed on A (a link forwards every subscription created on
    its node, a link's own included), and each keeps the other alive. So the meta-API never
    says "nobody listens" once a topic crossed a link: links are to be left out when counting
    subscribers."""
    a, b, c = await sessions(linked)
    try:
        sub = await a.subscribe(lambda: None, "etcd.probe.ghost")
        await sleep(LINK_DELAY)
        await sub.unsubscribe()
        await sleep(LINK_DELAY)
        for session in (a, b):
            ids = await session.call("wamp.subscription.match", "etcd.probe.ghost")
            assert ids, "the topic's subscription is gone"
            subscribers = await session.call("wamp.subscription.list_subscribers", ids[0])
            roles = {(await session.call("wamp.session.get", s))["authrole"]
                     for s in subscribers}
            assert roles == {"rlink"}, roles
    finally:
        leave(a, b, c)


@inline
async def test_retained_events_do_not_cross(linked: LinkedNodes) -> None:
    """A retained event published on A is retained on A only: a subscriber with
    ``get_retained`` on B gets nothing, though B's subscribers got the event live."""
    a, b, _ = await sessions(linked)
    live: list[int] = []
    try:
        await b.subscribe(live.append, "etcd.probe.retained")
        await sleep(LINK_DELAY)
        await a.publish("etcd.probe.retained", 7, options=PublishOptions(acknowledge=True,
                                                                         retain=True))
        await eventually(lambda: live == [7])
        on_a: list[int] = []
        on_b: list[int] = []
        a2, b2 = await backend(linked[0]), await backend(linked[1])
        await a2.subscribe(on_a.append, "etcd.probe.retained",
                           options=SubscribeOptions(get_retained=True))
        await b2.subscribe(on_b.append, "etcd.probe.retained",
                           options=SubscribeOptions(get_retained=True))
        await sleep(0.5)
        assert on_a == [7] and on_b == []
        leave(a2, b2)
    finally:
        leave(a, b, _)


@inline
async def test_session_kill_does_not_cross(linked: LinkedNodes) -> None:
    """``wamp.session.kill`` on B of a session attached to A: no such session (the meta-API is
    per router), and the session on A lives on."""
    a, b, _ = await sessions(linked)
    try:
        with pytest.raises(ApplicationError) as refused:
            await b.call("wamp.session.kill", a.session_id, "wamp.close.killed", "from B")
        assert refused.value.error == ApplicationError.NO_SUCH_SESSION
        await sleep(0.3)
        assert a.is_attached()
    finally:
        leave(a, b, _)


def test_configs_link_every_node_to_every_other(tmp_path: Path) -> None:
    """Each node's config: an rlink transport for the others' keys, a link to each other
    forwarding subscriptions and not calls, instances told they are linked and allowed to ask
    who a session is."""
    import json

    nodes = LinkedNodes(tmp_path, "http://127.0.0.1:1", count=3, with_component=False)
    for index, node in enumerate(nodes.nodes):
        config = json.loads((node.cbdir / "config.json").read_text())
        realm = config["workers"][0]["realms"][0]
        ports = [link["transport"]["endpoint"]["port"] for link in realm["rlinks"]]
        assert all(link["forward_local_events"] and not link["forward_local_invocations"]
                   for link in realm["rlinks"])
        backend_uris = [p["uri"] for r in realm["roles"] if r["name"] == "backend"
                        for p in r["permissions"]]
        assert "wamp.session.get" in backend_uris and node.extra["linked"] is True
        assert sorted(ports) == sorted(p for i, p in enumerate(nodes.rlink_ports) if i != index)
        (key,) = [line.split(": ")[1] for line in (node.cbdir / "key.pub").read_text()
                  .splitlines() if line.startswith("public-key-ed25519")]
        transport = config["workers"][0]["transports"][-1]
        principals = transport["auth"]["cryptosign"]["principals"]
        # Each other node logs in as itself (node ids are what instances compare).
        assert config["controller"]["id"] == f"node{index + 1}"
        assert sorted(principals) == sorted(f"node{i + 1}" for i in range(3) if i != index)
        keys = [k for p in principals.values() for k in p["authorized_keys"]]
        assert key not in keys and len(keys) == 2


@inline
async def test_events_cross_after_the_topic_was_left_and_subscribed_again(
        linked: LinkedNodes) -> None:
    """Subscribers on A and B leave a topic (the links keep it subscribed, see above) and
    subscribe again: an event published on B still reaches A, and one on A reaches B."""
    a, b, _ = await sessions(linked)
    got: dict[str, list[str]] = collections.defaultdict(list)
    try:
        first = [await s.subscribe(lambda: None, "etcd.probe.again") for s in (a, b)]
        await sleep(LINK_DELAY)
        for sub in first:
            await sub.unsubscribe()
        await sleep(LINK_DELAY)
        await a.subscribe(lambda n: got["a"].append(n), "etcd.probe.again")
        await b.subscribe(lambda n: got["b"].append(n), "etcd.probe.again")
        await sleep(LINK_DELAY)
        ack = PublishOptions(acknowledge=True, exclude_me=False)
        await b.publish("etcd.probe.again", "from b", options=ack)
        await a.publish("etcd.probe.again", "from a", options=ack)
        await sleep(1.0)
        assert sorted(got["a"]) == ["from a", "from b"] and sorted(got["b"]) == ["from a",
                                                                                "from b"], got
    finally:
        leave(a, b, _)


@inline
async def test_a_session_leaving_can_cut_the_forwarding_of_topics_others_still_follow(
        linked: LinkedNodes) -> None:
    """Crossbar's ``Broker.detach`` publishes a leaving session's meta events from a closure
    that reads the flags of the *last* subscription it looked at: when that one was deleted (the
    session was its topic's last subscriber), ``on_delete`` goes out for the session's other
    subscriptions too, though they still have subscribers. Which one is last depends on the
    order of a set, so the leaver also follows a number of ``wamp.`` topics nobody else does
    (``leaver_only_topics``), and up to ``TRIES`` tries are made. The link of that router
    believes the false ``on_delete`` and stops forwarding those topics: a subscriber that never
    left receives nothing more from the other nodes."""
    a, b, _ = await sessions(linked)
    deleted: list[int] = []
    unsubscribed: list[int] = []
    await a.subscribe(lambda session, sub_id: deleted.append(sub_id),
                      "wamp.subscription.on_delete")
    await a.subscribe(lambda session, sub_id: unsubscribed.append(sub_id),
                      "wamp.subscription.on_unsubscribe")
    try:
        for attempt in range(TRIES):
            topic = f"etcd.probe.cut{attempt}"
            got: list[str] = []
            leaver = await backend(linked[0])
            await a.subscribe(got.append, topic)
            await leaver.subscribe(lambda *_: None, topic)
            for only_its in leaver_only_topics(attempt):
                # (A topic outside wamp. would not do: the links of the other nodes follow it
                # too, to forward it, so it outlives the leaver.)
                await leaver.subscribe(lambda *_: None, only_its)
            await sleep(LINK_DELAY)
            ack = PublishOptions(acknowledge=True)
            await b.publish(topic, "before", options=ack)
            await eventually(lambda got=got: got == ["before"])
            shared = (await a.call("wamp.subscription.match", topic))[0]
            leaver._transport.abort()  # gone without unsubscribing, as a killed process
            # Its on_unsubscribe always goes out, and an on_delete right behind it: once that
            # is in (however loaded the machine), whether the on_delete came is known.
            await eventually(lambda shared=shared: shared in unsubscribed, timeout=60.0)
            await sleep(LINK_DELAY)  # the link heard them too
            await b.publish(topic, "after", options=ack)
            if shared in deleted:  # the false on_delete...
                await sleep(1.0)
                assert got == ["before"]  # ...and the link stopped forwarding
                return
            await eventually(lambda got=got: got == ["before", "after"])
        raise AssertionError(f"no false on_delete in {TRIES} tries")
    finally:
        leave(a, b, _)


def test_init_writes_n_linked_nodes(tmp_path: Path) -> None:
    """`etcd-wamp init --nodes 3`: three node dirs, each linked to the two others (their keys
    authorized, their link ports), its web port, a `tables.json` that says `"linked": true` and
    parses; refused again without --force."""
    import json
    import subprocess
    import sys

    from component.config import parse_settings

    cli = str(Path(sys.executable).with_name("etcd-wamp"))
    args = [cli, "init", "--nodes", "3", "--port", "9080", "--link-port", "9090",
            str(tmp_path / "linked")]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    keys = []
    for index in range(3):
        node = tmp_path / "linked" / f"node{index + 1}"
        config = json.loads((node / ".crossbar" / "config.json").read_text())
        router = config["workers"][0]
        realm = router["realms"][0]
        assert config["controller"]["id"] == f"node{index + 1}"
        assert sorted(link["transport"]["endpoint"]["port"] for link in realm["rlinks"]) == [
            9090 + other for other in range(3) if other != index]
        web = next(t for t in router["transports"] if t["type"] == "web")
        assert web["endpoint"]["port"] == 9080 + index
        principals = next(t for t in router["transports"] if t.get("id") == "rlink")[
            "auth"]["cryptosign"]["principals"]
        assert sorted(principals) == [f"node{o + 1}" for o in range(3) if o != index]
        assert parse_settings(json.loads((node / "tables.json").read_text())).linked
        keys.append((node / ".crossbar" / "key.pub").read_text())
    assert len(set(keys)) == 3
    again = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "--force" in again.stderr


def test_init_refuses_node_ports_that_clash_or_do_not_exist(tmp_path: Path) -> None:
    """A careless `init --nodes`: with the default ports, 11 nodes would give node 11 the link
    port of node 1; ports past 65535 do not exist. Refused with exit 2, nothing written."""
    import subprocess
    import sys

    cli = str(Path(sys.executable).with_name("etcd-wamp"))
    for extra, words in ((["--nodes", "11"], "overlap (port 8090)"),
                         (["--nodes", "3", "--port", "65534"], "not all valid"),
                         (["--nodes", "2", "--link-port", "0"], "not all valid"),
                         (["--nodes", "0"], "from 1 to 32"),
                         (["--nodes", "1000"], "from 1 to 32")):
        target = tmp_path / "nodes"
        done = subprocess.run([cli, "init", *extra, str(target)], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 2 and words in done.stderr, (extra, done.stderr)
        assert not target.exists()
    # One node has no link port, so only the web port must exist.
    done = subprocess.run([cli, "init", "--port", "65535", str(tmp_path / "one")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr

