"""txetcd.http, the keep-alive HTTP/1.1 client of unary requests: against real etcd servers, and
against a scripted loopback server for the framings and failures etcd does not produce on demand.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from twisted.internet import reactor
from twisted.internet.error import ConnectError
from twisted.web.client import BrowserLikePolicyForHTTPS

from txetcd import Client, EtcdError, KeySet, OpSet, Timeout, aio_http
from txetcd.core import build_request, request_head
from txetcd.embedded import EtcdProcess, free_port
from txetcd.http import HTTPPool, ResponseFailed, TLSHandshakeFailed
from txetcd.interface import NotSent, ResponseLost
from txetcd.twisted_driver import describe_failure

from .certs import TestPKI, make_pki
from .conftest import Loop


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def range_request(url: str, key: bytes, prefix: bool = False) -> bytes:
    body: dict[str, Any] = {"key": b64(key)}
    if prefix:
        body["range_end"] = b64(key[:-1] + bytes([key[-1] + 1]))
    head = request_head(b"POST", b"/v3/kv/range", urlsplit(url).netloc.encode(),
                        [(b"Content-Type", b"application/json")])
    return build_request(head, json.dumps(body).encode())


@dataclass
class Kit:
    """One loop's HTTP client and the errors it raises (``txetcd.http`` or ``txetcd.aio_http``)."""

    pool: Callable[..., Any]
    not_sent: type[BaseException]  # no byte of the request left us
    lost: type[BaseException]  # the connection broke after the request was written
    tls_failed: type[BaseException]
    describe: Callable[[BaseException], str]


@pytest.fixture
def kit(loop: Loop) -> Kit:
    if loop.name == "twisted":
        return Kit(lambda max_idle=32: HTTPPool(reactor, BrowserLikePolicyForHTTPS(),
                                                connect_timeout=5, max_idle=max_idle),
                   ConnectError, ResponseFailed, TLSHandshakeFailed, describe_failure)
    return Kit(lambda max_idle=32: aio_http.HTTPPool(connect_timeout=5, max_idle=max_idle,
                                                     loop=loop.loop),  # type: ignore[attr-defined]
               NotSent, ResponseLost, NotSent, aio_http.describe)


# -- against etcd ------------------------------------------------------------------------------

async def test_sequential_requests_reuse_one_connection(
        loop: Loop, kit: Kit, kv: Client, etcd: EtcdProcess) -> None:
    await kv.set(b"ka", b"1")
    pool = kit.pool()
    try:
        for _ in range(50):
            code, body = await pool.request(etcd.url, range_request(etcd.url, b"ka"))
            assert code == 200
            assert json.loads(body)["kvs"][0]["value"] == b64(b"1")
        assert pool.opened == 1
        assert pool.connections == 1 and pool.idle(etcd.url) == 1
    finally:
        await pool.close()
    assert pool.connections == 0


