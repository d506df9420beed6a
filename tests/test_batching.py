"""Auto-batching (txetcd.batch) against real etcd 3.4 and 3.5: every caller gets its own answer."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from txetcd import (
    Client,
    Deleted,
    KeySet,
    LeaseNotFound,
    ProtocolError,
    Range,
    Revision,
    Timeout,
    Unavailable,
)
from txetcd.batch import EAGER_FLUSH, EAGER_IN_FLIGHT, Batcher
from txetcd.embedded import EtcdProcess

from .conftest import Loop
from .faults import ThreadProxy


class PathLog:
    """Records the gateway path of every request a client sends (wraps the real transport's
    ``call`` and ``request``)."""

    def __init__(self, client: Client) -> None:
        self.paths: list[str] = []
        self.bodies: list[Any] = []
        self.events: list[tuple[str, int]] = []  # ("sent" | "answered", request number)
        real = client.transport.call

        async def call(path: str, body: Any, **kwargs: Any) -> Any:
            number = len(self.paths)
            self.paths.append(path)
            # A batch's body comes encoded already (bytes): what etcd receives.
            self.bodies.append(json.loads(body) if isinstance(body, bytes) else body)
            self.events.append(("sent", number))
            try:
                return await real(path, body, **kwargs)
            finally:
                self.events.append(("answered", number))

        real_request = client.transport.request

        def request(path: str, data: bytes, **kwargs: Any) -> Any:
            # A lone op's request: the same record, on its callbacks instead of a coroutine.
            number = len(self.paths)
            self.paths.append(path)
            self.bodies.append(json.loads(data))
            self.events.append(("sent", number))
            for outcome in ("on_reply", "on_error"):
                kwargs[outcome] = self._answered(number, kwargs[outcome])
            return real_request(path, data, **kwargs)

        client.transport.call = call  # type: ignore[method-assign]
        client.transport.request = request  # type: ignore[method-assign]

    def _answered(self, number: int, done: Callable[[Any], None]) -> Callable[[Any], None]:
        """``done``, recording first that request ``number`` was answered."""
        def record(result: Any) -> None:
            self.events.append(("answered", number))
            done(result)

        return record


@pytest.fixture
def client(kv: Client) -> Client:
    """This module's tests run on both loops: ``client`` is the loop's (see conftest ``kv``)."""
    return kv


@pytest.fixture
def unbatched(loop: Loop, etcd: EtcdProcess) -> Client:
    return loop.client(url=etcd.url, batching=False)


async def test_ten_thousand_concurrent_puts_each_acknowledged_and_stored(
        loop: Loop, client: Client) -> None:
    count = 10_000
    results = await loop.gather(
        *[client.set(b"many/%05d" % i, b"value-%d" % i) for i in range(count)])
    assert all(isinstance(r, Revision) and r.revision > 0 for r in results)
    assert client.batcher is not None
    # Coalesced: many ops per txn (16 or more), not one request per put.
    assert client.batcher.requests <= count // 10
    stored = [kv async for kv in client.scan(KeySet(b"many/", prefix=True), page_size=5000)]
    assert [(kv.key, kv.value) for kv in stored] == [
        (b"many/%05d" % i, b"value-%d" % i) for i in range(count)]
    # Each put's revision is the one its key was written at.
    assert [kv.mod_revision for kv in stored] == [r.revision for r in results]


async def test_a_lone_op_is_a_plain_request(loop: Loop, client: Client) -> None:
    log = PathLog(client)
    await client.set(b"alone", b"1")
    await client.get(b"alone")
    await client.delete(b"alone")
    assert log.paths == ["kv/put", "kv/range", "kv/deleterange"]


async def test_ops_behind_one_in_flight_are_one_txn_with_per_op_options(
        loop: Loop, client: Client) -> None:
    await loop.gather(*[client.set(b"o/%d" % i, b"old%d" % i) for i in range(5)])
    await loop.sleep(0.01)  # nothing in flight any more
    log = PathLog(client)
    put, count, keys, limited, desc, gone = await loop.gather(*[
        client.set(b"o/0", b"new0", return_previous=True),
        client.get(KeySet(b"o/", prefix=True), count_only=True),
        client.get(KeySet(b"o/", prefix=True), keys_only=True),
        client.get(KeySet(b"o/", prefix=True), limit=2),
        client.get(KeySet(b"o/", prefix=True), sort_order="DESCEND", limit=1),
        client.delete(b"o/4", return_previous=True),
    ])
    # The first op went at once (nothing was in flight); the rest of the turn queued behind it
    # and went as one txn.
    assert log.paths == ["kv/put", "kv/txn"]
    assert len(log.bodies[1]["success"]) == 5
    assert put.previous.value == b"old0"
    assert count.count == 5 and count.kvs == []
    assert [kv.value for kv in keys.kvs] == [b""] * 5
    assert [kv.key for kv in limited.kvs] == [b"o/0", b"o/1"] and limited.more
    # Ops apply in issue order: the reads of o/ waited for the put of o/0 issued before them.
    assert limited.kvs[0].value == b"new0"
    assert [kv.key for kv in desc.kvs] == [b"o/4"]
    assert gone.deleted == 1 and gone.previous[0].value == b"old4"
    # The txn applied atomically: one shared revision in every header, after the put's.
    assert len({r.header.revision for r in (count, keys, limited, desc, gone)}) == 1
    assert put.header.revision < gone.header.revision


async def test_duplicate_keys_in_one_window_each_get_their_own_answer(
        loop: Loop, client: Client) -> None:
    await client.set(b"d/x", b"0")
    log = PathLog(client)
    first, second, wipe, third, read = await loop.gather(*[
        client.set(b"d/x", b"1", return_previous=True),
        client.set(b"d/x", b"2", return_previous=True),
        client.delete(KeySet(b"d/", prefix=True)),  # overlaps the puts: its own txn
        client.set(b"d/y", b"3"),  # inside the deleted range: after the delete
        client.get(b"d/x"),
    ])
    # etcd refuses a txn that writes one key twice, so the window went as several requests.
    assert len(log.paths) >= 3
    assert isinstance(first, Revision) and isinstance(second, Revision)
    assert first.previous is not None and second.previous is not None
    assert first.previous.value == b"0" and second.previous.value == b"1"
    assert second.revision > first.revision
    assert isinstance(wipe, Deleted) and isinstance(third, Revision) and isinstance(read, Range)
    assert wipe.deleted >= 1
    assert (await client.get(b"d/y")).kvs[0].value == b"3"


async def test_conflicting_writes_apply_in_issue_order_across_batches(
        loop: Loop, client: Client) -> None:
    # The second write of each key lands in a later batch: after a full (eagerly sent) batch,
    # or in another timeout's batch. It must still apply after the first.
    calls = [client.set(b"io/k", b"first", return_previous=True)]
    calls += [client.set(b"io/other/%d" % i, b"x") for i in range(40)]
    calls += [client.set(b"io/k", b"second", return_previous=True),
              client.set(b"io/t", b"first"),
              client.set(b"io/t", b"second", timeout=5.0)]
    results = await loop.gather(*calls)
    assert results[0].previous is None and results[41].previous.value == b"first"
    assert results[41].revision > results[0].revision
    assert results[43].revision > results[42].revision
    assert (await client.get(b"io/k")).kvs[0].value == b"second"
    assert (await client.get(b"io/t")).kvs[0].value == b"second"


async def test_a_failing_op_never_fails_its_batch_mates(loop: Loop, client: Client) -> None:
    granted = await client.transport.call("lease/grant", {"TTL": 60}, idempotent=False)
    lease_id = int(granted["ID"])
    await client.transport.call("lease/revoke", {"ID": lease_id}, idempotent=True)
    log = PathLog(client)
    calls = [client.set(b"f/%02d" % i, b"ok") for i in range(20)]
    calls.insert(7, client.set(b"f/bad", b"x", lease=lease_id))
    calls.append(client.get(KeySet(b"f/", prefix=True), count_only=True))
    outcomes = await loop.settle(*calls)
    failures = [i for i, (ok, _) in enumerate(outcomes) if not ok]
    assert failures == [7]
    assert isinstance(outcomes[7][1], LeaseNotFound)
    assert all(isinstance(result, Revision) for ok, result in outcomes[:-1] if ok)
    assert (await client.get(KeySet(b"f/", prefix=True), count_only=True)).count == 20
    assert (await client.get(b"f/bad")).kvs == []
    # The refused txn was split and resent, not given up: a handful of requests, not 22.
    assert "kv/txn" in log.paths and len(log.paths) <= 17


def _plain(result: Any) -> Any:
    """A result without revisions and member IDs, which differ between any two runs."""
    if isinstance(result, Range):
        return ("range", [(kv.key, kv.value, kv.version) for kv in result.kvs], result.count,
                result.more)
    if isinstance(result, Revision):
        previous = result.previous
        return ("put", previous and (previous.key, previous.value, previous.version))
    if isinstance(result, Deleted):
        return ("deleted", result.deleted, [(kv.key, kv.value) for kv in result.previous])
    return ("error", type(result).__name__)


async def _workload(loop: Loop, client: Client) -> list[Any]:
    """Windows of concurrent ops with every option. Concurrent ops of one window touch disjoint
    keys (reads go to keys of earlier windows), so the answers are deterministic without
    batching too: the order of concurrent ops on one key is never defined."""
    answers: list[Any] = []
    for round_ in range(4):
        earlier = KeySet(b"w/%d/" % (round_ - 1), prefix=True)
        window = [client.set(b"w/%d/%d" % (round_, i), b"v%d" % i, return_previous=True)
                  for i in range(40)]
        window += [client.set(b"w/%d" % (round_ - 1), b"x", return_previous=True),
                   client.get(earlier, count_only=True),
                   client.get(earlier, keys_only=True, limit=7),
                   client.get(earlier, sort_order="DESCEND", sort_target="VALUE", limit=3),
                   client.get(b"w/missing"),
                   client.get(b"w/%d/1" % (round_ - 1), serializable=True),
                   client.delete(KeySet(b"w/%d/1" % (round_ - 2), prefix=True),
                                 return_previous=True)]
        outcomes = await loop.settle(*window)
        answers += [_plain(result) for ok, result in outcomes]
    return answers


async def test_batching_on_and_off_give_the_same_results(loop: Loop, etcd: EtcdProcess) -> None:
    on = loop.client(url=etcd.url, namespace=b"on/")
    off = loop.client(url=etcd.url, namespace=b"off/", batching=False)
    try:
        for c in (on, off):
            await c.delete(KeySet.all())
        assert await _workload(loop, on) == await _workload(loop, off)
        stored = [[(kv.key, kv.value, kv.version) for kv in await c.get(KeySet.all())]
                  for c in (on, off)]
        assert stored[0] == stored[1] and len(stored[0]) > 100
    finally:
        for c in (on, off):
            await c.delete(KeySet.all())
            await c.close()


async def test_a_batched_read_sees_every_write_acknowledged_before_it(loop: Loop,
        client: Client, unbatched: Client) -> None:
    for i in range(100):
        # Written through another client and acknowledged, then read in a busy batch.
        await unbatched.set(b"lin/k", b"%d" % i)
        reads = await loop.gather(
            *[client.get(b"lin/k")] + [client.set(b"lin/noise/%d" % j, b"n") for j in range(5)]
            + [client.get(b"lin/k")])
        assert reads[0].kvs[0].value == reads[-1].kvs[0].value == b"%d" % i


async def test_serializable_reads_and_other_timeouts_never_share_a_batch(
        loop: Loop, client: Client) -> None:
    await client.set(b"s/k", b"v")
    await loop.sleep(0.01)
    log = PathLog(client)
    await loop.gather(*[
        client.get(b"s/pilot"),  # goes at once: the others queue behind it
        client.get(b"s/k"), client.get(b"s/k"),
        client.get(b"s/k", serializable=True), client.get(b"s/k", serializable=True),
        client.get(b"s/k", timeout=3.0), client.get(b"s/k", timeout=3.0),
    ])
    assert log.paths[0] == "kv/range" and sorted(log.paths[1:]) == ["kv/txn"] * 3
    kinds = sorted(sum(1 for op in body["success"] if op["request_range"].get("serializable"))
                   for body in log.bodies[1:])
    assert kinds == [0, 0, 2]


async def test_a_cancelled_queued_call_is_not_sent(loop: Loop, client: Client) -> None:
    await loop.sleep(0.01)
    log = PathLog(client)
    pilot = client.get(b"c/pilot")  # goes at once: the next two queue behind it
    doomed = client.set(b"c/doomed", b"x")
    kept = client.set(b"c/kept", b"y")
    doomed.cancel()
    with pytest.raises(loop.CancelledError):
        await doomed
    await kept
    await pilot
    assert log.paths == ["kv/range", "kv/put"]
    assert (await client.get(b"c/doomed")).kvs == []


async def test_a_batch_with_unknown_outcome_is_never_resent(loop: Loop, etcd: EtcdProcess) -> None:
    proxy = ThreadProxy("127.0.0.1", etcd.client_port)
    client = loop.client(url=proxy.url, timeout=5.0)
    direct = loop.client(url=etcd.url)
    try:
        await client.delete(KeySet(b"u/", prefix=True))
        log = PathLog(client)
        proxy.cut_responses = True
        calls = [client.set(b"u/%d" % i, b"applied?") for i in range(3)] + [client.get(b"u/0")]
        outcomes = await loop.settle(*calls)
        assert not any(ok for ok, _ in outcomes)
        errors = [failure for _, failure in outcomes]
        assert all(isinstance(e, Unavailable) for e in errors)
        assert [e.outcome_unknown for e in errors] == [True, True, True, False]
        assert log.paths.count("kv/txn") == 1  # the writes went once, never again
        # They were in fact applied, exactly once: that is why they must not be resent.
        stored = await direct.get(KeySet(b"u/", prefix=True))
        assert [kv.version for kv in stored.kvs] == [1, 1, 1]
    finally:
        proxy.cut_responses = False
        await direct.delete(KeySet(b"u/", prefix=True))
        await client.close()
        await direct.close()
        proxy.close()


# -- send at once (issue 17): an op with nothing in flight leaves at once, alone -----------------

async def _idle(loop: Loop, client: Client) -> None:
    """Wait until none of the client's batched requests is in flight."""
    assert client.batcher is not None
    for _ in range(500):
        if not client.batcher.in_flight:
            return
        await loop.sleep(0.01)
    raise AssertionError("batched requests still in flight after 5 s")


