"""The transport to etcd's gRPC JSON gateway: endpoints, API prefix, auth, deadlines, retries.

Loop-free: it waits only for what its driver (``txetcd.twisted_driver`` or
``txetcd.asyncio_driver``) hands it, so the Twisted and the asyncio client share every rule
here. Unary calls and streams build their headers and pick their endpoint in the same place.
A semaphore caps the unary requests in flight, and every request has a deadline. A unary
request is a small state machine on the driver's callbacks (``_Call``): the usual one, a single
attempt answered, runs no coroutine (``call`` awaits the same machine).

Failover follows one rule (``core.RetryPolicy``): a request is resent only when that is safe.
Idempotent requests move to the next endpoint on connection errors; a write whose connection
broke after it was sent may have been applied, so it fails with
``Unavailable(outcome_unknown=True)`` and is never resent.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from .core import (
    LEADER_READS,
    REQUIRE_LEADER,
    Action,
    RetryPolicy,
    TLSConfig,
    api_prefix,
    asks_for_token,
    build_request,
    decode_reply,
    encode,
    parse_version,
    request_head,
    version_of,
)
from .errors import AuthFailed, EtcdError, Timeout, Unavailable, classify
from .interface import Driver, Json, Response, StreamHandle
from .types import is_int

__all__ = ["Transport", "TLSConfig", "api_prefix", "parse_version"]

_AUTH_NOT_ENABLED = "authentication is not enabled"
_JSON = (b"Content-Type", b"application/json")


class _Deadlines:
    """The deadlines of requests in flight, on one loop timer per timeout value instead of a
    timer per request: requests with the same timeout expire in the order they started, so a
    queue per timeout and a timer for its oldest live entry suffice. Answered requests only
    mark themselves done; they leave the queue when they reach its head."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.queues: dict[float, deque[tuple[float, _Call]]] = {}
        self.timers: dict[float, Any] = {}  # per timeout value: its loop timer, while armed

    def start(self, seconds: float, state: _Call) -> None:
        queue = self.queues.get(seconds)
        if queue is None:
            queue = self.queues[seconds] = deque()
        while queue and queue[0][1].done:  # keeps the queue as short as what is in flight
            queue.popleft()
        queue.append((self.driver.now() + seconds, state))
        if seconds not in self.timers:
            self.timers[seconds] = self.driver.call_later(seconds, self._expire, seconds)

    def _expire(self, seconds: float) -> None:
        # While expiring, the entry stays (None) so that a request started by what an expired
        # one runs (on Twisted, at once: its caller sending again) arms no second timer; the
        # loop below arms the one timer for whatever is then the oldest live entry.
        self.timers[seconds] = None
        queue, now = self.queues[seconds], self.driver.now()
        while queue:
            at, state = queue[0]
            if not state.done and at > now:
                if seconds in self.timers:  # else stopped meanwhile
                    self.timers[seconds] = self.driver.call_later(at - now, self._expire,
                                                                  seconds)
                return
            queue.popleft()
            if not state.done:
                state.expire()
        self.timers.pop(seconds, None)

    def stop(self) -> None:
        """No timer left behind (a closed client leaves the loop clean); requests still in
        flight keep running without their deadline."""
        for timer in self.timers.values():
            if timer is not None and timer.active():
                timer.cancel()
        self.timers.clear()


