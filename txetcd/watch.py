"""Watches on either event loop: typed events, resume without loss or repeats, explicit compaction.

Transport: one HTTP/1.1 stream per ``Watch`` (``POST <prefix>/watch``) carrying one
``create_request`` per key range, all in the request body. Not the WebSocket proxy, because
HTTP streams work on every server version and with auth: the proxy forwards neither the
``Authorization`` header nor ``Grpc-Metadata-*``, and the ``Bearer`` token it synthesises is
accepted only from etcd 3.5.32 / 3.6.13. The price of half-duplex HTTP is that nothing can be
sent after the body, so cancelling means closing the connection, which ``Watch.cancel`` does.
Each stream asks for ``Grpc-Metadata-hasleader: true`` so that a member cut off from its
cluster ends the stream instead of going silent, and the watch moves to another member. A member
that is paused or unreachable without a reset cannot end the stream itself, so after
``probe_interval`` seconds without a message the watch asks that member for ``/version``; when no
answer comes within the client's timeout, it drops the stream and resumes on the next member.

Resume: every key range remembers ``next_rev``, the first revision it still needs: the start
revision, ``created.header.revision + 1`` for a watch started "now", the last delivered event's
``mod_revision + 1``, or a progress notification's ``header.revision + 1``; never the
``header.revision`` of an events response (during a replay that is the store's newest revision,
not the last one sent). When the stream drops (server killed or restarted, connection reset, an
error frame, a member without a leader), it is reopened, with backoff and jitter, on the
transport's active endpoint (which rotates to the next member when one is unreachable), and every
range starts again at its own ``next_rev``. Events below it are dropped, so a delivered event is
never repeated and none is skipped. Overlapping key sets are merged into disjoint ranges first,
so one change is delivered once even when several of the key sets cover it.

Order: the events of one range come in revision order, all events of a revision together
(fragments of an oversized response are joined first). Ranges are separate server-side watchers,
so during a replay their events may interleave out of global revision order.

Compaction: when the history a range needs is gone (typically after a disconnect), etcd cancels
that watcher with ``compact_revision`` C. The consumer then receives ``WatchCompacted(C)`` (to the
callback, or yielded by the async iterator: a different type than ``WatchEvent``, never a silent
gap) and the watch continues with the events from revision C on. A consumer that mirrors state
re-reads the keys at the latest revision R and ignores later events with ``revision <= R``.

A watch ends only by ``cancel()``, or with an error that retrying cannot fix (permission denied,
bad credentials, an unknown server-side cancel, or an exception raised by the consumer's
callback); ``done`` then resolves to None or fails with that error.

What a watch knows and decides (ranges, next revisions, what a message means, when to resume)
is sans-IO code in ``txetcd.watch_core``; this module opens the streams through the client's
transport and runs the timers on its driver, so the same ``Watch`` serves Twisted and asyncio.
"""

from __future__ import annotations

import collections
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from .core import REQUIRE_LEADER
from .errors import InvalidAuthToken, Timeout
from .interface import Env, HasEnv, StreamHandle, env_of
from .watch_core import (
    DEFAULT_DEADLINE,
    FILTERS,
    PROBE_INTERVAL,
    EventType,
    Reopen,
    StreamState,
    WatchCanceled,
    WatchCompacted,
    WatchEvent,
    WatchState,
)

__all__ = ["EventType", "Watch", "WatchCanceled", "WatchCompacted", "WatchEvent", "FILTERS",
           "PROBE_INTERVAL"]

Item = WatchEvent | WatchCompacted