async def _idle_and_logged(loop: Loop, client: Client) -> tuple[Batcher, PathLog]:
    """The client's batcher once nothing is in flight, and a log of what it sends from now."""
    batcher = client.batcher
    assert batcher is not None
    await _idle(loop, client)
    return batcher, PathLog(client)


async def test_an_op_with_nothing_in_flight_goes_at_once_and_what_follows_is_batched(
        loop: Loop, client: Client) -> None:
    batcher, log = await _idle_and_logged(loop, client)
    at_once, requests = batcher.sent_at_once, batcher.requests
    first = client.set(b"ao/first", b"1")
    # Sent in the same call: no wait for the end of the loop turn.
    assert (batcher.sent_at_once, batcher.requests, batcher.in_flight) == (
        at_once + 1, requests + 1, 1)
    behind = [client.set(b"ao/%02d" % i, b"x") for i in range(EAGER_FLUSH + 4)]
    # EAGER_FLUSH of them left eagerly; the other 4 wait for the turn's end.
    assert batcher.requests == requests + 2
    await first
    await loop.gather(*behind)
    assert log.paths[0] == "kv/put" and set(log.paths[1:]) == {"kv/txn"}
    assert sum(len(body["success"]) for body in log.bodies[1:]) == EAGER_FLUSH + 4
    # One in flight at a time: every op goes at once, as its plain request.
    await _idle(loop, client)
    at_once = batcher.sent_at_once
    for i in range(20):
        assert isinstance(await client.get(b"ao/%02d" % i), Range)
    assert batcher.sent_at_once == at_once + 20
    assert log.paths[-20:] == ["kv/range"] * 20


