"""txaioetcd programs on txetcd: its names and call styles, and no silent misuse (issue #14).

Against real etcd 3.4 and 3.5 (the ``client`` fixture). The upstream examples are in
``test_upstream_examples.py``, txaioetcd's data in ``test_txaioetcd_data.py``.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Generator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater

import txetcd
from txetcd import (
    Client,
    CompVersion,
    Database,
    DbTransactionStats,
    Expired,
    KeySet,
    Lease,
    LeaseExpired,
    LeaseLost,
    LeaseNotFound,
    LeaseNotGranted,
    Lock,
    LockNotHeld,
    MapStringUuid,
    MapUuidCbor,
    OpSet,
    Transaction,
)
from txetcd.pmap import UniqueViolation

inline = pytest_twisted.ensureDeferred

# txaioetcd 18.10.2's ``__all__``, every name of which a program may import.
TXAIOETCD_ALL = (
    "__version__", "Client", "Transaction", "Lease", "KeyValue", "KeySet", "Header", "Status",
    "Range", "Revision", "Deleted", "Error", "Failed", "Success", "Expired", "Comp", "CompValue",
    "CompVersion", "CompCreated", "CompModified", "Op", "OpGet", "OpSet", "OpDel", "Database",
    "DbTransaction", "DbTransactionStats", "MapSlotUuidUuid", "MapUuidString", "MapUuidOid",
    "MapUuidUuid", "MapUuidJson", "MapUuidCbor", "MapUuidPickle", "MapUuidFlatBuffers",
    "MapUuidUuidCbor", "MapUuidUuidSet", "MapUuidStringUuid", "MapStringString", "MapStringOid",
    "MapStringUuid", "MapStringJson", "MapStringCbor", "MapStringPickle", "MapStringFlatBuffers",
    "MapOidString", "MapOidOid", "MapOidUuid", "MapOidJson", "MapOidCbor", "MapOidPickle",
    "MapOidFlatBuffers")


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


def test_every_txaioetcd_name_is_importable() -> None:
    missing = [name for name in TXAIOETCD_ALL if not hasattr(txetcd, name)]
    assert missing == []
    assert isinstance(txetcd.__version__, str)
    assert issubclass(LeaseNotFound, Expired) and issubclass(LeaseExpired, Expired)
    assert issubclass(LeaseLost, Expired)


def test_import_selects_twisted_for_txaio() -> None:
    # txaioetcd called txaio.use_twisted() on import; programs call start_logging without it.
    code = ("import txaio, txetcd; assert txaio.using_twisted; "
            "txaio.start_logging(level='info'); print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.strip().endswith(" ok"), done.stderr


@inline
async def test_yielded_lease_is_granted_and_yielded_lock_is_held(client: Client) -> None:
    @defer.inlineCallbacks
    def txaioetcd_style() -> Generator[Any, Any, Any]:
        lease = yield client.lease(5)
        yield client.set(b"leased", b"v", lease=lease)
        lock = yield Lock(client, b"res", ttl=5).acquire()
        return lease, lock

    lease, lock = await txaioetcd_style()
    assert isinstance(lease, Lease) and lease.lease_id > 0
    assert (await client.get(b"leased")).kvs[0].lease == lease.lease_id
    assert isinstance(lock, Lock) and lock.fencing_token > 0
    assert (await client.get(lock.key)).kvs[0].create_revision == lock.fencing_token
    # An un-awaited release() and revoke() still take effect.
    lock.release()
    lease.revoke()

    async def gone() -> bool:
        return (await client.get(KeySet(b"", range_end=b"\0"), count_only=True)).count == 0
    for _ in range(50):
        if await gone():
            break
        await sleep(0.1)
    assert await gone()
    assert (await client.lease_time_to_live(lease.lease_id)).ttl == -1


@inline
async def test_lease_misuse_raises_before_anything_is_sent(client: Client) -> None:
    sent = sum(client.stats()["posts"].values())
    with pytest.raises(LeaseNotGranted, match="await"):
        client.set(b"k", b"v", lease=Lease(client, 5))  # never granted
    with pytest.raises(LeaseNotGranted, match="await"):
        client.set(b"k", b"v", lease=client.lease(5))  # the Deferred, not yielded
    assert sum(client.stats()["posts"].values()) == sent
    lease = await client.lease(5)
    put = OpSet(b"k", b"v", lease=lease)  # fine now; the lease is revoked before the txn goes
    await lease.revoke()
    sent = sum(client.stats()["posts"].values())
    with pytest.raises(Expired, match="revoked"):
        client.set(b"k", b"v", lease=lease)
    with pytest.raises(Expired, match="revoked"):
        await client.submit(Transaction(success=[put]))
    assert sum(client.stats()["posts"].values()) == sent
    assert (await client.get(b"k")).kvs == []
    for use in (lease.refresh, lease.remaining, lease.keys, lease.revoke):
        with pytest.raises(Expired):
            await use()


@inline
async def test_lock_not_held_says_so(client: Client) -> None:
    lock = Lock(client, b"res")
    for use in (lambda: lock.key, lambda: lock.fencing_token, lock.release):
        with pytest.raises(LockNotHeld, match="before it is held"):
            result = use()
            if isinstance(result, defer.Deferred):
                await result
    held = await Lock(client, b"res", ttl=5)
    await held.release()
    with pytest.raises(LockNotHeld, match="released already"):
        await held.release()
    with pytest.raises(LockNotHeld, match="released"):
        await held  # a released lock is not acquired again
    assert (await client.get(KeySet(b"res", prefix=True))).kvs == []


@inline
async def test_comp_version_greater_than_minus_one(client: Client) -> None:
    # etcd compares int64s: "version > -1" holds for any key, present or not.
    result = await client.submit(Transaction(compare=[CompVersion(b"absent", ">", -1)],
                                             success=[OpSet(b"absent", b"now")]))
    assert result.header.revision > 0
    assert (await client.get(b"absent")).kvs[0].value == b"now"


@inline
async def test_txaioetcd_pmap_names_and_forms(client: Client) -> None:
    users = MapUuidCbor(1)
    by_name = MapStringUuid(2)
    index = users.attach_index(by_name, lambda user: user["name"])  # txaioetcd's form
    by_mail = MapStringUuid(3)
    users.attach_index("by_mail", by_mail, lambda user: user["mail"])  # the named form
    db = Database(client)
    stats = DbTransactionStats()
    alice, bob = uuid.uuid4(), uuid.uuid4()
    async with db.begin(write=True, stats=stats, timeout=5) as txn:
        users[txn, alice] = {"name": "alice", "mail": "a@x"}
        users[txn, bob] = {"name": "bob", "mail": "b@x"}
    assert (stats.puts, stats.dels) == (6, 0)  # records and index entries, as txaioetcd
    async with db.begin() as txn:
        assert sorted(u["name"] for u in await users.select(txn)) == ["alice", "bob"]
        keys, values = await users.select(txn, return_keys=True)
        assert set(keys) == {alice, bob} and len(values) == 2
        assert [key async for key, _ in users.select(txn)] == sorted([alice, bob])
        assert await by_name[txn, "bob"] == bob and await by_mail[txn, "a@x"] == alice

    @defer.inlineCallbacks
    def txaioetcd_style() -> Generator[Any, Any, Any]:
        found = yield users.select(db.begin(), return_keys=True, return_values=False)
        return found

    assert sorted(await txaioetcd_style()) == sorted([alice, bob])
    # Unique indexes are enforced (txaioetcd overwrote the entry silently): loud, nothing written.
    with pytest.raises(UniqueViolation, match="slot2"):
        async with db.begin(write=True) as txn:
            users[txn, uuid.uuid4()] = {"name": "alice", "mail": "other@x"}
    async with db.begin() as txn:
        assert await users.count(txn) == 2
    assert users.detach_index(index) is True and users.indexes() == ["by_mail"]
    stats_shape = db.stats()
    assert set(stats_shape) == {"posts"} and sum(stats_shape["posts"].values()) > 0
    assert all(url.startswith("http://") for url in stats_shape["posts"])


@inline
async def test_loud_refusals_of_what_txetcd_does_not_do(client: Client) -> None:
    class Undecorated(MapUuidCbor):
        pass

    with pytest.raises(TypeError, match="@table"):
        await Database(client).attach_table(Undecorated)
    with pytest.raises(ValueError, match="SNAPPY"):
        MapUuidCbor(1, compress=MapUuidCbor.COMPRESS_SNAPPY)
