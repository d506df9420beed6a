"""Watches over the gateway: typed events, resume without loss or repeats, explicit compaction.

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
callback); ``done`` then fires with None or fails with that error.
"""

from __future__ import annotations

import collections
import enum
import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from .core import REQUIRE_LEADER
from .errors import (
    AuthFailed,
    EtcdError,
    InvalidAuthToken,
    PermissionDenied,
    Timeout,
    UnsupportedServer,
    classify,
)
from .op import _int_arg, as_keyset
from .stream import Stream
from .types import KeySet, KeyValue, b64, to_int

if TYPE_CHECKING:
    from .client import Client

__all__ = ["EventType", "Watch", "WatchCanceled", "WatchCompacted", "WatchEvent", "FILTERS",
           "PROBE_INTERVAL"]

Json = dict[str, Any]

_log = Logger()

FILTERS = ("NOPUT", "NODELETE")

# A member that loses its leader cancels the streams that ask for this, instead of serving stale
# silence; the watch then resumes elsewhere.
_STREAM_HEADERS = [REQUIRE_LEADER]

# Seconds of silence after which the watch checks that its member still answers at all. A member
# that is paused, or cut off from us without a reset, leaves the stream open but silent forever;
# when the check fails the stream is dropped and resumed on the next member.
PROBE_INTERVAL = 30.0

# Errors that another attempt cannot fix; anything else from etcd or the network is resumed.
_FATAL = (PermissionDenied, AuthFailed, UnsupportedServer)


