"""Leases against real etcd 3.4 and 3.5, on both event loops (the ``loop`` fixture): keepalive,
loss during an outage, inspection, txaioetcd's lease calls."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from txetcd import (
    Header,
    KeySet,
    Lease,
    LeaseExpired,
    LeaseGrant,
    LeaseInfo,
    LeaseLost,
    LeaseNotFound,
)
from txetcd.embedded import EtcdProcess


async def wait_until(loop: Any, condition: Callable[[], Awaitable[bool]],
                     timeout: float = 10.0) -> None:
    """Poll an async ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "condition did not hold in time"
        await loop.sleep(0.1)


async def test_leased_key_outlives_its_ttl_while_kept_alive(loop: Any, kv: Any) -> None:
    # etcd's minimum TTL is 2 s; kept alive every ~0.7 s, the key must survive 2 x TTL.
    async with kv.lease(2) as lease:
        assert isinstance(lease, Lease) and lease.lease_id > 0 and lease.ttl == 2
        await kv.set(b"leased", b"v", lease=lease)
        await loop.sleep(4.5)
        assert lease.lost_reason is None and lease.alive
        kv_ = (await kv.get(b"leased")).kvs[0]
        assert kv_.lease == lease.lease_id
        assert 0 < await lease.remaining() <= 2
    # Leaving the block revoked the lease, and etcd deleted its key with it.
    assert lease.revoked and lease.lost_reason is None
    assert (await kv.get(b"leased")).kvs == []
    info = await kv.lease_time_to_live(lease.lease_id)
    assert info.ttl == -1 and not info.alive


async def test_stalled_process_knows_its_lease_is_gone_before_timers_run(loop: Any,
                                                                         kv: Any) -> None:
    """After a stall longer than the TTL (a paused process, a blocked loop), ``alive`` is
    false at once, before the deadline timer had a chance to run: a lease-guarded action taken
    in the first callback after the stall must not trust the lease."""
    lease = await kv.lease(2, keepalive=True)
    assert lease.alive
    time.sleep(2.2)  # the loop stalls: no keepalive, no timer
    assert not lease.alive
    await loop.sleep(0.1)
    assert isinstance(lease.lost_reason, LeaseLost)
    assert await lease.lost is lease.lost_reason


async def test_lease_expired_during_outage_is_reported_lost(loop: Any,
                                                            etcd_binary: Any) -> None:
    with EtcdProcess(etcd_binary) as server:
        client = loop.client(url=server.url, timeout=2.0)
        reasons: list[Exception] = []
        lease = await client.lease(2, keepalive=True, on_lost=reasons.append)
        await client.set(b"k", b"v", lease=lease)
        # A pause shorter than the TTL is bridged by retrying keepalives.
        server.pause()
        await loop.sleep(0.8)
        server.resume()
        await loop.sleep(1.5)
        assert lease.lost_reason is None and lease.alive
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
        await wait_until(loop, key_gone)
        assert (await client.lease_time_to_live(lease.lease_id)).ttl == -1
        with pytest.raises(LeaseLost):
            await lease.refresh()


async def test_keepalive_notices_a_lease_revoked_elsewhere(loop: Any, kv: Any) -> None:
    lease = await kv.lease(2, keepalive=True)
    await kv.lease_revoke(lease.lease_id)  # as another process would
    reason = await lease.lost  # the next keepalive (within ~TTL/3) learns that it is gone
    assert type(reason) is LeaseExpired and lease.lost_reason is reason
    with pytest.raises(LeaseExpired):
        await lease.remaining()


async def test_time_to_live_with_keys_and_lease_list(loop: Any, etcd: EtcdProcess,
                                                     kv: Any) -> None:
    ns_client = loop.client(url=etcd.url, namespace=b"ns/")
    granted = await ns_client.lease_grant(30)
    assert isinstance(granted, LeaseGrant) and granted.ttl == 30 and granted.header.revision > 0
    for key in (b"b", b"a"):
        await ns_client.set(key, b"v", lease=granted.lease_id)
    info = await ns_client.lease_time_to_live(granted.lease_id, keys=True)
    assert isinstance(info, LeaseInfo) and info.alive
    assert info.lease_id == granted.lease_id and info.granted_ttl == 30 and 0 < info.ttl <= 30
    assert sorted(info.keys) == [b"a", b"b"]  # namespace stripped
    raw = await kv.lease_time_to_live(granted.lease_id, keys=True)
    assert sorted(raw.keys) == [b"ns/a", b"ns/b"]
    assert (await ns_client.lease_time_to_live(granted.lease_id)).keys == []
    assert granted.lease_id in await kv.leases()
    header = await kv.lease_revoke(granted.lease_id)
    assert isinstance(header, Header) and header.revision > granted.header.revision
    assert granted.lease_id not in await kv.leases()
    assert (await ns_client.get(b"a")).kvs == []
    with pytest.raises(LeaseNotFound):
        await kv.lease_revoke(granted.lease_id)
    with pytest.raises(LeaseNotFound):
        await kv.lease_revoke(0x7E57)


async def test_txaioetcd_style_lease(loop: Any, kv: Any) -> None:
    lease = await kv.lease(5, keepalive=False)
    assert lease.time_to_live == 5 and lease.header.revision > 0
    assert await lease is lease  # awaiting again does not grant a second lease
    await kv.set(b"x", b"1", lease=lease)
    assert await lease.keys() == [b"x"]
    assert isinstance(await lease.refresh(), Header)
    assert 0 < await lease.remaining() <= 5
    await lease.revoke()
    assert lease.lost_reason is None and (await kv.get(b"x")).kvs == []
    with pytest.raises(LeaseNotFound):
        await lease.revoke()
    with pytest.raises(LeaseNotFound):
        await lease


async def test_lease_with_chosen_id(loop: Any, kv: Any) -> None:
    async with kv.lease(10, lease_id=0x1234, keepalive=False) as lease:
        assert lease.lease_id == 0x1234
        assert 0x1234 in await kv.leases()
    assert 0x1234 not in await kv.leases()


async def test_bad_lease_input_is_refused_before_sending(loop: Any) -> None:
    client = loop.client(url="http://127.0.0.1:9")  # nothing listens: nothing may be sent
    for bad, error in ((0, ValueError), (-5, ValueError), (2.5, TypeError), ("2", TypeError),
                       (True, TypeError)):
        with pytest.raises(error):
            client.lease(bad)
        with pytest.raises(error):
            client.lease_grant(bad)
    with pytest.raises(ValueError):
        client.lease(5, lease_id=0)
    with pytest.raises(TypeError):
        client.lease_revoke("1")
    with pytest.raises(ValueError):
        client.lease_time_to_live(-1)


async def test_client_close_stops_watches_and_keepalives(loop: Any, etcd: EtcdProcess,
                                                         kv: Any) -> None:
    client = loop.client(url=etcd.url)
    lease = await client.lease(2, keepalive=True)
    await client.set(b"closing/k", b"v", lease=lease)
    watch = client.watch(KeySet(b"closing/", prefix=True), lambda event: None)
    await watch.when_started()
    await client.close()
    await watch.done  # the stream is closed, not left running
    # Nobody keeps the lease alive any more: etcd expires it and its key.

    async def expired() -> bool:
        return not (await kv.get(b"closing/k")).kvs
    await wait_until(loop, expired)
    assert not lease.revoked and lease.lost_reason is None