async def test_with_etcd_busy_a_turn_of_many_callers_makes_few_full_txns(
        loop: Loop, client: Client) -> None:
    """Once ``EAGER_IN_FLIGHT`` requests are in flight, the ops of a turn wait for its end (or
    until a txn is full) instead of leaving in requests of ``EAGER_FLUSH``: 200 callers at
    once (a component serving many) make a few large txns, which cost etcd far less per op."""
    batcher, log = await _idle_and_logged(loop, client)
    keys = [b"busy/%03d" % i for i in range(300)]
    await loop.gather(*[client.set(key, key) for key in keys[:EAGER_FLUSH]])
    await _idle(loop, client)
    first = client.get(keys[0])  # at once
    eager = [client.get(key) for key in keys[1:EAGER_FLUSH + 1]]  # leaves eagerly: etcd idles
    assert batcher.in_flight == EAGER_IN_FLIGHT == 2
    sent = batcher.requests
    full = batcher.max_txn_ops
    many = [client.get(key) for key in keys[:full + 40]]
    # One full txn left at once (it cannot grow); the other 40 wait for the turn's end.
    assert batcher.requests == sent + 1
    found = await loop.gather(first, *eager, *many)
    assert batcher.requests == sent + 2
    sizes = [len(body["success"]) for body in log.bodies if "success" in body]
    assert sizes[-2:] == [full, 40], sizes
    # Every caller got its own answer: the keys written above, nothing for the others.
    values = [r.kvs[0].value if r.kvs else None for r in found]
    expected = [keys[0], *keys[1:EAGER_FLUSH + 1], *keys[:full + 40]]
    assert values == [k if k in keys[:EAGER_FLUSH] else None for k in expected]


