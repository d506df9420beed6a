"""The txetcd KV and txn core against real etcd 3.4 and 3.5 servers."""

from __future__ import annotations

import contextlib
import dataclasses
import random
import subprocess
import sys
from typing import Any

import pytest

from txetcd import (
    Client,
    Compacted,
    CompCreated,
    CompLease,
    CompModified,
    CompValue,
    CompVersion,
    Deleted,
    DuplicateKey,
    Failed,
    FutureRevision,
    KeySet,
    OpDel,
    OpGet,
    OpSet,
    OpTxn,
    Range,
    RequestTooLarge,
    Revision,
    Success,
    Timeout,
    TooManyOps,
    Transaction,
    TxnResult,
    Unavailable,
)
from txetcd.embedded import EtcdProcess

from .conftest import Loop
from .faults import ThreadProxy


@pytest.fixture
def client(kv: Client) -> Client:
    """This module's tests run on both loops: ``client`` is the loop's (see conftest ``kv``)."""
    return kv


async def fill(client: Client, count: int, prefix: bytes = b"k/") -> list[int]:
    revisions = []
    for i in range(count):
        rev = await client.set(prefix + b"%04d" % i, b"v%d" % i)
        revisions.append(rev.revision)
    return revisions


async def grant(client: Client, ttl: int = 30) -> int:
    reply = await client.transport.call("lease/grant", {"TTL": ttl}, idempotent=False)
    return int(reply["ID"])


async def test_version_detection(loop: Loop, client: Client, etcd: EtcdProcess) -> None:
    version = await client.version()
    assert ".".join(map(str, version)) == etcd.version
    assert client.transport._prefixes[client.transport.endpoint] == "/v3"
    status = await client.status()
    assert status.version == etcd.version
    assert status.header.revision >= 1 and status.db_size > 0 and status.leader != 0


async def test_put_get_typed_results(loop: Loop, client: Client) -> None:
    rev = await client.set(b"a", b"1")
    assert isinstance(rev, Revision) and isinstance(rev.revision, int) and rev.previous is None
    rng = await client.get(b"a")
    assert isinstance(rng, Range) and rng.count == 1 and rng.more is False
    kv = rng.kvs[0]
    assert (kv.key, kv.value, kv.version, kv.lease) == (b"a", b"1", 1, 0)
    assert kv.create_revision == kv.mod_revision == rev.revision
    with pytest.raises(dataclasses.FrozenInstanceError):
        kv.value = b"2"  # type: ignore[misc]
    # An empty value is omitted by the gateway: it must decode as b"", not None.
    await client.set(b"empty", b"")
    assert (await client.get(b"empty")).kvs[0].value == b""
    missing = await client.get(b"nope")
    assert missing.kvs == [] and missing.count == 0 and missing.more is False


async def test_put_options(loop: Loop, client: Client) -> None:
    first = await client.set(b"p", b"one")
    second = await client.set(b"p", b"two", return_previous=True)
    assert second.previous is not None and second.previous.value == b"one"
    assert second.previous.mod_revision == first.revision
    lease = await grant(client)
    await client.set(b"p", b"three", lease=lease)
    assert (await client.get(b"p")).kvs[0].lease == lease
    await client.set(b"p", b"", lease=lease, ignore_value=True)  # keeps the value "three"
    kv = (await client.get(b"p")).kvs[0]
    assert kv.value == b"three" and kv.lease == lease and kv.version == 4
    await client.set(b"p", b"four", ignore_lease=True)
    kv = (await client.get(b"p")).kvs[0]
    assert kv.value == b"four" and kv.lease == lease