class _Slots:
    """A counting semaphore whose free slot costs no future: most requests find one."""

    __slots__ = ("driver", "free", "waiters", "handed")

    def __init__(self, driver: Driver, tokens: int) -> None:
        self.driver = driver
        self.free = tokens
        self.waiters: deque[Any] = deque()
        # Waiters given a slot whose request has not resumed yet (asyncio resumes a turn
        # later): if it is cancelled meanwhile, the slot goes back.
        self.handed: set[Any] = set()

    def take(self) -> Any:
        """None when a slot was free (it is ours now), else a future that fires with one."""
        if self.free:
            self.free -= 1
            return None
        waiter = self.driver.future()
        self.waiters.append(waiter)
        return waiter

    def release(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not self.driver.settled(waiter):  # a waiter that gave up is skipped
                self.handed.add(waiter)
                self.driver.resolve(waiter, None)
                return
        self.free += 1


class _Call:
    """One unary request through its attempts, driven by callbacks: the usual request (one
    attempt, answered at once) runs no coroutine and makes no task or future of its own.

    It is its own deadline (``_Deadlines`` expires it): what it waits for then is cancelled,
    and it fails with ``Timeout``. After each attempt ``RetryPolicy`` decides, as for every
    request: answer, raise, or (after a backoff) try again, here or on the next endpoint.
    """

    __slots__ = ("transport", "path", "data", "idempotent", "with_auth", "needs_leader",
                 "seconds", "on_reply", "on_error", "decode", "attempts", "endpoint", "token",
                 "sent", "has_slot", "slot_waiter", "current", "timer", "passed", "done",
                 "cancelled")

    def __init__(self, transport: Transport, path: str, data: bytes, idempotent: bool,
                 with_auth: bool, needs_leader: bool, seconds: float | None,
                 on_reply: Callable[[Any], None], on_error: Callable[[BaseException], None],
                 decode: Callable[[bytes], Any] | None) -> None:
        self.transport = transport
        self.path, self.data = path, data
        self.idempotent, self.with_auth, self.needs_leader = idempotent, with_auth, needs_leader
        self.seconds = seconds
        self.on_reply, self.on_error, self.decode = on_reply, on_error, decode
        self.attempts = 0
        self.endpoint = ""
        self.token: str | None = None
        self.sent = False  # some byte of this attempt's request may have left us
        self.has_slot = False  # holds one of the transport's slots
        self.slot_waiter: Any = None  # while it waits for one
        self.current: Any = None  # the future this attempt waits for (cancelled on expiry)
        self.timer: Any = None  # the backoff before the next attempt, while it runs
        self.passed = False  # the deadline passed
        self.done = False  # answered or failed: the deadline has nothing left to cancel
        self.cancelled = False  # its caller gave up
        if seconds:
            transport._deadlines.start(seconds, self)

    def expire(self) -> None:
        """The deadline passed (``_Deadlines``)."""
        self.passed = True
        self._stop_waiting()

    def cancel(self) -> None:
        """Its caller gave up: what it waits for is cancelled, and it fails with the loop's
        cancellation error (a request already sent may still be applied)."""
        if not self.done:
            self.cancelled = True
            self._stop_waiting()

    def _stop_waiting(self) -> None:
        timer, self.timer = self.timer, None
        if timer is not None:  # between attempts
            timer.cancel()
            self._finish_error(self.transport.driver.cancelled_error())
        elif self.current is not None:
            self.current.cancel()  # its errback ends the call (on asyncio a turn later)

    # -- one attempt -------------------------------------------------------------------------

    def attempt(self) -> None:
        self.timer = None
        self.attempts += 1
        self.sent = False
        self.endpoint = self.transport.endpoint
        self._go_on()

    def _go_on(self, _: Any = None) -> None:
        """The attempt's next step: the endpoint's API prefix and an auth token (each fetched
        at most once per endpoint and token, then cached), a free slot, then the request."""
        transport = self.transport
        if self.passed or self.cancelled:  # e.g. given a slot (asyncio: a turn ago), then expired
            self._failed(transport.driver.cancelled_error())  # ends it, slot released
            return
        prefix = transport._prefixes.get(self.endpoint)
        if prefix is None:
            self._wait(transport.driver.spawn(transport.prefix(self.endpoint)))
            return
        token = None
        if self.with_auth and transport._user is not None:
            token = transport._token
            if token is None:
                self._wait(transport.driver.spawn(transport._auth_token()))
                return
        self.token = token
        if not self.has_slot:
            waiter = transport._slots.take()
            if waiter is not None:
                self.slot_waiter = waiter
                self._wait(waiter)
                return
            self.has_slot = True
        try:
            head, label = transport._head(self.endpoint, prefix, self.path, self.needs_leader,
                                          token)
            self.sent = True
            transport.posts[label] += 1
            sending = transport.driver.request(self.endpoint, build_request(head, self.data))
        except Exception as exc:  # noqa: BLE001 - e.g. a forged token: the caller's error
            self._release()
            self._failed(exc)
            return
        self.current = sending
        transport.driver.when_done(sending, self._answered, self._request_failed)

    def _wait(self, future: Any) -> None:
        self.current = future
        self.transport.driver.when_done(future, self._waited, self._wait_failed)

    def _waited(self, _: Any) -> None:
        self.current = None
        if self.slot_waiter is not None:  # served
            self.transport._slots.handed.discard(self.slot_waiter)
            self.slot_waiter, self.has_slot = None, True
        self._go_on()

    def _wait_failed(self, exc: BaseException) -> None:
        self.current = None
        waiter, slots = self.slot_waiter, self.transport._slots
        if waiter is not None:
            self.slot_waiter = None
            if waiter in slots.handed:  # given the slot, then cancelled: pass it on
                slots.handed.discard(waiter)
                slots.release()
        self._failed(exc)

    def _release(self) -> None:
        if self.has_slot:
            self.has_slot = False
            self.transport._slots.release()

    # -- its outcome -------------------------------------------------------------------------

    def _answered(self, response: Response) -> None:
        self.current = None
        self._release()
        code, body = response
        if code == 200:
            try:
                reply = decode_reply(self.path, code, body, self.decode)
            except EtcdError as exc:
                self._finish_error(exc)
                return
            self.done = True
            self.on_reply(reply)
            return
        transport = self.transport
        error = classify(code, body)
        action = transport.policy.after_error(
            error, self.attempts, len(transport.endpoints), idempotent=self.idempotent,
            token_rejected=self.with_auth and asks_for_token(error, transport._user is not None))
        if action is Action.RAISE:
            self._finish_error(error)
        elif action is Action.NEW_TOKEN:
            # Rejected before it was applied: re-authenticate and resend (always safe).
            transport.token_rejected(self.token)
            self.attempt()
        else:
            if action is Action.NEXT_ENDPOINT:
                transport.endpoint_failed(self.endpoint)
            self._back_off()

    def _request_failed(self, exc: BaseException) -> None:
        self.current = None
        self._release()
        self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        """A step failed: etcd's refusal ends the call; a failed connection (or the deadline)
        ends it too unless the policy lets the request go again."""
        if isinstance(exc, EtcdError):
            self._finish_error(exc)
            return
        try:
            self.transport._connection_failed(exc, self.endpoint, self.path, self.sent,
                                              self.idempotent, self.attempts, self.passed)
        except BaseException as error:  # noqa: BLE001 - the caller's
            self._finish_error(error)
            return
        self._back_off()

    def _back_off(self) -> None:
        if self.passed or self.cancelled:
            self._finish_error(self.transport.driver.cancelled_error())
            return
        transport = self.transport
        self.timer = transport.driver.call_later(transport.policy.backoff(self.attempts),
                                                 self.attempt)

    def _finish_error(self, exc: BaseException) -> None:
        if self.done:
            return
        self.done = True
        self._release()  # never one left behind, whichever step failed
        if self.passed:
            exc = Timeout(f"etcd {self.path} took longer than {self.seconds} s",
                          outcome_unknown=not self.idempotent)
        self.on_error(exc)


def check_endpoints(endpoints: Sequence[str]) -> list[str]:
    if not endpoints:
        raise ValueError("at least one etcd endpoint is required")
    for url in endpoints:
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"endpoint must be an http(s):// URL string, not {url!r}")
    return [url.rstrip("/") for url in endpoints]