async def test_what_a_batchs_callers_issue_on_their_answers_is_batched_too(
        loop: Loop, client: Client) -> None:
    # A batch counts as in flight until its callers ran on (on Twisted as it is answered, on
    # asyncio a turn later): what they issue then is batched, none of it sent alone ahead.
    batcher, log = await _idle_and_logged(loop, client)

    async def put_then_get(i: int) -> Range:
        await client.set(b"cb/%02d" % i, b"%d" % i)
        return await client.get(b"cb/%02d" % i)

    first = client.set(b"cb/first", b"1")  # goes at once; what follows queues behind it
    at_once = batcher.sent_at_once
    reads = [loop.spawn(put_then_get(i)) for i in range(8)]
    found = await loop.gather(*reads)
    await first
    assert [r.kvs[0].value for r in found] == [b"%d" % i for i in range(8)]
    assert batcher.sent_at_once == at_once
    assert log.paths[0] == "kv/put" and set(log.paths[1:]) == {"kv/txn"}
    ranges = [op for body in log.bodies[1:] for op in body["success"] if "request_range" in op]
    assert len(ranges) == 8  # every get went in a txn, none alone


async def test_one_callers_ops_apply_in_issue_order_across_requests(
        loop: Loop, client: Client) -> None:
    # Issued without waiting: the first goes at once, the rest queue behind it. The reads wait
    # for the write before them, and the second write for the read before it.
    for pilot in (False, True):
        await _idle(loop, client)
        log = PathLog(client)
        key = b"order/%d" % pilot
        pending = [client.get(b"order/pilot")] if pilot else []  # then nothing goes at once
        p1 = client.set(key, b"1")
        r1 = client.get(key)
        p2 = client.set(key, b"2", return_previous=True)
        r2 = client.get(key)
        d = client.delete(key)
        r3 = client.get(key)
        first, read1, second, read2, gone, read3 = await loop.gather(p1, r1, p2, r2, d, r3)
        await loop.gather(*pending)
        assert read1.kvs[0].value == b"1"
        assert second.previous.value == b"1" and second.revision > first.revision
        assert read2.kvs[0].value == b"2"
        assert gone.deleted == 1 and read3.kvs == []
        if not pilot:
            # Not by luck: what touches the key left only once the put sent at once was
            # answered (one connection is not ordered against another).
            put = log.paths.index("kv/put")
            assert log.events.index(("answered", put)) < log.events.index(("sent", put + 1))


