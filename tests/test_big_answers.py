"""No answer is too big to travel: scans, index scans and history of big rows, and the scans'
admission limit, through a real Crossbar node on json, cbor and msgpack callers.

Before answers were bounded, ``scan(limit=100)`` of 40 rows of 1 MiB made a 40 MiB result that
the component's rawsocket refused to send (16 MiB limit); autobahn's error reply quoted the
result and was refused too, so the caller waited forever (the router kept the call open)."""

from __future__ import annotations

import os
import struct
import time
import uuid
from collections.abc import Iterator
from typing import Any

import cbor2
import pytest
import pytest_twisted
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallOptions
from twisted.internet import defer, reactor

from procedures.answers import ANSWER_BYTES, CHUNK_BYTES, CHUNK_ROWS, FIRST_CHUNK_ROWS
from txetcd import Client, OpSet
from txetcd.embedded import EtcdProcess

from .test_hostile_load import SERIALIZERS, SETTINGS, fill, range_requests, session
from .wamp import CrossbarNode

inline = pytest_twisted.ensureDeferred
BIG = 1_000_000  # characters a row: 20 of them make a 20 MB answer, past the 16 MiB transports
BIG_ROWS = 20
WAIT = 30  # seconds: an answer that never comes fails the test instead of hanging it


def answer(call: defer.Deferred[Any]) -> defer.Deferred[Any]:
    return call.addTimeout(WAIT, reactor)


async def too_large(call: defer.Deferred[Any]) -> str:
    with pytest.raises(ApplicationError) as refused:
        await answer(call)
    assert refused.value.error == "etcd.error.too_large", refused.value
    return str(refused.value.kwargs["message"])


async def big_rows(etcd: Client) -> None:
    value = cbor2.dumps("x" * BIG)
    for i in range(BIG_ROWS):
        await etcd.txn(success=[OpSet(SETTINGS + b"big%03d" % i, value)])


@inline
async def test_big_answers_are_refused_paged_or_chunked(node: CrossbarNode,
                                                       etcd_direct: Client) -> None:
    await big_rows(etcd_direct)
    watcher = await session(node)
    component = (await watcher.call("etcd.status"))["session"]
    keys = [f"big{i:03d}" for i in range(BIG_ROWS)]
    for serializer in SERIALIZERS:
        reader = await session(node, "reader", serializer)
        # A plain answer past the budget: a typed refusal that says what to do instead.
        message = await too_large(reader.call("etcd.settings.scan", limit=100))
        assert "page=True" in message and "progressive" in message
        await too_large(reader.call("etcd.settings.scan", prefix="big", reverse=True))
        # Pages end early by bytes, say so, and go on where they ended.
        got, pages, after = [], 0, None
        while True:
            page = await answer(reader.call("etcd.settings.scan", limit=100, page=True,
                                            after=after))
            pages += 1
            got += [key for key, _ in page["rows"]]
            assert len(page["rows"]) * BIG <= ANSWER_BYTES
            if page["last"]:
                assert page["partial"] is False and page["next_after"] is None
                break
            assert page["partial"] is True and page["next_after"] == got[-1]
            after = page["next_after"]
        assert got == keys and pages >= 3
        # Progressive chunks are bounded by bytes as well as rows: one big row each here.
        chunks: list[list[Any]] = []
        rest = await answer(reader.call("etcd.settings.scan", limit=100,
                                        options=CallOptions(on_progress=chunks.append)))
        assert rest == []
        assert [row[0] for chunk in chunks for row in chunk] == keys
        assert max(len(chunk) for chunk in chunks) * BIG <= CHUNK_BYTES + BIG
        # Small answers are as before, and others are served meanwhile.
        assert len(await reader.call("etcd.settings.scan", limit=3)) == 3
        assert await watcher.call("etcd.settings.get", "big000") == "x" * BIG
        reader.leave()
    assert (await watcher.call("etcd.status"))["session"] == component
    watcher.leave()