async def test_a_big_chunked_range_arrives_whole(loop: Loop, kit: Kit, etcd: EtcdProcess) -> None:
    # A generous per-call timeout: the set-up writes 2 MB, which a loaded machine may take
    # longer than the default 10 s for.
    client = loop.client(url=etcd.url, batching=False, timeout=60.0)
    try:
        values = {b"big/%04d" % i: (b"%04d" % i) * 256 for i in range(2000)}  # 1 KB each
        # In txns of 100 puts, one after the other: 2000 concurrent puts time out under load.
        items = list(values.items())
        for start in range(0, len(items), 100):
            await client.txn(success=[OpSet(k, v) for k, v in items[start:start + 100]])
        # etcd's gateway sends an answer this big chunked: make sure that is what is tested.
        request = range_request(etcd.url, b"big/", prefix=True)

        def raw() -> tuple[str | None, bytes]:
            head, _, body = request.partition(b"\r\n\r\n")
            conn = http.client.HTTPConnection("127.0.0.1", etcd.client_port, timeout=10)
            conn.request("POST", "/v3/kv/range", body=body,
                         headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            try:
                return response.getheader("Transfer-Encoding"), response.read()
            finally:
                conn.close()

        encoding, expected = await loop.run_in_thread(raw)
        assert encoding == "chunked" and len(expected) > 2_000_000
        pool = kit.pool()
        try:
            code, body = await pool.request(etcd.url, request)
            assert code == 200
            got = {base64.b64decode(kv["key"]): base64.b64decode(kv["value"])
                   for kv in json.loads(body)["kvs"]}
            assert got == values
            # The connection survives a chunked answer: the next request uses it again.
            code, _ = await pool.request(etcd.url, range_request(etcd.url, b"big/0001"))
            assert code == 200 and pool.connections == 1
        finally:
            await pool.close()
        rng = await client.get(KeySet(b"big/", prefix=True))
        assert {kv.key: kv.value for kv in rng.kvs} == values
    finally:
        await client.delete(KeySet(b"big/", prefix=True))
        await client.close()


async def test_concurrent_requests_use_at_most_pool_size_connections(
        loop: Loop, etcd: EtcdProcess) -> None:
    client = loop.client(url=etcd.url, pool_size=8, batching=False)
    try:
        await loop.gather(*[client.set(b"cc/%03d" % i, b"%d" % i) for i in range(100)])
        ranges = await loop.gather(*[client.get(b"cc/%03d" % i) for i in range(100)])
        assert [r.kvs[0].value for r in ranges] == [b"%d" % i for i in range(100)]
        assert 1 <= client.driver.connections <= 8
    finally:
        await client.delete(KeySet(b"cc/", prefix=True))
        await client.close()
    assert client.driver.connections == 0


async def test_cancel_mid_request_drops_the_connection_only(
        loop: Loop, fresh_etcd: EtcdProcess) -> None:
    client = loop.client(url=fresh_etcd.url, batching=False)
    try:
        await client.set(b"k", b"v")
        fresh_etcd.pause()  # the request hangs at the server
        try:
            await loop.sleep(0.1)  # SIGSTOP takes a moment to stop all of etcd's threads
            request = client.get(b"k")
            await loop.sleep(0.2)
            request.cancel()
            with pytest.raises(loop.CancelledError):
                await request
            with pytest.raises(Timeout):
                await client.get(b"k", timeout=0.3)
            await loop.sleep(0.05)
            assert client.driver.connections == 0  # both aborted
        finally:
            fresh_etcd.resume()
        assert (await client.get(b"k")).kvs[0].value == b"v"
        assert client.driver.connections == 1
    finally:
        await client.close()


async def test_cancel_while_connecting(loop: Loop, kit: Kit, etcd: EtcdProcess) -> None:
    pool = kit.pool()
    request = loop.spawn(pool.request(etcd.url, range_request(etcd.url, b"k")))
    request.cancel()
    with pytest.raises(loop.CancelledError):
        await request
    await loop.sleep(0.05)
    assert pool.connections == 0
    code, _ = await pool.request(etcd.url, range_request(etcd.url, b"k"))
    assert code == 200
    await pool.close()


async def test_idle_connections_closed_by_a_restart_are_not_used(
        loop: Loop, fresh_etcd: EtcdProcess) -> None:
    client = loop.client(url=fresh_etcd.url, pool_size=4, batching=False)
    try:
        await loop.gather(*[client.set(b"r/%d" % i, b"1") for i in range(4)])
        assert client.driver.connections >= 1
        fresh_etcd.kill()
        fresh_etcd.start()
        # No reactor turn since the restart: the closed connections still look idle. A write
        # must not go out on one of them (its outcome would be unknown): it just works.
        rev = await client.set(b"r/0", b"2")
        assert (await client.get(b"r/0")).kvs[0].mod_revision == rev.revision
        await loop.sleep(0.05)
        assert client.driver.connections == 1
    finally:
        await client.close()


async def test_connect_refused_is_a_connect_error(loop: Loop, kit: Kit) -> None:
    pool = kit.pool()
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(kit.not_sent):
        await pool.request(url, range_request(url, b"k"))
    assert pool.connections == 0


@pytest.fixture(scope="module")
def tls_etcd(etcd_binary: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EtcdProcess, TestPKI]]:
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    args = ["--cert-file", str(pki.server_cert), "--key-file", str(pki.server_key)]
    with EtcdProcess(etcd_binary, extra_args=args, scheme="https") as server:
        yield server, pki


