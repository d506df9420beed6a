"""Watches against real etcd 3.4 and 3.5, on both event loops (the ``loop`` fixture): typed
events, framing, cancel, resume and compaction."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from txetcd import (
    EventType,
    KeySet,
    Lock,
    OpSet,
    PermissionDenied,
    Transaction,
    Watch,
    WatchCompacted,
    WatchEvent,
)
from txetcd.embedded import EtcdProcess, running_cluster
from txetcd.watch_core import StreamState, as_keysets, disjoint_ranges

from .faults import ThreadProxy
from .test_auth_tls import (  # noqa: F401 - auth_etcd: the fixture
    APP_PASSWORD,
    APP_USER,
    ROOT,
    ROOT_PASSWORD,
    TOKEN_TTL,
    auth_etcd,
)
from .watch_soak import FAST_ELECTION, restart, soak

Item = WatchEvent | WatchCompacted


async def until(loop: Any, condition: Callable[[], bool], what: str,
                timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        await loop.sleep(0.01)


async def take(loop: Any, items: list[Item], count: int) -> list[Item]:
    """The first ``count`` items a callback collected, waiting for them to arrive."""
    await until(loop, lambda: len(items) >= count, f"{count} watch items")
    return items[:count]


def consume(client: Any, watch: Watch) -> list[Item]:
    """Iterate ``watch`` in the background (the ``async for`` form) into a list."""
    items: list[Item] = []

    async def run() -> None:
        async for item in watch:
            items.append(item)

    client.env.driver.spawn(run())
    return items


def summary(items: list[Item]) -> list[tuple[Any, ...]]:
    return [(i.type, i.key, i.value, i.revision) if isinstance(i, WatchEvent)
            else ("COMPACTED", i.compact_revision) for i in items]


@pytest.fixture
def messages(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every raw watch response the server sends, recorded on its way into the watch."""
    seen: list[dict[str, Any]] = []
    receive = StreamState.receive

    def record(self: Any, result: dict[str, Any], now: float) -> Any:
        seen.append(result)
        return receive(self, result, now)

    monkeypatch.setattr(StreamState, "receive", record)
    return seen


@pytest.fixture
def fast_etcd(etcd_binary: Any) -> Iterator[EtcdProcess]:
    """A server of the test's own whose restarts take ~0.2 s (short raft election timeout)."""
    with EtcdProcess(etcd_binary, extra_args=list(FAST_ELECTION)) as server:
        yield server


@pytest.fixture
def proxy(etcd: EtcdProcess) -> Iterator[ThreadProxy]:
    """A fault-injecting proxy in front of the shared server, closed afterwards."""
    proxy = ThreadProxy("127.0.0.1", etcd.client_port)
    yield proxy
    proxy.close()


# -- events ------------------------------------------------------------------------------------


async def test_put_and_delete_events_are_typed_with_prev_kv(loop: Any, kv: Any) -> None:
    await kv.set(b"p/before", b"old")  # written before the watch: not delivered
    items: list[Item] = []
    watch = kv.watch(KeySet(b"p/", prefix=True), items.append, prev_kv=True)
    await watch.when_started()
    first = await kv.set(b"p/a", b"1")
    second = await kv.set(b"p/a", b"2")
    await kv.set(b"q/other", b"x")  # outside the prefix
    gone = await kv.delete(b"p/a")
    put1, put2, delete = await take(loop, items, 3)
    assert isinstance(put1, WatchEvent) and put1.type is EventType.PUT and put1.prev_kv is None
    assert (put1.kv.key, put1.kv.value, put1.kv.version) == (b"p/a", b"1", 1)
    assert put1.revision == put1.kv.mod_revision == put1.kv.create_revision == first.revision
    assert isinstance(put2, WatchEvent) and put2.revision == second.revision
    assert put2.prev_kv is not None and put2.prev_kv.value == b"1"
    assert put2.prev_kv.mod_revision == first.revision
    assert isinstance(delete, WatchEvent) and delete.type == "DELETE"
    assert delete.revision == gone.header.revision and delete.kv.key == b"p/a"
    assert delete.kv.value == b"" and delete.prev_kv is not None and delete.prev_kv.value == b"2"
    watch.cancel()
    await watch.done
    assert len(items) == 3


