"""The WAMP component under a real Crossbar node, against a real etcd."""

from __future__ import annotations

import struct
import uuid
from typing import Any

import cbor2
import pytest
import pytest_twisted
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallOptions
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater

from component.config import ConfigError, parse_settings
from procedures.errors import KINDS
from txetcd import Client
from txetcd.embedded import EtcdProcess

from .blocking import run_blocking, wait
from .wamp import CrossbarNode, connect, until_registered

inline = pytest_twisted.ensureDeferred


async def writer(node: CrossbarNode):
    return await until_registered(await connect(node.url, "writer", "writer-secret"))


@inline
async def test_get_put_delete_roundtrip(node: CrossbarNode, etcd_direct: Client) -> None:
    session = await writer(node)
    try:
        user = str(uuid.uuid4())
        revision = await session.call("etcd.users.put", user, {"name": "ada", "age": 36})
        assert isinstance(revision, int) and revision > 0
        assert await session.call("etcd.users.get", user) == {"name": "ada", "age": 36}
        meta = await session.call("etcd.users.get", user, meta=True)
        assert meta == {"value": {"name": "ada", "age": 36}, "revision": revision,
                        "version": 1, "created": revision}
        # The row is where pmap puts it: <namespace><slot><uuid bytes>.
        stored = await etcd_direct.get(struct.pack(">H", 1) + uuid.UUID(user).bytes)
        assert stored.kvs[0].mod_revision == revision
        assert await session.call("etcd.users.get", str(uuid.uuid4())) is None
        assert await session.call("etcd.users.delete", user) is True
        assert await session.call("etcd.users.delete", user) is False
    finally:
        session.leave()


@inline
async def test_if_revision_conflicts(node: CrossbarNode, etcd_direct: Client) -> None:
    session = await writer(node)
    try:
        first = await session.call("etcd.settings.put", "theme", "dark", if_revision=0)
        with pytest.raises(ApplicationError) as conflict:
            await session.call("etcd.settings.put", "theme", "light", if_revision=0)
        assert conflict.value.error == "etcd.error.conflict"
        second = await session.call("etcd.settings.put", "theme", "light", if_revision=first)
        assert second > first
        with pytest.raises(ApplicationError) as stale:
            await session.call("etcd.settings.delete", "theme", if_revision=first)
        assert stale.value.error == "etcd.error.conflict"
        assert await session.call("etcd.settings.get", "theme") == "light"
    finally:
        session.leave()


@inline
async def test_scan_count_and_progressive_scan(node: CrossbarNode, etcd_direct: Client) -> None:
    session = await writer(node)
    try:
        await session.call("etcd.txn", [{"table": "settings", "op": "put", "key": f"k{i:04d}",
                                         "value": {"n": i}} for i in range(120)])
        await session.call("etcd.settings.put", "other", 1)
        assert await session.call("etcd.settings.count") == 121
        assert await session.call("etcd.settings.count", prefix="k") == 120
        assert await session.call("etcd.settings.count", from_key="k0010", to_key="k0020") == 10
        rows = await session.call("etcd.settings.scan", prefix="k", limit=5)
        assert rows == [[f"k{i:04d}", {"n": i}] for i in range(5)]
        back = await session.call("etcd.settings.scan", prefix="k", limit=2, reverse=True,
                                  keys_only=True)
        assert back == ["k0119", "k0118"]
        chunks: list[list] = []
        final = await session.call("etcd.settings.scan", prefix="k",
                                   options=CallOptions(on_progress=chunks.append))
        assert final == [] and len(chunks) >= 2
        assert [row[0] for chunk in chunks for row in chunk] == [f"k{i:04d}" for i in range(120)]
    finally:
        session.leave()