async def test_tls_keep_alive_and_restart(
        loop: Loop, tls_etcd: tuple[EtcdProcess, TestPKI]) -> None:
    server, pki = tls_etcd
    client = loop.client(url=server.url, ca=str(pki.ca), batching=False)
    try:
        for i in range(20):
            await client.set(b"tls/%d" % i, b"x")
        assert len((await client.get(KeySet(b"tls/", prefix=True))).kvs) == 20
        assert client.driver.connections == 1
        server.kill()
        server.start()
        await client.set(b"tls/0", b"y")  # not on the connection the restart closed
        assert client.driver.connections == 1
    finally:
        await client.delete(KeySet(b"tls/", prefix=True))
        await client.close()


async def test_a_failed_tls_handshake_is_a_connect_error(loop: Loop, kit: Kit,
        tls_etcd: tuple[EtcdProcess, TestPKI]) -> None:
    server, _ = tls_etcd
    pool = kit.pool()  # trusts the system's CAs, not the test CA
    with pytest.raises(kit.tls_failed) as failed:
        await pool.request(server.url, range_request(server.url, b"k"))
    assert isinstance(failed.value, kit.not_sent)  # never sent: safe to resend
    assert "TLS handshake failed" in kit.describe(failed.value)
    await loop.sleep(0.05)
    assert pool.connections == 0


# -- against a scripted server -----------------------------------------------------------------

class Scripted:
    """A loopback server in a thread of its own (so it serves whichever loop runs the test):
    answers each request (one ``\\r\\n\\r\\n``-terminated head plus Content-Length body)
    with the next scripted reply, written in pieces of ``split`` bytes; None: say nothing."""

    def __init__(self) -> None:
        self.replies: list[bytes | None] = []
        self.requests: list[bytes] = []
        self.connections = 0
        self.split = 1 << 20
        self.close_after = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._running = True
        self._thread = threading.Thread(target=self._accept, daemon=True, name="Scripted")
        self._thread.start()

    def _accept(self) -> None:
        while self._running:
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        with conn:
            conn.settimeout(10)
            while self._running:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buffer += data
                while b"\r\n\r\n" in buffer:
                    head, _, rest = buffer.partition(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                    if len(rest) < length:
                        break
                    buffer = rest[length:]
                    self.requests.append(head + b"\r\n\r\n" + rest[:length])
                    if not self._answer(conn, self.replies.pop(0)):
                        return

    def _answer(self, conn: socket.socket, reply: bytes | None) -> bool:
        """Write ``reply``; False once the connection is done with."""
        if reply is None:
            return True
        for i in range(0, len(reply), self.split):
            conn.sendall(reply[i:i + self.split])
        return not self.close_after

    def close(self) -> None:
        self._running = False
        self._listener.close()
        self._thread.join(5)


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    server = Scripted()
    yield server
    server.close()


def post(url: str, body: bytes = b"{}") -> bytes:
    return build_request(request_head(b"POST", b"/x", urlsplit(url).netloc.encode(), []), body)


CHUNKED = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n"
           b"\r\n5\r\n{\"a\":\r\n3\r\n 1}\r\n0\r\n\r\n")