async def test_ranges_and_overlapping_keysets_deliver_each_event_once(loop: Any, kv: Any) -> None:
    keysets = [KeySet(b"r/b", range_end=b"r/d"), KeySet(b"r/c", prefix=True), b"r/x", b"r/b"]
    # Merged server-side: [r/b, r/d) absorbs r/b and the r/c prefix; r/x stays a single key.
    assert disjoint_ranges(as_keysets(keysets), b"") == [
        (b"r/b", b"r/d"), (b"r/x", b"")]
    assert disjoint_ranges([KeySet(b"a"), KeySet(b"a", range_end=b"\0")], b"ns/") == [
        (b"ns/a", b"ns0")]
    watch = kv.watch(keysets)  # no callback: the async iterator form
    items = consume(kv, watch)
    await watch.when_started()
    revisions = {}
    for key in (b"r/a", b"r/b", b"r/c1", b"r/cz", b"r/d", b"r/x", b"r/y"):
        revisions[key] = (await kv.set(key, key)).revision
    # One txn: one revision for three keys in two server-side ranges.
    txn = await kv.txn(Transaction(success=[OpSet(k, b"t") for k in (b"r/b", b"r/c1",
                                                                         b"r/x")]))
    await take(loop, items, 7)
    assert summary(items[:4]) == [(EventType.PUT, k, k, revisions[k])
                                  for k in (b"r/b", b"r/c1", b"r/cz", b"r/x")]
    assert sorted(summary(items[4:])) == [(EventType.PUT, k, b"t", txn.header.revision)
                                          for k in (b"r/b", b"r/c1", b"r/x")]
    watch.cancel()
    await watch.done
    assert len(items) == 7


async def test_namespaced_watch_sees_only_its_namespace(loop: Any, etcd: EtcdProcess,
                                                        kv: Any) -> None:
    tenant = loop.client(url=etcd.url, namespace=b"tenant/")
    items: list[Item] = []
    watch = tenant.watch(KeySet.all(), items.append)
    await watch.when_started()
    await kv.set(b"outside", b"x")
    inside = await tenant.set(b"k", b"v")
    await kv.set(b"tenant0", b"x")  # just past the namespace's prefix range
    (event,) = await take(loop, items, 1)
    assert isinstance(event, WatchEvent) and event.key == b"k"
    assert event.revision == inside.revision
    await kv.get(b"tenant0")
    watch.cancel()
    await watch.done
    assert len(items) == 1


async def test_filters_drop_puts_or_deletes(loop: Any, kv: Any) -> None:
    deletes: list[Item] = []
    puts: list[Item] = []
    no_puts = kv.watch(b"f", deletes.append, filters=["NOPUT"])
    no_deletes = kv.watch(b"f", puts.append, filters=("nodelete",))
    await no_puts.when_started()
    await no_deletes.when_started()
    for _ in range(2):
        await kv.set(b"f", b"v")
        await kv.delete(b"f")
    await take(loop, deletes, 2)
    await take(loop, puts, 2)
    assert [i.type for i in deletes if isinstance(i, WatchEvent)] == [EventType.DELETE] * 2
    assert [i.type for i in puts if isinstance(i, WatchEvent)] == [EventType.PUT] * 2
    for watch in (no_puts, no_deletes):
        watch.cancel()
        await watch.done


async def test_start_revision_replays_history(loop: Any, kv: Any) -> None:
    first = await kv.set(b"h/1", b"a")
    await kv.set(b"h/1", b"b")
    await kv.delete(b"h/1")
    await kv.set(b"h/2", b"c")
    # txaioetcd's call shape: positional callback, return_previous for prev_kv.
    items: list[Item] = []
    watch = kv.watch([KeySet(b"h/", prefix=True)], items.append,
                         start_revision=first.revision, return_previous=True)
    await take(loop, items, 4)
    assert summary(items) == [
        (EventType.PUT, b"h/1", b"a", first.revision),
        (EventType.PUT, b"h/1", b"b", first.revision + 1),
        (EventType.DELETE, b"h/1", b"", first.revision + 2),
        (EventType.PUT, b"h/2", b"c", first.revision + 3)]
    assert [i.prev_kv.value if isinstance(i, WatchEvent) and i.prev_kv else None
            for i in items] == [None, b"a", b"b", None]
    live = await kv.set(b"h/3", b"d")
    await take(loop, items, 5)
    assert items[4].revision == live.revision  # type: ignore[union-attr]
    watch.cancel()
    await watch.done