async def test_reads_are_linearizable_with_ops_sent_at_once_and_batched(
        loop: Loop, client: Client) -> None:
    """Workers write increasing values to their own keys and read each other's: a read issued
    after a write was acknowledged (to anyone) sees it or a later value; one's own write is
    seen by one's next read. Some ops go at once, most in batches."""
    workers, rounds = 8, 40
    acked = [0] * workers  # the last acknowledged value per worker's key
    await client.delete(KeySet(b"lz/", prefix=True))

    async def worker(w: int) -> None:
        for i in range(1, rounds + 1):
            await client.set(b"lz/%d" % w, b"%d" % i)
            acked[w] = i
            other = (w + 1 + i) % workers
            floor = acked[other]
            mine, theirs = await loop.gather(client.get(b"lz/%d" % w),
                                             client.get(b"lz/%d" % other))
            assert int(mine.kvs[0].value) == i
            assert (int(theirs.kvs[0].value) if theirs.kvs else 0) >= floor

    await loop.gather(*[worker(w) for w in range(workers)])
    assert client.batcher is not None and client.batcher.sent_at_once >= 1
    stored = await client.get(KeySet(b"lz/", prefix=True))
    assert [int(kv.value) for kv in stored.kvs] == [rounds] * workers


async def test_a_lone_op_sent_at_once_that_fails_gets_its_own_error(
        loop: Loop, client: Client) -> None:
    granted = await client.transport.call("lease/grant", {"TTL": 60}, idempotent=False)
    lease_id = int(granted["ID"])
    await client.transport.call("lease/revoke", {"ID": lease_id}, idempotent=True)
    await _idle(loop, client)
    assert client.batcher is not None
    at_once = client.batcher.sent_at_once
    bad = client.set(b"lone/bad", b"x", lease=lease_id)  # at once, alone
    good = [client.set(b"lone/%d" % i, b"ok") for i in range(3)]  # behind it, batched
    outcomes = await loop.settle(bad, *good)
    assert client.batcher.sent_at_once == at_once + 1
    assert not outcomes[0][0] and isinstance(outcomes[0][1], LeaseNotFound)
    assert all(ok and isinstance(result, Revision) for ok, result in outcomes[1:])
    # The same op alone, again: its own error, and the client carries on.
    with pytest.raises(LeaseNotFound):
        await client.set(b"lone/bad", b"x", lease=lease_id)
    assert (await client.get(b"lone/bad")).kvs == []
    assert (await client.get(KeySet(b"lone/", prefix=True), count_only=True)).count == 3


