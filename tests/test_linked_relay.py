"""Who counts as a subscriber where routers are linked: the relay's side, with the router's
meta-API answered by a small in-process stand-in (as in ``test_component_timing``). What a real
pair of linked nodes does is tested in ``test_linked_component.py``; this covers the answers
that deployment cannot easily give: a router that refuses ``wamp.session.get``."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from autobahn.wamp.exception import ApplicationError
from twisted.internet import defer
from twisted.internet.task import Clock

from component.events import EventRelay
from component.publisher import election_name, position_key
from procedures.wire import KeyWire, TableWire, ValueWire
from txetcd import Client
from txetcd.pmap import TableLayout

from .test_component_timing import unused_client

inline = pytest_twisted.ensureDeferred
TOPIC = "t.rows.on_change"
ROWS = TableWire(TableLayout.of(7), KeyWire("string"), ValueWire("cbor"))


class Router:
    """Knows each session's role (``roles``); refuses ``wamp.session.get`` if ``refuse``."""

    session_id = 1

    def __init__(self, roles: dict[int, str], refuse: bool = False) -> None:
        self.roles = roles
        self.refuse = refuse
        self.asked: list[int] = []

    def call(self, uri: str, *args: Any) -> defer.Deferred[Any]:
        if uri == "wamp.session.get":
            self.asked.append(args[0])
            if self.refuse:
                return defer.fail(ApplicationError(ApplicationError.NOT_AUTHORIZED))
            if args[0] not in self.roles:
                return defer.fail(ApplicationError(ApplicationError.NO_SUCH_SESSION))
            return defer.succeed({"session": args[0], "authrole": self.roles[args[0]]})
        if uri == "wamp.subscription.get":
            return defer.succeed({"id": 10, "uri": TOPIC, "match": "exact"})
        raise AssertionError(uri)


def relay_on(router: Router, etcd: Client) -> EventRelay:
    return EventRelay(router, "t", {"rows": ROWS}, etcd, clock=Clock(), node="node2",
                      links=frozenset({"rlink"}))


@inline
async def test_link_sessions_and_gone_sessions_do_not_count_others_do() -> None:
    etcd = unused_client()
    relay = relay_on(Router({5: "rlink", 6: "reader"}), etcd)
    try:
        relay.on_create(5, {"id": 10, "uri": TOPIC, "match": "exact"})
        relay.on_subscribe(5, 10)  # a link's session: not a reason to publish here
        relay.on_subscribe(9, 10)  # gone before the router was asked who it is
        assert not relay.publishers
        relay.on_subscribe(6, 10)  # a reader on this router
        assert list(relay.publishers) == ["rows"]
        assert relay.publishers["rows"].position_key == position_key("t", "rows", "node2")
        relay.on_unsubscribe(6, 10)  # the link's session remains
        assert not relay.publishers
        assert 6 not in relay.roles  # forgotten with its last subscription
    finally:
        await relay.stop()
        await etcd.close()


@inline
async def test_a_router_that_refuses_to_say_makes_every_subscriber_count() -> None:
    """Better a publisher nobody on this router needs than a subscriber without events."""
    etcd = unused_client()
    router = Router({5: "rlink"}, refuse=True)
    relay = relay_on(router, etcd)
    try:
        relay.on_create(5, {"id": 10, "uri": TOPIC, "match": "exact"})
        relay.on_subscribe(5, 10)
        assert list(relay.publishers) == ["rows"] and router.asked == [5]
    finally:
        await relay.stop()
        await etcd.close()


def test_a_routers_keys_are_its_own() -> None:
    """Scoped keys never fall in another election's key range (``<name>/``)."""
    lone, linked = election_name("t", "rows"), election_name("t", "rows", "node/2")
    assert not linked.startswith(lone + b"/") and linked.endswith(b"rows@node%2F2")


def test_linked_is_a_flag_of_the_configuration() -> None:
    import pytest

    from component.config import ConfigError, parse_settings

    base = {"tables": [{"name": "rows", "slot": 7, "key": "string", "value": "cbor"}]}
    assert not parse_settings(base).linked
    assert parse_settings({**base, "linked": True}).linked
    with pytest.raises(ConfigError) as bad:
        parse_settings({**base, "linked": "yes"})
    assert bad.value.field == "linked"
