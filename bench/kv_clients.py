"""One timed KV run of one client: ``python kv_clients.py CLIENT URL OP INFLIGHT SECONDS [gather]``.

Run by ``bench/run.py`` with each client's own venv (only that client's library is imported).
Two harnesses, on 100-byte values over 1,000 keys:

* ``loop`` (the default): ``INFLIGHT`` workers each issue ``OP`` (put or get) in a closed loop;
  after a short warm-up, the completed operations over ``SECONDS`` are counted.
* ``gather``: the way applications usually write it (issue 17): every op is started at once
  behind a semaphore of ``INFLIGHT`` - ``gatherResults([sem.run(client.set, k, v) for k in
  keys])`` with a ``DeferredSemaphore``, ``asyncio.gather`` with an ``asyncio.Semaphore``, a
  thread pool of ``INFLIGHT`` for blocking clients - and ``SECONDS`` is read as the number of
  ops (30,000 in ``make bench``); creating the ops is part of the time.
* ``fixed`` (Twisted clients): ``loop``'s workers, until ``SECONDS`` ops (read as a count) are
  done, with no clock in the loop: runs of two counts under callgrind give the instructions
  per op (``client_cpu.py instructions``).

Prints one JSON line: ops/s and the client process's CPU time per op (µs, over the measured
ops; etcd runs in its own process); for ``gather`` and ``fixed`` also the part of it the
cyclic garbage collector took (``gc_us_per_op``); for ``gather`` on Twisted and asyncio also
the set-up's part, creating every op's awaitable before any runs (``setup_cpu_us_per_op``,
``setup_gc_us_per_op``), and the rate of the ops after it (``after_setup_ops_per_s``), with
the process's CPU seconds per second meanwhile (``after_setup_busy``). The
clients ``instant-twisted`` and ``instant-asyncio`` answer every op from memory, a loop turn
later: what a harness costs per op on its own.
``twisted-floor`` (one op in flight only) is the least a Twisted gateway client can do per op;
``txetcd-http`` the same on txetcd's HTTP layer alone; ``txetcd-http-batching`` adds txetcd's
batching rules and nothing else, for many ops in flight; ``raw-batching-floor`` keeps those
rules on raw sockets and decodes nothing: the least a batching gateway client can do per op.
"""

from __future__ import annotations

import base64
import gc
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
    """Counts completions inside the measuring window [start + WARMUP, start + WARMUP + span),
    and the process's CPU time between the first and the last of them."""

    def __init__(self, seconds: float) -> None:
        self.begin = time.perf_counter() + WARMUP
        self.end = self.begin + seconds
        self.done = 0
        self.cpu_first = self.cpu_last = 0.0

    def tick(self) -> bool:
        """Count one completion; False once the window is over (the worker stops)."""
        now = time.perf_counter()
        if self.begin <= now < self.end:
            self.done += 1
            if self.done == 1:
                self.cpu_first = time.process_time()
        elif now >= self.end and not self.cpu_last:
            self.cpu_last = time.process_time()  # the first completion after the window
        return now < self.end

    def rate(self) -> float:
        return self.done / (self.end - self.begin)

    def cpu_us_per_op(self) -> float:
        return (self.cpu_last - self.cpu_first) / max(self.done, 1) * 1e6


