"""Leases against real etcd 3.4 and 3.5: keepalive, loss during an outage, inspection."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from txetcd import (
    Client,
    Header,
    Lease,
    LeaseExpired,
    LeaseGrant,
    LeaseInfo,
    LeaseLost,
    LeaseNotFound,
)
from txetcd.embedded import EtcdProcess

inline = pytest_twisted.ensureDeferred


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def wait_until(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    """Poll an async ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = reactor.seconds() + timeout
    while not await condition():
        assert reactor.seconds() < deadline, "condition did not hold in time"
        await sleep(0.1)


def namespaced_client(etcd: EtcdProcess) -> Iterator[Client]:
    """A client confined to the namespace b"ns/", closed afterwards."""
    c = Client(reactor, url=etcd.url, namespace=b"ns/")
    yield c
    pytest_twisted.blockon(c.close())


@pytest.fixture
def ns_client(etcd: EtcdProcess, client: Client) -> Iterator[Client]:
    """A namespaced client on the shared server (wiped by ``client``)."""
    yield from namespaced_client(etcd)


@inline
async def test_leased_key_outlives_its_ttl_while_kept_alive(client: Client) -> None:
    # etcd's minimum TTL is 2 s; kept alive every ~0.7 s, the key must survive 3 x TTL.
    async with client.lease(2) as lease:
        assert isinstance(lease, Lease) and lease.lease_id > 0 and lease.ttl == 2
        await client.set(b"leased", b"v", lease=lease)
        await sleep(6.5)
        assert not lease.lost.called
        kv = (await client.get(b"leased")).kvs[0]
        assert kv.lease == lease.lease_id
        assert 0 < await lease.remaining() <= 2
    # Leaving the block revoked the lease, and etcd deleted its key with it.
    assert lease.revoked and not lease.lost.called
    assert (await client.get(b"leased")).kvs == []
    info = await client.lease_time_to_live(lease.lease_id)
    assert info.ttl == -1 and not info.alive


@inline
async def test_stalled_process_knows_its_lease_is_gone_before_timers_run(client: Client) -> None:
    """After a stall longer than the TTL (a paused process, a blocked reactor), ``alive`` is
    false at once, before the deadline timer had a chance to run: a lease-guarded action taken
    in the first callback after the stall must not trust the lease."""
    lease = await client.lease(2, keepalive=True)
    assert lease.alive
    time.sleep(2.2)  # the reactor stalls: no keepalive, no timer
    assert not lease.alive
    await sleep(0.1)
    assert lease.lost.called and isinstance(lease.lost_reason, LeaseLost)


@inline
async def test_lease_expired_during_outage_is_reported_lost(etcd_binary) -> None:  # type: ignore[no-untyped-def]
    with EtcdProcess(etcd_binary) as server:
        client = Client(reactor, url=server.url, timeout=2.0)
        reasons: list[Exception] = []
        lease = await client.lease(2, keepalive=True, on_lost=reasons.append)
        await client.set(b"k", b"v", lease=lease)
        # A pause shorter than the TTL is bridged by retrying keepalives.
        server.pause()
        await sleep(0.8)
        server.resume()
        await sleep(1.5)
        assert not lease.lost.called and lease.alive
        # A pause longer than the TTL: the client declares the lease lost on its own clock.
        server.pause()
        try:
            reason = await lease.lost
            assert isinstance(reason, LeaseLost) and isinstance(reason, LeaseExpired)
            assert reasons == [reason] and not lease.alive
        finally:
            server.resume()
        # etcd agrees: the lease and its key are gone once the server runs again.
        async def key_gone() -> bool:
            return (await client.get(b"k")).kvs == []
        await wait_until(key_gone)
        assert (await client.lease_time_to_live(lease.lease_id)).ttl == -1
        with pytest.raises(LeaseLost):
            await lease.refresh()
        await client.close()


@inline
async def test_keepalive_notices_a_lease_revoked_elsewhere(client: Client) -> None:
    lease = await client.lease(2, keepalive=True)
    await client.lease_revoke(lease.lease_id)  # as another process would
    reason = await lease.lost  # the next keepalive (within ~TTL/3) learns that it is gone
    assert type(reason) is LeaseExpired and lease.lost_reason is reason
    with pytest.raises(LeaseExpired):
        await lease.remaining()