class EventType(enum.StrEnum):
    PUT = "PUT"
    DELETE = "DELETE"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change of one key; ``prev_kv`` is the value before it when the watch asked for it."""

    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None = None

    @property
    def revision(self) -> int:
        return self.kv.mod_revision

    # txaioetcd's callbacks received a KeyValue; these keep ``event.key``/``event.value`` working.
    @property
    def key(self) -> bytes:
        return self.kv.key

    @property
    def value(self) -> bytes:
        return self.kv.value


@dataclass(frozen=True, slots=True)
class WatchCompacted:
    """History before ``compact_revision`` is gone: events were lost, the consumer must re-read.

    The watch goes on with the events from ``compact_revision`` on.
    """

    compact_revision: int


class WatchCanceled(EtcdError):
    """The server canceled the watch for a reason no retry can fix (``cancel_reason``)."""


class _Reopen(Exception):
    """Ends the current stream so that it is reopened at once (after a compaction cancel)."""


class _Range:
    """One server-side watcher: a namespaced key range and the first revision it still needs."""

    __slots__ = ("key", "range_end", "next_rev")

    def __init__(self, key: bytes, range_end: bytes, next_rev: int | None) -> None:
        self.key, self.range_end, self.next_rev = key, range_end, next_rev

    def create_request(self, options: Json) -> Json:
        request: Json = {"key": b64(self.key), **options}
        if self.range_end:
            request["range_end"] = b64(self.range_end)
        if self.next_rev is not None:
            request["start_revision"] = self.next_rev
        return {"create_request": request}


def _as_keysets(keys: Any) -> list[KeySet]:
    if isinstance(keys, (bytes, KeySet)):
        return [as_keyset(keys)]
    if isinstance(keys, (list, tuple)):
        if not keys:
            raise ValueError("keys must name at least one key or KeySet")
        return [as_keyset(k) for k in keys]
    raise TypeError(f"keys must be bytes, a KeySet or a list of them, not {type(keys).__name__}")


def _disjoint_ranges(keysets: Iterable[KeySet], namespace: bytes) -> list[tuple[bytes, bytes]]:
    """Merge key sets into sorted disjoint ``(key, range_end)`` ranges (``b"\\0"`` = unbounded)."""
    spans = []
    for keyset in keysets:
        key, end = keyset.namespaced(namespace)
        end = end or key + b"\0"  # a single key is the range [key, key\0)
        if end != b"\0" and end <= key:
            raise ValueError(f"empty key range: {keyset!r}")
        spans.append((key, end))
    spans.sort()
    merged: list[tuple[bytes, bytes]] = []
    for key, end in spans:
        if merged and (merged[-1][1] == b"\0" or key <= merged[-1][1]):
            last_key, last_end = merged[-1]
            unbounded = b"\0" in (last_end, end)
            merged[-1] = (last_key, b"\0" if unbounded else max(last_end, end))
        else:
            merged.append((key, end))
    return [(key, b"" if end == key + b"\0" else end) for key, end in merged]


def _check_flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be bool, not {type(value).__name__}")
    return value


def _check_filters(filters: Sequence[str] | None) -> list[str]:
    if filters is None:
        return []
    if isinstance(filters, str):
        raise TypeError("filters must be a list of names, not one string")
    names = []
    for name in filters:
        if not isinstance(name, str) or name.upper() not in FILTERS:
            raise ValueError(f"filters must be among {', '.join(FILTERS)}, not {name!r}")
        names.append(name.upper())
    return names


class _Connection:
    """The state of one open stream: which watch_id belongs to which range, pending fragments."""

    def __init__(self, watch: Watch) -> None:
        self.watch = watch
        self.last_message = watch._reactor.seconds()
        self.probing = False
        self.created = 0
        self.by_id: dict[int, _Range] = {}
        self.fragments: dict[int, list[Json]] = {}

    @property
    def healthy(self) -> bool:
        return self.created == len(self.watch._ranges)

    def on_message(self, result: Json) -> None:
        watch = self.watch
        if watch._stopping:
            return  # cancel() ran: nothing more reaches the consumer
        self.last_message = watch._reactor.seconds()
        watch_id = to_int(result.get("watch_id"))
        header = result.get("header") or {}
        if result.get("created"):
            # Created responses come in the order of the create requests in the body.
            created = watch._ranges[self.created]
            self.created += 1
            self.by_id[watch_id] = created
            if created.next_rev is None:
                # Started "now": the server watches from exactly this revision + 1.
                created.next_rev = to_int(header.get("revision")) + 1
            if self.healthy:
                watch._started()
        range_ = self.by_id.get(watch_id)
        if range_ is None:
            return  # a stream-wide progress response (watch_id -1): not ours to interpret
        if result.get("canceled"):
            self._canceled(range_, result)
        events = list(result.get("events") or ())
        if result.get("fragment"):
            self.fragments.setdefault(watch_id, []).extend(events)
            return
        events = self.fragments.pop(watch_id, []) + events
        if events:
            watch._deliver(range_, events)
        elif not result.get("created"):
            # A progress notification: everything up to header.revision has been sent.
            revision = to_int(header.get("revision"))
            if range_.next_rev is not None and revision >= range_.next_rev:
                range_.next_rev = revision + 1

    def _canceled(self, range_: _Range, result: Json) -> None:
        compact_revision = to_int(result.get("compact_revision"))
        if compact_revision:
            self.watch._emit(WatchCompacted(compact_revision))
            range_.next_rev = max(range_.next_rev or 0, compact_revision)
            raise _Reopen()
        reason = str(result.get("cancel_reason") or "watch canceled by the server")
        error = classify(0, {"message": reason})
        if type(error) is EtcdError:
            raise WatchCanceled(reason)
        raise error


class Watch:
    """A running watch over one or more key sets; create it with ``Client.watch``.

    Items (``WatchEvent`` or ``WatchCompacted``) go to ``callback`` when one is given, otherwise
    they queue up for ``async for item in watch``. ``cancel()`` (alias ``stop()``) closes the
    stream; ``done`` fires with None once the connection is closed, or fails with the error that
    ended the watch. ``when_started()`` fires once every key range is being watched.
    """

    def __init__(self, client: Client, keys: Any, callback: Callable[[Any], Any] | None = None,
                 *, start_revision: int | None = None, prev_kv: bool = False,
                 filters: Sequence[str] | None = (), progress_notify: bool = False,
                 probe_interval: float | None = PROBE_INTERVAL) -> None:
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        if start_revision is not None:
            _int_arg("start_revision", start_revision)
        if probe_interval is not None and (isinstance(probe_interval, bool) or not isinstance(
                probe_interval, (int, float)) or probe_interval <= 0):
            raise ValueError(f"probe_interval must be a positive number or None, not "
                             f"{probe_interval!r}")
        options: Json = {"fragment": True}  # oversized replays arrive in parts, joined here
        if _check_flag("prev_kv", prev_kv):
            options["prev_kv"] = True
        if _check_flag("progress_notify", progress_notify):
            options["progress_notify"] = True
        if names := _check_filters(filters):
            options["filters"] = names
        start = start_revision or None  # 0 means "now", as in etcd
        self._ranges = [_Range(key, end, start) for key, end in
                        _disjoint_ranges(_as_keysets(keys), client.namespace)]
        self._options = options
        self._probe_interval = probe_interval
        self._transport = client.transport
        self._reactor = client.reactor
        self._namespace = client.namespace
        self._callback = callback
        self._queue: collections.deque[WatchEvent | WatchCompacted] = collections.deque()
        self._waiter: defer.Deferred[None] | None = None
        self._start_waiters: list[defer.Deferred[None]] = []
        self._is_started = False
        self._stopping = False
        self._ended = False
        self._error: Failure | None = None
        self._stream: Stream | None = None
        self._pending: defer.Deferred[Any] | None = None  # an open or a pause, to cancel
        self.done: defer.Deferred[None] = defer.Deferred()
        self.endpoint: str | None = None  # the member the current stream is connected to
        self.reconnects = 0
        self.probe_failures = 0  # streams dropped because their member stopped answering
        defer.ensureDeferred(self._run())

    # -- the consumer's side -------------------------------------------------------------------

    def cancel(self) -> None:
        """Stop delivering and close the stream's connection; ``done`` fires when it is closed."""
        self._stop(None)

    stop = cancel

    def when_started(self) -> defer.Deferred[None]:
        """Fires once the server watches every key range (fails if the watch ended first)."""
        waiter: defer.Deferred[None] = defer.Deferred()
        if self._is_started:
            waiter.callback(None)
        elif self._ended:
            waiter.errback(self._error or defer.CancelledError("the watch was canceled"))
        else:
            self._start_waiters.append(waiter)
        return waiter

    def __aiter__(self) -> Watch:
        if self._callback is not None:
            raise TypeError("this watch delivers to its callback; create it without one to "
                            "iterate")
        return self

    async def __anext__(self) -> WatchEvent | WatchCompacted:
        while not self._queue:
            if self._ended:
                if self._error is not None:
                    self._error.raiseException()
                raise StopAsyncIteration
            self._waiter = defer.Deferred()
            await self._waiter
        return self._queue.popleft()

    async def __aenter__(self) -> Watch:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.cancel()
        if exc_type is None:
            await self.done  # an error that ended the watch is not swallowed

    def __repr__(self) -> str:
        ranges = ", ".join(f"{r.key!r}..{r.range_end!r}@{r.next_rev}" for r in self._ranges)
        return f"<Watch [{ranges}] endpoint={self.endpoint} reconnects={self.reconnects}>"

    # -- delivery ------------------------------------------------------------------------------

    def _deliver(self, range_: _Range, events: list[Json]) -> None:
        # Anything below next_rev was delivered by an earlier stream of this range. The floor is
        # fixed per response: a txn's several events share one revision.
        floor = range_.next_rev or 0
        for obj in events:
            if self._stopping:
                return
            kv = KeyValue.from_json(obj.get("kv") or {}, self._namespace)
            if kv.mod_revision < floor:
                continue
            prev = obj.get("prev_kv")
            kind = EventType.DELETE if obj.get("type") == "DELETE" else EventType.PUT
            range_.next_rev = kv.mod_revision + 1
            self._emit(WatchEvent(kind, kv, KeyValue.from_json(prev, self._namespace)
                                  if prev else None))

    def _emit(self, item: WatchEvent | WatchCompacted) -> None:
        if self._callback is None:
            self._queue.append(item)
            self._wake()
            return
        # An exception here ends the stream and, being no etcd error, the watch (via done).
        result = self._callback(item)
        if inspect.isawaitable(result):
            defer.ensureDeferred(result).addErrback(self._stop)  # type: ignore[arg-type]

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.callback(None)

    def _started(self) -> None:
        if not self._is_started:
            self._is_started = True
            waiters, self._start_waiters = self._start_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    # -- the connection loop -------------------------------------------------------------------

    def _stop(self, error: Failure | None) -> None:
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
        except Exception:  # noqa: BLE001 - a bug here must end the watch loudly, not hang it
            self._stop(Failure())
        self._end()

    async def _follow_until_stopped(self) -> None:
        failures = 0  # consecutive streams that broke before every range was created
        while not self._stopping:
            connection = _Connection(self)
            reopen_now = False
            try:
                await self._follow(connection)
            except _Reopen:
                reopen_now = True
            except Exception as exc:  # noqa: BLE001 - sorted into resumable and fatal below
                if self._stopping:
                    return
                if isinstance(exc, _FATAL + (WatchCanceled,)) or not isinstance(exc, EtcdError):
                    self._stop(Failure(exc))
                    return
                if isinstance(exc, InvalidAuthToken):
                    self._transport.token_rejected()  # the next open authenticates again
                _log.debug("watch stream to {endpoint} ended ({error}); resuming",
                           endpoint=self.endpoint, error=exc)
            if self._stopping:
                return
            self.reconnects += 1
            failures = 0 if connection.healthy else failures + 1
            if not reopen_now:
                try:
                    await self._cancellable(
                        defer.ensureDeferred(self._transport.backoff(failures + 1)))
                except defer.CancelledError:
                    return

    async def _follow(self, connection: _Connection) -> None:
        """Open one stream and follow it until it ends; raises why it ended."""
        endpoint = self._transport.endpoint
        requests = [r.create_request(self._options) for r in self._ranges]
        opening = defer.ensureDeferred(self._transport.open_stream(
            "watch", requests, connection.on_message, headers=_STREAM_HEADERS))
        deadline = self._transport.timeout or 10.0
        timer = self._reactor.callLater(deadline, opening.cancel)
        try:
            stream = await self._cancellable(opening)
        except defer.CancelledError:
            if self._stopping:
                raise
            self._transport.endpoint_failed(endpoint)
            raise Timeout(f"etcd {endpoint} did not open a watch within {deadline} s") from None
        finally:
            if timer.active():
                timer.cancel()
        self._stream, self.endpoint = stream, endpoint
        prober = None
        if self._probe_interval:
            prober = task.LoopingCall(self._probe, connection, endpoint, stream)
            prober.clock = self._reactor
            prober.start(self._probe_interval, now=False)
        try:
            if self._stopping:  # canceled while the stream was opening
                stream.cancel()
            await stream.done
        finally:
            self._stream = None
            if prober is not None and prober.running:
                prober.stop()

    def _probe(self, connection: _Connection, endpoint: str, stream: Stream) -> None:
        """After a silence, check that the member answers at all; if not, move elsewhere."""
        now = self._reactor.seconds()
        if connection.probing or now - connection.last_message < (self._probe_interval or 0):
            return
        connection.probing = True
        deadline = self._transport.timeout or 10.0
        probe = defer.ensureDeferred(self._ask_version(endpoint))
        timer = self._reactor.callLater(deadline, probe.cancel)

        def answered(_: object) -> None:
            connection.probing = False
            connection.last_message = self._reactor.seconds()

        def silent(_: Failure) -> None:
            if self._stream is stream and not self._stopping:
                self.probe_failures += 1
                self._transport.endpoint_failed(endpoint)
                stream.cancel()  # done fires and the loop resumes on the next member

        probe.addCallbacks(answered, silent)
        probe.addBoth(lambda _: timer.cancel() if timer.active() else None)

    async def _ask_version(self, endpoint: str) -> None:
        # GET /version needs neither raft nor auth: any answer proves the member is responsive.
        await self._transport.probe(endpoint)

    async def _cancellable(self, deferred: defer.Deferred[Any]) -> Any:
        self._pending = deferred
        try:
            return await deferred
        finally:
            self._pending = None

    def _end(self) -> None:
        self._ended = True
        self._wake()
        waiters, self._start_waiters = self._start_waiters, []
        for waiter in waiters:
            waiter.errback(self._error or defer.CancelledError("the watch was canceled"))
        if self._error is not None:
            self.done.errback(self._error)
        else:
            self.done.callback(None)