class Watch:
    """A running watch over one or more key sets; create it with ``client.watch``.

    Items (``WatchEvent`` or ``WatchCompacted``) go to ``callback`` when one is given (a
    coroutine function works too), otherwise they queue up for ``async for item in watch``.
    ``cancel()`` (alias ``stop()``) closes the stream; ``done`` (the loop's future) resolves to
    None once the connection is closed, or fails with the error that ended the watch.
    ``when_started()`` resolves once every key range is being watched.
    """

    def __init__(self, env: Env | HasEnv, keys: Any, callback: Callable[[Any], Any] | None = None,
                 *, start_revision: int | None = None, prev_kv: bool = False,
                 filters: Sequence[str] | None = (), progress_notify: bool = False,
                 probe_interval: float | None = PROBE_INTERVAL) -> None:
        env = env_of(env)  # a client (``Lease(client, ttl)``) or its Env
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        self.state = WatchState(keys, env.namespace, start_revision=start_revision,
                                prev_kv=prev_kv, filters=filters,
                                progress_notify=progress_notify, probe_interval=probe_interval)
        self._transport = env.transport
        self._driver = env.driver
        self._callback = callback
        self._queue: collections.deque[Item] = collections.deque()
        self._waiter: Any = None
        self._start_waiters: list[Any] = []
        self._is_started = False
        self._stopping = False
        self._ended = False
        self._error: BaseException | None = None
        self._stream: StreamHandle | None = None
        self._pending: Any = None  # an open or a backoff pause, to cancel
        self._prober: Any = None  # Timer
        self.done: Any = env.driver.future()
        self.endpoint: str | None = None  # the member the current stream is connected to
        self.probe_failures = 0  # streams dropped because their member stopped answering
        self._driver.spawn(self._run())

    @property
    def reconnects(self) -> int:
        """Streams that ended and were reopened."""
        return self.state.reconnects

    # -- the consumer's side -------------------------------------------------------------------

    def cancel(self) -> None:
        """Stop delivering and close the stream's connection; ``done`` resolves when closed."""
        self._stop(None)

    stop = close = cancel

    @property
    def finished(self) -> bool:
        """The watch has ended (``done`` has its result)."""
        return self._ended

    def when_started(self) -> Any:
        """Resolves once the server watches every key range (fails if the watch ended first)."""
        waiter = self._driver.future()
        if self._is_started:
            self._driver.resolve(waiter, None)
        elif self._ended:
            self._driver.fail(waiter, self._error or self._driver.cancelled_error())
        else:
            self._start_waiters.append(waiter)
        return waiter

    def __aiter__(self) -> Watch:
        if self._callback is not None:
            raise TypeError("this watch delivers to its callback; create it without one to "
                            "iterate")
        return self

    async def __anext__(self) -> Item:
        while not self._queue:
            if self._ended:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._waiter = self._driver.future()
            await self._waiter
        return self._queue.popleft()

    async def __aenter__(self) -> Watch:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.cancel()
        if exc_type is None:
            await self.done  # an error that ended the watch is not swallowed

    def __repr__(self) -> str:
        return (f"<Watch [{self.state!r}] endpoint={self.endpoint} "
                f"reconnects={self.reconnects}>")

    # -- delivery ------------------------------------------------------------------------------

    def _on_message(self, stream: StreamState, endpoint: str, result: dict[str, Any]) -> None:
        if self._stopping:
            return  # cancel() ran: nothing more reaches the consumer
        # Set here, not when the open returns: on asyncio the first messages may be handled
        # before the opening coroutine resumes.
        self.endpoint = endpoint
        # Raising here ends the stream (a server-side cancel, a consumer's exception).
        received = stream.receive(result, self._driver.now())
        if received.started:
            self._started()
        for item in received.items:
            if self._stopping:
                return
            self._emit(item)
        if received.reopen:
            raise Reopen()

    def _emit(self, item: Item) -> None:
        if self._callback is None:
            self._queue.append(item)
            self._wake()
            return
        # An exception here ends the stream and, being no etcd error, the watch (via done).
        result = self._callback(item)
        if inspect.isawaitable(result):
            self._driver.spawn(self._await_callback(result))

    async def _await_callback(self, result: Any) -> None:
        try:
            await result
        except Exception as exc:  # noqa: BLE001 - a consumer's bug ends the watch loudly
            self._stop(exc)

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._driver.resolve(waiter, None)

    def _started(self) -> None:
        if not self._is_started:
            self._is_started = True
            waiters, self._start_waiters = self._start_waiters, []
            for waiter in waiters:
                self._driver.resolve(waiter, None)

    # -- the connection loop -------------------------------------------------------------------

    def _stop(self, error: BaseException | None) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._error = error
        if self._stream is not None:
            self._stream.cancel()
        if self._pending is not None:
            self._pending.cancel()

    async def _run(self) -> None:
        try:
            await self._follow_until_stopped()
        except BaseException as exc:  # noqa: BLE001 - a bug here must end the watch loudly
            self._stop(exc)
        self._end()

    async def _follow_until_stopped(self) -> None:
        while not self._stopping:
            stream = self.state.stream(self._driver.now())
            error: BaseException | None = None
            try:
                await self._follow(stream)
            except BaseException as exc:  # noqa: BLE001 - sorted into resumable and fatal below
                error = exc
            if self._stopping:
                return
            if isinstance(error, InvalidAuthToken):
                self._transport.token_rejected()  # the next open authenticates again
            try:
                attempt = self.state.ended(stream, error)
            except BaseException as fatal:  # noqa: BLE001 - ends the watch via done
                self._stop(fatal)
                return
            if attempt:
                try:
                    await self._cancellable(self._driver.spawn(self._transport.backoff(attempt)))
                except BaseException:
                    if self._stopping:
                        return
                    raise

    async def _follow(self, state: StreamState) -> None:
        """Open one stream and follow it until it ends; raises why it ended."""
        stream = await self._open(state)
        self._stream = stream
        self._schedule_probe(state, stream)
        try:
            if self._stopping:  # canceled while the stream was opening
                stream.cancel()
            await stream.done
        finally:
            self._stream = None
            _cancel(self._prober)

    async def _open(self, state: StreamState) -> StreamHandle:
        endpoint = self._transport.endpoint
        opening: Any = self._driver.spawn(self._transport.open_stream(
            "watch", self.state.requests(),
            lambda result: self._on_message(state, endpoint, result),
            headers=[REQUIRE_LEADER]))
        deadline = self._transport.timeout or DEFAULT_DEADLINE
        timer = self._driver.call_later(deadline, opening.cancel)
        try:
            stream: StreamHandle = await self._cancellable(opening)
        except BaseException as exc:
            if self._stopping or not self._driver.is_cancelled(exc):
                raise
            self._transport.endpoint_failed(endpoint)
            raise Timeout(f"etcd {endpoint} did not open a watch within {deadline} s") from None
        finally:
            _cancel(timer)
        self.endpoint = endpoint
        return stream

    # -- liveness of a silent stream -----------------------------------------------------------

    def _schedule_probe(self, state: StreamState, stream: StreamHandle) -> None:
        interval = self.state.probe_interval
        if interval:
            self._prober = self._driver.call_later(interval, self._probe, state, stream)

    def _probe(self, state: StreamState, stream: StreamHandle) -> None:
        """After a silence, check that the member answers at all; if not, move elsewhere."""
        self._prober = None
        if self._stream is not stream or self._stopping:
            return
        if state.needs_probe(self._driver.now(), self.state.probe_interval):
            state.probing = True
            self._driver.spawn(self._check_member(state, stream, self.endpoint or ""))
        self._schedule_probe(state, stream)

    async def _check_member(self, state: StreamState, stream: StreamHandle,
                            endpoint: str) -> None:
        probe: Any = self._driver.spawn(self._transport.probe(endpoint))
        timer = self._driver.call_later(self._transport.timeout or DEFAULT_DEADLINE,
                                        probe.cancel)
        try:
            await probe
        except BaseException:  # noqa: BLE001 - no answer in time, whatever the reason
            if self._stream is stream and not self._stopping:
                self.probe_failures += 1
                self._transport.endpoint_failed(endpoint)
                stream.cancel()  # done resolves and the loop resumes on the next member
            return
        finally:
            _cancel(timer)
        state.probe_answered(self._driver.now())

    async def _cancellable(self, awaitable: Any) -> Any:
        self._pending = awaitable
        try:
            return await awaitable
        finally:
            self._pending = None

    def _end(self) -> None:
        self._ended = True
        self._wake()
        waiters, self._start_waiters = self._start_waiters, []
        for waiter in waiters:
            self._driver.fail(waiter, self._error or self._driver.cancelled_error())
        if self._error is not None:
            self._driver.fail(self.done, self._error)
        else:
            self._driver.resolve(self.done, None)


def _cancel(timer: Any) -> None:
    if timer is not None and timer.active():
        timer.cancel()