async def test_a_read_batched_beside_writes_is_not_held_by_a_write_that_hangs(
        loop: Loop, etcd: EtcdProcess) -> None:
    # A member that has not yet noticed that its leader died forwards a write to it, and the
    # write is lost: it hangs until its deadline (tests/test_cluster.py's leader kill). A read
    # that was batched beside it must not hang with it. The proxy swallows every request with
    # a value in it, as that member would.
    proxy = ThreadProxy("127.0.0.1", etcd.client_port)
    client = loop.client(url=proxy.url, timeout=3.0)
    direct = loop.client(url=etcd.url)
    try:
        await direct.set(b"hang/read", b"there")
        pilot = client.get(b"hang/pilot")  # goes at once: what follows queues and is batched
        proxy.swallow = b'"value"'
        log = PathLog(client)
        write = client.set(b"hang/write", b"lost")
        read = client.get(b"hang/read")
        reads = [client.get(b"hang/read%d" % i) for i in range(3)]
        started = time.monotonic()
        found = await read
        assert found.kvs[0].value == b"there"
        assert time.monotonic() - started < 2.0  # well within the write's 3 s deadline
        assert [r.kvs for r in await loop.gather(*reads)] == [[]] * 3
        with pytest.raises(Timeout) as hung:
            await write
        assert hung.value.outcome_unknown is True
        await pilot
        # The write left alone, the reads apart from it (batched, on Twisted in one txn).
        assert log.paths.count("kv/put") == 1 and "kv/txn" not in log.paths[:1]
        assert len(log.paths) >= 2
        # A read of the key a write of its batch writes stays with it (it must see the write).
        await _idle(loop, client)
        proxy.swallow = None
        log = PathLog(client)
        _, _, seen = await loop.gather(client.get(b"hang/pilot"), client.set(b"hang/mine", b"1"),
                                       client.get(b"hang/mine"))
        assert log.paths == ["kv/range", "kv/txn"] and seen.kvs[0].value == b"1"
    finally:
        await client.close()
        await direct.close()
        proxy.close()


