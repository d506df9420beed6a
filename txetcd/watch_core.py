"""Watches without an event loop: what to ask for, what the answers mean, when to resume.

``WatchState`` holds what a watch knows between streams (each key range's next revision) and
``StreamState`` decodes one stream's messages into ``WatchEvent``/``WatchCompacted`` items; both
drivers (Twisted's ``txetcd.watch``, asyncio's ``txetcd.aio_watch``) only open streams, run the
timers and hand items to the consumer. The guarantees are stated in ``txetcd.watch``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import AuthFailed, EtcdError, PermissionDenied, UnsupportedServer, classify
from .op import as_keyset, int_arg
from .types import KeySet, KeyValue, b64, to_int

__all__ = ["EventType", "FILTERS", "PROBE_INTERVAL", "Received", "StreamState", "WatchCanceled",
           "as_keysets", "disjoint_ranges",
           "WatchCompacted", "WatchEvent", "WatchState"]

Json = dict[str, Any]

FILTERS = ("NOPUT", "NODELETE")

# Seconds of silence after which the watch checks that its member still answers at all. A member
# that is paused, or cut off from us without a reset, leaves the stream open but silent forever;
# when the check fails the stream is dropped and resumed on the next member.
PROBE_INTERVAL = 30.0

# Seconds a stream may take to open (or a probe to answer) when the client has no timeout.
DEFAULT_DEADLINE = 10.0

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


class Range:
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


def as_keysets(keys: Any) -> list[KeySet]:
    if isinstance(keys, (bytes, KeySet)):
        return [as_keyset(keys)]
    if isinstance(keys, (list, tuple)):
        if not keys:
            raise ValueError("keys must name at least one key or KeySet")
        return [as_keyset(k) for k in keys]
    raise TypeError(f"keys must be bytes, a KeySet or a list of them, not {type(keys).__name__}")


def disjoint_ranges(keysets: Iterable[KeySet], namespace: bytes) -> list[tuple[bytes, bytes]]:
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


class Reopen(Exception):
    """Ends the current stream so that it is reopened at once (after a compaction cancel)."""


@dataclass(slots=True)
class Received:
    """What one stream message means: items for the consumer, in order; whether every range is
    now watched; whether the stream must be reopened at once once the items are delivered."""

    items: list[WatchEvent | WatchCompacted] = field(default_factory=list)
    started: bool = False
    reopen: bool = False


class StreamState:
    """One open stream: which watch_id belongs to which range, pending fragments, silence."""

    def __init__(self, watch: WatchState, now: float) -> None:
        self.watch = watch
        self.last_message = now
        self.probing = False
        self.created = 0
        self.by_id: dict[int, Range] = {}
        self.fragments: dict[int, list[Json]] = {}

    @property
    def healthy(self) -> bool:
        """Every range was created on this stream (a stream that broke before is a failure)."""
        return self.created == len(self.watch.ranges)

    def receive(self, result: Json, now: float) -> Received:
        """Decode one ``result``; raises the error a server-side cancel carries."""
        self.last_message = now
        received = Received()
        watch_id = to_int(result.get("watch_id"))
        if result.get("created"):
            received.started = self._created(watch_id, result.get("header") or {})
        range_ = self.by_id.get(watch_id)
        if range_ is None:
            return received  # a stream-wide progress response (watch_id -1): not ours
        if result.get("canceled"):
            received.items.append(self._canceled(range_, result))
            received.reopen = True
            return received
        events = list(result.get("events") or ())
        if result.get("fragment"):
            self.fragments.setdefault(watch_id, []).extend(events)
            return received
        events = self.fragments.pop(watch_id, []) + events
        if events:
            received.items.extend(self.watch.events(range_, events))
        elif not result.get("created"):
            # A progress notification: everything up to header.revision has been sent.
            revision = to_int((result.get("header") or {}).get("revision"))
            if range_.next_rev is not None and revision >= range_.next_rev:
                range_.next_rev = revision + 1
        return received

    def _created(self, watch_id: int, header: Json) -> bool:
        # Created responses come in the order of the create requests in the body.
        created = self.watch.ranges[self.created]
        self.created += 1
        self.by_id[watch_id] = created
        if created.next_rev is None:
            # Started "now": the server watches from exactly this revision + 1.
            created.next_rev = to_int(header.get("revision")) + 1
        return self.healthy

    @staticmethod
    def _canceled(range_: Range, result: Json) -> WatchCompacted:
        compact_revision = to_int(result.get("compact_revision"))
        if compact_revision:
            range_.next_rev = max(range_.next_rev or 0, compact_revision)
            return WatchCompacted(compact_revision)
        reason = str(result.get("cancel_reason") or "watch canceled by the server")
        error = classify(0, {"message": reason})
        if type(error) is EtcdError:
            raise WatchCanceled(reason)
        raise error

    def needs_probe(self, now: float, interval: float | None) -> bool:
        """Whether the stream has been silent long enough to check on its member."""
        return bool(interval) and not self.probing and now - self.last_message >= (interval or 0)

    def probe_answered(self, now: float) -> None:
        self.probing = False
        self.last_message = now


class WatchState:
    """What a watch knows across its streams; built from ``Client.watch``'s arguments, which it
    checks (before anything is sent)."""

    def __init__(self, keys: Any, namespace: bytes, *, start_revision: int | None = None,
                 prev_kv: bool = False, filters: Sequence[str] | None = (),
                 progress_notify: bool = False,
                 probe_interval: float | None = PROBE_INTERVAL) -> None:
        if start_revision is not None:
            int_arg("start_revision", start_revision)
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
        self.ranges = [Range(key, end, start) for key, end in
                       disjoint_ranges(as_keysets(keys), namespace)]
        self.options = options
        self.namespace = namespace
        self.probe_interval = probe_interval
        self.reconnects = 0
        self.failures = 0  # consecutive streams that broke before every range was created

    def __repr__(self) -> str:
        return ", ".join(f"{r.key!r}..{r.range_end!r}@{r.next_rev}" for r in self.ranges)

    def requests(self) -> list[Json]:
        """The body of the next stream: every range from its own next revision."""
        return [r.create_request(self.options) for r in self.ranges]

    def stream(self, now: float) -> StreamState:
        return StreamState(self, now)

    def events(self, range_: Range, events: list[Json]) -> list[WatchEvent]:
        """The events of one response not delivered before, advancing the range's next_rev."""
        # Anything below next_rev was delivered by an earlier stream of this range. The floor is
        # fixed per response: a txn's several events share one revision.
        floor = range_.next_rev or 0
        items = []
        for obj in events:
            kv = KeyValue.from_json(obj.get("kv") or {}, self.namespace)
            if kv.mod_revision < floor:
                continue
            prev = obj.get("prev_kv")
            kind = EventType.DELETE if obj.get("type") == "DELETE" else EventType.PUT
            range_.next_rev = kv.mod_revision + 1
            items.append(WatchEvent(kind, kv, KeyValue.from_json(prev, self.namespace)
                                    if prev else None))
        return items

    def ended(self, stream: StreamState, error: BaseException | None) -> int:
        """A stream ended (``error`` None: closed by the server). Returns the attempt number
        to back off for before the next stream (0: reopen at once), or raises ``error`` when no
        retry can fix it."""
        self.reconnects += 1
        self.failures = 0 if stream.healthy else self.failures + 1
        if isinstance(error, Reopen):
            return 0
        if error is not None and (isinstance(error, _FATAL + (WatchCanceled,))
                                  or not isinstance(error, EtcdError)):
            raise error
        return self.failures + 1
