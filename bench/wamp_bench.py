"""The WAMP benchmarks against a real Crossbar node running the etcd component (issue 7).

- ``get``: ``etcd.settings.get`` pipelined (200 in flight) over WebSocket/CBOR, against a plain
  echo procedure registered the way the component is (rawsocket on the node's unix socket).
- events: etcd changes written straight to etcd -> ``etcd.settings.on_change`` subscriber,
  events/s at full speed, alternating with the baseline: a plain publisher on the node's unix
  socket (like the component) sending the same events with the same options and the same
  pipelining to a topic the same subscriber receives. Then latency percentiles at 1,000
  events/s, and at 20 events/s; at every rate, the position writes the publisher made (the
  version count of its position key in etcd) against the table writes.
- scan: one progressive ``etcd.settings.scan`` of 100,000 rows, rows/s, alternating with the
  baseline: a plain callee on the node's unix socket (like the component) sending the same rows
  in the same 100-row progressive chunks from memory, to the same caller. Each run states the
  CPU seconds per 100,000 rows of the component's container, the router, etcd and the caller.
- burst: 500 parallel 1 MB puts from three callers; the component container's RSS peak above
  where it started.

    .venv/bin/python bench/wamp_bench.py [--seconds 3] [--rounds 3] [--only get events scan burst]
        [--results FILE]

With ``--results``, each target's figure is appended to FILE as a JSON line (``run.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import cbor2
from autobahn.twisted.component import Component
from autobahn.wamp.types import CallOptions, PublishOptions, RegisterOptions
from twisted.internet import defer, reactor, task

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kv_clients import Count  # noqa: E402 - bench/, beside this file

from component.publisher import MAX_IN_FLIGHT, position_key  # noqa: E402
from procedures.answers import CHUNK_ROWS, FIRST_CHUNK_ROWS  # noqa: E402
from tests.test_hostile_load import RSS_BOUND_MB, component_pid, cpu_seconds, rss_mb  # noqa: E402
from tests.wamp import CrossbarNode, connect  # noqa: E402
from txetcd import Client, KeySet  # noqa: E402
from txetcd.embedded import EtcdProcess, find_etcd  # noqa: E402

NAMESPACE = b"app/"
SETTINGS_SLOT = b"\x00\x02"  # the settings table of crossbar-config (string keys, cbor values)
INFLIGHT = 200
SCAN_ROWS = 100_000
FULL_SPEED_EVENTS = 20_000
DRAIN_LIMIT = 60.0  # seconds to wait for events still on their way
LOW_RATE = 20  # events/s of the low-rate run: one write per 50 ms
POSITION_SHARE = 0.05  # position writes may be at most this share of table writes
RESULTS: Path | None = None


def result(target: str, value: str, met: bool) -> None:
    """Record one issue-17 target's figure for ``run.py`` (with ``--results``)."""
    if RESULTS is not None:
        with RESULTS.open("a") as f:
            f.write(json.dumps({"target": target, "value": value, "met": bool(met)}) + "\n")


def row_key(key: str) -> bytes:
    """The etcd key (without the namespace) of a settings row (the txetcd.pmap layout)."""
    return SETTINGS_SLOT + key.encode()


async def backend_session(socket_path: Path) -> Any:
    """A session on the node's unix socket, joined the way the component joins."""
    joined: defer.Deferred[Any] = defer.Deferred()
    comp = Component(transports=[{"type": "rawsocket", "serializer": "cbor",
                                  "endpoint": {"type": "unix", "path": str(socket_path)}}],
                     realm="realm1")

    @comp.on_join
    def _joined(session: Any, details: Any) -> None:
        joined.callback(session)

    comp.start(reactor)
    return await joined


async def echo_callee(socket_path: Path) -> Any:
    """A plain echo procedure on the node's unix socket, registered like the component."""
    session = await backend_session(socket_path)
    await session.register(lambda *args, **kwargs: args[0] if args else None, "etcd.bench.echo")
    return session