async def test_range_options(loop: Loop, client: Client) -> None:
    revisions = await fill(client, 10)
    await client.set(b"k/0003", b"zzz")  # k/0003 now has version 2 and the latest mod revision
    everything = KeySet(b"k/", prefix=True)
    limited = await client.get(everything, limit=3)
    assert [kv.key for kv in limited.kvs] == [b"k/0000", b"k/0001", b"k/0002"]
    assert limited.more is True and limited.count == 10
    old = await client.get(b"k/0003", revision=revisions[3])
    assert old.kvs[0].value == b"v3"
    desc = await client.get(everything, sort_order="DESCEND", sort_target="KEY", limit=2)
    assert [kv.key for kv in desc.kvs] == [b"k/0009", b"k/0008"]
    by_value = await client.get(everything, sort_order="DESCEND", sort_target="VALUE", limit=1)
    assert by_value.kvs[0].key == b"k/0003"
    by_version = await client.get(everything, sort_order="DESCEND", sort_target="VERSION",
                                  limit=1)
    assert by_version.kvs[0].key == b"k/0003"
    by_mod = await client.get(everything, sort_order="ASCEND", sort_target="MOD")
    assert by_mod.kvs[-1].key == b"k/0003"
    by_create = await client.get(everything, sort_order="DESCEND", sort_target="CREATE", limit=1)
    assert by_create.kvs[0].key == b"k/0009"
    keys = await client.get(everything, keys_only=True)
    assert all(kv.value == b"" for kv in keys.kvs) and len(keys.kvs) == 10
    counted = await client.get(everything, count_only=True)
    assert counted.kvs == [] and counted.count == 10
    local = await client.get(everything, serializable=True)
    assert len(local.kvs) == 10
    recent = await client.get(everything, min_mod_revision=revisions[5])
    assert sorted(kv.key for kv in recent.kvs) == [b"k/0003"] + [b"k/%04d" % i for i in
                                                                 range(5, 10)]
    early = await client.get(everything, max_create_revision=revisions[1])
    assert [kv.key for kv in early.kvs] == [b"k/0000", b"k/0001"]
    late = await client.get(everything, min_create_revision=revisions[8])
    assert [kv.key for kv in late.kvs] == [b"k/0008", b"k/0009"]
    stale = await client.get(everything, max_mod_revision=revisions[2])
    assert [kv.key for kv in stale.kvs] == [b"k/0000", b"k/0001", b"k/0002"]
    between = await client.get(b"k/0002", range_end=b"k/0005")
    assert [kv.key for kv in between.kvs] == [b"k/0002", b"k/0003", b"k/0004"]
    tail = await client.get(KeySet(b"k/0008", range_end=b"\0"))
    assert [kv.key for kv in tail.kvs] == [b"k/0008", b"k/0009"]


async def test_scan_pages_through_any_size(loop: Loop, client: Client) -> None:
    await client.txn(success=[OpSet(b"s/%05d" % i, b"x") for i in range(120)])
    for chunk in range(1, 21):
        await client.txn(success=[OpSet(b"s/%05d" % (chunk * 120 + i), b"x") for i in range(120)])
    expected = [b"s/%05d" % i for i in range(2520)]
    seen = [kv.key async for kv in client.scan(KeySet(b"s/", prefix=True), page_size=1000)]
    assert seen == expected
    backwards = [kv.key async for kv in client.scan(KeySet(b"s/", prefix=True), page_size=333,
                                                    reverse=True)]
    assert backwards == expected[::-1]
    some = [kv.key async for kv in client.scan(KeySet(b"s/", prefix=True), page_size=7,
                                               limit=20)]
    assert some == expected[:20]
    # The scan is one snapshot: writes made while it runs are not seen.
    seen_during = []
    async for kv in client.scan(KeySet(b"s/", prefix=True), page_size=500):
        seen_during.append(kv.key)
        if len(seen_during) == 1:
            await client.set(b"s/99999", b"late")
            await client.delete(b"s/02000")
    assert seen_during == expected


async def test_delete_key_range_prefix(loop: Loop, client: Client) -> None:
    await fill(client, 6, b"d/")
    one = await client.delete(b"d/0000", return_previous=True)
    assert isinstance(one, Deleted) and one.deleted == 1 and one.previous[0].value == b"v0"
    ranged = await client.delete(KeySet(b"d/0001", range_end=b"d/0003"))
    assert ranged.deleted == 2 and ranged.previous == []
    rest = await client.delete(KeySet(b"d/", prefix=True), return_previous=True)
    assert rest.deleted == 3 and [kv.key for kv in rest.previous] == [b"d/0003", b"d/0004",
                                                                      b"d/0005"]
    none = await client.delete(b"d/0000")
    assert none.deleted == 0


async def test_prefix_with_trailing_ff(loop: Loop, client: Client) -> None:
    await client.set(b"ab\xff", b"1")
    await client.set(b"ab\xff\xff\x01", b"2")
    await client.set(b"ac", b"3")
    await client.set(b"ab", b"4")
    inside = await client.get(KeySet(b"ab\xff", prefix=True))
    assert [kv.key for kv in inside.kvs] == [b"ab\xff", b"ab\xff\xff\x01"]
    await client.set(b"\xff\xff", b"5")
    top = await client.get(KeySet(b"\xff", prefix=True))
    assert [kv.key for kv in top.kvs] == [b"\xff\xff"]


