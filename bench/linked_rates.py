"""Linked routers: event latency on each node at a given rate, and calls/s on each node.

Two linked router-only nodes (``tests/linked.py``, the layout of ``etcd-wamp init --nodes 2``),
one etcd, one standalone component instance (``"linked": true``) attached to each node. Each
node's instance publishes to that node's subscribers (events do not cross the links, so there
is no "across a link" latency: each subscriber's latency is its own router's), and calls are
answered on the caller's node (the links forward no calls). A subscriber on each node receives
``settings`` changes written straight into etcd at ``--rate`` per second for ``--seconds``
(each subscriber in a process of its own); each value carries its send time, so latency is
send to arrival (same clock). Then a caller on
each node makes ``settings.get`` calls for ``--seconds``/2: one at a time, and 32 in flight,
first on one node alone, then on both at once. ``--nodes 1`` runs the same on one router, as
a baseline of the same moment::

    .venv/bin/python -m bench.linked_rates --rate 1000 --seconds 10
    .venv/bin/python -m bench.linked_rates --rate 1000 --seconds 10 --nodes 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer, task, threads

from procedures.table import Table
from tests.chaos import sleep
from tests.linked import LinkedNodes
from tests.wamp import ROOT, connect, until_registered
from txetcd import Client
from txetcd.embedded import EtcdProcess, find_etcd, stop_group


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def reader(reactor: Any, url: str, count: int, out: Path) -> None:
    """A subscriber in a process of its own (so that no reader or writer slows another down):
    says "subscribed", then writes the latencies (ms) of ``count`` events to ``out``."""
    session = await connect(url, "reader", "reader-secret")
    seen: list[float] = []
    await session.subscribe(lambda **e: seen.append((time.time() - e["value"]["t"]) * 1000),
                            "etcd.settings.on_change")
    print("subscribed", flush=True)
    deadline = time.monotonic() + 120
    while len(seen) < count and time.monotonic() < deadline:
        await sleep(reactor, 0.2)
    out.write_text(json.dumps(seen))
    session.leave()


def start_reader(url: str, count: int, out: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "bench.linked_rates", "--reader", url,
                             "--count", str(count), "--out", str(out)],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "subscribed"
    return proc


async def latency(reactor: Any, client: Client, urls: list[str], rate: int, seconds: float,
                  workdir: Path) -> list[tuple[int, list[float]]]:
    """Per reader (one per URL): (events received, latencies in ms) of ``rate * seconds``
    puts."""
    table = Table("settings", 2, "string", "cbor", client)
    total = int(rate * seconds)
    outs = [workdir / f"reader{i}.json" for i in range(len(urls))]
    readers = [await threads.deferToThread(start_reader, url, total, out)
               for url, out in zip(urls, outs, strict=True)]
    await sleep(reactor, 2.0)  # publishers elected
    started, sent = time.monotonic(), 0
    while sent < total:  # in ticks of what is due by now; a tick waits for its puts
        due = min(total, int((time.monotonic() - started) * rate) + 1)
        await defer.gatherResults([
            client.set(table.etcd_key(f"k{n % 100}"),
                       table.values.encode({"t": time.time(), "n": n}))
            for n in range(sent, due)])
        sent = due
        await sleep(reactor, 0.01)
    print(f"  wrote {total} changes at {total / (time.monotonic() - started):,.0f}/s")
    for proc in readers:
        await threads.deferToThread(proc.wait, 150)
    found = [json.loads(out.read_text()) for out in outs]
    return [(len(seen), seen) for seen in found]


async def calls(reactor: Any, session: Any, seconds: float, window: int) -> float:
    """``settings.get`` calls/s with ``window`` in flight."""
    done = 0
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await session.call("etcd.settings.get", "k1")
            done += 1

    started = time.monotonic()
    await defer.gatherResults([defer.ensureDeferred(worker()) for _ in range(window)])
    return done / (time.monotonic() - started)


async def main(reactor: Any, argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--version", default="3.5")
    parser.add_argument("--nodes", type=int, default=2,
                        help="linked nodes; 1: the same on a single router, for comparison")
    parser.add_argument("--reader", help=argparse.SUPPRESS)  # URL: run as a reader process
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.reader:
        await reader(reactor, args.reader, args.count, args.out)
        return
    with tempfile.TemporaryDirectory(prefix="linked-rates-") as tmp:
        etcd = EtcdProcess(find_etcd(args.version))
        await threads.deferToThread(etcd.start)
        nodes = LinkedNodes(Path(tmp), etcd.url, args.nodes, with_component=False)
        names = [f"node {i + 1}" for i in range(args.nodes)]
        instances: list[Any] = []
        client = Client(reactor, endpoints=[etcd.url], namespace=b"app/", timeout=60.0)
        try:
            await threads.deferToThread(nodes.start)
            instances = [node.start_component() for node in nodes.nodes]
            callers = [await until_registered(await connect(node.url, "writer", "writer-secret"))
                       for node in nodes.nodes]
            await callers[0].call("etcd.settings.put", "k1", {"t": 0})
            results = await latency(reactor, client, [node.url for node in nodes.nodes],
                                    args.rate, args.seconds, Path(tmp))
            print(f"etcd {args.version}: {args.rate} events/s for {args.seconds:.0f} s, "
                  "a publisher on each node")
            for name, (count, values) in zip(names, results, strict=True):
                print(f"  subscriber on {name}: {count} events, latency p50 "
                      f"{statistics.median(values):.1f} ms, p99 {percentile(values, 0.99):.1f} "
                      f"ms, max {max(values):.1f} ms")
            for window in (1, 32):
                for name, caller in zip(names, callers, strict=True):
                    rate = await calls(reactor, caller, args.seconds / 2, window)
                    print(f"  settings.get, {window} in flight, caller on {name} alone: "
                          f"{rate:,.0f} calls/s")
                if len(callers) == 1:
                    continue
                both = await defer.gatherResults([
                    defer.ensureDeferred(calls(reactor, caller, args.seconds / 2, window))
                    for caller in callers])
                print(f"  settings.get, {window} in flight, callers on both nodes at once: "
                      f"{' + '.join(f'{r:,.0f}' for r in both)} = {sum(both):,.0f} calls/s")
            for session in callers:
                session.leave()
        finally:
            for instance in instances:
                stop_group(instance)
            await threads.deferToThread(nodes.stop)
            await client.close()
            await threads.deferToThread(etcd.cleanup)


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, sys.argv[1:])))
