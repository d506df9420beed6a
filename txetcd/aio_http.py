"""A small asyncio HTTP/1.1 keep-alive client for the gateway: the asyncio twin of txetcd.http.

The same rules as the Twisted one: a pool of persistent connections per endpoint, one request at
a time per connection (no pipelining), each request written with one ``transport.write`` of
prepared bytes, responses parsed by ``httptools`` (llhttp, in C), TLS through an
``ssl.SSLContext``. An idle connection is peeked at before reuse, so one that the server closed
while the loop was busy (e.g. etcd restarted) is dropped instead of failing a write with an
unknown outcome.

Errors tell whether the request may have reached the server: ``NotSent`` (refused, DNS, connect
timeout, a failed TLS handshake) means no byte of it was sent; ``ResponseLost`` means the
connection broke after it was written. Cancelling a request aborts its connection.

Streams (watch, observe) get a connection of their own (``open_stream``) whose body is fed to a
callback as it arrives.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httptools

from .core import quiet
from .http_reader import BadResponse, ResponseReader
from .interface import NotSent, Response, ResponseLost

__all__ = ["HTTPPool", "StreamConnection", "NotSent", "ResponseLost"]


def tls_context(ca: str | None = None, cert: str | None = None,
                key: str | None = None) -> ssl.SSLContext:
    """Verify servers against ``ca`` (or the system's CAs); present ``cert`` if given."""
    context = ssl.create_default_context(cafile=ca)
    if cert:
        context.load_cert_chain(cert, key or cert)
    return context


def describe(exc: BaseException) -> str:
    """A readable cause for a failed connection, TLS reasons first."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            reason = getattr(cause, "verify_message", None) or cause.reason or str(cause)
            return (f"TLS handshake failed: {reason} (check ca= for the server's CA, "
                    "and cert= and key= if the server requires client certificates)")
        cause = cause.__cause__
    return f"{exc.__class__.__name__}: {exc}"  # ours name their cause in the message


class _Connection(asyncio.Protocol):
    """One persistent connection: sends a request, parses its response, then goes back to its
    pool (or closes, if the server said ``Connection: close``)."""

    def __init__(self, host: _Host) -> None:
        self._host = host
        self._reader = ResponseReader()
        self._result: asyncio.Future[Response] | None = None
        self.closed = False
        self._transport: asyncio.Transport | None = None
        self._peek: socket.socket | None = None

    # -- requests --------------------------------------------------------------------------

    def send(self, data: bytes) -> asyncio.Future[Response]:
        """Write a complete request; the future gets (status code, body). Cancelling it aborts
        the connection: the response may still come, and nothing else could use it before."""
        result: asyncio.Future[Response] = _Pending(self._host.loop, self)
        self._result = result
        assert self._transport is not None
        self._transport.write(data)
        return result

    def usable(self) -> bool:
        """Whether this idle connection can take a request: a peek at the socket (one cheap
        syscall) finds an EOF the loop has not read yet (the server restarted meanwhile)."""
        if self.closed:
            return False
        if self._peek is None or quiet(self._peek):
            return True
        self.abort()
        return False

    def abort(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        """Close after what was written (an answered request: nothing is in flight)."""
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    @property
    def busy(self) -> bool:
        return self._result is not None

    # -- the connection's life -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        raw = transport.get_extra_info("socket")
        # A duplicate of the socket to peek at (asyncio's wrapper has no recv); closed with it.
        self._peek = raw.dup() if raw is not None else None
        self._host.pool.live.add(self)
        self._host.pool.opened += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._peek is not None:
            self._peek.close()
            self._peek = None
        self._host.forget(self)
        result, self._result = self._result, None
        if result is not None and not result.done():
            lost = ResponseLost(f"connection lost: {exc or 'closed by the server'}")
            lost.__cause__ = exc
            result.set_exception(lost)

    # -- the response, parsed by httptools ---------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._result is None:  # nothing asked (or cancelled): this connection is done for
            self.abort()
            return
        try:
            answer = self._reader.feed(data)
        except BadResponse as exc:
            result, self._result = self._result, None
            self.abort()
            lost = ResponseLost(f"bad HTTP response: {exc}")
            lost.__cause__ = exc
            result.set_exception(lost)
            return
        if answer is not None:
            result, self._result = self._result, None
            status, body, keep_alive = answer
            if keep_alive:
                self._host.release(self)
            else:
                self.close()
            if not result.done():
                result.set_result((status, body))

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost fails what is in flight


class _Pending(asyncio.Future[Response]):
    """A request's future; cancelling it aborts its connection at once."""

    def __init__(self, loop: asyncio.AbstractEventLoop, connection: _Connection) -> None:
        super().__init__(loop=loop)
        self._connection = connection

    def cancel(self, msg: Any = None) -> bool:
        if not super().cancel(msg):
            return False
        self._connection.abort()
        return True


class _Host:
    """The connections to one endpoint (scheme, host, port): idle ones are reused last in,
    first out; at most ``max_idle`` are kept."""

    def __init__(self, pool: HTTPPool, endpoint: str) -> None:
        parts = urlsplit(endpoint)
        self.pool = pool
        self.loop = pool.loop
        self.tls = parts.scheme == "https"
        self.name = parts.hostname or "localhost"
        self.port = parts.port or (443 if self.tls else 80)
        self.idle: list[_Connection] = []

    def request(self, data: bytes) -> asyncio.Future[Response]:
        """Send ``data`` on an idle connection, or a new one; a cancellable future of the
        answer (a task only when it has to connect first)."""
        connection = self._idle()
        if connection is not None:
            return connection.send(data)
        if self.pool.closing:  # closed: no new connections (a retry after close() ends here)
            refused: asyncio.Future[Response] = self.loop.create_future()
            refused.set_exception(NotSent("the client is closed"))
            return refused
        return self.loop.create_task(self._connect_and_send(data))

    async def _connect_and_send(self, data: bytes) -> Response:
        connection = await self.connect()
        return await connection.send(data)  # cancelling it aborts the connection

    def _idle(self) -> _Connection | None:
        idle = self.idle
        while idle:
            connection = idle.pop()
            if connection.usable():
                return connection
        return None

    async def connect(self, factory: Callable[[], asyncio.Protocol] | None = None) -> Any:
        """A new connection (TLS handshake done); raises ``NotSent`` when there is none."""
        context = self.pool.ssl_context() if self.tls else None
        try:
            _, connection = await asyncio.wait_for(self.loop.create_connection(
                factory or (lambda: _Connection(self)), self.name, self.port, ssl=context,
                server_hostname=self.name if context else None), self.pool.connect_timeout)
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            raise NotSent(f"cannot connect to {self.name}:{self.port}: "
                          f"{describe(exc)}") from exc
        return connection

    def release(self, connection: _Connection) -> None:
        if len(self.idle) < self.pool.max_idle and not self.pool.closing:
            self.idle.append(connection)
        else:
            connection.close()

    def forget(self, connection: _Connection) -> None:
        """A connection closed (by us or the server): drop it from the pool."""
        if connection in self.idle:
            self.idle.remove(connection)
        self.pool.live.discard(connection)


class HTTPPool:
    """Persistent HTTP/1.1 connections to any number of endpoints (``http(s)://host:port``).

    The caller bounds the requests in flight (the Transport's semaphore), and so the number of
    connections; at most ``max_idle`` idle ones per endpoint are kept.
    """

    def __init__(self, *, tls: ssl.SSLContext | Callable[[], ssl.SSLContext] | None = None,
                 connect_timeout: float = 5.0, max_idle: int = 32,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop
        self._tls = tls
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self._hosts: dict[str, _Host] = {}
        self.live: set[asyncio.BaseProtocol] = set()
        self.closing = False
        self.opened = 0  # unary connections made so far (monitoring, tests)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def ssl_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        elif not isinstance(self._tls, ssl.SSLContext):
            self._tls = self._tls()
        return self._tls

    @property
    def connections(self) -> int:
        """Open connections, idle or busy, streams included (for monitoring and tests)."""
        return len(self.live)

    def idle(self, endpoint: str) -> int:
        host = self._hosts.get(endpoint)
        return len(host.idle) if host else 0

    def host(self, endpoint: str) -> _Host:
        host = self._hosts.get(endpoint)
        if host is None:
            host = self._hosts[endpoint] = _Host(self, endpoint)
        return host

    def request(self, endpoint: str, data: bytes) -> asyncio.Future[Response]:
        """Send a complete request (``core.build_request``) to ``endpoint``: a cancellable
        future of (status code, body)."""
        host = self._hosts.get(endpoint) or self.host(endpoint)
        return host.request(data)

    async def close(self) -> None:
        """Close every connection (busy ones are aborted); a request still running after this
        closes its connection when it is answered."""
        self.closing = True
        for host in self._hosts.values():
            host.idle.clear()
        for connection in list(self.live):
            if isinstance(connection, _Connection) and not connection.busy:
                connection.close()
            else:
                connection.abort()  # type: ignore[attr-defined]
        for _ in range(100):  # connection_lost comes a turn or two later
            if not self.live:
                break
            await asyncio.sleep(0.001)


class StreamConnection(asyncio.Protocol):
    """A streaming response on a connection of its own: the status first (``status``), then
    each piece of the body to ``on_data``; ``ended`` gets whether the body ended cleanly."""

    def __init__(self, pool: HTTPPool, on_data: Callable[[bytes], None],
                 on_end: Callable[[bool, str], None]) -> None:
        self._pool = pool
        self._parser = httptools.HttpResponseParser(self)
        self.status: asyncio.Future[int] = pool.loop.create_future()
        self._on_data, self._on_end = on_data, on_end
        self._error_body: list[bytes] = []
        self._complete = False
        self._transport: asyncio.Transport | None = None

    @property
    def error_body(self) -> bytes:
        return b"".join(self._error_body)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._pool.live.add(self)

    def send(self, data: bytes) -> None:
        assert self._transport is not None
        self._transport.write(data)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._finish(False, f"bad HTTP response: {exc}")
            self.abort()

    def on_headers_complete(self) -> None:
        if not self.status.done():
            self.status.set_result(self._parser.get_status_code())

    def on_body(self, body: bytes) -> None:
        if self._parser.get_status_code() == 200:
            self._on_data(body)
        else:
            self._error_body.append(body)

    def on_message_complete(self) -> None:
        self._complete = True
        if self._parser.get_status_code() == 200:
            self._finish(True, "")
        self.abort()  # a stream's connection carries nothing after its response

    def connection_lost(self, exc: Exception | None) -> None:
        self._pool.live.discard(self)
        if not self.status.done():
            lost = ResponseLost(f"stream lost before its answer: {exc or 'closed'}")
            lost.__cause__ = exc
            self.status.set_exception(lost)
        self._finish(self._complete, str(exc or "connection closed"))

    def _finish(self, clean: bool, reason: str) -> None:
        on_end, self._on_end = self._on_end, _ended_already
        on_end(clean, reason)


def _ended_already(clean: bool, reason: str) -> None:
    pass