@inline
async def test_time_to_live_with_keys_and_lease_list(client: Client, ns_client: Client) -> None:
    granted = await ns_client.lease_grant(30)
    assert isinstance(granted, LeaseGrant) and granted.ttl == 30 and granted.header.revision > 0
    for key in (b"b", b"a"):
        await ns_client.set(key, b"v", lease=granted.lease_id)
    info = await ns_client.lease_time_to_live(granted.lease_id, keys=True)
    assert isinstance(info, LeaseInfo) and info.alive
    assert info.lease_id == granted.lease_id and info.granted_ttl == 30 and 0 < info.ttl <= 30
    assert sorted(info.keys) == [b"a", b"b"]  # namespace stripped
    raw = await client.lease_time_to_live(granted.lease_id, keys=True)
    assert sorted(raw.keys) == [b"ns/a", b"ns/b"]
    assert (await ns_client.lease_time_to_live(granted.lease_id)).keys == []
    assert granted.lease_id in await client.leases()
    header = await client.lease_revoke(granted.lease_id)
    assert isinstance(header, Header) and header.revision > granted.header.revision
    assert granted.lease_id not in await client.leases()
    assert (await ns_client.get(b"a")).kvs == []
    with pytest.raises(LeaseNotFound):
        await client.lease_revoke(granted.lease_id)
    with pytest.raises(LeaseNotFound):
        await client.lease_revoke(0x7E57)


@inline
async def test_txaioetcd_style_lease(client: Client) -> None:
    lease = await client.lease(5, keepalive=False)
    assert lease.time_to_live == 5 and lease.header.revision > 0
    assert await lease is lease  # awaiting again does not grant a second lease
    await client.set(b"x", b"1", lease=lease)
    assert await lease.keys() == [b"x"]
    assert isinstance(await lease.refresh(), Header)
    assert 0 < await lease.remaining() <= 5
    await lease.revoke()
    assert not lease.lost.called and (await client.get(b"x")).kvs == []
    with pytest.raises(LeaseNotFound):
        await lease.revoke()
    with pytest.raises(LeaseNotFound):
        await lease


@inline
async def test_lease_with_chosen_id(client: Client) -> None:
    async with client.lease(10, lease_id=0x1234, keepalive=False) as lease:
        assert lease.lease_id == 0x1234
        assert 0x1234 in await client.leases()
    assert 0x1234 not in await client.leases()


def test_bad_lease_input_is_refused_before_sending() -> None:
    client = Client(reactor, url="http://127.0.0.1:9")  # nothing listens: nothing may be sent
    for bad, error in ((0, ValueError), (-5, ValueError), (2.5, TypeError), ("2", TypeError),
                       (True, TypeError)):
        with pytest.raises(error):
            client.lease(bad)  # type: ignore[arg-type]
        with pytest.raises(error):
            client.lease_grant(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        client.lease(5, lease_id=0)
    with pytest.raises(TypeError):
        client.lease_revoke("1")
    with pytest.raises(ValueError):
        client.lease_time_to_live(-1)


@pytest_twisted.ensureDeferred
async def test_client_close_stops_watches_and_keepalives(etcd: EtcdProcess) -> None:
    from txetcd import KeySet

    client = Client(reactor, url=etcd.url)
    observer = Client(reactor, url=etcd.url)
    try:
        lease = await client.lease(2, keepalive=True)
        await client.set(b"closing/k", b"v", lease=lease)
        watch = client.watch(KeySet(b"closing/", prefix=True), lambda event: None)
        await watch.when_started()
        await client.close()
        await watch.done  # the stream is closed, not left running
        # Nobody keeps the lease alive any more: etcd expires it and its key.
        for _ in range(60):
            if not (await observer.get(b"closing/k")).kvs:
                break
            await deferLater(reactor, 0.1, lambda: None)
        assert (await observer.get(b"closing/k")).kvs == []
        assert not lease.revoked and lease.lost_reason is None
    finally:
        await observer.close()