async def rows_callee(socket_path: Path, rows: list[Any]) -> Any:
    """The scan baseline: ``etcd.bench.rows`` sends ``rows`` as progressive results in the
    chunks the component's scan makes of them, but from memory."""
    session = await backend_session(socket_path)

    def send(*args: Any, details: Any = None, **kwargs: Any) -> list[Any]:
        details.progress(rows[:FIRST_CHUNK_ROWS])
        for start in range(FIRST_CHUNK_ROWS, len(rows), CHUNK_ROWS):
            details.progress(rows[start:start + CHUNK_ROWS])
        return []

    await session.register(send, "etcd.bench.rows", options=RegisterOptions(details_arg="details"))
    return session


async def stop_standalone(component: Any, grace: float) -> None:
    """Stop a component run on its own (``python -m component``): SIGINT, then up to ``grace``
    seconds for its clean stop, then SIGKILL."""
    component.send_signal(signal.SIGINT)
    deadline = time.monotonic() + grace
    while component.poll() is None and time.monotonic() < deadline:
        await task.deferLater(reactor, 0.2, lambda: None)
    if component.poll() is None:
        component.kill()


def node_pids(node: CrossbarNode, etcd_pid: int) -> dict[str, int]:
    """The processes a WAMP call crosses: the node's router and container workers, etcd, and
    this process (the caller)."""
    return {"etcd": etcd_pid, "caller": os.getpid(), **node.worker_pids()}


def cpu_now(pids: dict[str, int]) -> dict[str, float]:
    """Each process's CPU seconds so far."""
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def cpu_since(before: dict[str, float], pids: dict[str, int], count: float,
              unit: float = 1e6) -> dict[str, float]:
    """Each process's CPU since ``before`` per one of ``count`` (in µs; seconds with
    ``unit=1``)."""
    return {name: (cpu_seconds(pid) - before[name]) * unit / count
            for name, pid in pids.items()}


def cpu_text(runs: list[dict[str, float]], unit: str = "{:.0f}") -> str:
    """Each process's median CPU over ``runs`` (one dict of process -> CPU per run)."""
    return ", ".join(f"{name} {unit.format(statistics.median(run[name] for run in runs))}"
                     for name in runs[0])


def cpu_shares(path: list[dict[str, float]], baseline: list[dict[str, float]]) -> str:
    """Whose CPU a ratio to a baseline is spent by (medians, per call or event): on a machine
    the processes share, rates go about as the inverse of these sums. The baseline skips etcd
    and the component's container; the ratio it would be without each of their parts says how
    much of a gap is etcd's (its gateway), and how much the component's."""
    ours = {name: statistics.median(run[name] for run in path) for name in path[0]}
    base = sum(statistics.median(run[name] for run in baseline) for name in baseline[0])
    total = sum(ours.values())
    return (f"by CPU: {total:.0f} against {base:.0f} µs, {base / total:.2f}x; without etcd's "
            f"{ours['etcd']:.0f} µs {base / (total - ours['etcd']):.2f}x, without the "
            f"container's {ours['container']:.0f} µs {base / (total - ours['container']):.2f}x")


async def pipelined(session: Any, procedure: str, args: list[Any], seconds: float) -> float:
    """Calls/s with ``INFLIGHT`` calls always outstanding, after a short warm-up."""
    begin = time.perf_counter() + 0.5
    end = begin + seconds
    done = 0

    async def worker() -> None:
        nonlocal done
        while True:
            await session.call(procedure, *args)
            now = time.perf_counter()
            if now >= end:
                return
            if now >= begin:
                done += 1

    await defer.gatherResults([defer.ensureDeferred(worker()) for _ in range(INFLIGHT)])
    return done / seconds