async def test_compaction_and_revision_errors(loop: Loop, fresh_etcd: EtcdProcess) -> None:
    client = loop.client(url=fresh_etcd.url)
    try:
        revisions = await fill(client, 5)
        await client.compact(revisions[3], physical=True)
        with pytest.raises(Compacted):
            await client.get(b"k/0000", revision=revisions[1])
        assert (await client.get(b"k/0000", revision=revisions[3])).kvs[0].value == b"v0"
        with pytest.raises(FutureRevision):
            await client.get(b"k/0000", revision=revisions[-1] + 1000)
        with pytest.raises(Compacted):
            await client.compact(revisions[2])
    finally:
        await client.close()


async def test_member_list(loop: Loop, client: Client, etcd: EtcdProcess) -> None:
    members = await client.member_list()
    assert len(members) == 1 and members[0].client_urls == [etcd.url]
    assert members[0].id != 0 and members[0].name == "default"


async def test_txn_compare_targets(loop: Loop, client: Client) -> None:
    first = await client.set(b"t", b"v1")
    lease = await grant(client)
    await client.set(b"leased", b"x", lease=lease)
    ok = await client.submit(Transaction(
        compare=[CompValue(b"t", "==", b"v1"), CompVersion(b"t", "==", 1),
                 CompCreated(b"t", "==", first.revision), CompModified(b"t", "<",
                                                                        first.revision + 100),
                 CompLease(b"leased", "==", lease), CompCreated(b"absent", "==", 0)],
        success=[OpSet(b"t", b"v2"), OpGet(b"t")],
        failure=[OpGet(b"t")]))
    assert isinstance(ok, Success)
    assert isinstance(ok.responses[0], Revision) and isinstance(ok.responses[1], Range)
    assert ok.responses[1].kvs[0].value == b"v2"
    with pytest.raises(Failed) as failed:
        await client.submit(Transaction(compare=[CompValue(b"t", "==", b"v1")],
                                        success=[OpSet(b"t", b"never")],
                                        failure=[OpGet(b"t"), OpDel(b"leased")]))
    assert failed.value.responses[0].kvs[0].value == b"v2"
    assert failed.value.responses[1].deleted == 1
    result = await client.txn(compare=[CompVersion(b"t", "!=", 2)], success=[OpSet(b"t", b"no")])
    assert isinstance(result, TxnResult) and result.succeeded is False


async def test_txn_range_compare_and_nested(loop: Loop, client: Client) -> None:
    await fill(client, 3, b"r/")
    group = KeySet(b"r/", prefix=True)
    newest = (await client.get(group, sort_order="DESCEND", sort_target="MOD",
                               limit=1)).kvs[0].mod_revision
    # "no key in r/ changed after `newest`": a guard over a whole range.
    guard = CompModified(group, "<", newest + 1)
    inner = Transaction(compare=[CompValue(b"r/0001", "==", b"v1")],
                        success=[OpSet(b"inner", b"yes")], failure=[OpSet(b"inner", b"no")])
    result = await client.txn(compare=[guard], success=[OpTxn(inner), OpGet(b"inner")])
    assert result.succeeded
    nested = result.responses[0]
    assert isinstance(nested, TxnResult) and nested.succeeded
    read = result.responses[1]
    assert isinstance(read, Range) and read.kvs[0].value == b"yes"
    await client.set(b"r/0000", b"changed")
    again = await client.txn(compare=[guard], success=[OpSet(b"inner", b"again")])
    assert again.succeeded is False


async def test_txn_limits_checked_before_sending(loop: Loop, client: Client) -> None:
    too_many = Transaction(success=[OpSet(b"m/%d" % i, b"x") for i in range(129)])
    with pytest.raises(TooManyOps):
        client.txn(too_many)
    assert (await client.get(KeySet(b"m/", prefix=True), count_only=True)).count == 0
    exactly = Transaction(success=[OpSet(b"m/%d" % i, b"x") for i in range(128)])
    assert (await client.txn(exactly)).succeeded
    huge = b"x" * (2 * 1024 * 1024)
    with pytest.raises(RequestTooLarge):
        await client.set(b"big", huge)
    nested = Transaction(success=[OpTxn(too_many)])
    with pytest.raises(TooManyOps):
        client.txn(nested)


