"""Typed tables through a real node: schemas, indexes, history and cursors over WAMP."""

from __future__ import annotations

import functools
import importlib
import struct
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from autobahn.wamp.exception import ApplicationError
from twisted.internet import defer, reactor

from txetcd import Client, OpSet, Transaction
from txetcd.embedded import EtcdProcess
from txetcd.pmap import KEY_CODECS, Database, FlatBuffersValue, PersistentMap, StringKey

from . import wamp
from .typed import SERIALIZERS, session_as, typed_node, write_config
from .wamp import CrossbarNode

# A watch starting on a loaded machine.
eventually = functools.partial(wamp.eventually, timeout=15.0)

inline = pytest_twisted.ensureDeferred
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tnode(etcd35: EtcdProcess, tmp_path_factory: pytest.TempPathFactory):
    node = typed_node(tmp_path_factory.mktemp("typed"), etcd35.url)
    node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def direct(etcd35: EtcdProcess):
    client = Client(reactor, url=etcd35.url, namespace=b"app/")
    yield client
    pytest_twisted.blockon(client.close())


def message(exc: ApplicationError) -> str:
    return str(exc.kwargs.get("message") or exc.args)


async def refused(session: Any, uri: str, *args: Any, **kwargs: Any) -> ApplicationError:
    try:
        await session.call(uri, *args, **kwargs)
    except ApplicationError as exc:
        return exc
    raise AssertionError(f"{uri} was not refused")




def run_indexes(node: CrossbarNode, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "component.indexes", *args, "--config",
                           str(write_config(node))], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, check=False)


# -- schemas ---------------------------------------------------------------------------------

@pytest.mark.parametrize("serializer", SERIALIZERS)
@inline
async def test_schema_accepts_and_refuses_through_put_and_txn(tnode: CrossbarNode,
                                                              serializer: str) -> None:
    session = await session_as(tnode.url, serializer)
    try:
        good = str(uuid.uuid4())
        email = f"{serializer}@example.com"
        await session.call("etcd.users.put", good, {"name": "ada", "email": email, "age": 36})
        assert (await session.call("etcd.users.get", good))["age"] == 36

        bad = str(uuid.uuid4())
        exc = await refused(session, "etcd.users.put", bad,
                            {"name": "bob", "email": "b@x", "age": -1})
        assert exc.error == "etcd.error.invalid_value"
        assert "at /age" in message(exc) and "rule minimum" in message(exc)
        exc = await refused(session, "etcd.users.put", bad, {"name": "bob", "mail": "b@x"})
        assert exc.error == "etcd.error.invalid_value" and "rule " in message(exc)
        assert await session.call("etcd.users.get", bad) is None

        # A txn with one bad value writes nothing, not even its good ops.
        note = f"n-{serializer}"
        exc = await refused(session, "etcd.txn", [
            {"table": "users", "op": "put", "key": bad, "value": {"name": "b", "email": "b@y"}},
            {"table": "notes", "op": "put", "key": note, "value": {"text": "x" * 21}}])
        assert exc.error == "etcd.error.invalid_value"
        assert "at /text" in message(exc) and "rule maxLength" in message(exc)
        assert await session.call("etcd.users.get", bad) is None
        assert await session.call("etcd.notes.get", note) is None
        assert await session.call("etcd.users.by_email.get", "b@y") is None
        await session.call("etcd.txn", [
            {"table": "users", "op": "put", "key": bad, "value": {"name": "b", "email": "b@y"}},
            {"table": "notes", "op": "put", "key": note, "value": {"text": "short"}}])
        assert await session.call("etcd.users.by_email.get", "b@y") == [
            bad, {"name": "b", "email": "b@y"}]
        assert await session.call("etcd.notes.get", note) == {"text": "short"}
        # A table without a schema takes anything, as before.
        await session.call("etcd.plain.put", "any", [1, "two", {"3": None}])
        assert await session.call("etcd.plain.get", "any") == [1, "two", {"3": None}]
        # Clean up so the serializers' runs do not meet each other's emails.
        for key in (good, bad):
            await session.call("etcd.users.delete", key)
    finally:
        session.leave()


