"""A small HTTP/1.1 keep-alive client for the gateway's unary requests.

Twisted's Agent spent more Python time per request than everything else in txetcd together
(URI parsing, pool lookup, header objects, a line-by-line response parser, Deferred chains).
This client keeps what a unary etcd request needs and nothing else: a pool of persistent
connections per endpoint, one request at a time per connection (no pipelining), each request
written with one ``transport.write`` of prepared bytes, and responses parsed by ``httptools``
(llhttp, in C). One Deferred per request fires with ``(status code, body)``.

Errors tell whether the request may have reached the server: a ``ConnectError`` (refused,
DNS, timeout, a failed TLS handshake) means no byte of it was sent; ``ResponseFailed`` means
the connection broke after it was written. Cancelling a request aborts its connection.
"""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlsplit

from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from .core import build_request, quiet, request_head
from .http_reader import BadResponse, ResponseReader

__all__ = ["HTTPPool", "TLSHandshakeFailed", "ResponseFailed", "request_head", "build_request"]

Response = tuple[int, bytes]


class TLSHandshakeFailed(ConnectError):
    """The TLS handshake failed, so no byte of the request was sent. ``reasons`` holds the
    failure, like Twisted's ``ResponseFailed``, for ``describe_failure``."""

    def __init__(self, reason: Failure) -> None:
        super().__init__(string=str(reason.value))
        self.reasons = [reason]