@inline
async def test_txn_is_all_or_nothing(node: CrossbarNode, etcd_direct: Client) -> None:
    session = await writer(node)
    try:
        user = str(uuid.uuid4())
        rev = await session.call("etcd.txn", [
            {"table": "users", "op": "put", "key": user, "value": {"n": 1}},
            {"table": "settings", "op": "put", "key": "owner", "value": user}])
        with pytest.raises(ApplicationError) as conflict:
            await session.call("etcd.txn", [
                {"table": "settings", "op": "put", "key": "owner", "value": "nobody"},
                {"table": "users", "op": "check", "key": user, "if_revision": rev - 1}])
        assert conflict.value.error == "etcd.error.conflict"
        assert await session.call("etcd.settings.get", "owner") == user
        with pytest.raises(ApplicationError) as bad:
            await session.call("etcd.txn", [{"table": "nope", "op": "put", "key": "x"}])
        assert bad.value.error == "etcd.error.invalid_argument"
        status = await session.call("etcd.status")
        assert [t["name"] for t in status["tables"]] == ["users", "settings", "people"]
    finally:
        session.leave()


@inline
async def test_bad_input_is_typed_and_writes_nothing(node: CrossbarNode,
                                                    etcd_direct: Client) -> None:
    session = await writer(node)
    before = (await etcd_direct.status()).header.revision
    try:
        cases: list[tuple[str, tuple[Any, ...], dict[str, Any], str]] = [
            ("etcd.users.put", ("not-a-uuid", {}), {}, "invalid_key"),
            ("etcd.users.get", (42,), {}, "invalid_key"),
            ("etcd.users.put", (str(uuid.uuid4()), float("nan")), {}, "invalid_value"),
            ("etcd.settings.put", ("k", 1), {"if_revision": -1}, "invalid_argument"),
            ("etcd.settings.scan", (), {"limit": 0}, "invalid_argument"),
            ("etcd.users.scan", (), {"prefix": "ab"}, "invalid_argument"),
            ("etcd.settings.get", (), {}, "invalid_argument"),
            ("etcd.settings.put", ("k", 1), {"bogus": 1}, "invalid_argument"),
            ("etcd.settings.put", ("k", b"x" * (2 * 1024 * 1024)), {}, "too_large"),
        ]
        for uri, args, kwargs, kind in cases:
            with pytest.raises(ApplicationError) as refused:
                await session.call(uri, *args, **kwargs)
            assert refused.value.error == f"etcd.error.{kind}", (uri, args, kwargs)
        assert (await etcd_direct.status()).header.revision == before
    finally:
        session.leave()


@inline
async def test_reader_reads_every_table_and_writes_nothing(node: CrossbarNode,
                                                           etcd_direct: Client) -> None:
    session = await writer(node)
    user = str(uuid.uuid4())
    await session.call("etcd.users.put", user, {"n": 1})
    await session.call("etcd.settings.put", "k", 1)
    reader = await connect(node.url, "reader", "reader-secret")
    try:
        for table, key in (("users", user), ("settings", "k")):
            assert await reader.call(f"etcd.{table}.get", key) is not None
            assert len(await reader.call(f"etcd.{table}.scan")) == 1
            assert await reader.call(f"etcd.{table}.count") == 1
        assert (await reader.call("etcd.status"))["prefix"] == "etcd"
        before = (await etcd_direct.status()).header.revision
        refused: list[tuple[str, tuple[Any, ...]]] = [
                   ("etcd.settings.put", ("k", 2)), ("etcd.users.delete", (user,)),
                   ("etcd.txn", ([{"table": "settings", "op": "delete", "key": "k"}],)),
                   ("etcd.authorize", ({}, "etcd.users.put", "call"))]
        for uri, args in refused:
            with pytest.raises(ApplicationError) as denied:
                await reader.call(uri, *args)
            assert denied.value.error == "wamp.error.not_authorized", uri
        assert (await etcd_direct.status()).header.revision == before
    finally:
        reader.leave()
        session.leave()
    with pytest.raises(Exception):  # noqa: B017 - any refusal of the login is right
        await connect(node.url, "writer", "wrong-ticket")


