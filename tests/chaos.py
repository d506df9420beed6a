"""Chaos: a 3-member etcd cluster, a Crossbar router, three component instances, and faults.

Writers put unique values through WAMP (``etcd.<table>.put``, shared round-robin by the
instances) and directly to etcd, some two keys at one revision (so that a publisher's position
within a revision is exercised across failover); subscribers record every ``on_change`` event.
Faults, in a seeded random order: kill -9 the etcd leader (restarted later), kill -9 the
instance that publishes a table (a new one is started), restart the router, and SIGSTOP a member
for a few seconds. Afterwards the table histories are read from etcd (a watch from before the
workload; nothing is compacted) and checked:

* every acknowledged write is in the history at its revision, with its key and value;
* the first subscriber (it always resubscribes first after a router restart, so the elected
  publisher resumes from its stored position while it listens) receives exactly the committed
  changes of each table, in order: none lost, none repeated, none out of order. "In order" is
  etcd's: by revision, and within a revision in the history's order (the client batches
  concurrent puts into one txn, so a revision may hold several keys, in op order, not key
  order). A repeat or an out-of-order event is reported with its publisher session and the
  fault before it, and the other checks run on the sequence without repeats;
* every other subscriber's sequence is in that order and, between two (re)subscriptions,
  a gapless run of the committed changes. Events published while a subscriber is not subscribed
  (between a router restart and its resubscription) are not expected by it;
* an ``on_resync`` is reported (none is expected: nothing is compacted).

Failover times are reported: per publisher kill, until another instance leads the table's
election and until the first subscriber gets the table's next event; per etcd leader kill,
until a direct write succeeds again. ``tests/test_chaos.py`` runs a few faults; this script
runs many::

    .venv/bin/python -m tests.chaos --faults 60 --seed 1
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autobahn.wamp.types import SubscribeOptions
from twisted.internet import defer, task, threads
from twisted.python.failure import Failure

from component.publisher import election_name, position_key
from procedures.table import Table
from tests.wamp import CrossbarNode, connect
from txetcd import Client, Election, KeyNotFound, WatchCompacted, WatchEvent
from txetcd.embedded import EtcdProcess, find_etcd, start_cluster, stop_group

NAMESPACE = b"app/"
PREFIX = "etcd"
# Raft timers a little faster than the defaults, so a killed leader is replaced in ~1 s.
RAFT_TIMERS = ["--heartbeat-interval=50", "--election-timeout=500"]
FAULTS = ("kill_etcd_leader", "kill_publisher", "restart_router", "pause_member")
WRITE_PAUSE = 0.03  # between two writes of one writer
CALL_TIMEOUT = 20.0  # a WAMP write unanswered this long counts as of unknown outcome
STEP_TIMEOUT = 120.0  # a set-up step or fault that takes longer fails the run, naming itself
KEYS_PER_TABLE = 16
PAIRED_WRITES = 0.2  # share of direct writes that put two keys of a table in one revision


def table_specs() -> dict[str, tuple[int, str, str]]:
    """The demo tables of the node's config: name -> (slot, key kind, value kind)."""
    return {"users": (1, "uuid", "json"), "settings": (2, "string", "cbor")}


def wire_key(table: str, index: int) -> str:
    return str(uuid.UUID(int=index + 1)) if table == "users" else f"k{index:02d}"