async def test_framings_byte_by_byte(loop: Loop, kit: Kit, scripted: Scripted) -> None:
    pool = kit.pool()
    scripted.split = 1  # every byte its own write: parser state across reads
    scripted.replies = [b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n{\"a\":1}", CHUNKED,
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno",
                        b"HTTP/1.1 204 No Content\r\n\r\n"]
    try:
        assert await pool.request(scripted.url, post(scripted.url)) == (200, b'{"a":1}')
        assert await pool.request(scripted.url, post(scripted.url)) == (200, b'{"a": 1}')
        assert await pool.request(scripted.url, post(scripted.url)) == (404, b"no")
        assert await pool.request(scripted.url, post(scripted.url)) == (204, b"")
        assert scripted.connections == 1
        assert scripted.requests[0] == (b"POST /x HTTP/1.1\r\nHost: " +
                                        urlsplit(scripted.url).netloc.encode() +
                                        b"\r\nContent-Length: 2\r\n\r\n{}")
    finally:
        await pool.close()


async def test_connection_close_is_honoured(loop: Loop, kit: Kit, scripted: Scripted) -> None:
    pool = kit.pool()
    scripted.replies = [b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]
    try:
        assert await pool.request(scripted.url, post(scripted.url)) == (200, b"ok")
        assert pool.idle(scripted.url) == 0
        assert await pool.request(scripted.url, post(scripted.url)) == (200, b"ok")
        assert scripted.connections == 2
    finally:
        await pool.close()


async def test_lost_or_garbled_responses_fail_and_are_not_reused(
        loop: Loop, kit: Kit, scripted: Scripted) -> None:
    pool = kit.pool()
    scripted.close_after = True
    scripted.replies = [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
                        b"HTTP/1.1 200 OK\r\n",
                        b"garbage\r\n\r\n"]
    try:
        for _ in range(4):
            with pytest.raises(kit.lost) as failed:
                await pool.request(scripted.url, post(scripted.url))
            assert kit.describe(failed.value)  # names the cause, for Unavailable
        await loop.sleep(0.05)
        assert pool.connections == 0 and scripted.connections == 4
    finally:
        await pool.close()


async def test_close_aborts_a_busy_connection(loop: Loop, kit: Kit, scripted: Scripted) -> None:
    pool = kit.pool()
    scripted.replies = [None]
    request = loop.spawn(pool.request(scripted.url, post(scripted.url)))
    while not scripted.requests:
        await loop.sleep(0.01)
    await pool.close()
    with pytest.raises(kit.lost):
        await request
    assert pool.connections == 0


# -- streams -------------------------------------------------------------------------------------

async def test_a_stream_delivers_messages_and_ends_on_cancel(loop: Loop, kv: Client) -> None:
    """The transport's streams (watch, observe) on either driver: messages as they come, a
    clean end on cancel, a typed error when the server refuses before answering."""
    messages: list[dict[str, Any]] = []
    stream = await kv.transport.open_stream(
        "watch", {"create_request": {"key": b64(b"st/k")}}, messages.append)
    await kv.set(b"st/k", b"1")
    for _ in range(200):
        if any(m.get("events") for m in messages):
            break
        await loop.sleep(0.02)
    events = [e for m in messages for e in m.get("events", ())]
    assert [base64.b64decode(e["kv"]["value"]) for e in events] == [b"1"]
    stream.cancel()
    assert await stream.done is None

    def broken(message: dict[str, Any]) -> None:
        if message.get("events"):
            raise RuntimeError("consumer bug")

    # A consumer that raises ends its stream, and done raises that very error.
    failing = await kv.transport.open_stream(
        "watch", {"create_request": {"key": b64(b"st/k")}}, broken)
    await loop.sleep(0.1)
    await kv.set(b"st/k", b"2")
    with pytest.raises(RuntimeError, match="consumer bug"):
        await loop.wait_for(failing.done, 10)
    with pytest.raises(Exception) as refused:  # noqa: PT011 - the type is the assertion below
        await kv.transport.open_stream("no/such/stream", {}, messages.append)
    assert isinstance(refused.value, EtcdError) and refused.value.status == 404
