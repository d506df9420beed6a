"""The WAMP benchmarks against a real Crossbar node running the etcd component (issue 7).

- ``get``: ``etcd.settings.get`` pipelined (200 in flight) over WebSocket/CBOR, against a plain
  echo procedure registered the way the component is (rawsocket on the node's unix socket).
- events: etcd changes written straight to etcd -> ``etcd.settings.on_change`` subscriber,
  events/s at full speed and latency percentiles at 1,000 events/s.
- scan: one progressive ``etcd.settings.scan`` of 100,000 rows, rows/s.

    .venv/bin/python bench/wamp_bench.py [--seconds 3] [--rounds 3] [--only get events scan]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cbor2
from autobahn.twisted.component import Component
from autobahn.wamp.types import CallOptions
from twisted.internet import defer, reactor, task

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.wamp import CrossbarNode, connect  # noqa: E402
from txetcd import Client, KeySet  # noqa: E402
from txetcd.embedded import EtcdProcess, find_etcd  # noqa: E402

NAMESPACE = b"app/"
SETTINGS_SLOT = b"\x00\x02"  # the settings table of crossbar-config (string keys, cbor values)
INFLIGHT = 200
SCAN_ROWS = 100_000
FULL_SPEED_EVENTS = 20_000
DRAIN_LIMIT = 60.0  # seconds to wait for events still on their way


def row_key(key: str) -> bytes:
    """The etcd key (without the namespace) of a settings row (the txetcd.pmap layout)."""
    return SETTINGS_SLOT + key.encode()


async def echo_callee(socket_path: Path) -> Any:
    """A plain echo procedure on the node's unix socket, registered like the component."""
    joined: defer.Deferred[Any] = defer.Deferred()
    comp = Component(transports=[{"type": "rawsocket", "serializer": "cbor",
                                  "endpoint": {"type": "unix", "path": str(socket_path)}}],
                     realm="realm1")

    @comp.on_join
    async def _joined(session: Any, details: Any) -> None:
        await session.register(lambda *args, **kwargs: args[0] if args else None,
                               "etcd.bench.echo")
        joined.callback(session)

    comp.start(reactor)
    return await joined


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


async def get_vs_echo(session: Any, client: Client, rounds: int, seconds: float) -> None:
    value = cbor2.dumps({"v": "x" * 90})
    await defer.gatherResults([client.set(row_key(f"k{i:03d}"), value) for i in range(1000)])
    gets, echos = [], []
    for _ in range(rounds):
        gets.append(await pipelined(session, "etcd.settings.get", ["k007"], seconds))
        echos.append(await pipelined(session, "etcd.bench.echo", ["k007"], seconds))
    get, echo = statistics.median(gets), statistics.median(echos)
    print(f"| WAMP get, {INFLIGHT} in flight | {get:,.0f} calls/s | echo {echo:,.0f} calls/s | "
          f"{get / echo:.2f}x echo (target >= 0.7x) |", flush=True)


async def arrived(received: list[Any], expected: int, limit: float) -> None:
    """Wait until ``expected`` events are in (bounded: at most ``limit`` seconds)."""
    deadline = time.perf_counter() + limit
    while len(received) < expected and time.perf_counter() < deadline:
        await task.deferLater(reactor, 0.1, lambda: None)