async def sleep(reactor: Any, seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


async def wait_for(reactor: Any, condition: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = reactor.seconds() + timeout
    while not condition():
        if reactor.seconds() > deadline:
            raise TimeoutError(f"no {what} within {timeout} s")
        await sleep(reactor, 0.02)


Change = tuple[int, str]  # (revision, wire key)


@dataclass
class Subscriber:
    """A reader session recording each table's events; ``epochs`` mark its (re)subscriptions."""

    name: str
    tables: list[str]
    events: dict[str, list[Change]] = field(default_factory=dict)
    arrival: dict[str, list[float]] = field(default_factory=dict)
    epochs: dict[str, list[int]] = field(default_factory=dict)
    resyncs: list[tuple[str, int]] = field(default_factory=list)
    publishers: dict[str, list[int | None]] = field(default_factory=dict)  # WAMP session ids
    session: Any = None
    # Per table, the epochs (indices into ``events``) that began after the subscriber's router
    # was killed: its events up to then are gone with it, so they may be sent again.
    after_router_loss: dict[str, set[int]] = field(default_factory=dict)
    lost_router: bool = False  # the router was killed since the last subscription

    def router_lost(self) -> None:
        """The router was killed: the next subscription starts such an epoch (marked as it
        starts: events the dead router sent before may still be read after this)."""
        self.lost_router = True

    async def subscribe(self, reactor: Any, url: str) -> None:
        self.session = await connect(url, "reader", "reader-secret")
        for table in self.tables:
            start = len(self.events.setdefault(table, []))
            self.epochs.setdefault(table, []).append(start)
            if self.lost_router:
                self.after_router_loss.setdefault(table, set()).add(start)
            self.arrival.setdefault(table, [])
            await self.session.subscribe(self.recorder(reactor, table),
                                         f"{PREFIX}.{table}.on_change",
                                         options=SubscribeOptions(details_arg="details"))
            await self.session.subscribe(
                lambda compact_revision, table=table: self.resyncs.append(
                    (table, compact_revision)), f"{PREFIX}.{table}.on_resync")
        self.lost_router = False

    def recorder(self, reactor: Any, table: str) -> Callable[..., None]:
        def on_change(details: Any = None, **event: Any) -> None:
            self.events[table].append((event["revision"], str(event["key"])))
            self.arrival[table].append(reactor.seconds())
            self.publishers.setdefault(table, []).append(getattr(details, "publisher", None))

        return on_change

    def leave(self) -> None:
        if self.session is not None and self.session.is_attached():
            self.session.leave()


@dataclass
class Writes:
    """What the writers were told: acknowledged writes and calls of unknown outcome."""

    acked: list[tuple[str, int, str, Any]] = field(default_factory=list)  # table, rev, key, value
    unknown: int = 0
    by_path: collections.Counter[str] = field(default_factory=collections.Counter)


@dataclass
class Report:
    faults: collections.Counter[str] = field(default_factory=collections.Counter)
    acked_writes: int = 0
    unknown_writes: int = 0
    acked_missing: list[str] = field(default_factory=list)
    committed: dict[str, int] = field(default_factory=dict)
    shared_revisions: int = 0  # revisions holding several changes of one table (batched puts)
    lost: dict[str, int] = field(default_factory=dict)
    repeated_raw: dict[str, int] = field(default_factory=dict)
    # Sent again to a subscriber that resubscribed after its router was killed (README: Linked
    # routers): events it had before, in runs, never within one subscription.
    resent_after_router_loss: dict[str, int] = field(default_factory=dict)
    resent_at_most: int = 0  # the most resent to one subscriber in one resubscription
    repeats_after: collections.Counter[str] = field(default_factory=collections.Counter)
    repeat_details: list[str] = field(default_factory=list)
    disorder_details: list[str] = field(default_factory=list)
    fault_times: list[tuple[float, str]] = field(default_factory=list)
    out_of_order: dict[str, int] = field(default_factory=dict)
    gaps: dict[str, int] = field(default_factory=dict)
    resyncs: int = 0
    publisher_failover: list[float] = field(default_factory=list)
    event_resume: list[float] = field(default_factory=list)
    etcd_failover: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.acked_missing or any(self.lost.values())
                    or any(self.repeated_raw.values())
                    or any(self.out_of_order.values()) or any(self.gaps.values())
                    or self.resyncs or self.problems)

    @staticmethod
    def _times(values: list[float]) -> str:
        if not values:
            return "-"
        return (f"n={len(values)} mean {sum(values) / len(values):.2f} s, "
                f"max {max(values):.2f} s")

    def summary(self) -> str:
        faults = ", ".join(f"{name} {n}" for name, n in sorted(self.faults.items()))
        lines = [
            f"faults: {sum(self.faults.values())} ({faults}) in {self.seconds:.0f} s",
            f"writes: acknowledged {self.acked_writes}, unknown outcome {self.unknown_writes}, "
            f"acknowledged but missing in etcd {len(self.acked_missing)}",
            f"events per subscriber/table: committed {self.committed}; revisions with several "
            f"changes of a table {self.shared_revisions}",
            f"  lost {sum(self.lost.values())}, out of order {sum(self.out_of_order.values())}, "
            f"gaps within a subscription {sum(self.gaps.values())}, repeated "
            f"{sum(self.repeated_raw.values())} "
            f"{ {k: v for k, v in self.repeated_raw.items() if v} }, on_resync {self.resyncs}",
            f"  resent to subscribers whose router was killed, after they resubscribed: "
            f"{sum(self.resent_after_router_loss.values())} "
            f"{ {k: v for k, v in self.resent_after_router_loss.items() if v} }, at most "
            f"{self.resent_at_most} in one resubscription",
            f"  repeats by the fault before them: {dict(self.repeats_after) or '-'}",
            f"publisher failover (kill -9 to new leader): {self._times(self.publisher_failover)}",
            f"event stream resumed after publisher kill: {self._times(self.event_resume)}",
            f"etcd leader kill to next acknowledged write: {self._times(self.etcd_failover)}",
        ]
        lines += [f"PROBLEM: {p}" for p in self.problems[:20]]
        lines += [f"REPEAT: {r}" for r in self.repeat_details[:10]]
        lines += [f"OUT OF ORDER: {d}" for d in self.disorder_details[:10]]
        lines += [f"MISSING: {m}" for m in self.acked_missing[:20]]
        lines.append("OK" if self.ok else "FAILED")
        return "\n".join(lines)


def within(reactor: Any, pending: Any, seconds: float) -> defer.Deferred[Any]:
    """``pending``'s result, or TimeoutError after ``seconds``. Unlike ``addTimeout`` it does
    not cancel: cancelling a WAMP call whose transport is gone raises inside autobahn and leaves
    the call hanging for ever."""
    out: defer.Deferred[Any] = defer.Deferred()

    def expire() -> None:
        if not out.called:
            out.errback(TimeoutError(f"no answer within {seconds} s"))

    timer = reactor.callLater(seconds, expire)

    def settle(result: Any) -> None:
        if timer.active():
            timer.cancel()
        if not out.called:
            if isinstance(result, Failure):
                out.errback(result)
            else:
                out.callback(result)

    defer.ensureDeferred(pending).addBoth(settle)
    return out


def note(reactor: Any, text: str) -> None:
    """Progress on stderr, so a stuck run shows where it stands."""
    print(f"[chaos {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


async def bounded(reactor: Any, step: Awaitable[Any], what: str) -> Any:
    """Await ``step``, failing with ``what`` in the message after STEP_TIMEOUT seconds."""
    try:
        return await within(reactor, step, STEP_TIMEOUT)
    except TimeoutError as exc:
        raise TimeoutError(f"{what} did not finish ({exc})") from None


class Chaos:
    """The cluster, the node, the instances, the workload and the faults of one run."""

    def __init__(self, reactor: Any, workdir: Path, binary: Path, seed: int,
                 subscribers: int = 2, kinds: tuple[str, ...] = FAULTS) -> None:
        self.reactor = reactor
        self.kinds = kinds
        self.workdir = workdir
        self.binary = binary
        self.rng = random.Random(seed)
        self.members: list[EtcdProcess] = []
        self.member_ids: dict[str, str] = {}  # member id (as etcd's status prints it) -> url
        self.node: CrossbarNode | None = None
        self.instances: list[Any] = []
        self.client: Client | None = None
        self.tables: dict[str, Table] = {}
        self.subscribers = [Subscriber(f"s{i}", list(table_specs())) for i in range(subscribers)]
        self.writes = Writes()
        self.writing = False
        self.writers: list[defer.Deferred[None]] = []
        self.wamp_writer: Any = None
        self.first_revision: dict[str, int] = {}
        self.report = Report()

    # -- set-up and tear-down ------------------------------------------------------------------

    async def start(self) -> None:
        self.members = await threads.deferToThread(start_cluster, self.binary, 3, RAFT_TIMERS)
        endpoints = [m.url for m in self.members]
        self.client = Client(self.reactor, endpoints=endpoints, namespace=NAMESPACE, timeout=2.0)
        self.member_ids = {str(m.id): url for m in await self.client.member_list()
                           for url in m.client_urls}
        self.tables = {name: Table(name, slot, key, value, self.client)
                       for name, (slot, key, value) in table_specs().items()}
        await self.start_routers(endpoints)
        for subscriber in self.subscribers:
            await subscriber.subscribe(self.reactor, self.url_of(subscriber))
        self.wamp_writer = await self.ready_session()
        # A publisher that has stored its position publishes every change after it.
        for table in self.tables:
            for router in self.routers():
                await self.position_stored(table, router)
        # A probe per table fixes where the checked history starts: every subscriber has it.
        for table in self.tables:
            revision = await self.direct_put(table, "probe", -1)
            self.first_revision[table] = revision
            await wait_for(self.reactor, functools.partial(
                self.delivered, self.subscribers, table, revision), 30, f"probe event of {table}")

    async def start_routers(self, endpoints: list[str]) -> None:
        """The router and the component instances."""
        node = CrossbarNode(self.workdir, endpoints[0], namespace=NAMESPACE.decode(),
                            with_component=False)
        node.extra["etcd"]["endpoints"] = endpoints
        self.node = await threads.deferToThread(node.start)
        self.instances = [node.start_component() for _ in range(3)]

    def url_of(self, subscriber: Subscriber) -> str:
        """The router a subscriber attaches to."""
        assert self.node is not None
        return self.node.url

    async def stop_routers(self) -> None:
        if self.node is not None:
            await threads.deferToThread(self.node.stop)

    def routers(self) -> list[str | None]:
        """The routers that have publishers of their own (node ids; None: the one router)."""
        return [None]

    def watcher(self, router: str | None) -> Subscriber:
        """A subscriber of ``router`` connected throughout: it times a publisher's failover."""
        return self.subscribers[0]

    async def position_stored(self, table: str, router: str | None = None) -> None:
        assert self.client is not None
        deadline = self.reactor.seconds() + 60
        while not (await self.client.get(position_key(PREFIX, table, router))).kvs:
            if self.reactor.seconds() > deadline:
                raise TimeoutError(f"no publisher of {table} stored its position within 60 s")
            await sleep(self.reactor, 0.1)

    @staticmethod
    def delivered(subscribers: list[Subscriber], table: str, revision: int) -> bool:
        return all(any(rev == revision for rev, _ in s.events[table]) for s in subscribers)

    async def ready_session(self) -> Any:
        """A writer session once some instance serves the procedures."""
        assert self.node is not None
        deadline = self.reactor.seconds() + 60
        while True:
            try:
                session = await within(self.reactor, connect(self.node.url, "writer",
                                                             "writer-secret"), CALL_TIMEOUT)
                await within(self.reactor, session.call(f"{PREFIX}.status"), CALL_TIMEOUT)
                return session
            except Exception:  # noqa: BLE001 - router or instances still (re)starting
                if self.reactor.seconds() > deadline:
                    raise
                await sleep(self.reactor, 0.2)

    async def stop(self) -> None:
        for subscriber in self.subscribers:
            subscriber.leave()
        if self.wamp_writer is not None and self.wamp_writer.is_attached():
            self.wamp_writer.leave()
        for proc in self.instances:
            stop_group(proc, timeout=5)
        await self.stop_routers()
        if self.client is not None:
            await self.client.close()
        for member in self.members:
            await threads.deferToThread(member.cleanup)

    # -- workload ------------------------------------------------------------------------------

    async def direct_put(self, table: str, writer: str, number: int) -> int:
        """Put a unique value straight into etcd, retrying until acknowledged."""
        assert self.client is not None
        spec = self.tables[table]
        key = wire_key(table, self.rng.randrange(KEYS_PER_TABLE))
        value = {"w": writer, "i": number}
        while True:
            try:
                revision = (await self.client.set(spec.etcd_key(key),
                                                  spec.values.encode(value))).revision
            except Exception:  # noqa: BLE001 - a fault is running; try again
                self.writes.unknown += 1
                await sleep(self.reactor, 0.1)
                continue
            self.writes.acked.append((table, revision, key, value))
            self.writes.by_path["direct"] += 1
            return int(revision)

    async def write_directly(self) -> None:
        assert self.client is not None
        number = 0
        while self.writing:
            number += 1
            table = self.rng.choice(list(self.tables))
            spec = self.tables[table]
            indexes = {self.rng.randrange(KEYS_PER_TABLE)}
            if self.rng.random() < PAIRED_WRITES:
                indexes.add(self.rng.randrange(KEYS_PER_TABLE))
            # Keys in descending order: etcd keeps the op order, which is not the keys' order.
            keys = [wire_key(table, i) for i in sorted(indexes, reverse=True)]
            value = {"w": "direct", "i": number}
            try:
                # Puts of one reactor turn: the client batches them into one txn (one revision).
                results = await defer.gatherResults(
                    [self.client.set(spec.etcd_key(key), spec.values.encode(value))
                     for key in keys], consumeErrors=True)
                for key, result in zip(keys, results, strict=True):
                    self.writes.acked.append((table, result.revision, key, value))
                    self.writes.by_path["direct"] += 1
            except Exception:  # noqa: BLE001 - outcome unknown under a fault; the check reads etcd
                self.writes.unknown += len(keys)
            await sleep(self.reactor, WRITE_PAUSE)

    async def write_through_wamp(self) -> None:
        number = 0
        while self.writing:
            number += 1
            table = self.rng.choice(list(self.tables))
            key = wire_key(table, self.rng.randrange(KEYS_PER_TABLE))
            value = {"w": "wamp", "i": number}
            session = self.wamp_writer
            try:
                if session is None or not session.is_attached():
                    raise ConnectionError("writer session gone")
                revision = await within(self.reactor, session.call(
                    f"{PREFIX}.{table}.put", key, value), CALL_TIMEOUT)
                if revision is None:
                    # What a router link would answer for a call that failed on another node
                    # (README, "Linked routers"): its outcome is unknown.
                    raise ValueError("null answer")
                self.writes.acked.append((table, revision, key, value))
                self.writes.by_path["wamp"] += 1
            except Exception:  # noqa: BLE001 - outcome unknown under a fault
                self.writes.unknown += 1
                if session is None or not session.is_attached():
                    with contextlib.suppress(Exception):
                        self.wamp_writer = await self.ready_session()
            await sleep(self.reactor, WRITE_PAUSE)

    # -- faults --------------------------------------------------------------------------------

    def etcd_leader(self) -> EtcdProcess:
        for member in self.members:
            if member.running:
                with contextlib.suppress(Exception):
                    leader = str(member.status()["leader"])
                    url = self.member_ids.get(leader)
                    found = [m for m in self.members if m.url == url]
                    if found:
                        return found[0]
        raise RuntimeError("no etcd member names a leader")

    async def kill_etcd_leader(self) -> None:
        leader = self.etcd_leader()
        killed = self.reactor.seconds()
        leader.kill()
        assert self.client is not None
        probe_table = self.rng.choice(list(self.tables))
        spec = self.tables[probe_table]
        while True:  # time until the cluster acknowledges a write again
            try:
                await self.client.set(spec.etcd_key(wire_key(probe_table, 0)),
                                      spec.values.encode({"w": "probe", "i": killed}))
                break
            except Exception:  # noqa: BLE001 - still electing
                await sleep(self.reactor, 0.05)
        self.report.etcd_failover.append(self.reactor.seconds() - killed)
        await sleep(self.reactor, 1.0)
        await threads.deferToThread(leader.start)

    async def publisher_of(self, table: str, router: str | None = None) -> bytes | None:
        assert self.client is not None
        try:
            leader = await Election(self.client, election_name(PREFIX, table, router)).leader()
        except KeyNotFound:
            return None
        return leader.value

    async def kill_publisher(self) -> None:
        assert self.client is not None and self.node is not None
        table = self.rng.choice(list(self.tables))
        routers = self.routers()
        router = self.rng.choice(routers) if len(routers) > 1 else routers[0]
        watcher = self.watcher(router)
        owner = await self.publisher_of(table, router)
        deadline = self.reactor.seconds() + 15
        while owner is None and self.reactor.seconds() < deadline:
            # Just after a router restart the instances may not have campaigned again yet.
            await sleep(self.reactor, 0.1)
            owner = await self.publisher_of(table, router)
        victim = next((p for p in self.instances
                       if owner and owner.endswith(b":%d" % p.pid)), None)
        if victim is None:
            self.report.problems.append(f"nobody publishes {table} (leader {owner!r})")
            return
        seen = len(watcher.events[table])
        killed = self.reactor.seconds()
        victim.kill()
        victim.wait()
        self.instances.remove(victim)
        deadline = killed + 30
        while self.reactor.seconds() < deadline:
            now = await self.publisher_of(table, router)
            if now is not None and now != owner:
                self.report.publisher_failover.append(self.reactor.seconds() - killed)
                break
            await sleep(self.reactor, 0.05)
        else:
            self.report.problems.append(f"no new publisher of {table} within 30 s")
        events = watcher.events[table]
        arrival = watcher.arrival[table]
        with contextlib.suppress(TimeoutError):
            await wait_for(self.reactor, lambda: len(events) > seen, 30, "event after kill")
            self.report.event_resume.append(arrival[seen] - killed)
        self.replace_instance(victim)

    def replace_instance(self, victim: Any) -> None:
        """Start an instance in place of a killed one."""
        assert self.node is not None
        self.instances.append(self.node.start_component())

    async def restart_router(self) -> None:
        assert self.node is not None
        await threads.deferToThread(self.node.stop)
        await sleep(self.reactor, self.rng.uniform(0.2, 1.5))  # writes go on directly meanwhile
        await threads.deferToThread(self.node.start)
        # The first subscriber first: the publisher resumes from its position while it listens.
        for subscriber in self.subscribers:
            await subscriber.subscribe(self.reactor, self.node.url)

    async def pause_member(self) -> None:
        member = self.rng.choice([m for m in self.members if m.running])
        member.pause()
        try:
            await sleep(self.reactor, self.rng.uniform(1.5, 3.0))
        finally:
            member.resume()

    # -- the run -------------------------------------------------------------------------------

    async def run(self, faults: int, settle: float = 1.0) -> Report:
        started = self.reactor.seconds()
        try:
            await bounded(self.reactor, self.start(), "set-up")
            note(self.reactor, "set up; writing")
            self.writing = True
            self.writers = [defer.ensureDeferred(self.write_directly()),
                            defer.ensureDeferred(self.write_through_wamp())]
            kinds = [self.kinds[i % len(self.kinds)] for i in range(faults)]
            self.rng.shuffle(kinds)
            for number, kind in enumerate(kinds, 1):
                await sleep(self.reactor, settle)
                note(self.reactor, f"fault {number}/{faults}: {kind}")
                self.report.fault_times.append((self.reactor.seconds(), kind))
                fault: Callable[[], Awaitable[None]] = getattr(self, kind)
                await bounded(self.reactor, fault(), kind)
                self.report.faults[kind] += 1
            await sleep(self.reactor, settle)
            self.writing = False
            await bounded(self.reactor, defer.DeferredList(self.writers), "writers' end")
            note(self.reactor, "checking")
            await bounded(self.reactor, self.check(), "check")
        finally:
            await self.stop()
        self.report.seconds = self.reactor.seconds() - started
        return self.report

    async def history(self, table: str, end: int) -> list[tuple[int, str, Any]]:
        """Every committed change of ``table`` from its probe to ``end``: (rev, key, value)."""
        assert self.client is not None
        spec = self.tables[table]
        changes: list[tuple[int, str, Any]] = []

        def collect(item: WatchEvent | WatchCompacted) -> None:
            if isinstance(item, WatchCompacted):
                self.report.problems.append(f"history of {table} compacted")
                return
            changes.append((item.revision, str(spec.wire_key(item.kv.key)),
                            spec.values.decode(item.kv.value)))

        watch = self.client.watch(spec.keyset, collect,
                                  start_revision=self.first_revision[table])
        try:
            await wait_for(self.reactor, lambda: changes and changes[-1][0] >= end, 60,
                           f"history of {table}")
        finally:
            watch.cancel()
        return changes

    async def check(self) -> None:
        report = self.report
        # A final marker per table: when every subscriber has it, everything before is in.
        ends = {table: await self.direct_put(table, "end", 0) for table in self.tables}
        for table, end in ends.items():
            with contextlib.suppress(TimeoutError):
                await wait_for(self.reactor, functools.partial(
                    self.delivered, self.subscribers[:1], table, end), 30,
                    f"end marker of {table}")
        await sleep(self.reactor, 0.5)  # a late repeat would show up here
        committed: dict[str, list[Change]] = {}
        # By revision and key: ops batched into one etcd txn share a revision.
        values: dict[tuple[str, int, str], Any] = {}
        for table, end in ends.items():
            changes = await self.history(table, end)
            committed[table] = [(rev, key) for rev, key, _ in changes if rev <= end]
            revisions = collections.Counter(rev for rev, _ in committed[table])
            report.shared_revisions += sum(1 for n in revisions.values() if n > 1)
            values.update({(table, rev, key): value for rev, key, value in changes})
        report.acked_writes = len(self.writes.acked)
        report.unknown_writes = self.writes.unknown
        for table, revision, key, value in self.writes.acked:
            stored = values.get((table, revision, key))
            if revision >= self.first_revision[table] and stored != value:
                report.acked_missing.append(f"{table} {key} {value} at {revision}")
        report.resyncs = sum(len(s.resyncs) for s in self.subscribers)
        for subscriber in self.subscribers:
            for table, expected in committed.items():
                self.check_sequence(subscriber, table, expected, self.complete(subscriber))

    def complete(self, subscriber: Subscriber) -> bool:
        """Whether ``subscriber`` must have every committed change (see the module doc)."""
        return subscriber is self.subscribers[0]

    def fault_before(self, at: float) -> tuple[str, float | None]:
        """The kind and start time of the last fault started at or before ``at``."""
        before = [(kind, start) for start, kind in self.report.fault_times if start <= at]
        return before[-1] if before else ("no fault", None)

    def describe(self, subscriber: Subscriber, table: str, i: int) -> str:
        """The ``i``-th event a subscriber received: change, arrival, publisher session, and
        the fault before it."""
        at = subscriber.arrival[table][i]
        kind, start = self.fault_before(at)
        when = f"after {kind} at {start:.2f}" if start is not None else "before any fault"
        return (f"{subscriber.events[table][i]} at {at:.2f} from session "
                f"{subscriber.publishers[table][i]} ({when})")

    @staticmethod
    def before(change: Change, previous: Change, index: dict[Change, int]) -> bool:
        """Whether ``change`` comes before ``previous`` in etcd's order: by revision, and within
        one revision (a txn, or puts the client batched into one) by the committed history's
        order, which is the txn's op order, not the keys' order."""
        if change[0] != previous[0]:
            return change[0] < previous[0]
        return change in index and previous in index and index[change] < index[previous]

    def check_sequence(self, subscriber: Subscriber, table: str, expected: list[Change],
                       complete: bool) -> None:
        """Drop raw repeats, then compare with the committed changes (see the module doc)."""
        label = f"{subscriber.name}/{table}"
        report = self.report
        index = {change: i for i, change in enumerate(expected)}
        raw = subscriber.events[table]
        starts = set(subscriber.epochs[table])
        lossy = subscriber.after_router_loss.get(table, set())
        seen: set[Change] = set()
        in_epoch: set[Change] = set()  # seen since the subscription began
        kept: list[Change] = []
        kept_at: list[int] = []  # raw index of each kept event
        repeats = disorder = gaps = resent = resent_here = 0
        epoch_start, fresh = 0, False  # fresh: no event kept in this subscription yet
        for i, change in enumerate(raw):
            if i in starts:
                epoch_start, fresh, in_epoch, resent_here = i, True, set(), 0
            if change in seen and change not in in_epoch and epoch_start in lossy:
                resent += 1  # had before its router was killed: may come again once
                resent_here += 1
                report.resent_at_most = max(report.resent_at_most, resent_here)
                in_epoch.add(change)
                continue
            in_epoch.add(change)
            if change in seen:
                repeats += 1
                first = raw.index(change)
                report.repeats_after[self.fault_before(subscriber.arrival[table][i])[0]] += 1
                report.repeat_details.append(
                    f"{label} {self.describe(subscriber, table, i)}, first "
                    f"{self.describe(subscriber, table, first)}")
                continue
            seen.add(change)
            if change not in index and change[0] >= expected[0][0]:
                # Checked whatever its order: an out-of-order event may be one of these.
                report.problems.append(f"{label}: event {change} was never committed")
            if kept and self.before(change, kept[-1], index):
                disorder += 1
                report.disorder_details.append(
                    f"{label} {self.describe(subscriber, table, i)}"
                    f"{'' if change in index else ' (not in the checked history)'} after "
                    f"{self.describe(subscriber, table, kept_at[-1])}")
            elif kept and not fresh and change in index and kept[-1] in index and \
                    index[change] != index[kept[-1]] + 1:
                gaps += 1
            fresh = False
            kept.append(change)
            kept_at.append(i)
        report.repeated_raw[label] = repeats
        report.resent_after_router_loss[label] = resent
        report.out_of_order[label] = disorder
        report.gaps[label] = gaps
        report.committed[label] = len(expected)
        lost = len(set(expected) - seen) if complete else 0
        report.lost[label] = lost
        if complete and [c for c in kept if c in index] != expected:
            report.problems.append(f"{label}: sequence differs from the committed changes")


async def run_chaos(reactor: Any, faults: int, seed: int, binary: Path,
                    workdir: Path | None = None, settle: float = 1.0,
                    kinds: tuple[str, ...] = FAULTS) -> Report:
    """One chaos run; a temporary directory holds the node's config and logs unless given."""
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="chaos-")))
        return await Chaos(reactor, workdir, binary, seed, kinds=kinds).run(faults, settle)


