"""Persistent maps and optimistic transactions (txetcd.pmap) against real etcd 3.4 and 3.5."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import cbor2
import pytest
import pytest_twisted
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from txetcd import Client, Database, KeySet, TooManyOps, pmap
from txetcd.embedded import EtcdProcess
from txetcd.pmap import (
    CborValue,
    CompoundKey,
    DbTransaction,
    MapStringOid,
    MapStringUuid,
    MapUuidCbor,
    NullValueConstraint,
    PersistentMap,
    ReadOnlyTransaction,
    SlotConflict,
    StringKey,
    TableNotAttached,
    TimestampKey,
    TransactionClosed,
    TransactionConflict,
    TransactionTooLarge,
    TypedMap,
    UniqueViolation,
    UuidKey,
    UuidValue,
)

from .blocking import run_blocking, wait
from .conftest import Loop
from .faults import ThreadProxy

inline = pytest_twisted.ensureDeferred
ROOT = Path(__file__).resolve().parent.parent


class User:
    """The seed example's record type: marshals itself to a dict for CBOR."""

    def __init__(self, oid: uuid.UUID, name: str, email: str | None = None,
                 group: str = "staff") -> None:
        self.oid, self.name, self.email, self.group = oid, name, email, group

    def marshal(self) -> dict[str, Any]:
        return {"oid": self.oid.bytes, "name": self.name, "email": self.email,
                "group": self.group}

    @staticmethod
    def unmarshal(data: dict[str, Any]) -> User:
        return User(uuid.UUID(bytes=data["oid"]), data["name"], data["email"], data["group"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, User) and self.marshal() == other.marshal()


def users_table(slot: int = 1) -> MapUuidCbor:
    return MapUuidCbor(slot, marshal=lambda user: user.marshal(), unmarshal=User.unmarshal)


def uid(n: int) -> uuid.UUID:
    return uuid.UUID(int=n)


@pytest.fixture
def db(kv: Any) -> Database:
    """A database over the test loop's client: the tests that take it run on both loops."""
    return Database(kv, prefix=b"db/")


async def collect(iterator: Any) -> list[Any]:
    return [item async for item in iterator]


# -- the seed example and the key layout -------------------------------------------------------


async def test_seed_readme_example(loop: Loop, kv: Any) -> None:
    tab_users = users_table()
    db = Database(kv)
    revision = await db.status()
    assert isinstance(revision, int) and revision >= 1
    user = User(uuid.uuid4(), "alice", "alice@example.com")
    async with db.begin(write=True) as txn:
        tab_users[txn, user.oid] = user
    async with db.begin() as txn:
        loaded = await tab_users[txn, user.oid]
    assert loaded == user and loaded is not user
    # <prefix (none)><slot 1 as uint16 BE><16 uuid bytes>, the value CBOR of marshal()
    stored = await kv.get(b"\x00\x01" + user.oid.bytes)
    assert cbor2.loads(stored.kvs[0].value) == user.marshal()
    async with db.begin(write=True) as txn:
        del tab_users[txn, user.oid]
    async with db.begin() as txn:
        assert await tab_users[txn, user.oid] is None
        assert await tab_users.contains(txn, user.oid) is False


async def test_database_prefix_and_slot_bounds(loop: Loop, kv: Any) -> None:
    db = Database(kv, prefix=b"app/")
    low, high = MapStringOid(65534), MapStringOid(65535)
    async with db.begin(write=True) as txn:
        low[txn, "a"] = 1
        high[txn, "a"] = 2
        high[txn, "b"] = 3
    keys = [kv.key for kv in (await kv.get(KeySet(b"\0", range_end=b"\0"))).kvs]
    assert keys == [b"app/\xff\xfea", b"app/\xff\xffa", b"app/\xff\xffb"]
    await kv.set(b"app0", b"just past the database")  # prefix_end(b"app/") is b"app0"
    async with db.begin() as txn:
        assert await low.count(txn) == 1
        assert await high.count(txn) == 2
        assert await collect(high.scan(txn)) == [("a", 2), ("b", 3)]
    # Slot 65535 of an unprefixed database ends at the end of the keyspace, not at slot 0.
    bare, top = Database(kv), MapStringOid(65535)
    async with bare.begin(write=True) as txn:
        top[txn, "z"] = 9
    async with bare.begin() as txn:
        assert await collect(top.scan(txn)) == [("z", 9)]


def test_every_txaioetcd_map_name_exists() -> None:
    names = ["Uuid", "String", "Oid"]
    values = ["String", "Oid", "Uuid", "Json", "Cbor", "Pickle", "Binary"]
    expected = [f"Map{k}{v}" for k in names for v in values] + [
        "MapUuidUuidSet", "MapUuidStringUuid", "MapUuidUuidUuid", "MapUuidUuidCbor",
        "MapSlotUuidUuid"]
    for name in expected:
        table = getattr(pmap, name)(7)
        assert isinstance(table, PersistentMap) and table.slot == 7, name
    for name in ["MapUuidFlatBuffers", "MapStringFlatBuffers", "MapOidFlatBuffers"]:
        with pytest.raises(TypeError):
            getattr(pmap, name)(3)
        table = getattr(pmap, name)(3, build=lambda obj, builder: 0, cast=lambda buf: buf)
        assert table.value_codec.name == "flatbuffers"
    # txaioetcd's layout (the string unterminated); the terminated one reads too.
    codec = pmap.MapUuidStringUuid(1).key_codec
    assert codec.encode((uid(1), "x")) == uid(1).bytes + b"x"
    assert codec.decode(uid(1).bytes + b"x\0\0") == codec.decode(uid(1).bytes + b"x")
    zipped = pmap.MapUuidCbor(1, compress=pmap.COMPRESS_ZLIB).value_codec
    assert zipped.decode(zipped.encode({"a": 1})) == {"a": 1}
    with pytest.raises(ValueError):
        pmap.MapUuidCbor(1, compress=pmap.COMPRESS_SNAPPY)
    for bad in (0, 65536, -1):
        with pytest.raises(ValueError):
            MapUuidCbor(bad)
    with pytest.raises(TypeError):
        MapUuidCbor(True)


class MapTimestampCbor(TypedMap, key=TimestampKey, value=CborValue): ...


async def test_composed_maps_and_scan_options(loop: Loop, db: Database) -> None:
    events = MapTimestampCbor(3)
    pairs = PersistentMap(4, CompoundKey(StringKey, StringKey), CborValue)
    async with db.begin(write=True) as txn:
        for t in (-5, 0, 7, 3, -(10**12)):
            events[txn, t] = {"t": t}
        for a, b in [("user1", "x"), ("user10", "y"), ("user1", "a"), ("user2", "b")]:
            pairs[txn, (a, b)] = a + b
    async with db.begin() as txn:
        assert await collect(events.scan(txn, keys_only=True)) == [-(10**12), -5, 0, 3, 7]
        assert await collect(events.scan(txn, from_key=-5, to_key=3, keys_only=True)) == [-5, 0]
        assert await collect(events.scan(txn, reverse=True, limit=2, keys_only=True)) == [7, 3]
        assert await collect(events.select(txn, page_size=2, keys_only=True)) == [
            -(10**12), -5, 0, 3, 7]
        assert await events.select(txn, 0, return_keys=True) == (
            [0, 3, 7], [{"t": 0}, {"t": 3}, {"t": 7}])
        assert await collect(events.scan(txn, reverse=True, page_size=2, keys_only=True)) == [
            7, 3, 0, -5, -(10**12)]
        # A compound prefix matches whole parts: ("user1",) is not a prefix of "user10".
        assert await collect(pairs.scan(txn, prefix=("user1",))) == [
            (("user1", "a"), "user1a"), (("user1", "x"), "user1x")]
        assert await pairs.count(txn, prefix=("user1",)) == 2
        assert await pairs.count(txn, from_key=("user10",)) == 2
        with pytest.raises(ValueError):
            await pairs.count(txn, prefix=("a",), from_key=("b",))
        with pytest.raises(TypeError):
            "x" in events  # noqa: B015 - Python's `in` cannot await
        assert await events.contains(txn, 7) and not await events.contains(txn, 8)


# -- transactions ------------------------------------------------------------------------------


async def test_concurrent_increments_never_lose_an_update(loop: Loop, db: Database) -> None:
    counters = MapStringOid(2)

    async def increment(txn: DbTransaction) -> None:
        counters[txn, "hits"] = (await counters[txn, "hits"] or 0) + 1

    await loop.gather(*[db.run(increment, retries=1000) for _ in range(100)])
    async with db.begin() as txn:
        assert await counters[txn, "hits"] == 100


async def test_run_retries_conflicts_then_gives_up(loop: Loop, db: Database, kv: Any) -> None:
    counters, meddler = MapStringOid(2), Database(kv, prefix=b"db/")
    calls: list[int] = []

    async def always_overtaken(txn: DbTransaction) -> str:
        calls.append(await counters[txn, "n"] or 0)
        async with meddler.begin(write=True) as other:  # changes the read key every time
            counters[other, "n"] = len(calls)
        counters[txn, "n"] = 100
        return "done"

    with pytest.raises(TransactionConflict):
        await db.run(always_overtaken, retries=2)
    assert calls == [0, 1, 2]  # one try and two retries, each seeing the latest value

    def sync_fn(txn: DbTransaction) -> str:
        counters[txn, "sync"] = 1
        return "ok"

    assert await db.run(sync_fn) == "ok"
    with pytest.raises(ValueError):
        await db.run(sync_fn, retries=-1)


async def test_snapshot_isolation_and_conflicts(loop: Loop, db: Database, kv: Any) -> None:
    table, other = MapStringOid(2), Database(kv, prefix=b"db/")
    async with db.begin(write=True) as txn:
        table[txn, "a"], table[txn, "b"] = 1, 1

    async def outside(key: str, value: int | None) -> None:
        async with other.begin(write=True) as txn:
            if value is None:
                del table[txn, key]
            else:
                table[txn, key] = value

    # A write after the first read is invisible to later reads and fails the commit.
    txn = db.begin(write=True)
    assert await table[txn, "a"] == 1
    await outside("b", 2)
    assert await table[txn, "b"] == 1
    table[txn, "c"] = 3
    with pytest.raises(TransactionConflict) as conflict:
        await txn.commit()
    assert conflict.value.snapshot == txn.revision
    async with db.begin() as check:
        assert await table[check, "c"] is None

    # A write outside the read set does not conflict.
    txn = db.begin(write=True)
    assert await table[txn, "a"] == 1
    await outside("b", 5)
    table[txn, "c"] = 3
    committed = await txn.commit()
    assert committed is not None and txn.revision is not None and committed > txn.revision

    # A key read as absent that someone creates conflicts.
    txn = db.begin(write=True)
    assert await table[txn, "new"] is None
    await outside("new", 1)
    table[txn, "c"] = 4
    with pytest.raises(TransactionConflict):
        await txn.commit()

    # A scanned range conflicts on an insert, an update and a delete inside it.
    for key, value in [("ab", 1), ("a", 9), ("b", None)]:
        txn = db.begin(write=True)
        seen = await collect(table.scan(txn, from_key="a", to_key="c"))
        assert [k for k, _ in seen] == sorted(k for k, _ in seen)
        await outside(key, value)
        table[txn, "z"] = len(seen)
        with pytest.raises(TransactionConflict):
            await txn.commit()
    # ...and counting in a write txn guards the range just the same.
    txn = db.begin(write=True)
    assert await table.count(txn) >= 2
    await outside("c", None)
    table[txn, "z"] = 0
    with pytest.raises(TransactionConflict):
        await txn.commit()


async def test_read_your_writes_in_get_scan_and_count(loop: Loop, db: Database) -> None:
    table = MapStringOid(2)
    async with db.begin(write=True) as txn:
        for i, key in enumerate(["a", "c", "e", "g"]):
            table[txn, key] = i
    async with db.begin(write=True) as txn:
        table[txn, "b"] = 10
        table[txn, "c"] = 20
        del table[txn, "e"]
        table[txn, "h"] = 30
        assert await table[txn, "c"] == 20 and await table[txn, "e"] is None
        assert await collect(table.scan(txn)) == [
            ("a", 0), ("b", 10), ("c", 20), ("g", 3), ("h", 30)]
        assert await collect(table.scan(txn, reverse=True, limit=3)) == [
            ("h", 30), ("g", 3), ("c", 20)]
        assert await collect(table.scan(txn, from_key="b", to_key="g", keys_only=True)) == [
            "b", "c"]
        assert await collect(table.scan(txn, page_size=1, keys_only=True)) == [
            "a", "b", "c", "g", "h"]
        assert await table.count(txn) == 5
        # truncate, then write again into the truncated table in the same commit
        await table.truncate(txn)
        assert await table.count(txn) == 0 and await table[txn, "a"] is None
        table[txn, "c"] = 1
        table[txn, "d"] = 2
        assert await collect(table.scan(txn)) == [("c", 1), ("d", 2)]
    async with db.begin() as txn:
        assert await collect(table.scan(txn)) == [("c", 1), ("d", 2)]


async def test_read_only_and_closed_transactions(loop: Loop, db: Database) -> None:
    table = MapStringOid(2)
    async with db.begin() as txn:
        with pytest.raises(ReadOnlyTransaction):
            table[txn, "a"] = 1
        with pytest.raises(TypeError):  # ReadOnlyTransaction is a TypeError
            del table[txn, "a"]
        with pytest.raises(ReadOnlyTransaction):
            await table.truncate(txn)
    with pytest.raises(TransactionClosed):
        await table[txn, "a"]
    with pytest.raises(ReadOnlyTransaction):
        Database(db.client, readonly=True).begin(write=True)
    # An exception inside the block aborts: nothing is written.
    with pytest.raises(RuntimeError, match="boom"):
        async with db.begin(write=True) as txn:
            table[txn, "a"] = 1
            raise RuntimeError("boom")
    async with db.begin() as txn:
        assert await table[txn, "a"] is None


async def test_round_trips_and_op_limit(loop: Loop, etcd: EtcdProcess) -> None:
    proxy = ThreadProxy("127.0.0.1", etcd.client_port)
    client = loop.client(url=proxy.url)
    db, table = Database(client, prefix=b"trips/"), MapStringOid(2)
    try:
        await client.delete(KeySet(b"trips/", prefix=True))
        before = proxy.requests
        async with db.begin() as txn:  # begin costs nothing; the snapshot is the 1st read's
            assert txn.revision is None
            assert await table[txn, "a"] is None
            assert await table[txn, "b"] is None
        assert proxy.requests - before == 2
        before = proxy.requests
        async with db.begin(write=True) as txn:
            table[txn, "a"] = (await table[txn, "a"] or 0) + 1
        assert proxy.requests - before == 2  # one read, one commit
        # More than max_txn_ops writes fail before anything is sent.
        revision = await db.status()
        before = proxy.requests
        txn = db.begin(write=True)
        for i in range(client.max_txn_ops + 1):
            table[txn, f"k{i:03d}"] = i
        with pytest.raises(TransactionTooLarge) as too_large:
            await txn.commit()
        assert isinstance(too_large.value, TooManyOps)
        assert "max_txn_ops" in str(too_large.value)
        assert proxy.requests == before
        assert await db.status() == revision
    finally:
        await client.close()
        proxy.close()


# -- indexes -----------------------------------------------------------------------------------


def indexed_users(unique_slot: int = 10, group_slot: int = 11) -> tuple[MapUuidCbor, Any, Any]:
    users = users_table()
    by_email = MapStringUuid(unique_slot)
    by_group = PersistentMap(group_slot, CompoundKey(StringKey, UuidKey), UuidValue)
    users.attach_index("email", by_email, lambda u: u.email, nullable=True)
    users.attach_index("group", by_group, lambda u: u.group, unique=False)
    return users, by_email, by_group


async def test_indexes_follow_insert_update_delete(loop: Loop, db: Database) -> None:
    users, by_email, by_group = indexed_users()
    alice, bob = User(uid(1), "alice", "a@x", "staff"), User(uid(2), "bob", "b@x", "staff")
    async with db.begin(write=True) as txn:
        users[txn, alice.oid] = alice
        await users.put(txn, bob.oid, bob)
        assert await by_email[txn, "a@x"] == alice.oid  # read-your-writes in the index
    async with db.begin(write=True) as txn:
        alice.email, alice.group = "alice@x", "admin"  # update: stale entries go
        users[txn, alice.oid] = alice
    async with db.begin() as txn:
        assert await collect(by_email.scan(txn)) == [("alice@x", alice.oid), ("b@x", bob.oid)]
        assert await collect(by_group.scan(txn, keys_only=True)) == [
            ("admin", alice.oid), ("staff", bob.oid)]
        assert await users.get_by_index(txn, "email", "b@x") == bob
    with pytest.raises(UniqueViolation) as taken:
        async with db.begin(write=True) as txn:
            users[txn, uid(3)] = User(uid(3), "carol", "b@x")
    assert taken.value.index == "email"
    async with db.begin(write=True) as txn:
        with pytest.raises(UniqueViolation):  # the async put raises at once, txn still usable
            await users.put(txn, uid(3), User(uid(3), "carol", "b@x"))
        users[txn, uid(3)] = User(uid(3), "carol", None)  # nullable: no email entry
        del users[txn, bob.oid]
    async with db.begin() as txn:
        assert await collect(by_email.scan(txn, keys_only=True)) == ["alice@x"]
        assert await collect(by_group.scan(txn, keys_only=True)) == [
            ("admin", alice.oid), ("staff", uid(3))]
    users.attach_index("name", MapStringUuid(12), lambda u: None)
    with pytest.raises(NullValueConstraint):
        async with db.begin(write=True) as txn:
            users[txn, uid(4)] = User(uid(4), "dave")
    users.detach_index("name")
    # rebuild_index recomputes an index from the records
    async with db.begin(write=True) as txn:
        await by_group.truncate(txn)
        assert await users.rebuild_index(txn, "group") == 2
    async with db.begin() as txn:
        assert await by_group.count(txn) == 2
    # Index entries count against max_txn_ops: 43 records with two entries each are 129 writes.
    txn = db.begin(write=True)
    for n in range(100, 143):
        users[txn, uid(n)] = User(uid(n), "bulk", f"{n}@x")
    with pytest.raises(TransactionTooLarge, match="129 writes"):
        await txn.commit()


async def test_table_watch_yields_decoded_events(loop: Loop, db: Database) -> None:
    users, counters = users_table(), MapStringOid(2)
    alice = User(uid(1), "alice", "a@x")
    async with users.watch(db, prev_kv=True) as watch:
        await loop.wait_for(watch.when_started(), 20)
        async with db.begin(write=True) as txn:
            users[txn, alice.oid] = alice
            counters[txn, "other table"] = 1  # not in the watched range
        alice.email = "alice@x"
        async with db.begin(write=True) as txn:
            users[txn, alice.oid] = alice
        async with db.begin(write=True) as txn:
            del users[txn, alice.oid]
        events = [await loop.wait_for(watch.__anext__(), 20) for _ in range(3)]
    assert [(e.type, e.key) for e in events] == [("PUT", uid(1)), ("PUT", uid(1)),
                                                ("DELETE", uid(1))]
    assert events[0].value.email == "a@x" and events[0].previous is None
    assert events[1].value == alice and events[1].previous.email == "a@x"
    assert events[2].value is None and events[2].previous == alice
    assert events[0].revision < events[1].revision < events[2].revision
    seen: list[Any] = []

    watch = counters.watch(db, prefix="b", callback=seen.append)
    await loop.wait_for(watch.when_started(), 20)
    async with db.begin(write=True) as txn:
        counters[txn, "a"], counters[txn, "b1"] = 1, 2
    for _ in range(200):  # the callback form: wait until the event has come
        if seen:
            break
        await loop.sleep(0.05)
    watch.cancel()
    await loop.wait_for(watch.done, 20)
    assert [(e.key, e.value) for e in seen] == [("b1", 2)]


# -- slot catalog ------------------------------------------------------------------------------


async def test_attach_table_catalog(loop: Loop, db: Database, kv: Any) -> None:
    users = await db.attach_table(users_table(1), name="users")
    assert users.slot == 1 and users.name == "users"
    entry = cbor2.loads((await kv.get(b"db/\0\0\0\x01")).kvs[0].value)
    assert entry == {"name": "users", "slot": 1, "key": "uuid", "value": "cbor"}
    unslotted = MapStringOid(None)
    with pytest.raises(TableNotAttached):
        async with db.begin() as txn:
            await unslotted[txn, "a"]
    first = await db.attach_table(unslotted, name="counters")
    assert first.slot == 2
    again = await db.attach_table(MapStringOid(None, name="counters"))
    assert again.slot == 2
    assert await db.tables() == {"users": 1, "counters": 2}
    with pytest.raises(SlotConflict):  # slot 1 holds "users"
        await db.attach_table(users_table(1), name="other")
    with pytest.raises(SlotConflict):  # same name, other codecs
        await db.attach_table(MapStringOid(1), name="users")
    with pytest.raises(TypeError):
        await db.attach_table(MapUuidCbor)  # a class, not a map


ATTACH_SCRIPT = textwrap.dedent("""
    import asyncio, json, sys, time
    from txetcd import Database, pmap

    async def attach(client, tag, start_at):
        db = Database(client, prefix=b"race/")
        time.sleep(max(0.0, start_at - time.time()))
        slots = {}
        for i in range(20):
            table = await db.attach_table(pmap.MapStringOid(None), name=f"{tag}-{i}")
            slots[table.name] = table.slot
        shared = await db.attach_table(pmap.MapStringOid(None), name="shared")
        slots["shared"] = shared.slot
        print(json.dumps(slots))
        await client.close()

    loop, url, tag, start_at = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    if loop == "asyncio":
        from txetcd.asyncio import Client
        asyncio.run(attach(Client(url), tag, start_at))
    else:
        from twisted.internet import defer, task
        from txetcd import Client
        task.react(lambda reactor: defer.ensureDeferred(
            attach(Client(reactor, url=url), tag, start_at)))
""")


@inline
async def test_two_processes_attaching_tables_get_distinct_slots(client: Client,
                                                                 etcd: EtcdProcess,
                                                                 tmp_path: Path) -> None:
    script = tmp_path / "attach.py"
    script.write_text(ATTACH_SCRIPT)
    start_at = time.time() + 1.5  # both interpreters are up by then, so they really race
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    # One Twisted program and one asyncio program race for slots in the same catalog.
    procs = [subprocess.Popen([sys.executable, str(script), loop, etcd.url, tag, str(start_at)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for loop, tag in (("twisted", "p1"), ("asyncio", "p2"))]
    results = []
    for proc in procs:
        # Blocking the reactor here is fine: the processes talk to etcd, not to us.
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    first, second = results
    assert first["shared"] == second["shared"]
    slots = [s for name, s in first.items() if name != "shared"] + [
        s for name, s in second.items() if name != "shared"] + [first["shared"]]
    assert len(slots) == 41 == len(set(slots))
    assert await Database(client, prefix=b"race/").tables() == {**first, **second}


# -- model-based test --------------------------------------------------------------------------


PKS = st.integers(0, 5)
RECORDS = st.none() | st.tuples(st.sampled_from([None, "a@x", "b@x", "c@x"]),
                                 st.sampled_from(["staff", "admin"]))


def expected_after(model: dict[int, tuple[str | None, str]],
                   ops: list[tuple[int, tuple[str | None, str] | None]]
                   ) -> tuple[dict[int, tuple[str | None, str]], bool]:
    """The model after a write txn of ``ops`` (None deletes), and whether it breaks the unique
    email index (then the txn must fail and the model stay)."""
    expected, violation = dict(model), False
    for pk, record in ops:
        if record is None:
            expected.pop(pk, None)
            continue
        owners = {k for k, (email, _) in expected.items() if email == record[0]}
        violation = violation or (record[0] is not None and bool(owners - {pk}))
        expected[pk] = record
    return expected, violation


class PmapModel(RuleBasedStateMachine):
    """Write txns, scans and truncates checked against a dict; ``model_machine`` binds the
    database and ``wait``, which runs a coroutine to completion on the database's loop."""

    db: Database
    wait: Callable[[Awaitable[Any]], Any]

    def __init__(self) -> None:
        super().__init__()
        self.wait(self.wipe())
        self.users, self.by_email, self.by_group = indexed_users()
        self.model: dict[int, tuple[str | None, str]] = {}

    @rule(ops=st.lists(st.tuples(PKS, RECORDS), min_size=1, max_size=4))
    def write(self, ops: list[tuple[int, tuple[str | None, str] | None]]) -> None:
        expected, violation = expected_after(self.model, ops)

        async def run() -> None:
            async with self.db.begin(write=True) as txn:
                for pk, record in ops:
                    if record is None:
                        del self.users[txn, uid(pk)]
                    else:
                        self.users[txn, uid(pk)] = User(uid(pk), f"u{pk}", *record)
                # read-your-writes: the scan sees the buffered writes (and index upkeep)
                assert await self.contents(txn) == expected

        if violation:
            with pytest.raises(UniqueViolation):
                self.wait(run())
        else:
            self.wait(run())
            self.model = expected

    @rule()
    def truncate(self) -> None:
        async def run() -> None:
            async with self.db.begin(write=True) as txn:
                await self.users.truncate(txn)
        self.wait(run())
        self.model = {}

    @rule(limit=st.integers(1, 4))
    def scan_reverse(self, limit: int) -> None:
        async def run() -> list[int]:
            txn = self.db.begin()
            return [k.int async for k in self.users.scan(
                txn, reverse=True, limit=limit, keys_only=True)]
        assert self.wait(run()) == sorted(self.model, reverse=True)[:limit]

    @invariant()
    def stored_state_matches(self) -> None:
        async def run() -> None:
            async with self.db.begin() as txn:
                assert await self.contents(txn) == self.model
                assert await self.users.count(txn) == len(self.model)
                emails = await collect(self.by_email.scan(txn))
                assert {e: pk.int for e, pk in emails} == {
                    email: pk for pk, (email, _) in self.model.items() if email}
                groups = await collect(self.by_group.scan(txn, keys_only=True))
                assert groups == sorted((g, uid(pk)) for pk, (_, g) in self.model.items())
        self.wait(run())

    async def wipe(self) -> None:  # a coroutine: every client call happens on the loop
        await self.db.client.delete(KeySet(self.db.prefix, prefix=True))

    async def contents(self, txn: DbTransaction) -> dict[int, tuple[str | None, str]]:
        return {k.int: (u.email, u.group) async for k, u in self.users.scan(txn)}


def model_machine(db: Database,
                  wait: Callable[[Awaitable[Any]], Any]) -> type[RuleBasedStateMachine]:
    return type("PmapModel", (PmapModel,), {"db": db, "wait": staticmethod(wait)})


async def test_model_based_puts_deletes_scans_with_indexes(loop: Loop, kv: Any) -> None:
    """Synchronous hypothesis steps, each waiting for its pmap calls on the test's loop."""
    db = Database(kv, prefix=b"model/")

    def explore(wait: Callable[[Awaitable[Any]], Any]) -> None:
        run_state_machine_as_test(model_machine(db, wait), settings=settings(
            max_examples=20, stateful_step_count=15, deadline=None,
            suppress_health_check=list(HealthCheck)))

    await blocking_steps(loop, explore)


async def blocking_steps(loop: Loop, steps: Callable[[Callable[[Awaitable[Any]], Any]], None]
                         ) -> None:
    """Run blocking ``steps(wait)`` beside the running loop: on Twisted in a child greenlet of
    the reactor's (``tests.blocking``), on asyncio in a thread that hands each coroutine to
    the loop (so every client call still happens on the loop's thread)."""
    if loop.name == "twisted":
        await run_blocking(lambda: steps(wait))
        return
    running = asyncio.get_running_loop()

    async def awaited(awaitable: Awaitable[Any]) -> Any:
        return await awaitable

    await loop.run_in_thread(steps, lambda awaitable: asyncio.run_coroutine_threadsafe(
        awaited(awaitable), running).result(timeout=60))
