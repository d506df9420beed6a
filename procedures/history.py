"""``<prefix>.<table>.history(key, limit, before_revision)``: a row's past from etcd's MVCC history.

etcd keeps every revision of a key until compaction. The versions of the row's current lifetime
are read at older revisions (one read each, newest first); only what lies before it (an earlier
lifetime ended by a delete, which no read shows) comes from a watch started at revision 1 that
replays the key's puts and deletes in revision order. The replay stops at an event known to
come: the first put of the lifetime already read, or the row's current revision; for a row that
is deleted now nothing marks the end, so it stops once etcd has been quiet for ``QUIET`` seconds
after its last event (etcd sends a replay in one response of up to 1000 revisions per key, so
the quiet wait only matters for keys with longer histories). Past the compaction point the
answer says so: ``compacted`` is true when the list is shorter than asked because older
versions are gone, and ``compact_revision`` is where history starts; never a silent short list.
An answer carries only as many versions as fit one message (``procedures.answers``);
``partial`` says the rest is older than the last one returned.
"""

from __future__ import annotations

import collections
from typing import Any

from twisted.internet import defer

from txetcd import Compacted, WatchCompacted, WatchEvent
from txetcd.types import is_int

from .answers import Answer
from .errors import ProcedureError
from .parts import TableParts

__all__ = ["history", "MAX_HISTORY", "QUIET", "FIRST_WAIT", "DEADLINE"]

MAX_HISTORY = 1000
QUIET = 0.5  # seconds without events that end the replay of a row that is deleted now
FIRST_WAIT = 2.0  # the same before the first event: a replay starts within etcd's 100 ms sync
DEADLINE = 60.0  # a replay that takes longer is refused as unavailable


def _version(table: TableParts, event: Any) -> dict[str, Any]:
    kv = event.kv
    if getattr(event.type, "name", str(event.type)).upper() == "DELETE":
        return {"type": "delete", "revision": kv.mod_revision, "value": None, "version": 0,
                "created": 0}
    return _put(table, kv)


def _put(table: TableParts, kv: Any) -> dict[str, Any]:
    return {"type": "put", "revision": kv.mod_revision, "value": table.values.decode(kv.value),
            "version": kv.version, "created": kv.create_revision}


async def _walk(table: TableParts, row: bytes, state: Any, limit: int) -> tuple[list[Any], bool]:
    """Versions of the row's lifetime at ``state``, newest first, by reads at older revisions
    (cheap: one read per version); stops at ``limit``, the lifetime's first put, or compaction
    (then True)."""
    kv = state.kvs[0] if state.kvs else None
    versions: list[Any] = []
    while kv is not None and len(versions) < limit:
        versions.append(_put(table, kv))
        if kv.version <= 1:
            break
        try:
            kv = (await table.client.get(row, revision=kv.mod_revision - 1)).kvs[0]
        except Compacted:
            return versions, True
    return versions, False


async def _replay(table: TableParts, row: bytes, key: Any, end: int, terminal: int | None,
                  limit: int) -> tuple[list[Any], int | None]:
    """The last ``limit`` events of the row up to revision ``end``, oldest first, replayed by a
    watch from revision 1, and the compaction revision if history was cut. The replay ends at
    the event at ``terminal`` (one known to come), or after ``QUIET`` seconds of silence."""
    client = table.client
    replay = _Replay(client.reactor, end, terminal, limit)
    replay.quiet(FIRST_WAIT)
    watch = client.watch(row, replay.on_item, start_revision=1)

    def too_slow() -> None:
        if not replay.finished.called:
            replay.finished.errback(ProcedureError(
                "unavailable", f"the history of {key!r:.80} did not arrive in {DEADLINE:.0f} s"))

    deadline = client.reactor.callLater(DEADLINE, too_slow)
    try:
        await replay.finished
    finally:
        watch.cancel()
        for call in (replay.timer, deadline):
            if call is not None and call.active():
                call.cancel()
    return list(replay.events), replay.compacted_at