def arguments(argv: list[str], doc: str, kinds: tuple[str, ...],
              nodes: bool = False) -> argparse.Namespace:
    """A chaos run's command line (``--nodes`` for linked routers); makes the ``--keep`` dir."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    if nodes:
        parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--faults", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--version", default="3.5", help="etcd version prefix, e.g. 3.4")
    parser.add_argument("--settle", type=float, default=1.0,
                        help="seconds of load between two faults")
    parser.add_argument("--keep", default=None, help="keep node configs and logs in this dir")
    parser.add_argument("--kinds", nargs="+", choices=kinds, default=kinds,
                        help="only these faults (default: all, in turn)")
    args = parser.parse_args(argv)
    args.workdir = Path(args.keep) if args.keep else None
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    return args


def conclude(args: argparse.Namespace, report: Report, started: float) -> None:
    """Print the run's report; exit non-zero if anything was lost, repeated or reordered."""
    nodes = f", nodes {args.nodes}" if "nodes" in args else ""
    print(f"etcd {args.version}, seed {args.seed}{nodes}, "
          f"{time.monotonic() - started:.0f} s wall")
    print(report.summary())
    if not report.ok:
        raise SystemExit(1)


def assert_clean(report: Report) -> None:
    """What the short chaos tests require: nothing acknowledged lost, nothing lost, repeated,
    reordered or missing within a subscription, no resync, a failover per publisher kill."""
    assert report.acked_writes > 0 and not report.acked_missing, report.summary()
    assert not any(report.lost.values()), report.summary()
    assert not any(report.repeated_raw.values()), report.summary()
    assert not any(report.out_of_order.values()), report.summary()
    assert not any(report.gaps.values()), report.summary()
    assert not report.problems and not report.resyncs, report.summary()
    # Every publisher kill was followed by another instance taking over (the times are
    # reported, not asserted: a loaded machine must not fail the suite).
    assert len(report.publisher_failover) == report.faults["kill_publisher"], report.summary()


async def main(reactor: Any, argv: list[str]) -> None:
    args = arguments(argv, __doc__, FAULTS)
    started = time.monotonic()
    report = await run_chaos(reactor, args.faults, args.seed, find_etcd(args.version),
                             args.workdir, args.settle, tuple(args.kinds))
    conclude(args, report, started)


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, sys.argv[1:])))
