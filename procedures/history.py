"""``<prefix>.<table>.history(key, limit, before_revision)``: a row's past from etcd's MVCC history.

etcd keeps every revision of a key until compaction; a watch started at an old revision replays
them (puts and deletes, in revision order). The replay stops at the row's current revision when
the row exists (every earlier event has then been delivered); for a row that is deleted now no
event marks the end of the replay, so it stops once etcd has been quiet for ``QUIET`` seconds
after its last event (etcd sends a replay in one response of up to 1000 revisions per key, so
the quiet wait only matters for keys with longer histories). Past the compaction point the
answer says so: ``compacted`` is true when the list is shorter than asked because older
versions are gone, and ``compact_revision`` is where history starts; never a silent short list.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

from twisted.internet import defer

from txetcd import WatchCompacted, WatchEvent

from .errors import ProcedureError

if TYPE_CHECKING:
    from .table import Table

__all__ = ["history", "MAX_HISTORY", "QUIET", "FIRST_WAIT", "DEADLINE"]

MAX_HISTORY = 1000
QUIET = 0.5  # seconds without events that end the replay of a row that is deleted now
FIRST_WAIT = 2.0  # the same before the first event: a replay starts within etcd's 100 ms sync
DEADLINE = 60.0  # a replay that takes longer is refused as unavailable


def _version(table: Table, event: Any) -> dict[str, Any]:
    kv = event.kv
    if getattr(event.type, "name", str(event.type)).upper() == "DELETE":
        return {"type": "delete", "revision": kv.mod_revision, "value": None, "version": 0,
                "created": 0}
    return {"type": "put", "revision": kv.mod_revision, "value": table.values.decode(kv.value),
            "version": kv.version, "created": kv.create_revision}


async def history(table: Table, key: Any, limit: Any = 10,
                  before_revision: Any = None) -> dict[str, Any]:
    """The row's versions before ``before_revision`` (default: all), newest first."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_HISTORY:
        raise ProcedureError("invalid_argument",
                             f"limit must be an int from 1 to {MAX_HISTORY}, not {limit!r}")
    if before_revision is not None and (isinstance(before_revision, bool) or not isinstance(
            before_revision, int) or before_revision < 1):
        raise ProcedureError("invalid_argument", f"before_revision must be a revision (an int "
                                                 f">= 1), not {before_revision!r}")
    row = table.etcd_key(key)
    client = table.client
    now = await client.get(row)
    end = now.header.revision if before_revision is None else min(before_revision - 1,
                                                                  now.header.revision)
    # The row's current revision: once the replay reaches it, everything before was sent.
    terminal = now.kvs[0].mod_revision if now.kvs else None
    events: collections.deque[Any] = collections.deque(maxlen=limit)
    compacted_at: int | None = None
    finished: defer.Deferred[None] = defer.Deferred()
    reactor = client.reactor
    timer = None

    def finish() -> None:
        if not finished.called:
            finished.callback(None)

    def quiet(seconds: float) -> None:
        nonlocal timer
        if timer is not None and timer.active():
            timer.cancel()
        if terminal is None:
            timer = reactor.callLater(seconds, finish)

    def on_item(item: Any) -> None:
        nonlocal compacted_at
        if finished.called:
            return
        if isinstance(item, WatchCompacted):
            compacted_at = item.compact_revision
            return
        assert isinstance(item, WatchEvent)
        if item.revision > end:
            finish()  # all of the row's events up to ``end`` came before this one
            return
        events.append(item)
        if terminal is not None and item.revision >= terminal:
            finish()
        else:
            quiet(QUIET)

    if end < 1:
        return {"versions": [], "compacted": False, "compact_revision": None}
    quiet(FIRST_WAIT)
    watch = client.watch(row, on_item, start_revision=1)

    def too_slow() -> None:
        if not finished.called:
            finished.errback(ProcedureError("unavailable", f"the history of {key!r:.80} did "
                                                           f"not arrive in {DEADLINE:.0f} s"))

    deadline = reactor.callLater(DEADLINE, too_slow)
    try:
        await finished
    finally:
        watch.cancel()
        for call in (timer, deadline):
            if call is not None and call.active():
                call.cancel()
    versions = [_version(table, e) for e in reversed(events)]
    if compacted_at is not None and len(versions) < limit:
        # The version live at the compaction point survives it, though no event replays it.
        found = await client.get(row, revision=compacted_at)
        if found.kvs and found.kvs[0].mod_revision < compacted_at and \
                found.kvs[0].mod_revision <= end and (not versions or found.kvs[0].mod_revision
                                                       < versions[-1]["revision"]):
            kv = found.kvs[0]
            versions.append({"type": "put", "revision": kv.mod_revision,
                             "value": table.values.decode(kv.value), "version": kv.version,
                             "created": kv.create_revision})
    return {"versions": versions,
            "compacted": compacted_at is not None and len(versions) < limit,
            "compact_revision": compacted_at}
