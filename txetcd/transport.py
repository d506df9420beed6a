"""HTTP transport to etcd's gRPC JSON gateway: endpoints, API prefix, auth, TLS, errors.

Unary requests go through txetcd's own keep-alive HTTP client (``txetcd.http``: Twisted's
Agent cost more CPU per request than the rest of the client); streams and ``GET /version`` use
treq. A semaphore caps the unary requests in flight, and every request has a deadline.

Failover follows one rule: a request is resent only when that is safe. Idempotent requests move
to the next endpoint on connection errors; a write whose connection broke after it was sent may
have been applied, so it fails with ``Unavailable(outcome_unknown=True)`` and is never resent.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import treq
from OpenSSL import SSL
from twisted.internet import defer
from twisted.internet.error import (
    ConnectError,
    ConnectingCancelledError,
    DNSLookupError,
)
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS, platformTrust
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from .errors import (
    AuthFailed,
    EtcdError,
    InvalidAuthToken,
    ProtocolError,
    Timeout,
    TooManyRequests,
    Unavailable,
    UnsupportedServer,
    classify,
)
from .http import HTTPPool, build_request, request_head
from .stream import Stream

__all__ = ["Transport", "TLSConfig", "api_prefix", "parse_version"]

Json = dict[str, Any]
Headers = dict[bytes | str, list[bytes | str]]

# Errors raised before a single byte of the request reached a server: always safe to resend.
# (txetcd.http raises ConnectError subclasses for failed connects and TLS handshakes.)
_NOT_SENT = (ConnectError, ConnectingCancelledError, DNSLookupError)

# Linearizable reads need a leader anyway. With this gRPC metadata a member without one refuses
# them at once ("no leader", before any processing) instead of holding them for its request
# timeout, so they move on to a member of the majority. Writes go without it: they wait out an
# election on their member rather than fail with an unknown outcome.
_REQUIRE_LEADER = (b"Grpc-Metadata-hasleader", b"true")
_LEADER_READS = frozenset({"kv/range", "lease/timetolive", "lease/leases"})

# etcd's answer to requests without a token once auth is on (e.g. enabled after we connected).
_NO_TOKEN = "user name is empty"
_AUTH_NOT_ENABLED = "authentication is not enabled"


def _cancelled(exc: BaseException) -> bool:
    """Whether a failure is our own cancellation; Twisted's HTTP client wraps it in
    ResponseNeverReceived, which must not pass for a broken connection worth retrying."""
    if isinstance(exc, defer.CancelledError):
        return True
    reasons = getattr(exc, "reasons", None) or []
    return any(getattr(r, "check", lambda *_: False)(defer.CancelledError) for r in reasons)


def parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("-")[0].split(".")[:3] if part.isdigit())


def api_prefix(version: str, endpoint: str = "the server") -> str:
    """The gateway's path prefix for a server version; older than 3.3 is refused."""
    parsed = parse_version(version)
    if parsed < (3, 3):
        raise UnsupportedServer(f"etcd {version} at {endpoint} is too old: txetcd needs etcd "
                                ">= 3.3 (the v3 JSON gateway)")
    return "/v3" if parsed >= (3, 4) else "/v3beta"


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


@dataclass(frozen=True)
class TLSConfig:
    """Files for https endpoints: the CA that signed the servers, and an optional client cert."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None


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


class _Flag:
    """Set when a request's deadline passed, so that its cancellation is not mistaken for a
    connection failure worth retrying."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = False

    def __bool__(self) -> bool:
        return self.value

    def set_and_cancel(self, request: defer.Deferred[Any]) -> None:
        self.value = True
        request.cancel()