async def test_large_values_arrive_intact_across_reads_and_fragments(
        loop: Any, kv: Any, messages: list[dict[str, Any]]) -> None:
    live: list[Item] = []
    watch = kv.watch(b"big/live", live.append)
    await watch.when_started()
    value = bytes(range(256)) * 400  # 100 KiB, more than one 64 KiB read
    await kv.set(b"big/live", value)
    (event,) = await take(loop, live, 1)
    assert isinstance(event, WatchEvent) and event.value == value
    watch.cancel()
    # Three 700 kB values replayed at once exceed etcd's 1.5 MiB message limit: the server
    # splits the response into fragments, which the watch joins again.
    values = [bytes([65 + i]) * 700_000 for i in range(3)]
    first = (await kv.set(b"big/0", values[0])).revision
    for i in (1, 2):
        await kv.set(b"big/%d" % i, values[i])
    replayed: list[Item] = []
    watch = kv.watch(KeySet(b"big/", range_end=b"big/9"), replayed.append,
                     start_revision=first)
    await take(loop, replayed, 3)
    assert [i.value for i in replayed] == values  # type: ignore[union-attr]
    assert any(m.get("fragment") for m in messages)
    watch.cancel()
    await watch.done


async def test_bad_arguments_raise_before_sending(loop: Any, kv: Any) -> None:
    for bad_keys in ("text", [], [b"a", 1], b""):
        with pytest.raises((TypeError, ValueError)):
            kv.watch(bad_keys)
    with pytest.raises(ValueError, match="empty key range"):
        kv.watch(KeySet(b"b", range_end=b"a"))
    with pytest.raises(ValueError):
        kv.watch(b"k", filters=["NOPE"])
    with pytest.raises(TypeError):
        kv.watch(b"k", filters="NOPUT")
    with pytest.raises(TypeError):
        kv.watch(b"k", start_revision=True)
    with pytest.raises(ValueError):
        kv.watch(b"k", start_revision=-1)
    with pytest.raises(TypeError):
        kv.watch(b"k", "not callable")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        kv.watch(b"k", prev_kv=1)  # type: ignore[arg-type]
    watch = kv.watch(b"k", lambda item: None)
    with pytest.raises(TypeError, match="callback"):
        watch.__aiter__()
    watch.cancel()
    await watch.done


# -- lifecycle ---------------------------------------------------------------------------------


async def test_cancel_closes_the_connection_and_stops_delivery(loop: Any, kv: Any,
                                                               proxy: ThreadProxy) -> None:
    watcher = loop.client(url=proxy.url)
    items: list[Item] = []

    def on_event(item: Item) -> None:
        items.append(item)
        watch.cancel()  # from inside the callback: the txn's other events must not follow

    watch = watcher.watch(KeySet(b"c/", prefix=True), on_event)
    await watch.when_started()
    # The GET /version before it may or may not have shared its pooled connection.
    stream_connections = [c for c in proxy.connections
                          if any(b"/watch" in line for line in c.request_lines)]
    assert len(stream_connections) == 1 and not stream_connections[0].closed
    await kv.txn(Transaction(success=[OpSet(b"c/%d" % i, b"v") for i in range(3)]))
    await until(loop, lambda: watch.finished, "done after cancel")
    await watch.done
    assert len(items) == 1
    # The stream's socket itself is closed; the proxy sees the FIN a moment later.
    await until(loop, lambda: stream_connections[0].closed, "the stream's socket closed")
    await kv.set(b"c/late", b"v")
    await kv.get(b"c/late")
    assert len(items) == 1
    # The async iterator form ends cleanly after cancel; "async with" cancels on exit.
    async with watcher.watch(b"c/x") as iterated:
        await iterated.when_started()
        await kv.set(b"c/x", b"1")
        async for item in iterated:
            assert isinstance(item, WatchEvent) and item.value == b"1"
            iterated.cancel()
    assert iterated.finished


@pytest.mark.parametrize("asynchronous", [False, True], ids=["def", "async-def"])
async def test_a_failing_callback_ends_the_watch_loudly(loop: Any, kv: Any,
                                                        asynchronous: bool) -> None:
    def broken(item: Item) -> None:
        raise RuntimeError("consumer bug")

    async def broken_later(item: Item) -> None:
        await kv.get(b"cb")  # a coroutine callback runs, and its failure counts too
        broken(item)

    watch = kv.watch(b"cb", broken_later if asynchronous else broken)
    await watch.when_started()
    await kv.set(b"cb", b"v")
    with pytest.raises(RuntimeError, match="consumer bug"):
        await watch.done


# -- faults ------------------------------------------------------------------------------------