def test_config_errors_name_the_field(node: CrossbarNode) -> None:
    good = node.extra
    assert [t.name for t in parse_settings(good).tables] == ["users", "settings", "people"]
    assert parse_settings({**good, "position_interval": 2}).position_interval == 2.0
    bad = [
        ({**good, "tables": [{"name": "x", "slot": 1, "key": "uuid", "value": "pickle"}]},
         "tables[0].value", "never exposed"),
        ({**good, "tables": [{"name": "Bad Name", "slot": 1, "key": "uuid", "value": "json"}]},
         "tables[0].name", None),
        ({**good, "tables": [{"name": "a", "slot": 70000, "key": "uuid", "value": "json"}]},
         "tables[0].slot", None),
        ({**good, "tables": [{"name": "a", "slot": 65535, "key": "uuid", "value": "json"}]},
         "tables[0].slot", "elections and event positions"),
        ({**good, "etcd": {"endpoints": ["localhost:2379"]}}, "etcd.endpoints[0]", None),
        ({**good, "extra_field": 1}, "extra_field", None),
        ({**good, "position_interval": -1}, "position_interval", "0..3600"),
        ({**good, "position_interval": "fast"}, "position_interval", "expected int or float"),
    ]
    for config, field, words in bad:
        with pytest.raises(ConfigError) as error:
            parse_settings(config)
        assert error.value.field == field
        if words:
            assert words in str(error.value)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=8)
ANY_KEY = (st.uuids().map(str) | st.text(max_size=12) | st.integers(-5, 2**70) |
           st.binary(max_size=8) | st.none() | st.floats() | st.lists(st.integers(), max_size=2))
ANY_VALUE = JSONISH | st.binary(max_size=16)
ANY_REVISION = st.none() | st.integers(-3, 10**6) | st.text(max_size=3) | st.booleans()
CALLS = st.one_of(
    st.tuples(st.just("get"), st.tuples(ANY_KEY),
              st.fixed_dictionaries({}, optional={"meta": st.booleans() | st.integers()})),
    st.tuples(st.just("put"), st.tuples(ANY_KEY, ANY_VALUE),
              st.fixed_dictionaries({}, optional={"if_revision": ANY_REVISION})),
    st.tuples(st.just("delete"), st.tuples(ANY_KEY),
              st.fixed_dictionaries({}, optional={"if_revision": ANY_REVISION})),
    st.tuples(st.just("scan"), st.just(()), st.fixed_dictionaries({}, optional={
        "from_key": ANY_KEY, "to_key": ANY_KEY, "prefix": ANY_KEY,
        "limit": st.integers(-1, 3) | st.text(max_size=2), "reverse": st.booleans() | st.none(),
        "keys_only": st.booleans() | st.integers()})),
    st.tuples(st.just("count"), st.just(()), st.fixed_dictionaries({}, optional={
        "from_key": ANY_KEY, "prefix": ANY_KEY})),
    st.tuples(st.just("txn"), st.tuples(st.lists(st.fixed_dictionaries(
        {"table": st.sampled_from(["users", "settings", "nope"]),
         "op": st.sampled_from(["put", "delete", "check", "drop"])},
        optional={"key": ANY_KEY, "value": ANY_VALUE, "if_revision": ANY_REVISION}),
        max_size=3)), st.just({})),
)
RESULT_TYPES = {"put": int, "delete": bool, "scan": list, "count": int, "txn": int}


