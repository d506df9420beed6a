"""The floor of any gateway client at 1 in flight: a blocking socket sending the same keep-alive
HTTP POST ``/v3/kv/range`` (or ``put``) back to back, with no parsing beyond finding the end.

    .venv/bin/python bench/gateway_floor.py URL [get|put] [SECONDS] [PAUSE_US]

Prints one JSON line in ``kv_clients.py``'s shape: ops/s and the process's CPU µs per op (what
the kernel's loopback TCP and a minimal HTTP exchange cost, with no client logic at all).
``PAUSE_US`` busy-waits that long before each request, as a client's own work per op would
(what that gap costs etcd: ``floors.py pace``).
"""

from __future__ import annotations

import base64
import json
import socket
import sys
import time
from urllib.parse import urlsplit

VALUE_B64 = base64.b64encode(b"v" * 100)  # the 100-byte values of kv_clients.py


def main(url: str, op: str = "get", seconds: float = 3.0, pause_us: float = 0.0) -> None:
    parts = urlsplit(url)
    body = (b'{"key":"YmVuY2gvMDAwMQ=="}' if op == "get" else
            b'{"key":"YmVuY2gvMDAwMQ==","value":"' + VALUE_B64 + b'"}')
    path = b"/v3/kv/range" if op == "get" else b"/v3/kv/put"
    request = (b"POST " + path + b" HTTP/1.1\r\nHost: " + parts.netloc.encode()
               + b"\r\nContent-Type: application/json\r\nContent-Length: "
               + str(len(body)).encode() + b"\r\n\r\n" + body)
    sock = socket.create_connection((parts.hostname, parts.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    done, end = 0, time.perf_counter() + seconds
    cpu = time.process_time()
    pause = pause_us / 1e6
    while time.perf_counter() < end:
        if pause:
            until = time.perf_counter() + pause
            while time.perf_counter() < until:
                pass
        sock.sendall(request)
        data = b""
        while True:
            data += sock.recv(65536)
            head, sep, rest = data.partition(b"\r\n\r\n")
            if sep:
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(rest) >= length:
                    break
        if not head.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"etcd refused the request: {data[:300]!r}")
        done += 1
    cpu = time.process_time() - cpu
    print(json.dumps({"client": "gateway-floor", "op": op, "inflight": 1,
                      "ops_per_s": round(done / seconds, 1),
                      "cpu_us_per_op": round(cpu / max(done, 1) * 1e6, 1)}))


if __name__ == "__main__":
    main(sys.argv[1], *(sys.argv[2:3]), *(float(a) for a in sys.argv[3:5]))