class Count:
    """The ``gather`` harness's measure: ``ops`` completions from ``start()`` to ``stop()``, and
    how much of that time the cyclic garbage collector took: creating every op at once makes a
    heap that its full collections walk (a harness's cost, not a client's). ``set_up()`` marks
    the end of that creation (at most ``INFLIGHT`` ops have reached the client by then)."""

    def __init__(self, ops: int) -> None:
        self.ops = ops
        self.began = self.cpu_began = self.elapsed = self.cpu = 0.0
        self.collecting = self.paused = 0.0
        self.gc_seconds = [0.0, 0.0, 0.0]  # per generation
        self.collections = [0, 0, 0]
        self.longest_pause = 0.0  # seconds: everything in the process waits for a collection
        self.setup_elapsed = self.setup_cpu = self.setup_gc = 0.0

    def start(self) -> None:
        gc.callbacks.append(self.collection)
        self.began, self.cpu_began = time.perf_counter(), time.process_time()

    def set_up(self) -> None:
        self.setup_elapsed = time.perf_counter() - self.began
        self.setup_cpu = time.process_time() - self.cpu_began
        self.setup_gc = sum(self.gc_seconds)

    def stop(self) -> None:
        self.elapsed = time.perf_counter() - self.began
        self.cpu = time.process_time() - self.cpu_began
        gc.callbacks.remove(self.collection)

    def collection(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.collecting, self.paused = time.process_time(), time.perf_counter()
        else:
            self.gc_seconds[info["generation"]] += time.process_time() - self.collecting
            self.collections[info["generation"]] += 1
            self.longest_pause = max(self.longest_pause, time.perf_counter() - self.paused)

    def gc_us_per_op(self) -> float:
        return sum(self.gc_seconds) / self.ops * 1e6

    def rate(self) -> float:
        return self.ops / self.elapsed

    def cpu_us_per_op(self) -> float:
        return self.cpu / self.ops * 1e6

    def setup_figures(self) -> dict[str, float]:
        """The set-up's CPU and collector µs per op, the rate of the ops after it, and how busy
        the process was after it (its CPU seconds per second: under 1, it waited for etcd)."""
        after = self.elapsed - self.setup_elapsed
        return {"setup_cpu_us_per_op": round(self.setup_cpu / self.ops * 1e6, 1),
                "setup_gc_us_per_op": round(self.setup_gc / self.ops * 1e6, 1),
                "after_setup_ops_per_s": round(self.ops / after, 1),
                "after_setup_busy": round((self.cpu - self.setup_cpu) / after, 2)}


Measure = Meter | Count


# -- Twisted clients: txetcd (this repo) and txaioetcd ------------------------------------------

async def fixed(make_op: Callable[[Any, int], Any], client: Any, inflight: int,
                ops: int) -> Measure:
    """The ``fixed`` harness: ``inflight`` workers in closed loops until ``ops`` are done."""
    from twisted.internet import defer

    await make_op(client, 0)  # connect first
    count = Count(ops)
    left = ops

    async def worker(n: int) -> None:
        nonlocal left
        i = n
        while left > 0:
            left -= 1
            await make_op(client, i)
            i += inflight

    count.start()
    await defer.gatherResults([defer.ensureDeferred(worker(n)) for n in range(inflight)])
    count.stop()
    return count


def run_twisted(make_op: Callable[[Any, int], Any], client: Any, inflight: int,
                seconds: float, harness: str) -> Measure:
    from twisted.internet import defer
    from twisted.internet import reactor as the_reactor

    reactor: Any = the_reactor

    async def loop() -> Measure:
        meter = Meter(seconds)

        async def worker(n: int) -> None:
            i = n
            while True:
                await make_op(client, i)
                i += inflight
                if not meter.tick():
                    return

        await defer.gatherResults([defer.ensureDeferred(worker(n)) for n in range(inflight)])
        return meter

    async def gather() -> Measure:
        await make_op(client, 0)  # connect before the clock starts
        count = Count(int(seconds))
        count.start()
        sem = defer.DeferredSemaphore(inflight)
        every_op = defer.gatherResults([sem.run(make_op, client, i) for i in range(count.ops)])
        count.set_up()
        await every_op
        count.stop()
        return count

    result: list[Measure] = []

    def start() -> None:
        d = defer.ensureDeferred(fixed(make_op, client, inflight, int(seconds))
                                 if harness == "fixed" else gather() if harness == "gather"
                                 else loop())
        d.addCallback(result.append)
        d.addErrback(lambda f: f.printTraceback())
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run()
    if not result:
        raise SystemExit(1)
    return result[0]


def txetcd_client(url: str, batching: bool = True) -> Any:
    from twisted.internet import reactor

    from txetcd import Client
    return Client(reactor, url=url, batching=batching)


def txaioetcd_client(url: str) -> Any:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.peers import txaioetcd_client as make

    return make(url)


class _Instant:
    """A client that costs one future per op and nothing else: it answers the ops of a loop
    turn together, a turn later, as a batch's answer comes, without etcd. What a harness costs
    per op on its own, whatever the client (issue 17's floors). Subclasses say how a loop makes
    a future, schedules the answer and settles it."""

    def __init__(self) -> None:
        self.pending: list[Any] = []

    def _op(self, *_: Any) -> Any:
        answer = self._future()
        if not self.pending:
            self._soon(self._answer)
        self.pending.append(answer)
        return answer

    def _answer(self) -> None:
        pending, self.pending = self.pending, []
        for answer in pending:
            self._settle(answer)

    def _future(self) -> Any:
        raise NotImplementedError

    def _soon(self, fn: Callable[[], None]) -> None:
        raise NotImplementedError

    def _settle(self, answer: Any) -> None:
        raise NotImplementedError


class InstantTwisted(_Instant):
    """``_Instant`` with Deferreds and the reactor, in txetcd's shape (``set``/``get``)."""

    def _future(self) -> Any:
        from twisted.internet import defer

        return defer.Deferred()

    def _soon(self, fn: Callable[[], None]) -> None:
        from twisted.internet import reactor as the_reactor

        reactor: Any = the_reactor
        reactor.callLater(0, fn)

    def _settle(self, answer: Any) -> None:
        answer.callback(None)

    set = get = _Instant._op


class InstantAsyncio(_Instant):
    """``_Instant`` with asyncio Futures, in aetcd's shape (``put``/``get``, ``async with``)."""

    async def __aenter__(self) -> InstantAsyncio:
        return self

    async def __aexit__(self, *_: Any) -> None:
        return None

    def _future(self) -> Any:
        import asyncio

        return asyncio.get_running_loop().create_future()

    def _soon(self, fn: Callable[[], None]) -> None:
        import asyncio

        asyncio.get_running_loop().call_soon(fn)

    def _settle(self, answer: Any) -> None:
        answer.set_result(None)

    put = get = _Instant._op


def put_body(key: bytes, value: bytes) -> bytes:
    """The floors' put request body, built per op as a client would."""
    return b'{"key":"%s","value":"%s"}' % (base64.b64encode(key), base64.b64encode(value))


def range_body(key: bytes) -> bytes:
    """The floors' range request body."""
    return b'{"key":"%s"}' % base64.b64encode(key)


# A floor's plain request body as one op of a txn.
REQUEST_OP = {"put": b'{"request_put":%s}', "get": b'{"request_range":%s}'}


def txn_body(op: str, keys: list[bytes]) -> bytes:
    """The floors' txn body: ``op`` of each of ``keys``, in order."""
    one = (lambda k: put_body(k, VALUE)) if op == "put" else range_body
    return b'{"success":[%s]}' % b",".join([REQUEST_OP[op] % one(k) for k in keys])


def raw_heads(netloc: bytes) -> dict[bytes, bytes]:
    """The raw floors' request heads up to ``Content-Length: ``, per KV path."""
    return {path: b"POST /v3/kv/%s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json"
                  b"\r\nContent-Length: " % (path, netloc) for path in (b"put", b"range", b"txn")}


def answer_complete(head: bytes, body: bytes) -> bool:
    """Whether ``body`` is all of the raw floors' answer: etcd's gateway (Go) sends an answer of
    more than 4 kB chunked, which ends with an empty chunk (its JSON holds no line break)."""
    length = head.lower().partition(b"content-length:")[2]
    if length:
        return len(body) >= int(length.split(b"\r\n")[0])
    return body.endswith(b"\r\n0\r\n\r\n")


class TwistedFloor:
    """The floor of a Twisted gateway client at 1 in flight, in txetcd's shape (``set``/``get``):
    one connection, each request written straight into the socket, a Deferred fired with the
    raw body once the answer is complete. No JSON, no result objects, no deadlines or retries:
    what the reactor and the harness cost per op with real I/O."""

    def __init__(self, url: str) -> None:
        from twisted.internet import defer, protocol
        from twisted.internet import reactor as the_reactor

        reactor: Any = the_reactor
        parts = urlsplit(url)
        self.heads = raw_heads(parts.netloc.encode())
        self.waiting: Any = None
        self.buffer = b""
        floor = self

        class Exchange(protocol.Protocol):
            def dataReceived(self, data: bytes) -> None:  # noqa: N802
                floor.received(data)

        self.connection = protocol.ClientCreator(reactor, Exchange).connectTCP(
            parts.hostname, parts.port)
        self.connection.addCallback(self.connected)
        self.defer = defer

    def connected(self, exchange: Any) -> Any:
        exchange.transport.setTcpNoDelay(True)
        self.socket = exchange.transport.getHandle()
        return exchange

    def received(self, data: bytes) -> None:
        self.buffer += data
        head, sep, rest = self.buffer.partition(b"\r\n\r\n")
        if sep and answer_complete(head, rest):
            self.buffer = b""
            waiting, self.waiting = self.waiting, None
            waiting.callback(rest)

    def _send(self, path: bytes, body: bytes) -> Any:
        assert self.waiting is None, "one op in flight at most"
        self.waiting = self.defer.Deferred()
        request = self.heads[path] + b"%d\r\n\r\n%s" % (len(body), body)
        if self.connection.called:
            self.socket.send(request)
        else:
            self.connection.addCallback(lambda exchange: self.socket.send(request) and exchange)
        return self.waiting

    def set(self, key: bytes, value: bytes) -> Any:
        return self._send(b"put", put_body(key, value))

    def get(self, key: bytes) -> Any:
        return self._send(b"range", range_body(key))


class HTTPPoolFloor:
    """``twisted-floor`` on txetcd's own HTTP client (``txetcd.http.HTTPPool``: the pool, the
    peek at an idle connection, httptools): the same bodies, the raw answer, no client logic.
    Between ``twisted-floor`` and ``txetcd``, it shows what our HTTP layer costs per op."""

    def __init__(self, url: str) -> None:
        from twisted.internet import reactor
        from twisted.web.client import BrowserLikePolicyForHTTPS

        from txetcd.core import build_request, request_head
        from txetcd.http import HTTPPool

        self.url = url
        self.pool = HTTPPool(reactor, BrowserLikePolicyForHTTPS())
        host = urlsplit(url).netloc.encode()
        self.heads = {path: request_head(b"POST", b"/v3/kv/" + path, host,
                                         [(b"Content-Type", b"application/json")])
                      for path in (b"put", b"range")}
        self.build = build_request

    def set(self, key: bytes, value: bytes) -> Any:
        return self.pool.request(self.url, self.build(self.heads[b"put"], put_body(key, value)))

    def get(self, key: bytes) -> Any:
        return self.pool.request(self.url, self.build(self.heads[b"range"], range_body(key)))


class _BatchingRules:
    """txetcd's batcher's rules and nothing else (issue 17), for the batching floors. An op
    issued with nothing in flight goes at once, alone; the others queue and leave as one txn at
    the end of the loop turn, or at ``EAGER_FLUSH`` ops while fewer than ``EAGER_IN_FLIGHT``
    txns are in flight; an op on a key already queued sends the queue first (etcd refuses a txn
    that puts one key twice). A floor sends with ``_send(path, body, answers)`` and, once answered,
    lowers ``in_flight`` and fires ``answers``: no op objects, result types, deadlines, retries
    or ordering rules."""

    def __init__(self) -> None:
        from twisted.internet import defer, reactor

        from txetcd.batch import EAGER_FLUSH, EAGER_IN_FLIGHT

        self.eager_flush, self.eager_in_flight = EAGER_FLUSH, EAGER_IN_FLIGHT
        self.reactor: Any = reactor
        self.new_deferred = defer.Deferred
        self.queued: list[tuple[bytes, Any]] = []  # (the op's RequestOp, its Deferred)
        self.queued_keys: set[bytes] = set()
        self.in_flight = 0
        self.flush_scheduled = False

    def _send(self, path: bytes, body: bytes, answers: list[Any]) -> None:
        raise NotImplementedError

    def set(self, key: bytes, value: bytes) -> Any:
        return self._issue(key, b"put", put_body(key, value), REQUEST_OP["put"])

    def get(self, key: bytes) -> Any:
        return self._issue(key, b"range", range_body(key), REQUEST_OP["get"])

    def _issue(self, key: bytes, path: bytes, body: bytes, request_op: bytes) -> Any:
        answer: Any = self.new_deferred()
        if not self.in_flight and not self.queued:
            self.in_flight += 1
            self._send(path, body, [answer])
            return answer
        if key in self.queued_keys:
            self._send_txn()
        self.queued_keys.add(key)
        self.queued.append((request_op % body, answer))
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.reactor.callLater(0, self._flush)
        if len(self.queued) >= self.eager_flush and self.in_flight < self.eager_in_flight:
            self._send_txn()
        return answer

    def _flush(self) -> None:
        self.flush_scheduled = False
        if self.queued:
            self._send_txn()

    def _send_txn(self) -> None:
        batch, self.queued = self.queued, []
        self.queued_keys = set()
        self.in_flight += 1
        body = b'{"success":[%s]}' % b",".join([request_op for request_op, _ in batch])
        self._send(b"txn", body, [answer for _, answer in batch])


class BatchingFloor(_BatchingRules, HTTPPoolFloor):
    """The floor of a batching client on our HTTP layer (issue 17): ``_BatchingRules`` on
    ``txetcd.http``, each op's Deferred fired with its raw inner answer, decoded by
    ``json.loads`` alone. Between it and ``txetcd`` is what our client logic costs."""

    def __init__(self, url: str) -> None:
        from txetcd.core import request_head

        HTTPPoolFloor.__init__(self, url)
        _BatchingRules.__init__(self)
        self.heads[b"txn"] = request_head(b"POST", b"/v3/kv/txn", urlsplit(url).netloc.encode(),
                                          [(b"Content-Type", b"application/json")])

    def _send(self, path: bytes, body: bytes, answers: list[Any]) -> None:
        sent = self.pool.request(self.url, self.build(self.heads[path], body))
        sent.addCallback(self._answered, answers, path == b"txn")

    def _answered(self, response: tuple[int, bytes], answers: list[Any], txn: bool) -> None:
        self.in_flight -= 1
        answer = json.loads(response[1])
        for deferred, inner in zip(answers, answer["responses"] if txn else [answer],
                                   strict=True):
            deferred.callback(inner)


class RawBatchingFloor(_BatchingRules):
    """``_BatchingRules`` without our HTTP layer and without decoding (issue 17): each request
    written straight into an idle raw connection (as ``twisted-floor``), the answer's end found
    from its ``Content-Length``, and each op's Deferred fired with None. No client can do less
    per op and still batch; what it reaches in a harness is the most that harness and etcd
    leave any gateway client."""

    def __init__(self, url: str) -> None:
        from twisted.internet import protocol

        super().__init__()
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.heads = raw_heads(parts.netloc.encode())
        self.idle: list[Any] = []  # connected exchanges with nothing in flight
        floor = self

        class Exchange(protocol.Protocol):
            answers: list[Any] = []
            buffer = b""

            def connectionMade(self) -> None:  # noqa: N802
                transport: Any = self.transport
                transport.setTcpNoDelay(True)

            def dataReceived(self, data: bytes) -> None:  # noqa: N802
                self.buffer += data
                head, sep, rest = self.buffer.partition(b"\r\n\r\n")
                if not sep or not answer_complete(head, rest):
                    return
                assert head.startswith(b"HTTP/1.1 200 "), head  # a refused request: no floor
                self.buffer = b""
                answers, self.answers = self.answers, []
                floor.idle.append(self)
                floor.in_flight -= 1
                for answer in answers:
                    answer.callback(None)

        self.exchange = protocol.ClientCreator(self.reactor, Exchange)

    def _send(self, path: bytes, body: bytes, answers: list[Any]) -> None:
        request = self.heads[path] + b"%d\r\n\r\n%s" % (len(body), body)

        def send(exchange: Any) -> None:
            exchange.answers = answers
            exchange.transport.write(request)

        if self.idle:
            send(self.idle.pop())
        else:
            self.exchange.connectTCP(self.host, self.port).addCallback(send)


def twisted_op(op: str) -> Callable[[Any, int], Any]:
    if op == "put":
        return lambda c, i: c.set(key(i), VALUE)
    return lambda c, i: c.get(key(i))


# -- asyncio: aetcd and txetcd.asyncio -----------------------------------------------------------

def run_asyncio(open_client: Callable[[], Any], op: str, inflight: int, seconds: float,
                harness: str) -> Measure:
    """A client with aetcd's (and txetcd.asyncio's) put/get shape, in either harness."""
    import asyncio

    async def main() -> Measure:
        async with open_client() as client:
            call = client.put if op == "put" else client.get
            args = (lambda i: (key(i), VALUE)) if op == "put" else (lambda i: (key(i),))
            await client.put(key(0), VALUE)  # connect before the clock starts
            if harness == "gather":
                count = Count(int(seconds))
                count.start()
                sem = asyncio.Semaphore(inflight)

                async def run(i: int) -> Any:
                    async with sem:
                        return await call(*args(i))

                every_op = asyncio.gather(*[run(i) for i in range(count.ops)])
                # One loop turn: every op's first step, queueing on the semaphore (the Twisted
                # harness's sem.run does that at once), as part of the set-up.
                await asyncio.sleep(0)
                count.set_up()
                await every_op
                count.stop()
                return count
            meter = Meter(seconds)

            async def worker(n: int) -> None:
                i = n
                while True:
                    await call(*args(i))
                    i += inflight
                    if not meter.tick():
                        return

            await asyncio.gather(*(worker(n) for n in range(inflight)))
            return meter

    return asyncio.run(main())


def run_aetcd(url: str, op: str, inflight: int, seconds: float, harness: str) -> Measure:
    import aetcd

    parts = urlsplit(url)
    return run_asyncio(lambda: aetcd.Client(host=parts.hostname, port=parts.port), op, inflight,
                       seconds, harness)


def run_txetcd_asyncio(url: str, op: str, inflight: int, seconds: float,
                       harness: str) -> Measure:
    from txetcd.asyncio import Client

    return run_asyncio(lambda: Client(url), op, inflight, seconds, harness)


# -- blocking clients in threads: python-etcd3 (gRPC) and etcd3gw (requests) --------------------

def run_threads(client: Any, op: str, inflight: int, seconds: float, harness: str) -> Measure:
    call = (lambda i: client.put(key(i), VALUE)) if op == "put" else (lambda i: client.get(key(i)))
    call(0)  # connect before the clock starts
    if harness == "gather":
        from concurrent.futures import ThreadPoolExecutor

        count = Count(int(seconds))
        count.start()
        with ThreadPoolExecutor(inflight) as pool:
            list(pool.map(call, range(count.ops)))
        count.stop()
        return count
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
    return meter


# Clients driven by ``run_twisted``, by name: each makes one from the URL.
TWISTED_CLIENTS: dict[str, Callable[[str], Any]] = {
    "txetcd": txetcd_client,
    "txetcd-unbatched": lambda url: txetcd_client(url, batching=False),
    "instant-twisted": lambda url: InstantTwisted(),  # no etcd: the harness's own cost
    "twisted-floor": TwistedFloor,
    "txetcd-http": HTTPPoolFloor,
    "txetcd-http-batching": BatchingFloor,
    "raw-batching-floor": RawBatchingFloor,
    "txaioetcd": txaioetcd_client,
}


def measure(name: str, url: str, op: str, inflight: int, seconds: float,
            harness: str = "loop") -> Measure:
    parts = urlsplit(url)
    if name in TWISTED_CLIENTS:
        return run_twisted(twisted_op(op), TWISTED_CLIENTS[name](url), inflight, seconds,
                           harness)
    if name == "instant-asyncio":
        return run_asyncio(InstantAsyncio, op, inflight, seconds, harness)
    if name == "aetcd":
        return run_aetcd(url, op, inflight, seconds, harness)
    if name == "txetcd-asyncio":
        return run_txetcd_asyncio(url, op, inflight, seconds, harness)
    if name == "python-etcd3":
        import etcd3
        return run_threads(etcd3.client(host=parts.hostname, port=parts.port), op, inflight,
                           seconds, harness)
    if name == "etcd3gw":
        import etcd3gw
        return run_threads(etcd3gw.client(host=parts.hostname, port=parts.port,
                                          api_path="/v3/"), op, inflight, seconds, harness)
    raise SystemExit(f"unknown client {name}")


if __name__ == "__main__":
    client_name, etcd_url, operation, in_flight, span = sys.argv[1:6]
    how = sys.argv[6] if len(sys.argv) > 6 else "loop"
    measured = measure(client_name, etcd_url, operation, int(in_flight), float(span), how)
    line = {"client": client_name, "op": operation, "inflight": int(in_flight), "harness": how,
            "ops_per_s": round(measured.rate(), 1),
            "cpu_us_per_op": round(measured.cpu_us_per_op(), 1)}
    if isinstance(measured, Count):
        line["gc_us_per_op"] = round(measured.gc_us_per_op(), 1)
        if measured.setup_elapsed:
            line.update(measured.setup_figures())
    print(json.dumps(line))