class Transport:
    """POSTs JSON to the gateway of one of several etcd members and decodes the answer."""

    def __init__(self, reactor: Any, endpoints: Sequence[str], *, timeout: float | None = 10.0,
                 connect_timeout: float = 5.0, pool: HTTPConnectionPool | None = None,
                 pool_size: int = 32, tls: TLSConfig | None = None, user: str | None = None,
                 password: str | None = None) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is required")
        for url in endpoints:
            if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
                raise ValueError(f"endpoint must be an http(s):// URL string, not {url!r}")
        if not isinstance(pool_size, int) or pool_size < 1:
            raise ValueError(f"pool_size must be a positive int, not {pool_size!r}")
        if (user is None) != (password is None):
            raise ValueError("user and password go together")
        if tls is not None and tls.key and not tls.cert:
            raise ValueError("key= needs cert=: a client key without its certificate is useless")
        self.reactor = reactor
        self.endpoints = [url.rstrip("/") for url in endpoints]
        #: Requests sent by URL (``Client.stats()``).
        self.posts: Counter[str] = Counter()
        self.timeout = timeout
        self._active = 0
        # Twisted's pool (a caller's, or our own) carries streams and GET /version only.
        if pool is None:
            pool = HTTPConnectionPool(reactor, persistent=True)
            # Twisted keeps only 2 idle connections per host; a busy client would churn sockets.
            pool.maxPersistentPerHost = pool_size
            pool.retryAutomatically = False
        self.pool = pool
        policy = (_TrustCAPolicy(tls) if tls and (tls.ca or tls.cert)
                  else BrowserLikePolicyForHTTPS())
        self.agent = _Agent(reactor, contextFactory=policy, pool=pool,
                           connectTimeout=connect_timeout)
        self.http = treq.client.HTTPClient(self.agent)  # type: ignore[arg-type]
        # Unary requests: our own client, as many connections per endpoint as requests in flight.
        self.unary = HTTPPool(reactor, policy, connect_timeout=connect_timeout, max_idle=pool_size)
        self._slots = defer.DeferredSemaphore(pool_size)
        self._prefixes: dict[str, str] = {}
        self._heads: dict[tuple[str, str, str, bool, str | None], bytes] = {}
        self.server_version: tuple[int, ...] = ()
        self._user, self._password = user, password
        # None: not authenticated yet; "": the server has auth disabled, so no token is needed.
        self._token: str | None = None
        self._auth_waiters: list[defer.Deferred[str]] | None = None
        self.authentications = 0  # successful authenticate calls, for monitoring and tests

    @property
    def endpoint(self) -> str:
        return self.endpoints[self._active]

    def _rotate(self, failed: str) -> None:
        if self.endpoints[self._active] == failed and len(self.endpoints) > 1:
            self._active = (self._active + 1) % len(self.endpoints)

    async def prefix(self, endpoint: str) -> str:
        """The API path prefix of ``endpoint`` (``/v3`` or ``/v3beta``), from ``GET /version``."""
        cached = self._prefixes.get(endpoint)
        if cached:
            return cached
        response = await self.http.get(endpoint + "/version")
        body = await treq.content(response)
        try:
            info = json.loads(body)
            text = str(info["etcdserver"])
        except (ValueError, KeyError, TypeError):
            raise UnsupportedServer(f"{endpoint} is not an etcd server (GET /version: "
                                    f"{response.code} {body[:100]!r})") from None
        self._prefixes[endpoint] = prefix = api_prefix(text, endpoint)
        self.server_version = parse_version(text)
        return prefix

    async def _auth_token(self, stale: str | None = None) -> str | None:
        """The current auth token, fetched anew when there is none or it is ``stale``."""
        if self._user is None:
            return None
        if self._token is not None and self._token != stale:
            return self._token
        waiter: defer.Deferred[str] = defer.Deferred()
        if self._auth_waiters is None:
            # One authenticate request at a time; everybody waiting shares its token.
            self._auth_waiters = [waiter]
            defer.ensureDeferred(self._authenticate()).addBoth(self._auth_done)
        else:
            self._auth_waiters.append(waiter)
        return await waiter

    def _auth_done(self, result: Any) -> None:
        waiters, self._auth_waiters = self._auth_waiters or [], None
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    async def _authenticate(self) -> str:
        body = {"name": self._user, "password": self._password}
        try:
            # Its own deadline: a hung authenticate would stall every request that waits for it.
            reply = await self._with_deadline("auth/authenticate", json.dumps(body).encode(),
                                              True, False, self.timeout)
        except AuthFailed as exc:
            if _AUTH_NOT_ENABLED not in exc.message:
                raise
            # Like etcd's Go client: credentials for a server without auth are no error.
            reply = {"token": ""}
        else:
            self.authentications += 1
        self._token = str(reply.get("token", ""))
        return self._token

    async def call(self, path: str, body: Json | bytes, *, idempotent: bool,
                   timeout: float | None = None, leader_read: bool | None = None) -> Json:
        """POST ``body`` to ``<prefix>/<path>`` and return the decoded JSON answer.

        Raises a typed ``EtcdError``; ``Timeout`` after ``timeout`` seconds (the client's
        default when None). ``leader_read`` overrides whether the request is a linearizable
        read that a member without a leader should refuse at once (default: by path). A body
        already encoded (bytes) is sent as it is; pass ``leader_read`` with it.
        """
        if isinstance(body, bytes):
            data, body = body, {}
        else:
            data = json.dumps(body, separators=(",", ":")).encode()
        deadline = self.timeout if timeout is None else timeout
        needs_leader = (idempotent and path in _LEADER_READS and not body.get("serializable")
                        if leader_read is None else leader_read)
        return await self._with_deadline(path, data, idempotent, True, deadline, needs_leader)

    async def _with_deadline(self, path: str, data: bytes, idempotent: bool, with_auth: bool,
                             deadline: float | None, needs_leader: bool = False) -> Json:
        expired = _Flag()
        request = defer.ensureDeferred(self._send(path, data, idempotent, with_auth, expired,
                                                  needs_leader))
        timer = None
        if deadline:
            timer = self.reactor.callLater(deadline, expired.set_and_cancel, request)
        try:
            return await request
        except Exception:
            if expired:
                raise Timeout(f"etcd {path} took longer than {deadline} s",
                              outcome_unknown=not idempotent) from None
            raise
        finally:
            if timer is not None and timer.active():
                timer.cancel()

    async def _send(self, path: str, data: bytes, idempotent: bool, with_auth: bool,
                    expired: _Flag | None = None, needs_leader: bool = False) -> Json:
        attempts = 0
        token: str | None = None
        while True:
            attempts += 1
            endpoint = self.endpoint
            sent = False
            try:
                # The cached lookups first: this is the path every request takes.
                prefix = self._prefixes.get(endpoint) or await self.prefix(endpoint)
                if with_auth and self._user is not None:
                    token = await self._auth_token()
                head = self._head(endpoint, prefix, path, needs_leader, token)
                await self._slots.acquire()
                try:
                    sent = True
                    self.posts[f"{endpoint}{prefix}/{path}"] += 1
                    code, body = await self.unary.request(endpoint, build_request(head, data))
                finally:
                    self._slots.release()
            except EtcdError:
                raise
            except Exception as exc:
                if expired:
                    # A member that does not answer in time (stalled, overloaded, cut off from
                    # its peers) is left for the next request, as one that refuses would be.
                    self._rotate(endpoint)
                    raise
                if _cancelled(exc):
                    raise defer.CancelledError() from exc
                # The connection failed. Before sending, any request may go elsewhere; after
                # sending, only one whose repetition cannot change the outcome.
                never_sent = not sent or isinstance(exc, _NOT_SENT)
                self._rotate(endpoint)
                if (never_sent or idempotent) and attempts < 3 * len(self.endpoints):
                    await self._pause(attempts)
                    continue
                raise Unavailable(f"etcd {endpoint} {path}: {describe_failure(exc)}",
                                  outcome_unknown=sent and not idempotent) from exc
            if code == 200:
                try:
                    result: Json = json.loads(body)
                except ValueError:
                    raise ProtocolError(f"etcd {path} answered non-JSON: {body[:200]!r}") from None
                return result
            error = classify(code, body)
            if with_auth and attempts < 3 and self._needs_new_token(error):
                # Rejected before it was applied: re-authenticate and resend (always safe).
                self._token = None if self._token == token else self._token
                continue
            if isinstance(error, TooManyRequests) and attempts < 5:
                await self._pause(attempts)
                continue
            if isinstance(error, Unavailable):
                if idempotent and attempts < 3 * len(self.endpoints):
                    self._rotate(endpoint)
                    await self._pause(attempts)
                    continue
                error.outcome_unknown = not idempotent
            raise error

    def _head(self, endpoint: str, prefix: str, path: str, needs_leader: bool,
              token: str | None) -> bytes:
        """The request line and headers of a request, built once per kind."""
        key = (endpoint, prefix, path, needs_leader, token)
        head = self._heads.get(key)
        if head is None:
            headers = [(b"Content-Type", b"application/json")]
            if needs_leader:
                headers.append(_REQUIRE_LEADER)
            if token:
                headers.append((b"Authorization", token.encode()))
            if len(self._heads) > 256:  # old tokens
                self._heads.clear()
            url = urlsplit(endpoint)  # a path in the endpoint URL comes first, as with Agent
            head = self._heads[key] = request_head(b"POST", f"{url.path}{prefix}/{path}".encode(),
                                                   url.netloc.encode(), headers)
        return head

    def _needs_new_token(self, error: EtcdError) -> bool:
        """Whether ``error`` asks for a (new) token: expired, or auth enabled since we looked."""
        if isinstance(error, InvalidAuthToken):
            return True
        return (self._user is not None and isinstance(error, AuthFailed)
                and _NO_TOKEN in error.message)

    async def open_stream(self, path: str, body: Json | list[Json],
                          on_message: Callable[[Json], None], *,
                          headers: Headers | None = None) -> Stream:
        """Open a server stream (watch, observe, ...) on the active endpoint.

        ``body`` may be several request messages, sent up front as concatenated JSON: the HTTP/1.1
        gateway reads the whole request before it answers. Raises a typed error when the server
        refuses; the caller decides whether and where to reopen (opening is idempotent).
        """
        messages = body if isinstance(body, list) else [body]
        data = b"".join(json.dumps(m, separators=(",", ":")).encode() for m in messages)
        endpoint = self.endpoint
        try:
            prefix = await self.prefix(endpoint)
            token = await self._auth_token()
            all_headers: Headers = {b"Content-Type": [b"application/json"], **(headers or {})}
            if token:
                all_headers[b"Authorization"] = [token.encode()]
            response = await self.http.post(endpoint + prefix + "/" + path, data=data,
                                            headers=all_headers, unbuffered=True)
        except EtcdError:
            raise
        except Exception as exc:
            if _cancelled(exc):
                raise defer.CancelledError() from exc
            self._rotate(endpoint)
            raise Unavailable(f"etcd {endpoint} {path}: {describe_failure(exc)}") from exc
        if response.code != 200:
            error = classify(response.code, await treq.content(response))
            if self._needs_new_token(error) and self._token == token:
                self._token = None
            if isinstance(error, Unavailable):
                self._rotate(endpoint)
            raise error
        return Stream(response, on_message)

    async def _pause(self, attempt: int) -> None:
        # Exponential backoff with jitter so that many clients do not retry in lockstep.
        delay = min(0.05 * 2 ** min(attempt, 6), 2.0) * (0.5 + random.random() / 2)
        await deferLater(self.reactor, delay, lambda: None)

    async def close(self) -> None:
        await self.unary.close()
        await self.pool.closeCachedConnections()