class _Replay:
    """What a replaying watch has delivered, and when it is done (``finished``)."""

    def __init__(self, reactor: Any, end: int, terminal: int | None, limit: int) -> None:
        self.reactor, self.end, self.terminal = reactor, end, terminal
        self.events: collections.deque[Any] = collections.deque(maxlen=limit)
        self.compacted_at: int | None = None
        self.finished: defer.Deferred[None] = defer.Deferred()
        self.timer: Any = None

    def finish(self) -> None:
        if not self.finished.called:
            self.finished.callback(None)

    def quiet(self, seconds: float) -> None:
        """Finish after ``seconds`` without events, unless a known event ends the replay."""
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        if self.terminal is None:
            self.timer = self.reactor.callLater(seconds, self.finish)

    def on_item(self, item: Any) -> None:
        if self.finished.called:
            return
        if isinstance(item, WatchCompacted):
            self.compacted_at = item.compact_revision
            return
        assert isinstance(item, WatchEvent)
        if item.revision > self.end:
            self.finish()  # all of the row's events up to ``end`` came before this one
            return
        self.events.append(item)
        if self.terminal is not None and item.revision >= self.terminal:
            self.finish()
        else:
            self.quiet(QUIET)


async def history(table: TableParts, key: Any, limit: Any = 10,
                  before_revision: Any = None) -> dict[str, Any]:
    """The row's versions before ``before_revision`` (default: all), newest first."""
    if not is_int(limit) or not 1 <= limit <= MAX_HISTORY:
        raise ProcedureError("invalid_argument",
                             f"limit must be an int from 1 to {MAX_HISTORY}, not {limit!r}")
    if before_revision is not None and (not is_int(before_revision) or before_revision < 1):
        raise ProcedureError("invalid_argument", f"before_revision must be a revision (an int "
                                                 f">= 1), not {before_revision!r}")
    row = table.etcd_key(key)
    client = table.client
    now = await client.get(row)
    end = now.header.revision if before_revision is None else min(before_revision - 1,
                                                                  now.header.revision)
    if end < 1:
        return {"versions": [], "compacted": False, "compact_revision": None, "partial": False}
    # The current lifetime first, by reads; the replay only for what lies before it.
    try:
        state = now if end == now.header.revision else await client.get(row, revision=end)
        versions, cut = await _walk(table, row, state, limit)
    except Compacted:
        versions, cut = [], True
    if len(versions) == limit:
        return _bounded(table, {"versions": versions, "compacted": False,
                                "compact_revision": None})
    if versions:
        # Everything before the oldest version read; the replay ends on that version's event.
        terminal: int | None = versions[-1]["revision"]
        replay_end = versions[-1]["revision"] - 1
    else:
        # No row at ``end``: its current revision (if it exists now) ends the replay.
        terminal = now.kvs[0].mod_revision if now.kvs else None
        replay_end = end
    events, compacted_at = await _replay(table, row, key, replay_end, terminal,
                                         limit - len(versions))
    if cut and compacted_at is None:
        compacted_at = 0  # the reads were compacted, the replay was not: it is now
    versions += [_version(table, e) for e in reversed(events)]
    if compacted_at and len(versions) < limit:
        # The version live at the compaction point survives it, though no event replays it.
        found = await client.get(row, revision=compacted_at)
        if found.kvs and found.kvs[0].mod_revision < compacted_at and \
                found.kvs[0].mod_revision <= replay_end and (
                    not versions or found.kvs[0].mod_revision < versions[-1]["revision"]):
            versions.append(_put(table, found.kvs[0]))
    return _bounded(table, {"versions": versions,
                            "compacted": compacted_at is not None and len(versions) < limit,
                            "compact_revision": compacted_at or None})


def _bounded(table: TableParts, answer: dict[str, Any]) -> dict[str, Any]:
    """``answer`` with only as many versions (newest first) as fit one message; ``partial``
    says some were left off (ask again with ``before_revision`` = the oldest one's)."""
    fitting = Answer(f"{table.name}.history", paged=True)
    for version in answer["versions"]:
        if not fitting.add(version):
            return {"versions": fitting.rows, "compacted": False, "compact_revision": None,
                    "partial": True}
    return {**answer, "partial": False}