@inline
async def test_random_calls_get_a_result_or_a_typed_error(node: CrossbarNode,
                                                          etcd_direct: Client) -> None:
    session = await writer(node)
    calls = {"n": 0}

    @settings(max_examples=500, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(table=st.sampled_from(["users", "settings"]), call=CALLS)
    def one_call(table: str, call: tuple) -> None:
        op, args, kwargs = call
        uri = "etcd.txn" if op == "txn" else f"etcd.{table}.{op}"
        before = wait(etcd_direct.status()).header.revision
        calls["n"] += 1
        try:
            result = wait(session.call(uri, *args, **kwargs))
        except ApplicationError as exc:
            assert exc.error.startswith("etcd.error."), (uri, args, kwargs, exc)
            assert exc.error.rsplit(".", 1)[1] in KINDS
            assert exc.kwargs.get("message") or exc.args
            assert wait(etcd_direct.status()).header.revision == before, "a refused call wrote"
            return
        expected = RESULT_TYPES.get(op)
        if expected is not None:
            assert type(result) is expected, (uri, args, kwargs, result)

    await run_blocking(one_call)
    assert calls["n"] >= 500
    session.leave()


def range_requests(etcd: EtcdProcess) -> int:
    return int(etcd.metric("etcd_debugging_mvcc_range_total"))


@inline
async def test_cancelled_progressive_scan_stops_reading_etcd(
        node: CrossbarNode, etcd_direct: Client, etcd35: EtcdProcess) -> None:
    from txetcd import OpSet

    session = await writer(node)
    value = cbor2.dumps("x" * 2000)  # pages hold about 1 MiB: ~500 of these rows
    for start in range(0, 8000, 125):
        await etcd_direct.txn(success=[
            OpSet(struct.pack(">H", 2) + b"row%05d" % i, value) for i in range(start,
                                                                             start + 125)])
    chunks: list[list] = []
    before = range_requests(etcd35)
    await session.call("etcd.settings.scan", limit=8000,
                       options=CallOptions(on_progress=chunks.append))
    full = range_requests(etcd35) - before
    assert sum(len(c) for c in chunks) == 8000 and full >= 10

    # Cancel at once: the component gets the INTERRUPT while its first etcd page is on the way.
    before = range_requests(etcd35)
    call = session.call("etcd.settings.scan", limit=8000,
                        options=CallOptions(on_progress=lambda chunk: None))
    call.cancel()
    with pytest.raises((ApplicationError, defer.CancelledError)):
        await call
    await deferLater(reactor, 0.5, lambda: None)
    cancelled = range_requests(etcd35) - before
    assert cancelled < full / 2, (cancelled, full)
    session.leave()


@pytest.mark.parametrize("serializer", ["json", "cbor", "msgpack"])
@inline
async def test_scan_at_a_future_or_compacted_revision_is_the_callers_mistake(
        node: CrossbarNode, etcd_direct: Client, serializer: str) -> None:
    """A revision etcd cannot read at is ``invalid_argument`` (fix the call), not
    ``unavailable`` (which tells the caller to retry the same call later, forever)."""
    session = await until_registered(await connect(node.url, "reader", "reader-secret",
                                                   serializer))
    try:
        first = (await etcd_direct.set(b"qa-marker", b"1")).revision
        await etcd_direct.set(b"qa-marker", b"2")
        await etcd_direct.compact(first + 1)
        for revision, says in ((first, "compacted"), (2 ** 62, "future")):
            with pytest.raises(ApplicationError) as refused:
                await session.call("etcd.users.scan", revision=revision)
            assert refused.value.error == "etcd.error.invalid_argument", refused.value
            assert says in refused.value.kwargs["message"]
        assert await session.call("etcd.users.scan", revision=first + 1) == []
    finally:
        session.leave()


@inline
async def test_refused_calls_do_not_fill_the_node_log(node: CrossbarNode,
                                                      etcd_direct: Client) -> None:
    """Each refusal goes to its caller; a reader sending bad calls must not grow the node's
    log by a line per call (autobahn logs every ApplicationError as a warning)."""
    session = await until_registered(await connect(node.url, "reader", "reader-secret"))
    before = len(node.log_text())
    try:
        for _ in range(20):
            with pytest.raises(ApplicationError):
                await session.call("etcd.users.get", "not-a-uuid")
        await session.call("etcd.status")  # the refusals were handled before this answer
    finally:
        session.leave()
    assert "onUserError" not in node.log_text()[before:]
