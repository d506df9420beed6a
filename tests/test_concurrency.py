"""Locks and elections against real etcd 3.4 and 3.5 (the v3lock and v3election services), on
both event loops (the ``loop`` fixture)."""

from __future__ import annotations

from typing import Any

import pytest

from txetcd import (
    CompCreated,
    Election,
    Failed,
    KeyNotFound,
    KeySet,
    KeyValue,
    LeaseExpired,
    Lock,
    NotLeader,
    OpSet,
    Timeout,
    Transaction,
)
from txetcd.embedded import EtcdProcess

from .test_lease import wait_until

CONTENDERS = 10
ROUNDS = 5


def fenced_set(lock: Lock, key: bytes, value: bytes) -> Transaction:
    """A write that only happens while ``lock`` is still held by this holder."""
    return Transaction(compare=[CompCreated(lock.key, "==", lock.fencing_token)],
                       success=[OpSet(key, value)])


def settled(future: Any) -> bool:
    """Whether a loop future (Deferred or asyncio future) has its result."""
    return bool(future.called) if hasattr(future, "called") else bool(future.done())


async def cancelled(client: Any, future: Any) -> bool:
    """Whether awaiting ``future`` raises the loop's cancellation error."""
    try:
        await future
    except BaseException as exc:  # noqa: BLE001 - asyncio's CancelledError is a BaseException
        return bool(client.env.driver.is_cancelled(exc))
    return False


async def test_lock_contenders_lose_no_update(loop: Any, etcd: EtcdProcess, kv: Any) -> None:
    ns_client = loop.client(url=etcd.url, namespace=b"ns/")
    inside = []
    tokens: list[int] = []

    async def contender() -> None:
        for _ in range(ROUNDS):
            async with Lock(ns_client, b"counter", ttl=10) as lock:
                inside.append(lock)
                assert len(inside) == 1, "two holders at once"
                tokens.append(lock.fencing_token)
                found = await ns_client.get(b"n")
                value = int(found.kvs[0].value) if found.kvs else 0
                await loop.sleep(0)  # let the others run while we hold the lock
                await ns_client.submit(fenced_set(lock, b"n", b"%d" % (value + 1)))
                inside.remove(lock)

    await loop.gather(*[contender() for _ in range(CONTENDERS)])
    assert int((await ns_client.get(b"n")).kvs[0].value) == CONTENDERS * ROUNDS
    # Every holder got a larger token than the one before it.
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)
    assert (await ns_client.get(KeySet(b"counter", prefix=True))).kvs == []


async def test_fencing_token_rejects_a_stale_holder(loop: Any, etcd: EtcdProcess,
                                                    kv: Any) -> None:
    ns_client = loop.client(url=etcd.url, namespace=b"ns/")
    stale = await Lock(ns_client, b"res", ttl=5)
    assert stale.key.startswith(b"res/") and stale.fencing_token > 0
    raw = (await kv.get(b"ns/" + stale.key)).kvs[0]  # namespaced in etcd
    assert raw.create_revision == stale.fencing_token and raw.lease == stale.lease.lease_id
    await ns_client.submit(fenced_set(stale, b"data", b"from the first holder"))
    # The holder stalls past its lease (revoked here, as expiry would), another one takes over.
    await ns_client.lease_revoke(stale.lease.lease_id)
    assert isinstance(await stale.lost, LeaseExpired) and not stale.alive
    fresh = await Lock(ns_client, b"res", ttl=5)
    assert fresh.fencing_token > stale.fencing_token
    with pytest.raises(Failed):
        await ns_client.submit(fenced_set(stale, b"data", b"from the stale holder"))
    await ns_client.submit(fenced_set(fresh, b"data", b"from the new holder"))
    assert (await ns_client.get(b"data")).kvs[0].value == b"from the new holder"
    await fresh.release()
    await stale.release()  # harmless after loss
    assert (await ns_client.get(KeySet(b"res", prefix=True))).kvs == []


async def test_cancelled_lock_wait_leaves_no_key(loop: Any, kv: Any) -> None:
    holder = await Lock(kv, b"busy", ttl=5)
    waiting = Lock(kv, b"busy", ttl=30).acquire()

    async def queued() -> bool:
        return (await kv.get(KeySet(b"busy", prefix=True), count_only=True)).count == 2
    await wait_until(loop, queued)
    leases_before = set(await kv.leases())
    waiting.cancel()
    assert await cancelled(kv, waiting)
    # The waiter's session lease gets revoked (in the background), and its queued key with it.

    async def waiter_gone() -> bool:
        return len(leases_before - set(await kv.leases())) == 1
    await wait_until(loop, waiter_gone)
    assert [kv_.key for kv_ in (await kv.get(KeySet(b"busy", prefix=True))).kvs] == [holder.key]
    await holder.release()
    # The lock is free at once (nobody waits on a dead queue entry).
    async with Lock(kv, b"busy", ttl=5, timeout=5) as again:
        assert again.fencing_token > holder.fencing_token