async def events(session: Any, client: Client, seconds: float) -> None:
    received: list[tuple[float, float]] = []  # (arrival, sent) per event

    def on_change(*args: Any, **event: Any) -> None:  # the event's fields are keywords
        value = event.get("value")
        sent = value.get("t", 0.0) if isinstance(value, dict) else 0.0
        received.append((time.perf_counter(), sent))

    await session.subscribe(on_change, "etcd.settings.on_change")
    # The component starts watching once it learns of the subscription: wait for a probe.
    for _ in range(100):
        await client.set(row_key("probe"), cbor2.dumps({"t": 0.0}))
        await task.deferLater(reactor, 0.1, lambda: None)
        if received:
            break
    await task.deferLater(reactor, 0.5, lambda: None)

    # Full speed: FULL_SPEED_EVENTS puts from many writers (batched into txns by the client).
    received.clear()
    count = 0

    async def writer(n: int) -> None:
        nonlocal count
        while count < FULL_SPEED_EVENTS:
            count += 1
            await client.set(row_key(f"ev{n}-{count}"), cbor2.dumps({"t": 0.0}))

    await defer.gatherResults([defer.ensureDeferred(writer(n)) for n in range(64)])
    await arrived(received, count, DRAIN_LIMIT)
    span = received[-1][0] - received[0][0] if len(received) > 1 else float("inf")
    print(f"| etcd change -> subscriber, full speed | {len(received) / span:,.0f} events/s | "
          f"{len(received)} of {count} writes in {span:.1f} s | target >= 5,000/s |", flush=True)

    # 1,000 events/s: 10 puts every 10 ms, each carrying its send time.
    received.clear()
    sent = 0

    def tick() -> None:
        nonlocal sent
        for _ in range(10):
            sent += 1
            client.set(row_key(f"lat{sent % 1000}"),
                       cbor2.dumps({"t": time.perf_counter()}))

    loop = task.LoopingCall(tick)
    loop.start(0.01)
    await task.deferLater(reactor, seconds, lambda: None)
    loop.stop()
    await arrived(received, sent, DRAIN_LIMIT)
    latencies = sorted((arrival - t) * 1000 for arrival, t in received if t) or [float("nan")]
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[int(len(latencies) * 0.99)]
    print(f"| latency at {sent / seconds:,.0f} events/s | p50 {p50:.1f} ms | p99 {p99:.1f} ms "
          f"(max {latencies[-1]:.1f}; {len(received)} of {sent} arrived) | "
          f"target p99 <= 50 ms |", flush=True)


async def scan(session: Any, client: Client, rounds: int) -> None:
    value = cbor2.dumps({"v": "x" * 90})
    keys = [row_key(f"scan/{i:06d}") for i in range(SCAN_ROWS)]
    for start in range(0, SCAN_ROWS, 10_000):
        await defer.gatherResults([client.set(k, value) for k in keys[start:start + 10_000]])
    rates = []
    for _ in range(rounds):
        rows = 0

        def on_progress(chunk: Any, *args: Any, **kwargs: Any) -> None:
            nonlocal rows
            rows += len(chunk)

        began = time.perf_counter()
        await session.call("etcd.settings.scan", prefix="scan/", limit=SCAN_ROWS,
                           options=CallOptions(on_progress=on_progress))
        rates.append(rows / (time.perf_counter() - began))
        assert rows == SCAN_ROWS, rows
    print(f"| progressive scan, {SCAN_ROWS:,} rows | {statistics.median(rates):,.0f} rows/s | "
          f"one caller | target >= 50,000 rows/s |", flush=True)


async def main(args: argparse.Namespace) -> None:
    with EtcdProcess(find_etcd("3.5")) as etcd, \
            tempfile.TemporaryDirectory(prefix="wamp-bench-") as workdir:
        node = CrossbarNode(Path(workdir), etcd.url).start()
        client = Client(reactor, url=etcd.url, namespace=NAMESPACE)
        try:
            callee = await echo_callee(node.socket_path)
            session = await connect(node.url, "writer", "writer-secret")
            subscriber = await connect(node.url, "writer", "writer-secret")
            print("| WAMP benchmark | result | detail | target |\n|---|---|---|---|",
                  flush=True)
            if "get" in args.only:
                await get_vs_echo(session, client, args.rounds, args.seconds)
            if "events" in args.only:
                await events(subscriber, client, args.seconds)
            if "scan" in args.only:
                await scan(session, client, args.rounds)
            for s in (session, subscriber, callee):
                s.leave()
        finally:
            await client.delete(KeySet.all())
            await client.close()
            node.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="+", choices=("get", "events", "scan"),
                        default=("get", "events", "scan"), help="run just these benchmarks")
    task.react(lambda _: defer.ensureDeferred(main(parser.parse_args())))