async def test_compaction_while_disconnected_is_signalled(loop: Any,
                                                          fresh_etcd: EtcdProcess) -> None:
    writer = loop.client(url=fresh_etcd.url)
    proxy = ThreadProxy("127.0.0.1", fresh_etcd.client_port)
    try:
        watcher = loop.client(url=proxy.url)
        items: list[Item] = []
        watch = watcher.watch(KeySet(b"z/", prefix=True), items.append)
        await watch.when_started()
        seen = [(await writer.set(b"z/%d" % i, b"v")).revision for i in range(2)]
        await take(loop, items, 2)
        proxy.refuse = True  # cut the stream and keep the watch out while history is compacted
        proxy.cut_all()
        missed = [(await writer.set(b"z/%d" % i, b"v")).revision for i in range(2, 5)]
        await writer.compact(missed[-1], physical=True)
        proxy.refuse = False
        after = (await writer.set(b"z/after", b"v")).revision
        await take(loop, items, 5)
        assert [i.revision if isinstance(i, WatchEvent) else i for i in items] == [
            *seen, WatchCompacted(missed[-1]), missed[-1], after]
        assert watch.reconnects >= 2
        watch.cancel()
        await watch.done
    finally:
        proxy.close()


async def test_progress_notifications_move_the_resume_point(
        loop: Any, etcd_binary: Any, messages: list[dict[str, Any]]) -> None:
    interval = ["--experimental-watch-progress-notify-interval=100ms"]
    with EtcdProcess(etcd_binary, extra_args=interval) as server:
        writer = loop.client(url=server.url)
        proxy = ThreadProxy("127.0.0.1", server.client_port)
        try:
            watcher = loop.client(url=proxy.url)
            items: list[Item] = []
            watch = watcher.watch(b"quiet", items.append, progress_notify=True)
            await watch.when_started()
            for i in range(5):
                latest = (await writer.set(b"busy/%d" % i, b"v")).revision

            def progressed() -> bool:
                return any(not m.get("created") and not m.get("events")
                           and int(m["header"]["revision"]) >= latest for m in messages)

            await until(loop, progressed, "a progress notification")
            proxy.refuse = True
            proxy.cut_all()
            # The quiet key's history up to `latest` is gone, but the watch knows (from the
            # progress notification) that it needs nothing before latest + 1: no Compacted.
            await writer.compact(latest, physical=True)
            proxy.refuse = False
            put = await writer.set(b"quiet", b"v")
            (event,) = await take(loop, items, 1)
            assert isinstance(event, WatchEvent) and event.revision == put.revision
            assert watch.reconnects >= 1
            watch.cancel()
            await watch.done
            assert len(items) == 1
        finally:
            proxy.close()


async def test_each_key_range_resumes_from_its_own_revision(loop: Any,
                                                            fast_etcd: EtcdProcess) -> None:
    client = loop.client(url=fast_etcd.url)
    revisions = [(await client.set(b"a/1", b"v")).revision,
                 (await client.set(b"b/1", b"v")).revision]
    items: list[Item] = []
    watch = client.watch([KeySet(b"a/", prefix=True), KeySet(b"b/", prefix=True)],
                         items.append, start_revision=revisions[0])
    await take(loop, items, 2)
    revisions.append((await client.set(b"a/2", b"v")).revision)
    await take(loop, items, 3)
    # Range a/ must resume after a/2, range b/ after b/1: neither replays nor skips.
    await restart(fast_etcd)(watch)
    revisions.append((await client.set(b"b/2", b"v")).revision)
    revisions.append((await client.set(b"a/3", b"v")).revision)
    await take(loop, items, 5)
    await client.get(b"a/3")  # one more round trip: room for a wrongly repeated event
    assert sorted(i.revision for i in items if isinstance(i, WatchEvent)) == revisions
    assert len(items) == 5 and watch.reconnects >= 1
    watch.cancel()
    await watch.done


async def test_kill_9_under_a_running_watch_loses_and_repeats_nothing(
        loop: Any, fast_etcd: EtcdProcess) -> None:
    client = loop.client(url=fast_etcd.url, timeout=2.0)
    # 8 kills per loop and server version (32 in all); `python -m tests.watch_soak` soaks longer.
    result = await soak(client, cycles=8, fault=restart(fast_etcd))
    assert result.ok, result.summary()
    assert result.delivered == result.committed and len(result.committed) >= 24
    assert result.reconnects >= 8


