"""The Twisted driver: txetcd's loop-free code on the reactor (``txetcd.interface.Driver``).

Unary requests go through txetcd's own keep-alive HTTP client (``txetcd.http``: Twisted's Agent
cost more CPU per request than the rest of the client), and so do plain GETs (``/version``,
``/metrics``); streams use treq, imported when the first stream opens: a program of gets and
puts does not carry it.
Futures are Deferreds, so ``txetcd.Client`` hands Deferreds to its callers as txaioetcd did.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable
from functools import cached_property
from operator import attrgetter
from typing import TYPE_CHECKING, Any, TypeVar

from OpenSSL import SSL
from twisted.internet import defer, protocol
from twisted.internet.error import ConnectError, ConnectingCancelledError, DNSLookupError
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS, platformTrust
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    HTTPConnectionPool,
    ResponseDone,
)
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from .core import TLSConfig, get_request
from .http import HTTPPool
from .interface import Json, Response, StreamHandle
from .stream import StreamDecoder

if TYPE_CHECKING:
    import treq.client

__all__ = ["TwistedDriver", "TwistedStream", "describe_failure", "tls_reason"]

T = TypeVar("T")

# Errors raised before a single byte of the request reached a server: always safe to resend.
# (txetcd.http raises ConnectError subclasses for failed connects and TLS handshakes.)
_NOT_SENT = (ConnectError, ConnectingCancelledError, DNSLookupError)


def describe_failure(exc: BaseException) -> str:
    """A readable cause for a failed connection; Twisted hides TLS errors in lists of Failures."""
    reasons = getattr(exc, "reasons", None)  # ResponseNeverReceived, RequestTransmissionFailed
    causes = [getattr(r, "value", r) for r in reasons] if reasons else [exc]
    for cause in causes:
        if isinstance(cause, SSL.Error):
            return (f"TLS handshake failed: {tls_reason(cause)} (check ca= for the server's CA, "
                    "and cert= and key= if the server requires client certificates)")
    return "; ".join(f"{c.__class__.__name__}: {c}" for c in causes)


def tls_reason(error: SSL.Error) -> str:
    """OpenSSL's reasons (``certificate verify failed``) out of pyOpenSSL's nested error list."""
    return ", ".join(str(arg[-1]) for arg in (error.args[0] if error.args else [])
                     if isinstance(arg, tuple) and arg) or str(error)


@implementer(IPolicyForHTTPS)
class _TrustCAPolicy:
    """Verify servers against our own CA or the system's, presenting a client certificate if
    configured."""

    def __init__(self, tls: TLSConfig) -> None:
        self._ca: Any = platformTrust()
        if tls.ca:
            with open(tls.ca, "rb") as f:
                self._ca = Certificate.loadPEM(f.read())
        self._client: PrivateCertificate | None = None
        if tls.cert:
            with open(tls.cert, "rb") as f:
                cert_pem = f.read()
            with open(tls.key or tls.cert, "rb") as f:
                key_pem = f.read()
            self._client = PrivateCertificate.loadPEM(cert_pem + b"\n" + key_pem)

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:  # noqa: N802 - Twisted API
        return optionsForClientTLS(hostname.decode("ascii"), trustRoot=self._ca,
                                   clientCertificate=self._client)


class _Agent(Agent):
    """An Agent that builds each host's endpoint once: building one per request (HostnameEndpoint,
    IDNA-encoding the host) cost as much as the rest of sending it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._endpoints: dict[tuple[bytes, bytes, int], Any] = {}

    def _getEndpoint(self, uri: Any) -> Any:  # noqa: N802 - Twisted API
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            endpoint = self._endpoints[key] = super()._getEndpoint(uri)
        return endpoint


class _BodyReader(protocol.Protocol):
    def __init__(self, stream: TwistedStream) -> None:
        self.stream = stream

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted API
        self.stream._received(data)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:  # noqa: N802
        self.stream._ended(reason)


class TwistedStream:
    """One open streaming response (treq's), decoded by ``txetcd.stream.StreamDecoder``.

    ``done`` (a Deferred) fires with None when the server closes cleanly (or after
    ``cancel()``), and errs with a typed error otherwise.
    """

    def __init__(self, response: Any, on_message: Callable[[Json], None]) -> None:
        self.on_message = on_message
        self.done: defer.Deferred[None] = defer.Deferred()
        self._decoder = StreamDecoder()
        self._reader = _BodyReader(self)
        self._cancelled = False
        response.deliverBody(self._reader)

    def _received(self, data: bytes) -> None:
        if self._cancelled or self._decoder.error is not None:
            return
        if not self._decoder.deliver(data, self.on_message):
            self._close_connection()

    def _ended(self, reason: Failure) -> None:
        if self.done.called:
            return
        if self._cancelled:
            self.done.callback(None)
            return
        clean = bool(reason.check(ResponseDone))
        error = self._decoder.end(clean, reason.getErrorMessage())
        if error is None:
            self.done.callback(None)
        else:
            self.done.errback(Failure(error))

    def _close_connection(self) -> None:
        transport = self._reader.transport
        if transport is not None:
            # Stops the body producer, which closes the socket: a stream connection must never
            # go back to the pool while the server still writes to it.
            transport.stopProducing()

    def cancel(self) -> None:
        """Close the stream's connection; ``done`` then fires with None."""
        if self.done.called:
            return
        self._cancelled = True
        self._close_connection()


class _QuietPool(HTTPConnectionPool):
    """Twisted's pool without a "Starting factory" and a "Stopping factory" log line for every
    connection: a watch or keepalive retrying while etcd is down filled the log with them.
    ``_factory`` is the pool's documented way to choose its connections' factory."""

    _factory: Any = type("QuietHTTP11ClientFactory", (HTTPConnectionPool._factory,),
                         {"noisy": False})