@inline
async def test_describe_and_status_for_readers(tnode: CrossbarNode) -> None:
    reader = await session_as(tnode.url, "json", authid="reader")
    try:
        users = await reader.call("etcd.users.describe")
        assert users["table"] == "users" and users["key"] == "uuid" and users["value"] == "json"
        assert users["schema"]["required"] == ["name", "email"]
        assert users["flatbuffers"] is None
        assert [(i["name"], i["field"], i["unique"]) for i in users["indexes"]] == [
            ("by_email", "/email", True), ("by_city", "/address/city", False)]
        gadgets = await reader.call("etcd.gadgets.describe")
        assert gadgets["schema"] is None and gadgets["flatbuffers"]["root_type"] == "shop.Gadget"
        assert await reader.call("etcd.plain.describe") == {
            "table": "plain", "slot": 4, "key": "string", "value": "json", "schema": None,
            "flatbuffers": None, "indexes": []}
        status = await reader.call("etcd.status")
        listed = {t["name"]: t for t in status["tables"]}
        assert listed["users"]["indexes"] == users["indexes"]
        assert listed["gadgets"]["flatbuffers"] == gadgets["flatbuffers"]
        # Readers may read by index and history, never write.
        assert await reader.call("etcd.users.by_email.get", "nobody@x") is None
        assert (await reader.call("etcd.users.history", str(uuid.uuid4())))["versions"] == []
        exc = await refused(reader, "etcd.users.put", str(uuid.uuid4()),
                            {"name": "r", "email": "r@x"})
        assert exc.error == "wamp.error.not_authorized"
    finally:
        reader.leave()


# -- flatbuffers -----------------------------------------------------------------------------

def generated_gadget(workdir: Path, name: str) -> Any:
    """``flatc --python`` classes of the test schema, imported from a fresh directory."""
    out = workdir / f"generated-{name}"
    subprocess.run(["flatc", "--python", "-o", str(out), str(workdir / "gadget.fbs")],
                   check=True)
    sys.path.insert(0, str(out))
    try:
        return importlib.import_module("shop.Gadget")
    finally:
        sys.path.remove(str(out))


@pytest.mark.parametrize("serializer", SERIALIZERS)
@inline
async def test_flatbuffers_maps_round_trip_and_pmap_reads_them(tnode: CrossbarNode,
                                                                direct: Client,
                                                                etcd35: EtcdProcess,
                                                                serializer: str) -> None:
    session = await session_as(tnode.url, serializer)
    reader = await session_as(tnode.url, serializer, authid="reader")
    events: list[dict[str, Any]] = []
    watchers = int(etcd35.metric("etcd_debugging_mvcc_watcher_total"))
    subscription = await reader.subscribe(lambda **event: events.append(event),
                                          "etcd.gadgets.on_change")
    # Events start once the elected publisher watches the table.
    await eventually(lambda: etcd35.metric("etcd_debugging_mvcc_watcher_total") > watchers)
    try:
        key = f"gadget-{serializer}"
        gadget = {"name": "lamp", "email": f"lamp-{serializer}@shop", "price": 2 ** 40,
                  "rating": 4.5, "tags": ["desk", "led"],
                  "parts": [{"sku": "bulb", "count": 2}], "size": {"w": 1.5, "h": 3.0},
                  "blob": b"\x00\xff", "active": False}
        revision = await session.call("etcd.gadgets.put", key, gadget)
        assert await session.call("etcd.gadgets.get", key) == gadget
        assert await session.call("etcd.gadgets.by_email.get", gadget["email"]) == [key, gadget]
        await eventually(lambda: any(e["revision"] == revision for e in events))
        assert [e for e in events if e["revision"] == revision][0]["value"] == gadget
        # The index entry written in the same txn is no row of the table: no event for it.
        assert [e["key"] for e in events] == [key]
        exc = await refused(session, "etcd.gadgets.put", key, {"name": "x", "price": -1})
        assert exc.error == "etcd.error.invalid_value"
        assert "at /price" in message(exc) and "rule range" in message(exc)
        exc = await refused(session, "etcd.gadgets.put", key, {"tags": ["x"]})
        assert "at /name" in message(exc) and "rule required" in message(exc)

        # A pmap program reads the same row with flatc-generated classes, and writes one the
        # WAMP side reads as a map.
        module = generated_gadget(tnode.workdir, serializer)

        def build(obj: dict[str, Any], builder: Any) -> int:
            name = builder.CreateString(obj["name"])
            module.GadgetStart(builder)
            module.GadgetAddName(builder, name)
            module.GadgetAddPrice(builder, obj["price"])
            return int(module.GadgetEnd(builder))

        table = PersistentMap(3, StringKey, FlatBuffersValue(
            build, lambda data: module.Gadget.GetRootAs(data, 0)))
        db = Database(direct)
        async with db.begin() as txn:
            stored = await table.get(txn, key)
        assert stored is not None
        assert stored.Name() == b"lamp" and stored.Price() == 2 ** 40
        assert stored.Rating() == 4.5 and stored.Active() is False
        assert [stored.Tags(i) for i in range(stored.TagsLength())] == [b"desk", b"led"]
        assert stored.Parts(0).Sku() == b"bulb" and stored.Size().H() == 3.0
        async with db.begin(write=True) as txn:
            table[txn, f"{key}-pmap"] = {"name": "chair", "price": 7}
        assert await session.call("etcd.gadgets.get", f"{key}-pmap") == {
            "name": "chair", "price": 7, "rating": 0.0, "active": True}
    finally:
        await subscription.unsubscribe()
        session.leave()
        reader.leave()


