"""One timed KV run of one client: ``python kv_clients.py CLIENT URL OP INFLIGHT SECONDS``.

Run by ``bench/run.py`` with each client's own venv (only that client's library is imported).
``INFLIGHT`` workers each issue ``OP`` (put or get) on 100-byte values in a closed loop; after a
short warm-up, the completed operations over ``SECONDS`` are counted. Prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

KEYS = 1000
VALUE = b"v" * 100
WARMUP = 0.5


def key(i: int) -> bytes:
    return b"bench/%04d" % (i % KEYS)


class Meter:
    """Counts completions inside the measuring window [start + WARMUP, start + WARMUP + span)."""

    def __init__(self, seconds: float) -> None:
        self.begin = time.perf_counter() + WARMUP
        self.end = self.begin + seconds
        self.done = 0

    def tick(self) -> bool:
        """Count one completion; False once the window is over (the worker stops)."""
        now = time.perf_counter()
        if self.begin <= now < self.end:
            self.done += 1
        return now < self.end

    def rate(self) -> float:
        return self.done / (self.end - self.begin)


# -- Twisted clients: txetcd (this repo) and txaioetcd ------------------------------------------

def run_twisted(make_op: Callable[[Any, int], Any], client: Any, inflight: int,
                seconds: float) -> float:
    from twisted.internet import defer
    from twisted.internet import reactor as the_reactor

    reactor: Any = the_reactor
    meter = Meter(seconds)

    async def worker(n: int) -> None:
        i = n
        while True:
            await make_op(client, i)
            i += inflight
            if not meter.tick():
                return

    async def main() -> None:
        await defer.gatherResults([defer.ensureDeferred(worker(n)) for n in range(inflight)])

    result: list[float] = []

    def start() -> None:
        d = defer.ensureDeferred(main())
        d.addCallback(lambda _: result.append(meter.rate()))
        d.addErrback(lambda f: (f.printTraceback(), result.append(-1.0)))
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run()
    return result[0]


def txetcd_client(url: str, batching: bool = True) -> Any:
    from twisted.internet import reactor

    from txetcd import Client
    return Client(reactor, url=url, batching=batching)


def txaioetcd_client(url: str) -> Any:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.peers import txaioetcd_client as make

    return make(url)


def twisted_op(op: str) -> Callable[[Any, int], Any]:
    if op == "put":
        return lambda c, i: c.set(key(i), VALUE)
    return lambda c, i: c.get(key(i))


# -- asyncio: aetcd and txetcd.asyncio -----------------------------------------------------------

def run_asyncio(open_client: Callable[[], Any], op: str, inflight: int, seconds: float) -> float:
    """``inflight`` asyncio workers on a client with aetcd's (and txetcd's) put/get shape."""
    import asyncio

    async def main() -> float:
        async with open_client() as client:
            call = client.put if op == "put" else client.get
            args = (lambda i: (key(i), VALUE)) if op == "put" else (lambda i: (key(i),))
            await client.put(key(0), VALUE)  # connect before the clock starts
            meter = Meter(seconds)

            async def worker(n: int) -> None:
                i = n
                while True:
                    await call(*args(i))
                    i += inflight
                    if not meter.tick():
                        return

            await asyncio.gather(*(worker(n) for n in range(inflight)))
            return meter.rate()

    return asyncio.run(main())


def run_aetcd(url: str, op: str, inflight: int, seconds: float) -> float:
    import aetcd

    parts = urlsplit(url)
    return run_asyncio(lambda: aetcd.Client(host=parts.hostname, port=parts.port), op, inflight,
                       seconds)


def run_txetcd_asyncio(url: str, op: str, inflight: int, seconds: float) -> float:
    from txetcd.asyncio import Client

    return run_asyncio(lambda: Client(url), op, inflight, seconds)


# -- blocking clients in threads: python-etcd3 (gRPC) and etcd3gw (requests) --------------------

def run_threads(client: Any, op: str, inflight: int, seconds: float) -> float:
    call = (lambda i: client.put(key(i), VALUE)) if op == "put" else (lambda i: client.get(key(i)))
    call(0)  # connect before the clock starts
    meter = Meter(seconds)
    lock = threading.Lock()

    def worker(n: int) -> None:
        i = n
        while True:
            call(i)
            i += inflight
            with lock:
                if not meter.tick():
                    return

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(inflight)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return meter.rate()


def measure(name: str, url: str, op: str, inflight: int, seconds: float) -> float:
    parts = urlsplit(url)
    if name == "txetcd":
        return run_twisted(twisted_op(op), txetcd_client(url), inflight, seconds)
    if name == "txetcd-unbatched":
        return run_twisted(twisted_op(op), txetcd_client(url, batching=False), inflight, seconds)
    if name == "txaioetcd":
        return run_twisted(twisted_op(op), txaioetcd_client(url), inflight, seconds)
    if name == "aetcd":
        return run_aetcd(url, op, inflight, seconds)
    if name == "txetcd-asyncio":
        return run_txetcd_asyncio(url, op, inflight, seconds)
    if name == "python-etcd3":
        import etcd3
        return run_threads(etcd3.client(host=parts.hostname, port=parts.port), op, inflight,
                           seconds)
    if name == "etcd3gw":
        import etcd3gw
        return run_threads(etcd3gw.client(host=parts.hostname, port=parts.port,
                                          api_path="/v3/"), op, inflight, seconds)
    raise SystemExit(f"unknown client {name}")


if __name__ == "__main__":
    client_name, etcd_url, operation, in_flight, span = sys.argv[1:6]
    rate = measure(client_name, etcd_url, operation, int(in_flight), float(span))
    print(json.dumps({"client": client_name, "op": operation, "inflight": int(in_flight),
                      "ops_per_s": round(rate, 1)}))
