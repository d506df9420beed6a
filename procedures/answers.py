"""Answers bounded in bytes: what one scan or history result may carry through the router.

Crossbar's transports and autobahn's rawsocket refuse a message above 16 MiB (``max_message_size``,
the default of every transport and the rawsocket protocol's ceiling). Past it the component's
result never leaves (autobahn drops it, and its error reply, which quotes the result, is too big
as well), so the caller would wait forever. So every answer is bounded by an estimate of its
size on the costliest serializer (``payload_size(wire=True)``):

* a progressive result comes in chunks of at most ``CHUNK_ROWS`` rows (the first one
  ``FIRST_CHUNK_ROWS``, so the first rows show at once) and ``CHUNK_BYTES``;
* a plain answer that would pass ``ANSWER_BYTES`` is refused with ``too_large`` (nothing is
  sent), telling the caller to page or ask for progressive results;
* a page (``page=True``) ends early at ``ANSWER_BYTES`` and says so (``partial``), with
  ``next_after`` where to go on.

One row always fits (etcd keeps at most 1.5 MiB a value, at most 9 MiB on the wire).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable
from typing import Any, TypeVar

from .errors import ProcedureError
from .payload import payload_size

__all__ = ["Answer", "ANSWER_BYTES", "CHUNK_BYTES", "CHUNK_ROWS", "FIRST_CHUNK_ROWS",
           "TOO_LARGE_ADVICE", "Filled", "fill"]

T = TypeVar("T")

ANSWER_BYTES = 8 << 20  # half the transports' 16 MiB: room for the estimate's slack
CHUNK_BYTES = 1 << 20  # small messages keep the router responsive to everyone else
# Each chunk costs the component, the router and the caller a message whatever its rows: a
# scan of 100-byte rows in 100-row chunks spent about a third of its time on messages.
FIRST_CHUNK_ROWS = 100
CHUNK_ROWS = 1000
TOO_LARGE_ADVICE = ("page through it (page=True, then after=<next_after>) or ask for "
                    "progressive results")


class Answer:
    """The rows of one answer as they come: gathered within ``budget`` bytes, or (with
    ``progress``) delivered in bounded chunks."""

    def __init__(self, what: str, progress: Callable[[list[Any]], None] | None = None,
                 paged: bool = False, budget: int = ANSWER_BYTES,
                 chunk_bytes: int = CHUNK_BYTES, chunk_rows: int = CHUNK_ROWS) -> None:
        self.what = what
        self.progress = progress
        self.chunks = 0  # progressive chunks delivered so far
        self.paged = paged
        self.budget = budget
        self.chunk_bytes = chunk_bytes
        self.chunk_rows = chunk_rows
        self.rows: list[Any] = []  # what the final result carries (nothing with progress)
        self.size = 0
        self.partial = False  # a page ended early by bytes
        self._chunk: list[Any] = []
        self._chunk_size = 0

    def add(self, row: Any, size: int | None = None) -> bool:
        """Take one more row (of ``size`` on the wire, when already known); False (row not
        taken) when it does not fit a page any more. Raises ``too_large`` when it does not fit
        a plain answer."""
        if size is None:
            size = payload_size(row, wire=True)
        if self.progress is not None:
            rows = self.chunk_rows if self.chunks else min(self.chunk_rows, FIRST_CHUNK_ROWS)
            if self._chunk and (len(self._chunk) >= rows
                                or self._chunk_size + size > self.chunk_bytes):
                self.flush()
            self._chunk.append(row)
            self._chunk_size += size
            return True
        if self.rows and self.size + size > self.budget:
            if not self.paged:
                raise ProcedureError("too_large", f"{self.what}: the answer would pass "
                                                  f"{self.budget} bytes after {len(self.rows)} "
                                                  f"rows; {TOO_LARGE_ADVICE}")
            self.partial = True
            return False
        self.rows.append(row)
        self.size += size
        return True

    def flush(self) -> None:
        """Deliver the rows still held back (progressive results only)."""
        if self.progress is not None and self._chunk:
            chunk, self._chunk, self._chunk_size = self._chunk, [], 0
            self.chunks += 1
            self.progress(chunk)


class Filled:
    """How ``fill`` ended: whether rows were left over (``more``), and the last source item
    taken and its row (None when none was)."""

    __slots__ = ("more", "item", "row")

    def __init__(self, more: bool, item: Any, row: Any) -> None:
        self.more = more
        self.item = item
        self.row = row


async def fill(answer: Answer, source: AsyncIterable[T],
               sized_row: Callable[[T], tuple[Any, int]], limit: int,
               turn: Callable[[], Awaitable[None]]) -> Filled:
    """Add the rows of ``source`` (each made and sized on the wire by ``sized_row``) to
    ``answer`` until ``limit`` rows or a full page, then flush it. Every scan delivers its
    rows here: after each progressive chunk the event loop gets a ``turn``, so the chunk
    leaves for the router (and a page requested ahead leaves for etcd) while the next rows
    are made, rather than all of a page's chunks at once after it."""
    taken = 0
    item: Any = None
    row: Any = None
    more = False
    chunks = answer.chunks
    async for next_item in source:
        if taken == limit:
            more = True
            break
        next_row, size = sized_row(next_item)
        if not answer.add(next_row, size):
            more = True
            break
        taken += 1
        item, row = next_item, next_row
        if answer.chunks != chunks:
            chunks = answer.chunks
            await turn()
    answer.flush()
    return Filled(more, item, row)