async def get_vs_echo(session: Any, client: Client, rounds: int, seconds: float,
                      pids: dict[str, int]) -> None:
    value = cbor2.dumps({"v": "x" * 90})
    await defer.gatherResults([client.set(row_key(f"k{i:03d}"), value) for i in range(1000)])
    rates: dict[str, list[float]] = {"get": [], "echo": []}
    cpu: dict[str, list[dict[str, float]]] = {"get": [], "echo": []}
    for _ in range(rounds):
        for kind, procedure in (("get", "etcd.settings.get"), ("echo", "etcd.bench.echo")):
            before = cpu_now(pids)
            rate = await pipelined(session, procedure, ["k007"], seconds)
            calls = rate * (seconds + 0.5)  # the warm-up's calls too: about the same rate
            rates[kind].append(rate)
            cpu[kind].append(cpu_since(before, pids, calls))
    get, echo = statistics.median(rates["get"]), statistics.median(rates["echo"])
    print(f"| WAMP get, {INFLIGHT} in flight | {get:,.0f} calls/s | echo {echo:,.0f} calls/s; "
          f"CPU µs per call: get: {cpu_text(cpu['get'])}; echo: {cpu_text(cpu['echo'])} | "
          f"{get / echo:.2f}x echo (target >= 0.85x) |", flush=True)
    shares = cpu_shares(cpu["get"], cpu["echo"]) if "container" in pids else ""
    result("WAMP get >= 0.85x echo", f"{get / echo:.2f}x ({get:,.0f} vs {echo:,.0f} calls/s"
           + (f"; {shares})" if shares else ")"), get / echo >= 0.85)


async def arrived(received: list[Any], expected: int, limit: float) -> None:
    """Wait until ``expected`` events are in (bounded: at most ``limit`` seconds)."""
    deadline = time.perf_counter() + limit
    while len(received) < expected and time.perf_counter() < deadline:
        await task.deferLater(reactor, 0.1, lambda: None)


async def position_writes(client: Client) -> int:
    """How often the settings publisher has stored its position (its key's version)."""
    found = await client.get(position_key("etcd", "settings"))
    return found.kvs[0].version if found.kvs else 0


def position_result(rate: str, writes: int, table_writes: int) -> str:
    share = writes / max(table_writes, 1)
    result(f"position writes <= 5 % of table writes at {rate}",
           f"{share:.1%} ({writes} for {table_writes})", share <= POSITION_SHARE)
    return f"position writes {writes} ({share:.1%})"


def span_rate(received: list[tuple[float, float]]) -> float:
    """Events/s from the first to the last arrival."""
    if len(received) < 2:
        return 0.0
    return len(received) / (received[-1][0] - received[0][0])


async def full_speed_table(client: Client, received: list[tuple[float, float]]) -> int:
    """FULL_SPEED_EVENTS puts from 64 writers (batched into txns by the client)."""
    count = 0

    async def writer(n: int) -> None:
        nonlocal count
        while count < FULL_SPEED_EVENTS:
            count += 1
            await client.set(row_key(f"ev{n}-{count}"), cbor2.dumps({"t": 0.0}))

    await defer.gatherResults([defer.ensureDeferred(writer(n)) for n in range(64)])
    await arrived(received, count, DRAIN_LIMIT)
    return count


async def full_speed_plain(publisher: Any, received: list[tuple[float, float]]) -> int:
    """The baseline: the same events, options and pipelining as the component's publisher."""
    options = PublishOptions(acknowledge=True, retain=True)
    window = defer.DeferredSemaphore(MAX_IN_FLIGHT)

    def publish(i: int) -> Any:
        return publisher.publish("etcd.bench.on_change", options=options, type="put",
                                 key=f"ev{i}", value={"t": 0.0}, revision=i + 1)

    await defer.gatherResults([window.run(publish, i) for i in range(FULL_SPEED_EVENTS)])
    await arrived(received, FULL_SPEED_EVENTS, DRAIN_LIMIT)
    return FULL_SPEED_EVENTS


async def cpu_per_event(pids: dict[str, int], into: list[dict[str, float]],
                        run: Coroutine[Any, Any, int]) -> int:
    """Await ``run`` (it returns how many events it sent); each process's CPU µs per event
    goes to ``into``."""
    before = cpu_now(pids)
    count = await run
    into.append(cpu_since(before, pids, count))
    return count


