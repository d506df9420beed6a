"""The asyncio driver: txetcd's loop-free code on an asyncio event loop.

Unary requests and ``GET /version`` go through ``txetcd.aio_http``'s keep-alive pool, streams
through a connection of their own; futures are asyncio Futures and Tasks, timers the loop's.
The loop is the running one at first use (or the one given).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from operator import methodcaller
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .aio_http import HTTPPool, StreamConnection, describe, tls_context
from .core import TLSConfig, build_request, get_request, request_head
from .interface import Json, NotSent, Response, StreamHandle
from .stream import StreamDecoder

__all__ = ["AsyncioDriver", "AsyncioStream"]

T = TypeVar("T")


class _Timer:
    """A loop timer with Twisted's ``active()`` (watch and the transport ask it)."""

    __slots__ = ("_handle", "_fired")

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float, fn: Callable[..., Any],
                 args: tuple[Any, ...]) -> None:
        self._fired = False
        self._handle = loop.call_later(delay, self._fire, fn, args)

    def _fire(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self._fired = True
        fn(*args)

    def active(self) -> bool:
        return not self._fired and not self._handle.cancelled()

    def cancel(self) -> None:
        self._handle.cancel()


class _Future(asyncio.Future[Any]):
    """A future that runs ``on_cancel`` at once when cancelled (not a turn later), so that a
    batched call cancelled before its batch leaves is not sent."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_cancel: Callable[[], None]) -> None:
        super().__init__(loop=loop)
        self._on_cancel = on_cancel

    def cancel(self, msg: Any = None) -> bool:
        if not super().cancel(msg):
            return False
        self._on_cancel()
        return True


class AsyncioStream:
    """One open streaming response. ``done`` (a Future) gets None when the server closes
    cleanly (or after ``cancel()``), and a typed error otherwise."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 on_message: Callable[[Json], None]) -> None:
        self.done: asyncio.Future[None] = loop.create_future()
        self.ended: asyncio.Future[None] = loop.create_future()
        self._decoder = StreamDecoder()
        self._on_message = on_message
        self._cancelled = False
        self.connection: StreamConnection | None = None

    def on_data(self, data: bytes) -> None:
        if self._cancelled or self._decoder.error is not None:
            return
        if not self._decoder.deliver(data, self._on_message) and self.connection is not None:
            self.connection.abort()

    def on_end(self, clean: bool, reason: str) -> None:
        if not self.ended.done():
            self.ended.set_result(None)
        if self.done.done():
            return
        error = None if self._cancelled else self._decoder.end(clean, reason)
        if error is None:
            self.done.set_result(None)
        else:
            self.done.set_exception(error)

    def cancel(self) -> None:
        """Close the stream's connection; ``done`` then gets None."""
        if self.done.done():
            return
        self._cancelled = True
        if self.connection is not None:
            self.connection.abort()


class AsyncioDriver:
    """``txetcd.interface.Driver`` on an asyncio event loop."""

    name = "asyncio"
    resumes_at_once = False  # a Future schedules its callbacks on the next turn

    def __init__(self, *, tls: TLSConfig | None = None, connect_timeout: float = 5.0,
                 pool_size: int = 32, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop
        context = None
        if tls is not None:
            context = tls_context(tls.ca, tls.cert, tls.key)  # files are read (checked) now
        self.unary = HTTPPool(tls=context, connect_timeout=connect_timeout, max_idle=pool_size,
                              loop=loop)
        self.request = self.unary.request  # the hot path: no call in between

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    @property
    def connections(self) -> int:
        """Open connections, idle or busy (for monitoring and tests)."""
        return self.unary.connections

    async def get(self, url: str) -> Response:
        response: Response = await self.unary.request(*get_request(url))
        return response

    async def open_stream(self, url: str, headers: list[tuple[bytes, bytes]], body: bytes,
                          on_message: Callable[[Json], None]
                          ) -> tuple[int, bytes, StreamHandle | None]:
        parts = urlsplit(url)
        stream = AsyncioStream(self.loop, on_message)
        host = self.unary.host(f"{parts.scheme}://{parts.netloc}")
        connection: StreamConnection = await host.connect(
            lambda: StreamConnection(self.unary, stream.on_data, stream.on_end))
        stream.connection = connection
        head = request_head(b"POST", parts.path.encode(), parts.netloc.encode(), headers)
        connection.send(build_request(head, body))
        try:
            code = await connection.status
        except BaseException:
            connection.abort()
            raise
        if code == 200:
            return 200, b"", stream
        await stream.ended
        return code, connection.error_body, None

    def sleep(self, seconds: float) -> Awaitable[None]:
        return asyncio.sleep(seconds)

    def call_later(self, seconds: float, fn: Callable[..., Any], *args: Any) -> _Timer:
        return _Timer(self.loop, seconds, fn, args)

    def call_soon(self, fn: Callable[[], Any]) -> None:
        self.loop.call_soon(fn)

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        return self.loop.create_task(coro)

    def future(self, on_cancel: Callable[[], None] | None = None) -> asyncio.Future[Any]:
        if on_cancel is None:
            return self.loop.create_future()
        return _Future(self.loop, on_cancel)

    @staticmethod
    def resolve(future: asyncio.Future[Any], value: Any) -> None:
        if not future.done():
            future.set_result(value)

    @staticmethod
    def when_done(future: asyncio.Future[Any], on_value: Callable[[Any], None],
                  on_error: Callable[[BaseException], None]) -> None:
        def done(future: asyncio.Future[Any]) -> None:
            if future.cancelled():
                on_error(asyncio.CancelledError())
            elif (error := future.exception()) is not None:
                on_error(error)
            else:
                on_value(future.result())

        future.add_done_callback(done)

    @staticmethod
    def fail(future: asyncio.Future[Any], error: BaseException) -> None:
        if not future.done():
            future.set_exception(error)

    def new_future(self) -> asyncio.Future[Any]:
        return self.loop.create_future()

    @staticmethod
    def resolve_all(futures: Iterable[asyncio.Future[Any] | None], values: Iterable[Any]) -> None:
        for future, value in zip(futures, values, strict=True):
            if future is not None and not future.done():
                future.set_result(value)

    #: Whether a future is done (a C-level call: the batcher maps it over batches).
    settled = staticmethod(methodcaller("done"))

    def gather(self, awaitables: Iterable[Awaitable[Any]]) -> Awaitable[Any]:
        return asyncio.gather(*awaitables, return_exceptions=True)

    @staticmethod
    def discard(awaitable: Any) -> None:
        future = asyncio.ensure_future(awaitable)
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        future.cancel()

    def semaphore(self, tokens: int) -> asyncio.Semaphore:
        return asyncio.Semaphore(tokens)

    @staticmethod
    def is_cancelled(exc: BaseException) -> bool:
        return isinstance(exc, asyncio.CancelledError)

    @staticmethod
    def cancelled_error() -> BaseException:
        return asyncio.CancelledError()

    @staticmethod
    def never_sent(exc: BaseException) -> bool:
        return isinstance(exc, NotSent)

    @staticmethod
    def describe(exc: BaseException) -> str:
        return describe(exc)

    def now(self) -> float:
        return self.loop.time()

    async def close(self) -> None:
        await self.unary.close()