class Transport:
    """POSTs JSON to the gateway of one of several etcd members and decodes the answer
    (``txetcd.interface.EtcdTransport``)."""

    def __init__(self, driver: Driver, endpoints: Sequence[str], *,
                 timeout: float | None = 10.0, pool_size: int = 32, user: str | None = None,
                 password: str | None = None, policy: RetryPolicy | None = None) -> None:
        if not is_int(pool_size) or pool_size < 1:
            raise ValueError(f"pool_size must be a positive int, not {pool_size!r}")
        if (user is None) != (password is None):
            raise ValueError("user and password go together")
        self.driver = driver
        self.endpoints = check_endpoints(endpoints)
        self.policy = policy or RetryPolicy()
        #: Requests sent by URL (``Client.stats()``).
        self.posts: Counter[str] = Counter()
        self.timeout = timeout
        self._active = 0
        self._slots = _Slots(driver, pool_size)
        self._deadlines = _Deadlines(driver)
        self._prefixes: dict[str, str] = {}
        # Per kind of request: its head (request line and headers) and its ``posts`` label.
        self._heads: dict[tuple[str, str, str, bool, str | None], tuple[bytes, str]] = {}
        self.server_version: tuple[int, ...] = ()
        self._user, self._password = user, password
        # None: not authenticated yet; "": the server has auth disabled, so no token is needed.
        self._token: str | None = None
        self._auth_waiters: list[Any] | None = None
        self.authentications = 0  # successful authenticate calls, for monitoring and tests

    # -- endpoints ---------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return self.endpoints[self._active]

    def endpoint_failed(self, endpoint: str) -> None:
        """``endpoint`` did not answer (in time): later requests and streams go elsewhere."""
        if self.endpoints[self._active] == endpoint and len(self.endpoints) > 1:
            self._active = (self._active + 1) % len(self.endpoints)

    async def prefix(self, endpoint: str) -> str:
        """The API path prefix of ``endpoint`` (``/v3`` or ``/v3beta``), from ``GET /version``."""
        cached = self._prefixes.get(endpoint)
        if cached:
            return cached
        code, body = await self.driver.get(endpoint + "/version")
        text = version_of(endpoint, code, body)
        self._prefixes[endpoint] = prefix = api_prefix(text, endpoint)
        self.server_version = parse_version(text)
        return prefix

    async def probe(self, endpoint: str) -> None:
        """``GET /version``, which needs neither raft nor auth: returns if the member answers."""
        await self.driver.get(endpoint + "/version")

    async def backoff(self, attempt: int) -> None:
        await self.driver.sleep(self.policy.backoff(attempt))

    # -- auth --------------------------------------------------------------------------------

    def token_rejected(self, token: str | None = None) -> None:
        """The server refused our token (``token``, or whichever is current): authenticate
        again on the next request."""
        if token is None or self._token == token:
            self._token = None

    async def _auth_token(self) -> str | None:
        """The current auth token, fetched when there is none."""
        if self._user is None:
            return None
        if self._token is not None:
            return self._token
        waiter = self.driver.future()
        if self._auth_waiters is None:
            # One authenticate request at a time; everybody waiting shares its token.
            self._auth_waiters = [waiter]
            self.driver.spawn(self._auth_round())
        else:
            self._auth_waiters.append(waiter)
        token: str = await waiter
        return token

    async def _auth_round(self) -> None:
        try:
            token: Any = await self._authenticate()
            settle: Callable[[Any, Any], None] = self.driver.resolve
        except Exception as exc:  # noqa: BLE001 - every waiter gets it
            token, settle = exc, self.driver.fail
        waiters, self._auth_waiters = self._auth_waiters or [], None
        for waiter in waiters:
            settle(waiter, token)

    async def _authenticate(self) -> str:
        body = encode({"name": self._user, "password": self._password})
        try:
            # Its own deadline: a hung authenticate would stall every request that waits for it.
            reply = await self._awaited("auth/authenticate", body, True, False, self.timeout,
                                        False)
        except AuthFailed as exc:
            if _AUTH_NOT_ENABLED not in exc.message:
                raise
            # Like etcd's Go client: credentials for a server without auth are no error.
            reply = {"token": ""}
        else:
            self.authentications += 1
        self._token = str(reply.get("token", ""))
        return self._token

    # -- unary calls -------------------------------------------------------------------------

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
            data = encode(body)
        needs_leader = (idempotent and path in LEADER_READS and not body.get("serializable")
                        if leader_read is None else leader_read)
        return await self._awaited(path, data, idempotent, True, timeout, needs_leader)

    def request(self, path: str, data: bytes, *, idempotent: bool, timeout: float | None,
                leader_read: bool, on_reply: Callable[[Any], None],
                on_error: Callable[[BaseException], None], with_auth: bool = True,
                decode: Callable[[bytes], Any] | None = None) -> _Call:
        """``call`` for callers that take callbacks (the batcher): exactly one of ``on_reply``
        and ``on_error`` runs, once. No coroutine runs unless the request has to wait for an
        endpoint's prefix or a token; ``cancel()`` on the result gives up. ``decode`` reads
        the answer's body instead of ``json`` (its ``ValueError``: ``ProtocolError``)."""
        return self._start(path, data, idempotent, with_auth, leader_read, timeout, on_reply,
                           on_error, decode)

    def _start(self, path: str, data: bytes, idempotent: bool, with_auth: bool,
               needs_leader: bool, timeout: float | None, on_reply: Callable[[Any], None],
               on_error: Callable[[BaseException], None],
               decode: Callable[[bytes], Any] | None = None) -> _Call:
        unary = _Call(self, path, data, idempotent, with_auth, needs_leader,
                      self.timeout if timeout is None else timeout, on_reply, on_error, decode)
        unary.attempt()
        return unary

    async def _awaited(self, path: str, data: bytes, idempotent: bool, with_auth: bool,
                       timeout: float | None, needs_leader: bool) -> Json:
        """``request`` as a coroutine: cancelling the caller cancels the request."""
        driver = self.driver
        unary: _Call | None = None
        answer = driver.future(lambda: unary.cancel() if unary is not None else None)
        unary = self._start(path, data, idempotent, with_auth, needs_leader, timeout,
                            partial(driver.resolve, answer), partial(driver.fail, answer))
        reply: Json = await answer
        return reply

    def _connection_failed(self, exc: BaseException, endpoint: str, path: str, sent: bool,
                           idempotent: bool, attempts: int, expired: bool) -> None:
        """Returns if the request may go again (to the next endpoint), else raises."""
        if expired:
            # A member that does not answer in time (stalled, overloaded, cut off from its
            # peers) is left for the next request, as one that refuses would be.
            self.endpoint_failed(endpoint)
            raise exc
        if self.driver.is_cancelled(exc):
            raise self.driver.cancelled_error() from exc
        if not isinstance(exc, Exception):
            raise exc
        # The connection failed. Before sending, any request may go elsewhere; after sending,
        # only one whose repetition cannot change the outcome.
        never_sent = not sent or self.driver.never_sent(exc)
        self.endpoint_failed(endpoint)
        action = self.policy.after_connection_error(attempts, len(self.endpoints),
                                                    never_sent=never_sent, idempotent=idempotent)
        if action is Action.RAISE:
            raise Unavailable(f"etcd {endpoint} {path}: {self.driver.describe(exc)}",
                              outcome_unknown=sent and not idempotent) from exc

    def _headers(self, needs_leader: bool, token: str | None,
                 extra: Iterable[tuple[bytes, bytes]] = ()) -> list[tuple[bytes, bytes]]:
        """The headers of every request and stream: JSON, leader requirement, auth token."""
        headers = [_JSON, *extra]
        if needs_leader:
            headers.append(REQUIRE_LEADER)
        if token:
            headers.append((b"Authorization", token.encode()))
        return headers

    def _head(self, endpoint: str, prefix: str, path: str, needs_leader: bool,
              token: str | None) -> tuple[bytes, str]:
        """The request line and headers of a request, and its ``posts`` label: built once per
        kind."""
        key = (endpoint, prefix, path, needs_leader, token)
        head = self._heads.get(key)
        if head is None:
            if len(self._heads) > 256:  # old tokens
                self._heads.clear()
            url = urlsplit(endpoint)  # a path in the endpoint URL comes first, as with Agent
            head = self._heads[key] = (request_head(
                b"POST", f"{url.path}{prefix}/{path}".encode(), url.netloc.encode(),
                self._headers(needs_leader, token)), f"{endpoint}{prefix}/{path}")
        return head

    # -- streams -----------------------------------------------------------------------------

    async def open_stream(self, path: str, body: Json | list[Json],
                          on_message: Callable[[Json], None], *,
                          headers: Iterable[tuple[bytes, bytes]] = ()) -> StreamHandle:
        """Open a server stream (watch, observe, ...) on the active endpoint.

        ``body`` may be several request messages, sent up front as concatenated JSON: the HTTP/1.1
        gateway reads the whole request before it answers. Raises a typed error when the server
        refuses; the caller decides whether and where to reopen (opening is idempotent).
        """
        messages = body if isinstance(body, list) else [body]
        data = b"".join(encode(m) for m in messages)
        endpoint = self.endpoint
        token = None
        try:
            prefix = await self.prefix(endpoint)
            token = await self._auth_token()
            code, error_body, stream = await self.driver.open_stream(
                f"{endpoint}{prefix}/{path}", self._headers(False, token, headers), data,
                on_message)
        except EtcdError:
            raise
        except BaseException as exc:
            if self.driver.is_cancelled(exc):
                raise self.driver.cancelled_error() from exc
            if not isinstance(exc, Exception):
                raise
            self.endpoint_failed(endpoint)
            raise Unavailable(f"etcd {endpoint} {path}: {self.driver.describe(exc)}") from exc
        if stream is None:
            error = classify(code, error_body)
            if asks_for_token(error, self._user is not None):
                self.token_rejected(token)
            if isinstance(error, Unavailable):
                self.endpoint_failed(endpoint)
            raise error
        return stream

    async def close(self) -> None:
        self._deadlines.stop()
        await self.driver.close()