async def test_server_side_limit_errors_are_typed(loop: Loop, etcd: EtcdProcess) -> None:
    # A client configured with looser limits lets the server reject, which must stay typed.
    loose = loop.client(url=etcd.url, max_txn_ops=10_000, max_request_bytes=64 * 2 ** 20)
    try:
        with pytest.raises(TooManyOps):
            await loose.txn(success=[OpSet(b"m/%d" % i, b"x") for i in range(129)])
        with pytest.raises(RequestTooLarge):
            await loose.set(b"big", b"x" * (2 * 1024 * 1024))
        with pytest.raises(DuplicateKey):
            await loose.txn(success=[OpSet(b"dup", b"1"), OpSet(b"dup", b"2")])
        assert (await loose.get(b"dup")).count == 0
        assert (await loose.get(b"big")).count == 0
    finally:
        await loose.close()


async def test_namespace_is_transparent(loop: Loop, client: Client, etcd: EtcdProcess) -> None:
    app = loop.client(url=etcd.url, namespace=b"app/")
    other = loop.client(url=etcd.url, namespace=b"other/")
    try:
        await app.set(b"a", b"1")
        await app.set(b"b", b"2")
        await other.set(b"a", b"other")
        await client.set(b"app", b"outside")  # sorts just before the namespace
        assert [kv.key for kv in (await client.get(KeySet(b"app/", prefix=True))).kvs] == [
            b"app/a", b"app/b"]
        assert (await app.get(b"a")).kvs[0].key == b"a"
        everything = await app.get(KeySet.all())
        assert [(kv.key, kv.value) for kv in everything.kvs] == [(b"a", b"1"), (b"b", b"2")]
        tail = await app.get(KeySet(b"a", range_end=b"\0"))
        assert [kv.key for kv in tail.kvs] == [b"a", b"b"]
        assert [kv.key async for kv in app.scan(KeySet.all(), page_size=1)] == [b"a", b"b"]
        txn = await app.txn(compare=[CompValue(b"a", "==", b"1")],
                            success=[OpGet(KeySet(b"", prefix=True)), OpDel(b"b",
                                                                            prev_kv=True)])
        listed, deleted = txn.responses
        assert isinstance(listed, Range) and isinstance(deleted, Deleted)
        assert [kv.key for kv in listed.kvs] == [b"a", b"b"]
        assert deleted.previous[0].key == b"b"
        gone = await app.delete(KeySet.all())
        assert gone.deleted == 1
        assert (await other.get(b"a")).kvs[0].value == b"other"
        assert (await client.get(b"app")).kvs[0].value == b"outside"
    finally:
        await app.close()
        await other.close()


def test_bad_input_raises_before_sending(loop: Loop) -> None:
    # Port 9 (discard) is never an etcd: if anything were sent, the error would differ.
    client = loop.client(url="http://127.0.0.1:9")
    with pytest.raises(TypeError):
        client.get("text-key")
    with pytest.raises(ValueError):
        client.get(b"k", limit=-1)
    with pytest.raises(ValueError):
        client.get(b"k", sort_target="SIZE")
    with pytest.raises(ValueError):
        client.get(b"k", sort_order="UP")
    with pytest.raises(TypeError):
        client.get(b"k", revision="5")
    with pytest.raises(TypeError):
        client.get(b"k", revision=True)
    with pytest.raises(TypeError):
        client.set(b"k", "text")
    with pytest.raises(TypeError):
        client.set("k", b"v")
    with pytest.raises(ValueError):
        client.set(b"", b"v")
    with pytest.raises(TypeError):
        client.delete(42)
    with pytest.raises(ValueError):
        CompVersion(b"k", "=>", 1)
    with pytest.raises(TypeError):
        CompValue(b"k", "==", "text")
    with pytest.raises(TypeError):
        Transaction(success=["put"])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        KeySet(b"a", range_end=b"b", prefix=True)
    with pytest.raises(TypeError):
        loop.client(namespace="app/")
    with pytest.raises(ValueError):
        loop.client(url="etcd:2379")
    with pytest.raises(ValueError):
        loop.client(pool_size=0)


async def test_timeout_default_and_per_call(loop: Loop, fresh_etcd: EtcdProcess) -> None:
    client = loop.client(url=fresh_etcd.url, timeout=0.5)
    try:
        await client.set(b"k", b"v")
        fresh_etcd.pause()
        await loop.sleep(0.1)  # SIGSTOP takes a moment to stop all of etcd's threads
        with pytest.raises(Timeout) as read_timeout:
            await client.get(b"k")
        assert read_timeout.value.outcome_unknown is False
        with pytest.raises(Timeout) as write_timeout:
            await client.set(b"k", b"w", timeout=0.3)
        assert write_timeout.value.outcome_unknown is True
    finally:
        fresh_etcd.resume()
        await client.close()


