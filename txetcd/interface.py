"""The interfaces between txetcd's loop-free code and the event loop drivers (typing only).

``Driver`` is what an event loop must provide (HTTP requests, streams, timers, futures); there
is one for Twisted (``txetcd.twisted_driver``) and one for asyncio (``txetcd.asyncio_driver``).
``EtcdTransport`` is the one public transport interface that unary calls and streams (watch,
lease keepalive, election observe) share. ``Env`` is what a service (lease, watch, lock) needs
from a client, so that services never import ``Client``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

__all__ = ["Driver", "EtcdTransport", "Env", "HasEnv", "env_of", "StreamHandle", "Timer",
           "Semaphore", "Json", "Response", "NotSent", "ResponseLost"]

Json = dict[str, Any]
Response = tuple[int, bytes]  # HTTP status code and body
T = TypeVar("T")


class NotSent(ConnectionError):
    """No byte of the request left us (refused, DNS, connect timeout, TLS handshake): any
    request may be resent, elsewhere too."""


class ResponseLost(ConnectionError):
    """The connection broke after the request was written: a write's outcome is unknown."""


class Timer(Protocol):
    def cancel(self) -> None: ...

    def active(self) -> bool: ...


class Semaphore(Protocol):
    def acquire(self) -> Awaitable[Any]: ...

    def release(self) -> None: ...


class StreamHandle(Protocol):
    """One open server stream; each ``{"result": ...}`` message went to ``on_message``."""

    #: Awaitable (Deferred / Future): None on a clean end or after ``cancel()``; raises a
    #: typed ``EtcdError`` otherwise.
    done: Any

    def cancel(self) -> None: ...


class Driver(Protocol):
    """What txetcd needs from an event loop. Awaitables are the loop's own (Deferred/Future)."""

    name: str
    #: Whether ``resolve`` runs what awaits the future before it returns (Twisted), rather
    #: than on a later turn of the loop (asyncio).
    resumes_at_once: bool

    def request(self, endpoint: str, data: bytes) -> Awaitable[Response]:
        """Send one complete request (``core.build_request``) on a pooled keep-alive connection.
        A failure says by ``never_sent`` whether any byte of it left us."""
        ...

    def get(self, url: str) -> Awaitable[Response]:
        """A plain ``GET`` (``/version``: detection and liveness probes)."""
        ...

    def open_stream(self, url: str, headers: list[tuple[bytes, bytes]], body: bytes,
                    on_message: Callable[[Json], None]
                    ) -> Awaitable[tuple[int, bytes, StreamHandle | None]]:
        """POST a streaming request on a connection of its own; once the status is in:
        ``(200, b"", stream)``, or ``(status, error body, None)``."""
        ...

    def sleep(self, seconds: float) -> Awaitable[None]: ...

    def call_later(self, seconds: float, fn: Callable[..., Any], *args: Any) -> Timer: ...

    def call_soon(self, fn: Callable[[], Any]) -> None:
        """Call ``fn`` on the loop's next turn (after what is ready to run now)."""
        ...

    def spawn(self, coro: Coroutine[Any, Any, T]) -> Awaitable[T]:
        """Run a coroutine on the loop now; the result is cancellable (``.cancel()``)."""
        ...

    def future(self, on_cancel: Callable[[], None] | None = None) -> Any:
        """A new loop future (Deferred / asyncio.Future); ``on_cancel`` runs if it is cancelled."""
        ...

    def resolve(self, future: Any, value: Any) -> None: ...

    def when_done(self, future: Any, on_value: Callable[[Any], None],
                  on_error: Callable[[BaseException], None]) -> None:
        """Run ``on_value`` with the future's result or ``on_error`` with its exception (the
        loop's cancellation error if it was cancelled), once it has one."""
        ...

    def resolve_all(self, futures: Iterable[Any], values: Iterable[Any]) -> None:
        """``resolve`` each of ``futures`` with its value (a batch's answers, in one call);
        a future given as None is skipped."""
        ...

    def new_future(self) -> Any:
        """``future()`` without a cancel hook, as cheap as the loop makes it (one per op)."""
        ...

    def settled(self, future: Any) -> bool:
        """Whether ``future`` has its outcome already (e.g. its caller cancelled it)."""
        ...

    def fail(self, future: Any, error: BaseException) -> None: ...

    def gather(self, awaitables: Iterable[Awaitable[Any]]) -> Awaitable[None]:
        """Wait for all; never fails (each one's failure belongs to its own caller)."""
        ...

    def discard(self, awaitable: Awaitable[Any]) -> None:
        """Cancel and forget: its failure (including the cancellation) is not reported."""
        ...

    def semaphore(self, tokens: int) -> Semaphore: ...

    def is_cancelled(self, exc: BaseException) -> bool: ...

    def cancelled_error(self) -> BaseException: ...

    def never_sent(self, exc: BaseException) -> bool:
        """Whether a failed request certainly never reached the server (safe to resend)."""
        ...

    def describe(self, exc: BaseException) -> str:
        """A readable cause of a failed connection (TLS reasons unwrapped)."""
        ...

    def now(self) -> float: ...

    def close(self) -> Awaitable[None]: ...


class EtcdTransport(Protocol):
    """The one transport interface: unary calls and streams, endpoints, auth and headers."""

    driver: Driver
    timeout: float | None
    server_version: tuple[int, ...]

    @property
    def endpoint(self) -> str:
        """The active endpoint; ``endpoint_failed`` moves on to the next."""
        ...

    async def call(self, path: str, body: Json | bytes, *, idempotent: bool,
                   timeout: float | None = None, leader_read: bool | None = None) -> Json: ...

    def request(self, path: str, data: bytes, *, idempotent: bool, timeout: float | None,
                leader_read: bool, on_reply: Callable[[Any], None],
                on_error: Callable[[BaseException], None], with_auth: bool = True,
                decode: Callable[[bytes], Any] | None = None) -> Any:
        """``call`` with callbacks instead of a coroutine; the result has ``cancel()``, and
        ``decode`` (else ``json``) reads the answer."""
        ...

    async def open_stream(self, path: str, body: Json | list[Json],
                          on_message: Callable[[Json], None], *,
                          headers: Iterable[tuple[bytes, bytes]] = ()) -> StreamHandle: ...

    def endpoint_failed(self, endpoint: str) -> None:
        """``endpoint`` did not answer (in time): later requests and streams go elsewhere."""
        ...

    def token_rejected(self, token: str | None = None) -> None:
        """The server refused our auth token: the next request authenticates again."""
        ...

    async def backoff(self, attempt: int) -> None:
        """Sleep before retry number ``attempt`` (jittered exponential, ``core.RetryPolicy``)."""
        ...

    async def probe(self, endpoint: str) -> None:
        """``GET /version`` on ``endpoint``: returns if it answers at all (no raft, no auth)."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Env:
    """What a service (lease, watch, lock, election) takes from its client."""

    transport: EtcdTransport
    namespace: bytes
    driver: Driver


class HasEnv(Protocol):
    """A client: services accept it in place of its ``Env`` (``Lease(client, ttl)``)."""

    @property
    def env(self) -> Env: ...


def env_of(owner: Env | HasEnv) -> Env:
    """The ``Env`` itself, or the one a client carries."""
    return owner if isinstance(owner, Env) else owner.env