async def test_deadlines_hold_when_a_timed_out_caller_at_once_sends_again(
        loop: Loop, etcd: EtcdProcess) -> None:
    # On Twisted a caller runs on inside the deadline's timer, when its request times out;
    # what it sends then starts a new deadline while the timer still works through the old
    # ones. Each keeps its own deadline, and nothing fails inside the loop.
    from twisted.logger import globalLogPublisher

    failures: list[Any] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_failure") is not None or event.get("isError"):
            failures.append(event)

    proxy = ThreadProxy("127.0.0.1", etcd.client_port)
    proxy.swallow = b'"value"'
    client = loop.client(url=proxy.url, timeout=0.4)
    observer: Any = observe  # a plain callable is an observer (zope's interface aside)
    globalLogPublisher.addObserver(observer)
    try:
        timings: list[float] = []

        async def hang_again(rounds: int) -> None:
            for i in range(rounds):
                started = time.monotonic()
                writes = [client.set(b"again/%d/%d" % (i, n), b"x") for n in range(3)]
                outcomes = await loop.settle(*writes)
                timings.append(time.monotonic() - started)
                assert all(not ok and isinstance(e, Timeout) for ok, e in outcomes)

        await loop.gather(hang_again(5), hang_again(5))
        assert len(timings) == 10 and all(0.3 < t < 2.0 for t in timings), timings
        assert (await client.get(b"again/0/0")).kvs == []  # reads still answered, in time
        await loop.sleep(1.0)  # every timer that was armed has fired by now
        assert failures == []
    finally:
        globalLogPublisher.removeObserver(observer)
        await client.close()
        proxy.close()


class GarblingGateway:
    """A gateway that answers ``/version`` and puts as etcd does, and every txn with a 200 whose
    body is ``garble``: what a broken proxy in front of etcd could send. It records each path."""

    def __init__(self, garble: bytes) -> None:
        self.paths: list[str] = []
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                gateway.paths.append(self.path)
                self._answer(b'{"etcdserver":"3.5.30","etcdcluster":"3.5.0"}')

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                self.rfile.read(int(self.headers["Content-Length"]))
                gateway.paths.append(self.path)
                self._answer(garble if self.path.endswith("/kv/txn")
                             else b'{"header":{"revision":"2"}}')

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(params=[b"<html>bad gateway</html>", b'{"header":5,"responses":[]}'],
                ids=["not-json", "no-txn-answer"])
def garbling(request: pytest.FixtureRequest) -> Iterator[GarblingGateway]:
    gateway = GarblingGateway(request.param)
    yield gateway
    gateway.close()


async def test_a_txn_answered_with_what_cannot_be_read_is_not_resent(
        loop: Loop, garbling: GarblingGateway) -> None:
    # etcd answered 200, so the txn was applied: its writes fail with ProtocolError and are
    # never resent (in halves, or alone), which could apply them twice.
    client = loop.client(url=garbling.url)
    first = client.set(b"g/first", b"1")  # at once; the others queue behind it: one txn
    writes = [client.set(b"g/%d" % i, b"x") for i in range(4)]
    assert isinstance(await first, Revision)
    for write in writes:
        with pytest.raises(ProtocolError):
            await loop.wait_for(write, 10)
    posts = [path for path in garbling.paths if path.startswith("/v3/")]
    assert sorted(posts) == ["/v3/kv/put", "/v3/kv/txn"]  # one each, in either order