@inline
async def test_small_rows_come_in_a_small_first_chunk_then_big_ones(
        node: CrossbarNode, etcd_direct: Client) -> None:
    rows = FIRST_CHUNK_ROWS + 2 * CHUNK_ROWS + 7
    value = cbor2.dumps({"v": "x" * 90})
    keys = [f"chunk{i:05d}" for i in range(rows)]
    for start in range(0, rows, 100):  # etcd's default max_txn_ops is 128
        await etcd_direct.txn(success=[OpSet(SETTINGS + key.encode(), value)
                                       for key in keys[start:start + 100]])
    for serializer in SERIALIZERS:
        reader = await session(node, "reader", serializer)
        chunks: list[list[Any]] = []
        rest = await answer(reader.call("etcd.settings.scan", prefix="chunk", limit=rows,
                                        options=CallOptions(on_progress=chunks.append)))
        assert rest == []
        # The first rows show at once; the rest come in fewer, bigger messages.
        assert [len(chunk) for chunk in chunks] == [FIRST_CHUNK_ROWS, CHUNK_ROWS, CHUNK_ROWS, 7]
        assert [row[0] for chunk in chunks for row in chunk] == keys
        assert all(row[1] == {"v": "x" * 90} for chunk in chunks for row in chunk)
        reader.leave()


PEOPLE = struct.pack(">H", 3)  # the demo "people" table: uuid keys, json values, by_email


@inline
async def test_index_scans_come_in_the_same_chunks_and_mark_corrupt_rows(
        node: CrossbarNode, etcd_direct: Client) -> None:
    rows = FIRST_CHUNK_ROWS + CHUNK_ROWS + 7
    keys = [str(uuid.UUID(int=(rows - i) * 2 ** 64 + 1)) for i in range(rows)]  # not in
    emails = [f"p{i:05d}@example.org" for i in range(rows)]  # email order
    writer = await session(node)
    for start in range(0, rows, 50):  # one etcd txn of rows and entries per call
        await writer.call("etcd.txn", [{"table": "people", "op": "put", "key": keys[i],
                                        "value": {"name": f"n{i}", "email": emails[i]}}
                                       for i in range(start, min(start + 50, rows))])
    # A row rewritten around the component: its entry stays, its value is no JSON.
    await etcd_direct.txn(success=[OpSet(PEOPLE + uuid.UUID(keys[5]).bytes, b"{not json")])
    expected: list[Any] = [[emails[i], keys[i], {"name": f"n{i}", "email": emails[i]}]
                           for i in range(rows)]
    for serializer in SERIALIZERS:
        reader = await session(node, "reader", serializer)
        chunks: list[list[Any]] = []
        rest = await answer(reader.call("etcd.people.by_email.scan", limit=rows,
                                        options=CallOptions(on_progress=chunks.append)))
        assert rest == []
        assert [len(chunk) for chunk in chunks] == [FIRST_CHUNK_ROWS, CHUNK_ROWS, 7]
        got = [row for chunk in chunks for row in chunk]
        marker = got[5]  # in the row's place, as in table scans, and the scan goes on
        assert marker["corrupt_row"] == uuid.UUID(keys[5]).bytes.hex() and marker["error"]
        assert got[:5] + got[6:] == expected[:5] + expected[6:]
        assert await answer(reader.call("etcd.people.by_email.scan", limit=rows)) == got
        # Pages (one ends on the marker) go on from their cursor and visit every row once.
        paged: list[Any] = []
        after = None
        for _ in range(rows):
            page = await answer(reader.call("etcd.people.by_email.scan", limit=6 if after
                                            is None else 600, page=True, after=after))
            paged += page["rows"]
            if page["last"]:
                break
            after = page["next_after"]
            assert after == [emails[len(paged) - 1], keys[len(paged) - 1]]
        assert paged == got
        back = await answer(reader.call("etcd.people.by_email.scan", limit=3, reverse=True))
        assert back == expected[:-4:-1]
        reader.leave()
    writer.leave()


@inline
async def test_big_history_and_index_scans_are_bounded(node: CrossbarNode,
                                                      etcd_direct: Client) -> None:
    writer = await session(node)
    component = (await writer.call("etcd.status"))["session"]
    for version in range(12):  # 12 MB of one row's history
        await writer.call("etcd.settings.put", "diary", f"{version:02d}" + "d" * BIG)
    people = []
    for i in range(12):  # 12 MB through the people.by_email index
        key = await writer.call("etcd.people.put", f"00000000-0000-4000-8000-{i:012d}",
                                {"name": "n" * BIG, "email": f"p{i:02d}@example.org"})
        people.append(key)
    for serializer in SERIALIZERS:
        reader = await session(node, "reader", serializer)
        past = await answer(reader.call("etcd.settings.history", "diary", limit=20))
        assert past["partial"] is True and 1 <= len(past["versions"]) < 12
        older = await answer(reader.call("etcd.settings.history", "diary", limit=20,
                                         before_revision=past["versions"][-1]["revision"]))
        seen = [v["value"][:2] for v in past["versions"] + older["versions"]]
        assert seen == [f"{v:02d}" for v in range(11, 11 - len(seen), -1)]
        await too_large(reader.call("etcd.people.by_email.scan", limit=100))
        page = await answer(reader.call("etcd.people.by_email.scan", limit=100, page=True))
        assert page["partial"] is True and not page["last"]
        rest = await answer(reader.call("etcd.people.by_email.scan", limit=100, page=True,
                                        after=page["next_after"]))
        emails = [row[0] for row in page["rows"] + rest["rows"]]
        assert emails == [f"p{i:02d}@example.org" for i in range(12)] and rest["last"]
        chunks: list[list[Any]] = []
        await answer(reader.call("etcd.people.by_email.scan",
                                 options=CallOptions(on_progress=chunks.append)))
        assert sum(map(len, chunks)) == 12 and max(map(len, chunks)) == 1
        reader.leave()
    assert (await writer.call("etcd.status"))["session"] == component
    writer.leave()


