"""A loopback TCP proxy that injects network faults between a client and a real etcd."""

from __future__ import annotations

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