async def test_lock_wait_ends_when_its_lease_is_lost(loop: Any, kv: Any) -> None:
    holder = await Lock(kv, b"busy", ttl=5)
    before = set(await kv.leases())
    waiting = Lock(kv, b"busy", ttl=2).acquire()

    async def granted() -> bool:
        return len(set(await kv.leases()) - before) == 1
    await wait_until(loop, granted)
    (waiter_lease,) = set(await kv.leases()) - before
    await kv.lease_revoke(waiter_lease)  # its next keepalive finds it gone
    with pytest.raises(LeaseExpired):
        await waiting
    await holder.release()


async def test_lock_timeout(loop: Any, kv: Any) -> None:
    async with Lock(kv, b"slow", ttl=5) as holder:
        with pytest.raises(Timeout):
            await Lock(kv, b"slow", ttl=30, timeout=0.5)

        async def only_holder_queued() -> bool:
            keys = [kv_.key for kv_ in (await kv.get(KeySet(b"slow", prefix=True))).kvs]
            return keys == [holder.key]
        await wait_until(loop, only_holder_queued)  # the late waiter's lease is revoked
    assert (await kv.get(KeySet(b"slow", prefix=True))).kvs == []


async def test_election_hands_over_when_the_leaders_lease_goes(loop: Any, etcd: EtcdProcess,
                                                               kv: Any) -> None:
    ns_client = loop.client(url=etcd.url, namespace=b"ns/")
    election = Election(ns_client, b"boss")
    with pytest.raises(KeyNotFound):
        await election.leader()
    seen: list[KeyValue] = []
    async with election.observe() as leaders:
        async def collect() -> None:
            async for kv_ in leaders:
                seen.append(kv_)
        collecting = ns_client.env.driver.spawn(collect())
        first = await election.campaign(b"one", ttl=5)
        assert first.key.startswith(b"boss/") and first.revision > 0

        async def saw_one() -> bool:
            return [kv_.value for kv_ in seen] == [b"one"]
        await wait_until(loop, saw_one)
        second = Election(ns_client, b"boss").campaign(b"two", ttl=5).acquire()
        await loop.sleep(0.3)
        assert not settled(second)  # waits while "one" leads
        leader = await election.leader()
        assert (leader.key, leader.value) == (first.key, b"one")
        await ns_client.lease_revoke(first.lease.lease_id)
        assert isinstance(await first.lost, LeaseExpired)
        winner = await second
        assert (await election.leader()).value == b"two"

        async def saw_two() -> bool:
            return [kv_.value for kv_ in seen] == [b"one", b"two"]
        await wait_until(loop, saw_two)
    await collecting  # closing the observer ended the iteration
    assert seen[1].key == winner.key
    with pytest.raises(NotLeader):
        await first.proclaim(b"still me?")
    await winner.resign()


async def test_proclaim_and_resign(loop: Any, kv: Any) -> None:
    election = Election(kv, b"e")
    async with election.campaign(b"v1", ttl=5) as leadership:
        await leadership.proclaim(b"v2")
        found = await election.leader()
        assert (found.key, found.value) == (leadership.key, b"v2")
        successor = Election(kv, b"e").campaign(b"next", ttl=5).acquire()
        await loop.sleep(0.2)
        assert not settled(successor)
    # Leaving the block resigned: the successor leads.
    follower = await successor
    assert (await election.leader()).value == b"next"
    await follower.resign()
    with pytest.raises(KeyNotFound):
        await election.leader()
    with pytest.raises(NotLeader):
        await follower.proclaim(b"x")


async def test_bad_input_is_refused_before_sending(loop: Any) -> None:
    client = loop.client(url="http://127.0.0.1:9")
    with pytest.raises(TypeError):
        Lock(client, "name")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Lock(client, b"")
    with pytest.raises(ValueError):
        Lock(client, b"x", ttl=0)
    with pytest.raises(ValueError):
        Lock(client, b"x", timeout=-1)
    with pytest.raises(TypeError):
        Election(client, b"e").campaign("v")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Election(client, None)  # type: ignore[arg-type]
