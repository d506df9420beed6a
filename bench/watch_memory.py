"""Client memory over 1,000,000 watch events: the watching process's RSS must stay flat.

A writer process (batched txetcd puts over 1,000 keys) makes the changes; this process only
watches and samples its own resident set size every 100,000 events. The first sample (after
100,000 events: imports, pools and buffers at their working size) is the baseline. The watching
client is the Twisted one, or with ``--loop asyncio`` ``txetcd.asyncio.Client`` on asyncio's
loop (the same ``Watch`` code on the other driver).

    .venv/bin/python bench/watch_memory.py [--events 1000000] [--loop asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor, task

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from txetcd import Client, KeySet  # noqa: E402
from txetcd.embedded import EtcdProcess, find_etcd  # noqa: E402

PREFIX = b"mem/"
SAMPLE_EVERY = 100_000
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


async def write(url: str, count: int) -> None:
    # A generous deadline: on a shared, loaded machine a batch may queue for a while.
    client = Client(reactor, url=url, timeout=60.0)
    value = b"v" * 100
    for start in range(0, count, 1024):
        await defer.gatherResults([client.set(PREFIX + b"%03d" % (i % 1000), value)
                                   for i in range(start, min(start + 1024, count))])
    await client.close()


async def watch(client: Any, url: str, count: int, limit_s: float,
                results: str | None = None) -> None:
    """Watch with ``client`` (either loop's) until ``count`` events arrived or ``limit_s``."""
    seen = 0
    samples: list[tuple[int, float]] = []
    sleep = client.env.driver.sleep

    def on_event(event: Any) -> None:
        nonlocal seen
        seen += 1
        if seen % SAMPLE_EVERY == 0:
            samples.append((seen, rss_mib()))

    watcher = client.watch([KeySet(PREFIX, prefix=True)], on_event)
    await watcher.when_started()
    began = time.perf_counter()
    writer = subprocess.Popen([sys.executable, __file__, "--writer", url, "--events", str(count)])
    # Bounded: after limit_s it reports what it has.
    while seen < count and time.perf_counter() - began < limit_s:
        await sleep(0.2)
    elapsed = time.perf_counter() - began
    writer.kill()
    writer.wait()
    watcher.cancel()
    await watcher.done
    await client.close()
    print(f"watching client: {type(client).__module__}.{type(client).__name__}")
    base = samples[0][1] if samples else float("nan")
    growth = max(rss for _, rss in samples) - base if samples else float("nan")
    print("RSS samples (events: MiB): "
          + ", ".join(f"{n // 1000}k: {rss:.1f}" for n, rss in samples))
    print(f"| watch memory, {seen:,} events in {elapsed:.0f} s ({seen / elapsed:,.0f}/s) | "
          f"RSS {base:.1f} MiB after {SAMPLE_EVERY:,}, growth {growth:+.1f} MiB after | "
          f"target: flat within 10 MB |", flush=True)
    if results:  # for run.py's table of targets
        with open(results, "a") as f:
            f.write(json.dumps({
                "target": f"client RSS flat within 10 MB over {count:,} watch events",
                "value": f"{growth:+.1f} MiB ({seen:,} events)",
                "met": seen >= count and growth <= 10}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--limit", type=float, default=600.0, help="seconds before giving up")
    parser.add_argument("--loop", choices=["twisted", "asyncio"], default="twisted",
                        help="the watching client's event loop")
    parser.add_argument("--writer", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--results", help="append the target's figure to this file")
    args = parser.parse_args()
    if args.writer:
        task.react(lambda _: defer.ensureDeferred(write(args.writer, args.events)))
        return
    with EtcdProcess(find_etcd("3.5")) as etcd:
        if args.loop == "asyncio":
            asyncio.run(watch_asyncio(etcd.url, args.events, args.limit, args.results))
        else:
            task.react(lambda _: defer.ensureDeferred(
                watch(Client(reactor, url=etcd.url), etcd.url, args.events, args.limit,
                      args.results)))


async def watch_asyncio(url: str, count: int, limit_s: float, results: str | None) -> None:
    from txetcd.asyncio import Client as AsyncioClient

    await watch(AsyncioClient(url=url), url, count, limit_s, results)


if __name__ == "__main__":
    main()