@pytest.fixture
def cluster(etcd_binary: Any) -> Iterator[list[EtcdProcess]]:
    """Three members with fast elections, removed afterwards whatever happened."""
    with running_cluster(etcd_binary, 3, list(FAST_ELECTION)) as members:
        yield members


async def a_follower(loop: Any, cluster: list[EtcdProcess]) -> EtcdProcess:
    for member in cluster:
        status = await loop.client(url=member.url).status()
        if status.header.member_id != status.leader:
            return member
    raise AssertionError("no follower in the cluster")


async def test_watch_leaves_a_member_that_stops_answering(loop: Any,
                                                          cluster: list[EtcdProcess]) -> None:
    # The watch starts on a follower: pausing the leader would also stall the writes for an
    # election, which is not what this test is about.
    paused = await a_follower(loop, cluster)
    others = [m.url for m in cluster if m is not paused]
    watcher = loop.client(endpoints=[paused.url, *others], timeout=1.0)
    writer = loop.client(url=others[0])
    try:
        items: list[Item] = []
        watch = watcher.watch(KeySet(b"s/", prefix=True), items.append, probe_interval=0.3)
        await watch.when_started()
        assert watch.endpoint == paused.url
        revisions = [(await writer.set(b"s/0", b"v")).revision]
        await take(loop, items, 1)
        # SIGSTOP: the stream's socket stays open and silent, no reset and no error frame.
        paused.pause()
        revisions += [(await writer.set(b"s/%d" % i, b"v")).revision for i in (1, 2, 3)]
        await take(loop, items, 4)
        assert [i.revision for i in items if isinstance(i, WatchEvent)] == revisions
        assert watch.endpoint != paused.url and watch.probe_failures >= 1
        watch.cancel()
        await watch.done
    finally:
        paused.kill()  # a paused 3.5 member takes ~10 s to stop gracefully once resumed


async def test_watch_resumes_on_another_member_when_its_member_dies(
        loop: Any, cluster: list[EtcdProcess]) -> None:
    members = cluster
    client = loop.client(endpoints=[m.url for m in members], timeout=2.0)
    used: list[str] = []

    async def kill_the_watched_member(watch: Watch) -> None:
        victim = next(m for m in members if m.url == watch.endpoint)
        used.append(victim.url)
        victim.kill()
        await until(loop, lambda: watch.endpoint != victim.url, "the watch on another member")
        victim.start()

    result = await soak(client, cycles=3, fault=kill_the_watched_member)
    assert result.ok, result.summary()
    assert result.delivered == result.committed
    assert len(set(used)) >= 2  # it really moved from member to member


async def test_watch_lease_and_lock_under_auth_with_expiring_tokens(
        loop: Any, auth_etcd: EtcdProcess) -> None:  # noqa: F811 - the imported fixture
    """A user's watch reopens with a fresh token after its token expired (a stream checks the
    token only when it opens); its lease stays alive and its lock works; a watch outside its
    permissions ends with ``PermissionDenied`` instead of retrying forever."""
    proxy = ThreadProxy("127.0.0.1", auth_etcd.client_port)
    try:
        app = loop.client(url=proxy.url, user=APP_USER, password=APP_PASSWORD)
        writer = loop.client(url=auth_etcd.url, user=ROOT, password=ROOT_PASSWORD)
        items: list[Item] = []
        watch = app.watch(KeySet(b"app/w/", prefix=True), items.append)
        await watch.when_started()
        await writer.set(b"app/w/1", b"v")
        await take(loop, items, 1)
        signed_in = app.transport.authentications
        await loop.sleep(TOKEN_TTL * 2.5)  # nothing uses the app's token: it expires
        proxy.cut_all()  # the stream reopens, and needs a fresh token for that
        await writer.set(b"app/w/2", b"v")
        await take(loop, items, 2)
        assert watch.reconnects >= 1 and app.transport.authentications > signed_in
        async with app.lease(2) as lease, Lock(app, b"app/lock", ttl=5) as lock:
            await app.set(b"app/w/3", b"%d" % lock.fencing_token, lease=lease)
            await loop.sleep(TOKEN_TTL * 2.5)
            assert lease.alive
        await take(loop, items, 4)  # the put, and the delete when the lease was revoked
        assert [i.key for i in items] == [b"app/w/1", b"app/w/2", b"app/w/3", b"app/w/3"]  # type: ignore[union-attr]
        denied = app.watch(b"elsewhere")
        with pytest.raises(PermissionDenied):
            await denied.done
        watch.cancel()
        await watch.done
    finally:
        proxy.close()