def slow_fsyncs(url: str) -> tuple[int, int]:
    """etcd's WAL fsyncs so far, and how many of them took over 64 ms (its ``/metrics``): a
    write stalls while the disk does, whatever the client, component or router do."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    found = dict(re.findall(r'^etcd_disk_wal_fsync_duration_seconds_(count|bucket\{le="0.064"\}) '
                            r"(\S+)$", text, re.M))
    total = int(float(found["count"]))
    return total, total - int(float(found['bucket{le="0.064"}']))


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values) or [float("nan")]
    return ordered[min(int(len(ordered) * share), len(ordered) - 1)]


async def latency(client: Client, received: list[tuple[float, float]], per_second: int,
                  seconds: float, etcd_url: str) -> tuple[float, str]:
    """Events sent at ``per_second`` (in ticks of 10 ms at most), each with its send time; the
    p99 of the whole way, and of its two parts: etcd acknowledging the write (its disk among
    them), and the rest (the watch, the component, the router, the subscriber). Returns the
    whole way's p99 (ms), and the text of its parts."""
    received.clear()
    acknowledged: dict[float, float] = {}  # send time -> when etcd acknowledged the write
    sent = 0
    per_tick = max(1, per_second // 100)
    interval = per_tick / per_second

    def tick() -> None:
        nonlocal sent
        for _ in range(per_tick):
            sent += 1
            at = time.perf_counter()
            written = client.set(row_key(f"lat{sent % 1000}"), cbor2.dumps({"t": at}))
            written.addCallback(lambda _, at=at: acknowledged.setdefault(at, time.perf_counter()))

    before = await position_writes(client)
    fsyncs_before = slow_fsyncs(etcd_url)
    # This process is the writer and the subscriber, and it holds every event of the runs
    # before: a full collection of its heap delays the arrivals it stamps.
    collector = Count(0)
    collector.start()
    loop = task.LoopingCall(tick)
    loop.start(interval)
    await task.deferLater(reactor, seconds, lambda: None)
    loop.stop()
    await arrived(received, sent, DRAIN_LIMIT)
    collector.stop()
    writes = await position_writes(client) - before
    fsyncs, slow = (now - then for now, then in zip(slow_fsyncs(etcd_url), fsyncs_before,
                                                     strict=True))
    whole = [(arrival - t) * 1000 for arrival, t in received if t]
    p50, p99 = percentile(whole, 0.5), percentile(whole, 0.99)
    etcd_p99 = percentile([(at - t) * 1000 for t, at in acknowledged.items()], 0.99)
    rest_p99 = percentile([(arrival - acknowledged[t]) * 1000 for arrival, t in received
                           if t in acknowledged], 0.99)
    parts = (f"etcd's acknowledgement p99 {etcd_p99:.1f} ms, from it to the subscriber p99 "
             f"{rest_p99:.1f} ms; etcd's WAL fsyncs over 64 ms: {slow} of {fsyncs}; the "
             f"subscriber's longest collector pause {collector.longest_pause * 1000:.1f} ms, "
             f"full collections {collector.collections[2]}")
    print(f"| latency at {sent / seconds:,.0f} events/s | p50 {p50:.1f} ms | p99 {p99:.1f} ms "
          f"(max {max(whole, default=float('nan')):.1f}; {len(received)} of {sent} arrived; "
          f"{parts}); {position_result(f'{per_second:,} events/s', writes, sent)} | "
          f"target p99 <= 50 ms |", flush=True)
    return p99, parts


async def watching(client: Client, received: list[tuple[float, float]]) -> None:
    """The component starts watching once it learns of a subscription: wait for a probe."""
    for _ in range(100):
        await client.set(row_key("probe"), cbor2.dumps({"t": 0.0}))
        await task.deferLater(reactor, 0.1, lambda: None)
        if received:
            break
    await task.deferLater(reactor, 0.5, lambda: None)


async def events(session: Any, client: Client, etcd_url: str, seconds: float, rounds: int = 1,
                 publisher: Any = None, pids: dict[str, int] | None = None) -> None:
    received: list[tuple[float, float]] = []  # (arrival, sent) per event
    plain: list[tuple[float, float]] = []

    def recorder(into: list[tuple[float, float]]) -> Any:
        def on_change(*args: Any, **event: Any) -> None:  # the event's fields are keywords
            value = event.get("value")
            sent = value.get("t", 0.0) if isinstance(value, dict) else 0.0
            into.append((time.perf_counter(), sent))

        return on_change

    subscriptions = [await session.subscribe(recorder(received), "etcd.settings.on_change"),
                     await session.subscribe(recorder(plain), "etcd.bench.on_change")]
    await watching(client, received)

    # Full speed, alternating with the plain publisher's baseline when there is one.
    table_rates, plain_rates = [], []
    cpu: dict[str, list[dict[str, float]]] = {"table": [], "plain": []}
    pids = pids or {}
    writes = table_writes = 0
    for _ in range(rounds):
        received.clear()
        before = await position_writes(client)
        count = await cpu_per_event(pids, cpu["table"], full_speed_table(client, received))
        writes += await position_writes(client) - before
        table_writes += count
        table_rates.append(span_rate(received))
        print(f"  table events: {len(received)} of {count} at {table_rates[-1]:,.0f}/s",
              flush=True)
        if publisher is not None:
            plain.clear()
            await cpu_per_event(pids, cpu["plain"], full_speed_plain(publisher, plain))
            plain_rates.append(span_rate(plain))
            print(f"  plain publisher: {len(plain)} at {plain_rates[-1]:,.0f}/s", flush=True)
    rate = statistics.median(table_rates)
    detail = position_result("full speed", writes, table_writes)
    detail += f"; CPU µs per event: table: {cpu_text(cpu['table'])}"
    if plain_rates:
        base = statistics.median(plain_rates)
        detail += (f"; plain publisher {base:,.0f}/s, {rate / base:.2f}x; CPU µs per event: "
                   f"plain: {cpu_text(cpu['plain'])}")
        shares = f"; {cpu_shares(cpu['table'], cpu['plain'])}" if "container" in pids else ""
        result("events >= 0.8x the plain publisher", f"{rate / base:.2f}x ({rate:,.0f} vs "
               f"{base:,.0f} events/s{shares})", rate / base >= 0.8)
    print(f"| etcd change -> subscriber, full speed | {rate:,.0f} events/s | {detail} | "
          f"target >= 0.8x plain publisher |", flush=True)

    p99, parts = await latency(client, received, 1000, seconds, etcd_url)
    result("p99 <= 50 ms at 1,000 events/s", f"{p99:.1f} ms ({parts})", p99 <= 50)
    await latency(client, received, LOW_RATE, max(seconds, 5.0), etcd_url)
    # Nobody listens any more: the publisher stops, and the scan's 100,000 writes that follow
    # are not published to this subscriber while the scan is measured.
    for subscription in subscriptions:
        await subscription.unsubscribe()


async def scan(session: Any, client: Client, rounds: int, pids: dict[str, int],
               socket_path: Path) -> None:
    value = {"v": "x" * 90}
    keys = [f"scan/{i:06d}" for i in range(SCAN_ROWS)]
    stored = cbor2.dumps(value)
    for start in range(0, SCAN_ROWS, 2_000):  # small steps: each within the client's timeout
        await defer.gatherResults([client.set(row_key(k), stored)
                                   for k in keys[start:start + 2_000]])
    callee = await rows_callee(socket_path, [[k, value] for k in keys])
    rates: dict[str, list[float]] = {"table": [], "plain": []}
    cpu: dict[str, list[dict[str, float]]] = {"table": [], "plain": []}
    for _ in range(rounds):
        for kind, procedure, kwargs in (("table", "etcd.settings.scan",
                                         {"prefix": "scan/", "limit": SCAN_ROWS}),
                                        ("plain", "etcd.bench.rows", {})):
            rows = 0

            def on_progress(chunk: Any, *args: Any, **kwargs: Any) -> None:
                nonlocal rows
                rows += len(chunk)

            before = cpu_now(pids)
            began = time.perf_counter()
            await session.call(procedure, options=CallOptions(on_progress=on_progress), **kwargs)
            rates[kind].append(rows / (time.perf_counter() - began))
            cpu[kind].append(cpu_since(before, pids, rows / 100_000, unit=1.0))
            assert rows == SCAN_ROWS, rows
    callee.leave()
    rate, plain = statistics.median(rates["table"]), statistics.median(rates["plain"])
    print(f"| progressive scan, {SCAN_ROWS:,} rows | {rate:,.0f} rows/s | plain callee "
          f"{plain:,.0f} rows/s, {rate / plain:.2f}x; CPU s per 100k rows: table: "
          f"{cpu_text(cpu['table'], '{:.2f}')}; plain: {cpu_text(cpu['plain'], '{:.2f}')} | "
          "target >= 60,000 rows/s |",
          flush=True)
    result("progressive scan >= 60,000 rows/s",
           f"{rate:,.0f} rows/s (plain callee {plain:,.0f}, {rate / plain:.2f}x)", rate >= 60_000)


BURST_BOUND_MB = RSS_BOUND_MB  # 32 MiB of arguments in flight, about 5 copies of each


async def burst(node: CrossbarNode, writers: list[Any]) -> None:
    """500 parallel 1 MB puts: how far the component's RSS rises (max_inflight_bytes bounds it;
    what is over it is answered ``busy``)."""
    pid = component_pid(node)
    before = rss_mb(pid)
    peak = [before]
    sampler = task.LoopingCall(lambda: peak.append(rss_mb(pid)))
    sampler.start(0.05)
    value = "v" * 1_000_000
    calls = [writers[i % len(writers)].call("etcd.settings.put", f"big{i:03d}", value)
             for i in range(500)]
    outcomes = await defer.DeferredList(calls, consumeErrors=True)
    await task.deferLater(reactor, 2.0, lambda: None)
    sampler.stop()
    written = sum(ok for ok, _ in outcomes)
    growth = max(peak) - before
    print(f"| burst of 500 parallel 1 MB puts | RSS peak +{growth:,.0f} MB | {before:,.0f} -> "
          f"{max(peak):,.0f} MB, {rss_mb(pid):,.0f} MB after; {written} written, the rest busy | "
          f"bound {BURST_BOUND_MB} MB |", flush=True)
    result(f"component RSS under a burst of 1 MB writes <= +{BURST_BOUND_MB} MB",
           f"+{growth:,.0f} MB", growth <= BURST_BOUND_MB)


async def main(args: argparse.Namespace) -> None:
    with EtcdProcess(find_etcd("3.5")) as etcd, \
            tempfile.TemporaryDirectory(prefix="wamp-bench-") as workdir:
        node = CrossbarNode(Path(workdir), etcd.url).start(timeout=300)  # a loaded machine
        client = Client(reactor, url=etcd.url, namespace=NAMESPACE)
        try:
            callee = await echo_callee(node.socket_path)
            publisher = await backend_session(node.socket_path)
            session = await connect(node.url, "writer", "writer-secret")
            subscriber = await connect(node.url, "writer", "writer-secret")
            assert etcd.proc is not None
            pids = node_pids(node, etcd.proc.pid)
            print("| WAMP benchmark | result | detail | target |\n|---|---|---|---|",
                  flush=True)
            if "get" in args.only:
                await get_vs_echo(session, client, args.rounds, args.seconds, pids)
            if "events" in args.only:
                await events(subscriber, client, etcd.url, args.seconds, args.rounds, publisher,
                             pids)
            if "scan" in args.only:
                await scan(session, client, args.rounds, pids, node.socket_path)
            if "burst" in args.only:
                await burst(node, [session, subscriber])
            for s in (session, subscriber, callee, publisher):
                s.leave()
        finally:
            await client.delete(KeySet.all())
            await client.close()
            node.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="+", choices=("get", "events", "scan", "burst"),
                        default=("get", "events", "scan", "burst"),
                        help="run just these benchmarks")
    parser.add_argument("--results", type=Path, help="append each target's figure here")
    arguments = parser.parse_args()
    RESULTS = arguments.results
    task.react(lambda _: defer.ensureDeferred(main(arguments)))
