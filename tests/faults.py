"""A loopback TCP proxy that injects network faults between a client and a real etcd."""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
from typing import Any

from twisted.internet import protocol
from twisted.internet import reactor as _reactor

reactor: Any = _reactor  # twisted's module-level reactor is typed as a bare module


class _ServerSide(protocol.Protocol):
    # A TCP transport (write, loseConnection, abortConnection); its zope interfaces do not
    # type-check as classes without a plugin.
    transport: Any

    def __init__(self, client_side: _ClientSide) -> None:
        self.client_side = client_side

    def connectionMade(self) -> None:  # noqa: N802
        self.client_side.server_connected(self)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        proxy = self.client_side.proxy
        if proxy.cut_responses:
            # The request reached etcd, but its answer never reaches the client.
            self.client_side.transport.abortConnection()
            self.transport.loseConnection()
            return
        self.client_side.transport.write(data)

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        self.client_side.transport.loseConnection()


class _ClientSide(protocol.Protocol):
    transport: Any  # as _ServerSide's

    def __init__(self, proxy: TcpProxy) -> None:
        self.proxy = proxy
        self.server: _ServerSide | None = None
        self.pending: list[bytes] = []
        self.request_lines: list[bytes] = []  # e.g. b"POST /v3/watch HTTP/1.1"

    def connectionMade(self) -> None:  # noqa: N802
        self.proxy.connections.append(self)
        if self.proxy.refuse:
            self.transport.abortConnection()
            return
        factory = protocol.ClientFactory()
        factory.protocol = lambda: _ServerSide(self)
        reactor.connectTCP(self.proxy.target_host, self.proxy.target_port, factory)

    def server_connected(self, server: _ServerSide) -> None:
        self.server = server
        for data in self.pending:
            server.transport.write(data)
        self.pending = []

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.proxy.requests += data.count(b"POST ")
        if data.startswith((b"POST ", b"GET ")):
            self.request_lines.append(data.split(b"\r\n", 1)[0])
        if self.server is None:
            self.pending.append(data)
        else:
            self.server.transport.write(data)

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        if self.server is not None:
            self.server.transport.loseConnection()


class TcpProxy(protocol.Factory):
    """Forwards 127.0.0.1:<port> to a target; ``cut_responses`` drops answers, ``refuse`` drops
    new connections. ``requests`` counts the POSTs that went through."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host, self.target_port = target_host, target_port
        self.cut_responses = False
        self.refuse = False
        self.requests = 0
        self.connections: list[_ClientSide] = []
        self.port = reactor.listenTCP(0, self, interface="127.0.0.1")

    def buildProtocol(self, addr: Any) -> _ClientSide:  # noqa: N802
        return _ClientSide(self)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port.getHost().port}"

    def close(self) -> Any:
        for conn in self.connections:
            conn.transport.abortConnection()
        return self.port.stopListening()


class ThreadConnection:
    """One proxied connection of a ``ThreadProxy``: what the client sent, and whether it is
    closed."""

    def __init__(self, client: socket.socket, server: socket.socket | None) -> None:
        self.client, self.server = client, server
        self.request_lines: list[bytes] = []
        self.closed = False

    def cut(self) -> None:
        """Reset both sides now (from any thread): the client sees its connection drop."""
        for sock in (self.client, self.server):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.shutdown(socket.SHUT_RDWR)


class ThreadProxy:
    """``TcpProxy`` for any event loop: plain sockets served by a thread of its own, so it works
    while asyncio runs a test (the reactor is not running then) as well as under Twisted.

    ``refuse`` resets new connections, ``cut_all()`` resets the open ones, ``connections`` lists
    them with the request lines their client sent. ``cut_responses`` lets requests reach etcd
    but resets the connection instead of passing its answer on; ``requests`` counts the POSTs.
    A request holding the bytes ``swallow`` is never passed on nor answered (``swallowed``
    counts them): what a member does with a write it forwards to a leader that just died.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.refuse = False
        self.cut_responses = False
        self.swallow: bytes | None = None
        self.swallowed = 0
        self.requests = 0
        self.connections: list[ThreadConnection] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._running = True
        self._thread = threading.Thread(target=self._serve, daemon=True, name="ThreadProxy")
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def cut_all(self) -> None:
        for connection in list(self.connections):
            connection.cut()

    def close(self) -> None:
        self._running = False
        self.cut_all()
        self._thread.join(5)
        self._listener.close()

    def _serve(self) -> None:
        while self._running:
            for key, _events in self._selector.select(0.05):
                if key.data is None:
                    self._accept()
                else:
                    self._forward(key.fileobj, *key.data)  # type: ignore[arg-type]
        for key in list(self._selector.get_map().values()):
            with contextlib.suppress(OSError):
                key.fileobj.close()  # type: ignore[union-attr]

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        connection = ThreadConnection(client, None)
        self.connections.append(connection)
        if self.refuse:
            connection.cut()
            client.close()
            connection.closed = True
            return
        try:
            connection.server = socket.create_connection(self.target)
        except OSError:
            client.close()
            connection.closed = True
            return
        self._selector.register(client, selectors.EVENT_READ, (connection, True))
        self._selector.register(connection.server, selectors.EVENT_READ, (connection, False))

    def _forward(self, sock: socket.socket, connection: ThreadConnection,
                 from_client: bool) -> None:
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if data and from_client:
            if self.swallow is not None and self.swallow in data:
                self.swallowed += 1
                return  # the connection stays open; its request is never answered
            self.requests += data.count(b"POST ")
            if data.startswith((b"POST ", b"GET ")):
                connection.request_lines.append(data.split(b"\r\n", 1)[0])
        elif data and self.cut_responses:
            # The request reached etcd, but its answer never reaches the client.
            connection.cut()
            self._drop(connection)
            return
        other = connection.server if from_client else connection.client
        if data and other is not None:
            with contextlib.suppress(OSError):
                other.sendall(data)
                return
        self._drop(connection)

    def _drop(self, connection: ThreadConnection) -> None:
        connection.closed = True
        for sock in (connection.client, connection.server):
            if sock is not None:
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self._selector.unregister(sock)
                with contextlib.suppress(OSError):
                    sock.close()