MAX_SCANS, MAX_QUEUED = 2, 10
CROWD = 50


@pytest.fixture(scope="module")
def small_limits_node(etcd35: EtcdProcess, tmp_path_factory: pytest.TempPathFactory
                      ) -> Iterator[CrossbarNode]:
    """The demo node with room for 2 scans paging and 10 waiting."""
    crossbar = CrossbarNode(tmp_path_factory.mktemp("limits"), etcd35.url,
                            extra={"max_scans": MAX_SCANS, "max_queued_scans": MAX_QUEUED})
    crossbar.start()
    try:
        yield crossbar
    finally:
        crossbar.stop()


@inline
async def test_scan_limit_holds_under_a_crowd(small_limits_node: CrossbarNode,
                                             etcd_direct: Client, etcd35: EtcdProcess) -> None:
    table_rows = int(os.environ.get("CROWD_ROWS", 3000))
    await fill(etcd_direct, table_rows, 1000)  # 3 MB: each scan pages through etcd a while
    readers = [await session(small_limits_node, "reader", s) for s in SERIALIZERS]
    assert (await readers[0].call("etcd.status"))["scans"]["most_running"] == 0
    rows = [0] * CROWD

    def counter(i: int) -> Any:
        def count(chunk: list[Any]) -> None:
            rows[i] += len(chunk)
        return count

    ranges = range_requests(etcd35)
    started = time.monotonic()
    calls = [readers[i % 3].call("etcd.settings.scan", limit=100_000,
                                 options=CallOptions(on_progress=counter(i)))
             for i in range(CROWD)]
    outcomes = await defer.DeferredList([answer(c) for c in calls], consumeErrors=True)
    took = time.monotonic() - started
    errors = [getattr(result.value, "error", repr(result.value)) for ok, result in outcomes
              if not ok]
    done = [i for i, (ok, _) in enumerate(outcomes) if ok]
    scans = (await readers[0].call("etcd.status"))["scans"]
    print(f"\n{CROWD} scans: {len(done)} complete, {len(errors)} busy in {took:.1f} s; "
          f"{range_requests(etcd35) - ranges} etcd ranges; {scans}")
    assert set(errors) == {"etcd.error.busy"}, errors  # some refused, no unavailable
    # At most 2 paging and 10 waiting admit at least those 12; everyone else is refused.
    assert MAX_SCANS + MAX_QUEUED <= len(done) < CROWD
    assert all(rows[i] == table_rows for i in done)
    assert scans["most_running"] == MAX_SCANS and scans["running"] == scans["waiting"] == 0
    for reader in readers:
        reader.leave()


def test_wire_estimate_bounds_every_serializer() -> None:
    from autobahn.wamp.serializer import (
        CBORObjectSerializer,
        JsonObjectSerializer,
        MsgPackObjectSerializer,
    )

    from procedures.payload import payload_size

    serializers: list[Any] = [JsonObjectSerializer(batched=False),
                              CBORObjectSerializer(batched=False),
                              MsgPackObjectSerializer(batched=False)]
    samples: list[Any] = ["plain" * 1000, '"\\' * 1000, "\x01\x1f" * 1000, "é€𝄞" * 1000,
                          b"\x00\xff" * 1000, {"k": ["x" * 10, 1, 2.5, None, True]},
                          [["key", {"name": "n\n" * 500, "blob": b"b" * 999}]] * 3]
    for sample in samples:
        for serializer in serializers:
            assert len(serializer.serialize(sample)) <= payload_size(sample, wire=True), (
                sample if len(repr(sample)) < 80 else type(sample), serializer)
