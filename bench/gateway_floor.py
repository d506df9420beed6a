"""The floor of any gateway client: blocking sockets sending the same keep-alive HTTP POSTs back
to back, with no parsing beyond finding the end of each answer.

    .venv/bin/python bench/gateway_floor.py URL [get|put] [SECONDS] [PAUSE_US] [TXN] [INFLIGHT]

Prints one JSON line in ``kv_clients.py``'s shape: ops/s and the process's CPU µs per op (what
the kernel's loopback TCP and a minimal HTTP exchange cost, with no client logic at all).
``PAUSE_US`` busy-waits that long before each request, as a client's own work per op would
(what that gap costs etcd: ``floors.py pace``). With ``TXN`` (0: none), each request is one
``/v3/kv/txn`` of that many ops on distinct keys, and ``INFLIGHT`` sockets (threads) send
them at once: what etcd does for batched ops when the client turns each answer around at
once (``floors.py gather``).
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from urllib.parse import urlsplit

from kv_clients import KEYS, VALUE, key, put_body, range_body, txn_body


def body(op: str, txn: int, first: int) -> bytes:
    """One request's body: a plain range or put of one key, or a txn of ``txn`` of them
    (``kv_clients``' keys and values, and its floors' bodies)."""
    if not txn:
        return range_body(key(1)) if op == "get" else put_body(key(1), VALUE)
    return txn_body(op, [key(i) for i in range(first, first + txn)])


def answer_complete(data: bytes) -> bool:
    """Whether ``data`` holds a whole answer (by its Content-Length, or its last chunk)."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    _, sized, length = head.lower().partition(b"content-length:")
    if sized:
        return len(rest) >= int(length.split(b"\r\n")[0])
    return rest.endswith(b"\r\n0\r\n\r\n")


def send(host: str, port: int, requests: list[bytes], first: int, step: int, end: float,
         pause: float, done: list[int], failed: list[bytes]) -> None:
    """One socket's closed loop until ``end``: requests ``first``, ``first + step``, ... (round
    the list), each after ``pause`` s of busy waiting; its count goes to ``done[first]``."""
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sent = first
    while time.perf_counter() < end and not failed:
        if pause:
            until = time.perf_counter() + pause
            while time.perf_counter() < until:
                pass
        sock.sendall(requests[sent % len(requests)])
        sent += step
        data = b""
        while not answer_complete(data):
            data += sock.recv(65536)
        if not data.startswith(b"HTTP/1.1 200"):
            failed.append(data[:300])
        done[first] += 1
    sock.close()


def main(url: str, op: str = "get", seconds: float = 3.0, pause_us: float = 0.0,
         txn: int = 0, inflight: int = 1) -> None:
    parts = urlsplit(url)
    path = b"/v3/kv/txn" if txn else b"/v3/kv/range" if op == "get" else b"/v3/kv/put"
    # One request per group of keys, so that a txn's ops touch distinct keys.
    requests = [b"POST " + path + b" HTTP/1.1\r\nHost: " + parts.netloc.encode()
                + b"\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(b)).encode() + b"\r\n\r\n" + b
                for b in (body(op, txn, first) for first in range(0, KEYS, txn or KEYS))]
    done = [0] * inflight
    failed: list[bytes] = []
    loop = (parts.hostname or "127.0.0.1", parts.port or 2379, requests)
    end = time.perf_counter() + seconds
    cpu = time.process_time()
    if inflight == 1:
        send(*loop, 0, 1, end, pause_us / 1e6, done, failed)  # no thread: the x1 floor as ever
    else:
        senders = [threading.Thread(target=send, args=(*loop, n, inflight, end, pause_us / 1e6,
                                                         done, failed))
                   for n in range(inflight)]
        for thread in senders:
            thread.start()
        for thread in senders:
            thread.join()
    cpu = time.process_time() - cpu
    if failed:
        raise SystemExit(f"etcd refused the request: {failed[0]!r}")
    ops = sum(done) * (txn or 1)
    print(json.dumps({"client": "gateway-floor", "op": op, "inflight": inflight * (txn or 1),
                      "ops_per_s": round(ops / seconds, 1),
                      "cpu_us_per_op": round(cpu / max(ops, 1) * 1e6, 1)}))


if __name__ == "__main__":
    given = sys.argv[1:] + [""] * 6
    main(given[0], given[1] or "get", float(given[2] or 3.0), float(given[3] or 0.0),
         int(given[4] or 0), int(given[5] or 1))