async def test_pool_size_is_configurable(loop: Loop, etcd: EtcdProcess) -> None:
    # Unbatched: this tests 50 separate requests through 4 connections, one revision each.
    client = loop.client(url=etcd.url, pool_size=4, batching=False)
    try:
        assert client.driver.unary.max_idle == 4
        results = await loop.gather(
            *[client.set(b"pool/%d" % i, b"%d" % i) for i in range(50)])
        assert len({r.revision for r in results}) == 50
        assert (await client.get(KeySet(b"pool/", prefix=True), count_only=True)).count == 50
    finally:
        await client.delete(KeySet(b"pool/", prefix=True))
        await client.close()


async def test_write_with_unknown_outcome_is_never_resent(loop: Loop, etcd: EtcdProcess) -> None:
    proxy = ThreadProxy("127.0.0.1", etcd.client_port)
    client = loop.client(url=proxy.url)
    try:
        await client.delete(KeySet(b"once/", prefix=True))
        proxy.cut_responses = True
        before = proxy.requests
        with pytest.raises(Unavailable) as lost:
            await client.set(b"once/k", b"applied?")
        assert lost.value.outcome_unknown is True
        assert proxy.requests - before == 1  # sent once, never again
        # It was in fact applied: that is exactly why it must not be resent.
        direct = loop.client(url=etcd.url)
        assert (await direct.get(b"once/k")).kvs[0].value == b"applied?"
        await direct.close()
        # A read in the same situation is retried (and then fails: every answer is cut).
        before = proxy.requests
        with pytest.raises(Unavailable) as read_lost:
            await client.get(b"once/k")
        assert read_lost.value.outcome_unknown is False
        assert proxy.requests - before > 1
        proxy.cut_responses = False
        assert (await client.get(b"once/k")).kvs[0].value == b"applied?"
    finally:
        await client.close()
        proxy.close()


async def test_failover_to_next_endpoint(loop: Loop, etcd: EtcdProcess) -> None:
    dead = "http://127.0.0.1:9"
    client = loop.client(endpoints=[dead, etcd.url])
    try:
        # Connection refused means nothing was sent, so even a write may go to the next member.
        rev = await client.set(b"fo", b"1")
        assert rev.revision > 0
        assert client.transport.endpoint == etcd.url
        assert (await client.get(b"fo")).kvs[0].value == b"1"
    finally:
        await client.delete(b"fo")
        await client.close()


@pytest.mark.parametrize("batching", [True, False], ids=["batched", "unbatched"])
async def test_cancel_never_retries_and_frees_the_slot(
        loop: Loop, fresh_etcd: EtcdProcess, batching: bool) -> None:
    """A cancelled call is not mistaken for a failure worth a retry. Unbatched (as every txn,
    lease and maintenance call) the cancel reaches the request and closes its connection;
    batched, the op was sent and only its caller stops waiting. Either way the one slot of a
    ``pool_size=1`` client comes back."""
    proxy = ThreadProxy("127.0.0.1", fresh_etcd.client_port)
    client = loop.client(url=proxy.url, batching=batching, pool_size=1)
    try:
        await client.set(b"k", b"1")
        fresh_etcd.pause()  # the request hangs at the server, as a slow one would
        before = proxy.requests
        request = client.get(b"k")
        await loop.sleep(0.2)
        request.cancel()
        with pytest.raises(loop.CancelledError):
            await request
        await loop.sleep(0.5)
        assert proxy.requests - before == 1
        fresh_etcd.resume()
        # The slot came back: with pool_size=1 this waited until its deadline otherwise.
        assert (await client.get(b"k", timeout=5)).kvs[0].value == b"1"
        assert proxy.requests - before == 2
    finally:
        fresh_etcd.resume()
        await client.close()
        proxy.close()


async def test_deadlines_passing_while_waiting_leave_no_slot_behind(
        loop: Loop, fresh_etcd: EtcdProcess) -> None:
    """Calls whose deadlines pass while they wait for the one slot or for an etcd that stalls
    and recovers: afterwards the slot is free, so a call with time to spare is answered (it
    timed out instead when an expired request kept its slot)."""
    client = loop.client(url=fresh_etcd.url, batching=False, pool_size=1)
    rng = random.Random(8)
    try:
        await client.set(b"storm", b"1")
        calls = []
        for step in range(40):
            if step % 8 == 0:
                fresh_etcd.pause()
            elif step % 8 == 4:
                fresh_etcd.resume()
            calls += [client.get(b"storm", timeout=rng.uniform(0.005, 0.1)) for _ in range(5)]
            await loop.sleep(rng.uniform(0.0, 0.03))
        fresh_etcd.resume()
        for call in calls:
            with contextlib.suppress(Timeout):
                assert (await call).kvs[0].value == b"1"
        assert (await client.get(b"storm", timeout=5)).kvs[0].value == b"1"
    finally:
        fresh_etcd.resume()
        await client.close()