# -- indexes ---------------------------------------------------------------------------------

@inline
async def test_racing_writers_claim_a_unique_email_exactly_once(tnode: CrossbarNode) -> None:
    sessions = [await session_as(tnode.url, s) for s in SERIALIZERS]
    try:
        keys = [str(uuid.uuid4()) for _ in range(100)]
        calls = [sessions[i % 3].call("etcd.users.put", key,
                                      {"name": f"u{i}", "email": "race@example.com"})
                 for i, key in enumerate(keys)]
        results = await defer.DeferredList(calls, consumeErrors=True)
        won = [keys[i] for i, (ok, _) in enumerate(results) if ok]
        lost = [r.value for ok, r in results if not ok]
        assert len(won) == 1, (len(won), [message(e) for e in lost[:3]])
        assert len(lost) == 99
        for exc in lost:
            assert exc.error == "etcd.error.conflict", message(exc)
            assert "by_email" in message(exc) and "race@example.com" in message(exc)
        row = await sessions[0].call("etcd.users.by_email.get", "race@example.com")
        assert row[0] == won[0]
        for key in keys:
            if key != won[0]:
                assert await sessions[0].call("etcd.users.get", key) is None
        await sessions[0].call("etcd.users.delete", won[0])
    finally:
        for session in sessions:
            session.leave()
    check = await deferToProcess(run_indexes, tnode, "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "users.by_email:" in check.stdout and " 0 disagreements" in check.stdout


def deferToProcess(fn: Any, *args: Any) -> defer.Deferred[Any]:  # noqa: N802 - Twisted style
    from twisted.internet.threads import deferToThread

    return deferToThread(fn, *args)


@inline
async def test_lookups_follow_updates_and_deletes(tnode: CrossbarNode) -> None:
    session = await session_as(tnode.url, "cbor")
    try:
        ada, bob, eve = (str(uuid.uuid4()) for _ in range(3))
        await session.call("etcd.users.put", ada, {"name": "ada", "email": "ada@l",
                                                   "address": {"city": "london"}})
        await session.call("etcd.users.put", bob, {"name": "bob", "email": "bob@l",
                                                   "address": {"city": "london"}})
        await session.call("etcd.users.put", eve, {"name": "eve", "email": "eve@p",
                                                   "address": {"city": "paris"}})
        london = await session.call("etcd.users.by_city.scan", "london", "london\0")
        assert sorted(r[1] for r in london) == sorted([ada, bob])
        assert all(r[0] == "london" for r in london)
        everyone = await session.call("etcd.users.by_city.scan")
        assert [r[0] for r in everyone] == ["london", "london", "paris"]
        # Update: the old value is gone from both indexes, the new one is there.
        await session.call("etcd.users.put", ada, {"name": "ada", "email": "ada@p",
                                                   "address": {"city": "paris"}})
        assert await session.call("etcd.users.by_email.get", "ada@l") is None
        assert (await session.call("etcd.users.by_email.get", "ada@p"))[0] == ada
        paris = await session.call("etcd.users.by_city.scan", from_value="paris",
                                   to_value="paris\0")
        assert sorted(r[1] for r in paris) == sorted([ada, eve])
        # A freed email can be claimed again; a taken one cannot, even by a txn.
        await session.call("etcd.users.put", bob, {"name": "bob", "email": "ada@l"})
        exc = await refused(session, "etcd.txn", [{"table": "users", "op": "put", "key": eve,
                                                   "value": {"name": "e", "email": "ada@l"}}])
        assert exc.error == "etcd.error.conflict" and "by_email" in message(exc)
        assert (await session.call("etcd.users.get", eve))["email"] == "eve@p"
        # Delete: gone from the index; by_city has no entry for a row without the field.
        assert await session.call("etcd.users.delete", bob) is True
        assert await session.call("etcd.users.by_email.get", "ada@l") is None
        assert bob not in [r[1] for r in await session.call("etcd.users.by_city.scan")]
        # Non-unique get is refused; paging an index scan with its cursor.
        exc = await refused(session, "etcd.users.by_city.get", "paris")
        assert exc.error == "etcd.error.invalid_argument"
        first = await session.call("etcd.users.by_city.scan", limit=1, page=True)
        assert first["last"] is False and len(first["rows"]) == 1
        rest = await session.call("etcd.users.by_city.scan", after=first["next_after"],
                                  page=True)
        assert rest["last"] is True and rest["next_after"] is None
        assert [r[1] for r in first["rows"] + rest["rows"]] == \
            [r[1] for r in await session.call("etcd.users.by_city.scan")]
        # if_revision still guards indexed writes.
        meta = await session.call("etcd.users.get", eve, meta=True)
        exc = await refused(session, "etcd.users.put", eve, {"name": "e", "email": "e@e"},
                            if_revision=meta["revision"] - 1)
        assert exc.error == "etcd.error.conflict"
        await session.call("etcd.users.put", eve, {"name": "e", "email": "e@e"},
                           if_revision=meta["revision"])
        for key in (ada, eve):
            await session.call("etcd.users.delete", key)
    finally:
        session.leave()


# -- cursors ---------------------------------------------------------------------------------

KEY_KINDS = {
    "string": lambda i: f"k{i:05d}",
    "binary": lambda i: struct.pack(">I", i),
    "oid": lambda i: i * 7,
    "uuid": lambda i: str(uuid.UUID(int=i * 2 ** 64 + 1)),
    "timestamp": lambda i: 1_700_000_000_000_000_000 + i,
}


def encode_key(kind: str, key: Any) -> bytes:
    """The key's bytes as pmap stores them (the key codec itself, not a copy of it)."""
    return KEY_CODECS[kind]().encode(uuid.UUID(key) if kind == "uuid" else key)


@inline
async def test_cursors_page_through_10000_rows_of_every_key_kind(tnode: CrossbarNode,
                                                                 direct: Client) -> None:
    session = await session_as(tnode.url, "json")
    count = 10_000
    try:
        for slot, (kind, make) in enumerate(KEY_KINDS.items(), start=10):
            keys = [make(i) for i in range(count)]
            # Rows go straight to etcd in big txns; the test is about reading them over WAMP.
            prefix = struct.pack(">H", slot)
            for i in range(0, count, 100):
                await direct.txn(Transaction([], [OpSet(prefix + encode_key(kind, k), b"%d" % n)
                                                  for n, k in enumerate(keys[i:i + 100], i)]))
            seen: list[Any] = []
            after = None
            pages = 0
            while True:
                page = await session.call(f"etcd.k_{kind}.scan", limit=1000, after=after,
                                          page=True, keys_only=True)
                pages += 1
                seen += page["rows"]
                if page["last"]:
                    assert page["next_after"] is None
                    break
                after = page["next_after"]
                assert after == page["rows"][-1]
            assert seen == keys, kind
            assert pages == 10  # the tenth page read one row ahead, found none: it is last
            back = await session.call(f"etcd.k_{kind}.scan", after=keys[5], reverse=True,
                                      page=True, keys_only=True)
            assert back["rows"] == keys[4::-1]
            assert back["last"] is True
            assert await session.call(f"etcd.k_{kind}.count") == count
    finally:
        session.leave()


# -- history (last: it compacts the module's etcd) -------------------------------------------

@inline
async def test_history_across_puts_deletes_and_a_compaction(tnode: CrossbarNode,
                                                            direct: Client) -> None:
    session = await session_as(tnode.url, "msgpack")
    try:
        key = str(uuid.uuid4())
        row = struct.pack(">H", 1) + uuid.UUID(key).bytes
        revs = []
        for n in range(3):
            revs.append(await session.call("etcd.users.put", key,
                                           {"name": f"v{n}", "email": f"h{n}@x"}))
        other = (await direct.set(b"unrelated", b"1")).revision
        # A direct delete leaves the index entry of h2@x behind; check reports it later.
        deleted = (await direct.delete(row)).header.revision
        revs.append(await session.call("etcd.users.put", key, {"name": "v3", "email": "h3@x"}))
        got = await session.call("etcd.users.history", key)
        assert got["compacted"] is False and got["compact_revision"] is None
        assert [(v["type"], v["revision"]) for v in got["versions"]] == [
            ("put", revs[3]), ("delete", deleted), ("put", revs[2]), ("put", revs[1]),
            ("put", revs[0])]
        assert got["versions"][0] == {"type": "put", "revision": revs[3], "version": 1,
                                      "created": revs[3],
                                      "value": {"name": "v3", "email": "h3@x"}}
        assert got["versions"][2]["version"] == 3 and got["versions"][2]["created"] == revs[0]
        assert got["versions"][1]["value"] is None
        # Paging back with before_revision and limit.
        older = await session.call("etcd.users.history", key, limit=2,
                                   before_revision=revs[2] + 1)
        assert [v["revision"] for v in older["versions"]] == [revs[2], revs[1]]
        # A row deleted now still shows its past.
        assert await session.call("etcd.users.delete", key) is True
        gone = await session.call("etcd.users.history", key, limit=3)
        assert [v["type"] for v in gone["versions"]] == ["delete", "put", "delete"]
        deleted_again = gone["versions"][0]["revision"]

        # Compact where the row still held its third put: the first two puts are gone, the third
        # survives (it was live at the compaction point), and the answer says the list is cut.
        await direct.compact(other, physical=True)
        after = await session.call("etcd.users.history", key, limit=10)
        assert after["compacted"] is True and after["compact_revision"] == other
        assert [v["revision"] for v in after["versions"]] == [deleted_again, revs[3], deleted,
                                                              revs[2]]
        short = await session.call("etcd.users.history", key, limit=2)
        assert short["compacted"] is False and len(short["versions"]) == 2
        older = await session.call("etcd.users.history", key, before_revision=revs[2])
        assert older == {"versions": [], "compacted": True, "compact_revision": other,
                         "partial": False}
        # The direct delete bypassed the index: check names the stale entry, build drops it.
        check = await deferToProcess(run_indexes, tnode, "check", "--table", "users")
        assert check.returncode == 1 and "stale: key" in check.stdout and "'h2@x'" in \
            check.stdout, check.stdout + check.stderr
        build = await deferToProcess(run_indexes, tnode, "build", "--table", "users")
        assert build.returncode == 0, build.stdout + build.stderr
        check = await deferToProcess(run_indexes, tnode, "check", "--table", "users")
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        session.leave()