@implementer(IHandshakeListener)
class _Connection(Protocol):
    """One persistent connection: sends a request, parses its response, then goes back to its
    pool (or closes, if the server said ``Connection: close``)."""

    def __init__(self, host: _Host) -> None:
        self._host = host
        self._reader = ResponseReader()
        self._result: defer.Deferred[Response] | None = None
        # Until the connection can carry a request (TLS: the handshake is done), a failure is a
        # connect error and the request waits in _first.
        self._ready = False
        self._first: bytes | None = None
        self.closed = False
        self._transport: Any = None  # self.transport, untyped: zope interfaces confuse mypy
        self._socket: socket.socket | None = None
        self._plain: socket.socket | None = None  # the socket, when not under TLS

    # -- requests --------------------------------------------------------------------------

    def send(self, data: bytes) -> defer.Deferred[Response]:
        """Write a complete request; the Deferred fires with (status code, body)."""
        if self.closed:  # lost before it could be used: nothing was sent
            return defer.fail(ConnectError(string="connection closed before the request"))
        result: defer.Deferred[Response] = defer.Deferred(self._cancel)
        self._result = result
        if self._ready:
            self._write(data)
        else:
            self._first = data
        return result

    def _write(self, data: bytes) -> None:
        """Write ``data`` now. On plain TCP straight into the socket: the answer to the previous
        request came in, so Twisted's buffer is empty (etcd answers only once it has read the
        whole request), and the write needs no turn of the reactor of its own."""
        sock = self._plain
        if sock is not None:
            try:
                sent = sock.send(data)
            except OSError:  # EAGAIN, or a broken connection: Twisted finds out and reports it
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        self._transport.write(data)

    def _cancel(self, result: defer.Deferred[Response]) -> None:
        # The response may still come; the connection cannot carry another request before it
        # does, so it goes. The Deferred then fails with CancelledError.
        self._result = None
        self._first = None
        self._abort()

    def usable(self) -> bool:
        """Whether this idle connection can take a request. A server that closed it (e.g. it
        restarted) may have done so while the reactor was busy: its EOF is then still unread.
        Writing a request into it would fail it with an unknown outcome, so a peek at the
        socket (one cheap syscall) drops such connections first."""
        if self.closed:
            return False
        if self._socket is None or quiet(self._socket):
            return True
        self._abort()
        return False

    def _abort(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.abortConnection()

    def close(self) -> None:
        """Close after what was written (an answered request: nothing is in flight)."""
        self.closed = True
        self._transport.loseConnection()

    # -- the connection's life -------------------------------------------------------------

    def connectionMade(self) -> None:  # noqa: N802 - Twisted API
        self._transport = self.transport
        self._socket = _socket_of(self.transport)
        self._host.pool._live.add(self)
        self._host.pool.opened += 1
        if not self._host.tls:
            self._plain = self._socket
            self._became_ready()

    def handshakeCompleted(self) -> None:  # noqa: N802 - Twisted API
        self._became_ready()

    def _became_ready(self) -> None:
        self._ready = True
        if self._first is not None:
            data, self._first = self._first, None
            self._write(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802
        self.closed = True
        self._host.forget(self)
        result, self._result = self._result, None
        if result is not None and not result.called:
            exc: Exception = (ResponseFailed([reason]) if self._ready
                              else TLSHandshakeFailed(reason))
            result.errback(exc)

    # -- the response, parsed by httptools ---------------------------------------------------

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted API
        if self._result is None:  # nothing asked (or cancelled): this connection is done for
            self._abort()
            return
        try:
            answer = self._reader.feed(data)
        except BadResponse as exc:
            result, self._result = self._result, None
            self._abort()
            result.errback(ResponseFailed([Failure(exc)]))
            return
        if answer is not None:
            result, self._result = self._result, None
            status, body, keep_alive = answer
            if keep_alive:
                self._host.release(self)
            else:
                self.close()
            result.callback((status, body))


class _Factory(Factory):
    noisy = False  # no "Starting factory" line per connection in the application's log

    def __init__(self, host: _Host) -> None:
        self._host = host

    def buildProtocol(self, addr: Any) -> _Connection:  # noqa: N802 - Twisted API
        return _Connection(self._host)


class _Host:
    """The connections to one endpoint (scheme, host, port): idle ones are reused last in,
    first out; at most ``max_idle`` are kept."""

    def __init__(self, pool: HTTPPool, endpoint: Any, tls: bool) -> None:
        self.pool = pool
        self.tls = tls
        self._endpoint = endpoint
        self._factory = _Factory(self)
        self.idle: list[_Connection] = []

    def request(self, data: bytes) -> defer.Deferred[Response]:
        idle = self.idle
        while idle:
            connection = idle.pop()
            if connection.usable():
                return connection.send(data)
        return self._connect(data)

    def _connect(self, data: bytes) -> defer.Deferred[Response]:
        """Connect and send ``data`` once the connection is ready; cancellable throughout."""
        cancelled = False

        def cancel(_: defer.Deferred[Response]) -> None:
            nonlocal cancelled
            cancelled = True
            # While connecting this stops it; once connected, Deferred.cancel passes on to the
            # send that connecting now waits for, which aborts the connection.
            connecting.cancel()

        def connected(connection: _Connection) -> defer.Deferred[Response]:
            return connection.send(data)

        def done(outcome: Any) -> None:
            # Once cancelled, result fails with CancelledError (not ConnectingCancelledError).
            if not cancelled:
                if isinstance(outcome, Failure):
                    result.errback(outcome)
                else:
                    result.callback(outcome)

        result: defer.Deferred[Response] = defer.Deferred(cancel)
        connecting: defer.Deferred[Any] = self._endpoint.connect(self._factory)
        if not connecting.called:
            self.pool._connecting.add(connecting)
            connecting.addBoth(_discard, self.pool._connecting, connecting)
        connecting.addCallback(connected).addBoth(done)
        return result

    def release(self, connection: _Connection) -> None:
        if len(self.idle) < self.pool.max_idle:
            self.idle.append(connection)
        else:
            connection.close()

    def forget(self, connection: _Connection) -> None:
        """A connection closed (by us or the server): drop it from the pool."""
        if connection in self.idle:
            self.idle.remove(connection)
        self.pool._gone(connection)


def _socket_of(transport: Any) -> socket.socket | None:
    """The TCP socket under a transport (under TLS: under the TLS protocol), if there is one."""
    for _ in range(3):
        if transport is None:
            return None
        handle = getattr(transport, "getHandle", lambda: None)()
        if isinstance(handle, socket.socket):
            return handle
        transport = getattr(transport, "transport", None)
    return None


def _discard(result: Any, where: set[Any], item: Any) -> Any:
    where.discard(item)
    return result


class HTTPPool:
    """Persistent HTTP/1.1 connections to any number of endpoints (``http(s)://host:port``).

    The caller bounds the requests in flight (the Transport's semaphore), and so the number of
    connections; at most ``max_idle`` idle ones per endpoint are kept.
    """

    def __init__(self, reactor: Any, policy: IPolicyForHTTPS | Any, *, connect_timeout: float = 5.0,
                 max_idle: int = 32) -> None:
        self.reactor = reactor
        self.max_idle = max_idle
        self._policy: Any = policy
        self._connect_timeout = connect_timeout
        self._hosts: dict[str, _Host] = {}
        self._live: set[_Connection] = set()
        self._connecting: set[defer.Deferred[Any]] = set()
        self._closing: list[defer.Deferred[None]] = []
        self.opened = 0  # connections made so far (monitoring, tests)

    @property
    def connections(self) -> int:
        """Open connections, idle or busy (for monitoring and tests)."""
        return len(self._live)

    def idle(self, endpoint: str) -> int:
        host = self._hosts.get(endpoint)
        return len(host.idle) if host else 0

    def request(self, endpoint: str, data: bytes) -> defer.Deferred[Response]:
        """Send a complete request (``build_request``) to ``endpoint``; the Deferred fires with
        (status code, body)."""
        host = self._hosts.get(endpoint)
        if host is None:
            host = self._hosts[endpoint] = self._host(endpoint)
        return host.request(data)

    def _host(self, endpoint: str) -> _Host:
        parts = urlsplit(endpoint)
        tls = parts.scheme == "https"
        name = parts.hostname or "localhost"
        port = parts.port or (443 if tls else 80)
        tcp: Any = HostnameEndpoint(self.reactor, name.encode("idna"), port,
                                    timeout=self._connect_timeout)
        if tls:
            creator = self._policy.creatorForNetloc(name.encode("idna"), port)
            tcp = wrapClientTLS(creator, tcp)
        return _Host(self, tcp, tls)

    def _gone(self, connection: _Connection) -> None:
        self._live.discard(connection)
        if not self._live and self._closing:
            waiters, self._closing = self._closing, []
            for waiter in waiters:
                waiter.callback(None)

    def close(self) -> defer.Deferred[None]:
        """Close every connection (busy ones are aborted) and stop connecting; fires when all
        are closed."""
        for connecting in list(self._connecting):
            connecting.cancel()
        for host in self._hosts.values():
            host.idle.clear()
        done: defer.Deferred[None] = defer.Deferred()
        if not self._live:
            done.callback(None)
            return done
        self._closing.append(done)
        for connection in list(self._live):
            if connection._result is None and connection._ready:
                connection.close()
            else:
                connection._abort()
        return done