class TwistedDriver:
    """``txetcd.interface.Driver`` on a Twisted reactor."""

    name = "twisted"
    resumes_at_once = True  # a Deferred runs its callbacks when it fires

    def __init__(self, reactor: Any, *, tls: TLSConfig | None = None,
                 connect_timeout: float = 5.0, pool: HTTPConnectionPool | None = None,
                 pool_size: int = 32) -> None:
        self.reactor = reactor
        # Twisted's pool (a caller's, or our own) carries streams and GET /version only.
        if pool is None:
            pool = _QuietPool(reactor, persistent=True)
            # Twisted keeps only 2 idle connections per host; a busy client would churn sockets.
            pool.maxPersistentPerHost = pool_size
            pool.retryAutomatically = False
        self.pool = pool
        policy = (_TrustCAPolicy(tls) if tls and (tls.ca or tls.cert)
                  else BrowserLikePolicyForHTTPS())
        self.agent = _Agent(reactor, contextFactory=policy, pool=pool,
                            connectTimeout=connect_timeout)
        # Unary requests: our own client, as many connections per endpoint as requests in flight.
        self.unary = HTTPPool(reactor, policy, connect_timeout=connect_timeout, max_idle=pool_size)
        self.request = self.unary.request  # the hot path: no call in between

    @cached_property
    def http(self) -> treq.client.HTTPClient:
        """treq over the same TLS policy, for streams."""
        import treq.client

        return treq.client.HTTPClient(self.agent)  # type: ignore[arg-type]

    @property
    def connections(self) -> int:
        """Open unary connections, idle or busy (for monitoring and tests)."""
        return self.unary.connections

    def get(self, url: str) -> defer.Deferred[Response]:
        return self.unary.request(*get_request(url))

    def open_stream(self, url: str, headers: list[tuple[bytes, bytes]], body: bytes,
                    on_message: Callable[[Json], None]
                    ) -> defer.Deferred[tuple[int, bytes, StreamHandle | None]]:
        async def run() -> tuple[int, bytes, StreamHandle | None]:
            all_headers: dict[bytes | str, list[bytes | str]] = {}
            for name, value in headers:
                all_headers.setdefault(name, []).append(value)
            response = await self.http.post(url, data=body, headers=all_headers, unbuffered=True)
            if response.code != 200:
                return response.code, await response.content(), None
            return 200, b"", TwistedStream(response, on_message)

        return defer.ensureDeferred(run())

    def sleep(self, seconds: float) -> defer.Deferred[None]:
        return deferLater(self.reactor, seconds, lambda: None)

    def call_later(self, seconds: float, fn: Callable[..., Any], *args: Any) -> Any:
        return self.reactor.callLater(seconds, fn, *args)

    def call_soon(self, fn: Callable[[], Any]) -> None:
        self.reactor.callLater(0, fn)

    def spawn(self, coro: Coroutine[Any, Any, T]) -> defer.Deferred[T]:
        return defer.ensureDeferred(coro)

    def future(self, on_cancel: Callable[[], None] | None = None) -> defer.Deferred[Any]:
        return defer.Deferred(None if on_cancel is None else lambda _: on_cancel())

    @staticmethod
    def resolve(future: defer.Deferred[Any], value: Any) -> None:
        if not future.called:
            future.callback(value)

    @staticmethod
    def when_done(future: defer.Deferred[Any], on_value: Callable[[Any], None],
                  on_error: Callable[[BaseException], None]) -> None:
        future.addCallbacks(on_value, lambda failure: on_error(failure.value))

    @staticmethod
    def fail(future: defer.Deferred[Any], error: BaseException) -> None:
        if not future.called:
            future.errback(error)

    #: A new Deferred, no wrapper around it (the batcher makes one per op).
    new_future = defer.Deferred

    @staticmethod
    def resolve_all(futures: Iterable[defer.Deferred[Any] | None], values: Iterable[Any]) -> None:
        for future, value in zip(futures, values, strict=True):
            if future is not None and not future.called:
                future.callback(value)

    #: Whether a Deferred has its result (a C-level getter: the batcher maps it over batches).
    settled = staticmethod(attrgetter("called"))

    def gather(self, awaitables: Iterable[Any]) -> defer.Deferred[Any]:
        return defer.DeferredList([defer.ensureDeferred(a) for a in awaitables],
                                  consumeErrors=True)

    def discard(self, awaitable: Any) -> None:
        deferred: defer.Deferred[Any] = defer.ensureDeferred(awaitable)
        deferred.addErrback(lambda _: None)
        deferred.cancel()

    def semaphore(self, tokens: int) -> defer.DeferredSemaphore:
        return defer.DeferredSemaphore(tokens)

    @staticmethod
    def is_cancelled(exc: BaseException) -> bool:
        """Whether a failure is our own cancellation; Twisted's HTTP client wraps it in
        ResponseNeverReceived, which must not pass for a broken connection worth retrying."""
        if isinstance(exc, defer.CancelledError):
            return True
        reasons = getattr(exc, "reasons", None) or []
        return any(getattr(r, "check", lambda *_: False)(defer.CancelledError) for r in reasons)

    @staticmethod
    def cancelled_error() -> BaseException:
        return defer.CancelledError()

    @staticmethod
    def never_sent(exc: BaseException) -> bool:
        return isinstance(exc, _NOT_SENT)

    @staticmethod
    def describe(exc: BaseException) -> str:
        return describe_failure(exc)

    def now(self) -> float:
        return float(self.reactor.seconds())

    def close(self) -> defer.Deferred[None]:
        async def run() -> None:
            await self.unary.close()
            await self.pool.closeCachedConnections()

        return defer.ensureDeferred(run())