async def test_scan_prefetch_is_dropped_when_the_consumer_stops(loop: Loop, client: Client) -> None:
    await client.txn(success=[OpSet(b"early/%03d" % i, b"x") for i in range(50)])
    seen = []
    async for kv in client.scan(KeySet(b"early/", prefix=True), page_size=10):
        seen.append(kv.key)
        if len(seen) == 3:
            break  # the second page is already on its way; it must be cancelled quietly
    assert seen == [b"early/000", b"early/001", b"early/002"]
    with pytest.raises(ValueError, match="limit"):
        [kv async for kv in client.scan(KeySet(b"early/", prefix=True), limit=-1)]
    with pytest.raises(ValueError, match="page_size must be >= 1"):
        [kv async for kv in client.scan(KeySet(b"early/", prefix=True), page_size=-1)]
    assert [kv.key async for kv in client.scan(KeySet(b"early/", prefix=True), limit=0)] == []
    assert (await client.get(KeySet(b"early/", prefix=True), count_only=True)).count == 50


async def test_scan_sizes_pages_by_bytes(loop: Loop, etcd: EtcdProcess) -> None:
    """With ``page_bytes``, small rows go in big pages and big rows in small ones."""
    proxy = ThreadProxy("127.0.0.1", etcd.client_port)
    client = loop.client(url=proxy.url, batching=False)
    try:
        await client.delete(KeySet(b"pb/", prefix=True))
        small = [(b"pb/s/%05d" % i, b"v") for i in range(3000)]
        big = [(b"pb/b/%03d" % i, b"x" * 10_000) for i in range(40)]
        for key, value in small + big:
            await client.set(key, value)

        async def scan(prefix: bytes, **options: Any) -> tuple[list[bytes], int]:
            before = proxy.requests
            keys = [kv.key async for kv in client.scan(KeySet(prefix, prefix=True), **options)]
            return keys, proxy.requests - before

        keys, requests = await scan(b"pb/s/", page_size=100, page_bytes=1 << 20)
        assert keys == [k for k, _ in small] and requests == 2  # 100 rows, then the rest
        keys, requests = await scan(b"pb/s/", page_size=100)
        assert keys == [k for k, _ in small] and requests == 30
        keys, requests = await scan(b"pb/b/", page_size=5, page_bytes=51_000)
        assert keys == [k for k, _ in big] and requests == 8  # 5 rows of ~10 KB a page
        keys, requests = await scan(b"pb/b/", page_size=20, page_bytes=1)
        assert keys == [k for k, _ in big] and requests == 21  # 20, then one row a page
        with pytest.raises(ValueError):
            await scan(b"pb/", page_bytes=0)
    finally:
        await client.close()
        proxy.close()


# A user's program, run as a process of its own: only txetcd imported, then gets, puts, a txn and
# the status call that reads ``GET /version``.
GETS_AND_PUTS = """
import sys
from twisted.internet import defer, task
import txetcd

async def main(reactor):
    client = txetcd.Client(reactor, sys.argv[1])
    await client.set(b"footprint/a", b"1")
    await client.submit(txetcd.Transaction(success=[txetcd.OpSet(b"footprint/b", b"2")]))
    assert [kv.value for kv in (await client.get(txetcd.KeySet(b"footprint/", prefix=True))).kvs] \\
        == [b"1", b"2"]
    await client.status()
    print(sorted(name for name in ("numpy", "flatbuffers", "treq") if name in sys.modules))

task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
"""


def test_a_program_of_gets_and_puts_loads_neither_flatbuffers_numpy_nor_treq(
        etcd: EtcdProcess) -> None:
    """flatbuffers (which imports numpy) loads with the first FlatBuffers value, treq with the
    first stream: importing them with txetcd tripled its import time and added 16 MB of RSS."""
    done = subprocess.run([sys.executable, "-c", GETS_AND_PUTS, etcd.url], capture_output=True,
                          text=True, timeout=60, check=True)
    assert done.stdout.split("\n")[-2] == "[]", done.stdout + done.stderr
