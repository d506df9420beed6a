"""What one component instance takes on at once: bytes of calls in flight, and scans.

Without a bound, a flood of big writes holds every payload (and the copies made on the way to
etcd) in memory at once, and a crowd of scans queues page requests in the etcd client until
they time out as ``unavailable``. Here a call that would exceed a limit is refused at once with
``<prefix>.error.busy``: nothing was written, and the caller may retry later. A call that finds
nothing else in flight is always admitted, so a limit smaller than one call never blocks it.
Scans beyond ``max_scans`` wait in line (``max_queued_scans`` of them) instead of competing
for etcd connections; a scan cancelled while waiting leaves the line at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from twisted.internet import defer

from procedures.errors import ProcedureError

__all__ = ["Limits", "payload_size", "MAX_INFLIGHT_BYTES", "MAX_SCANS", "MAX_QUEUED_SCANS"]

MAX_INFLIGHT_BYTES = 32 << 20  # bytes of call arguments being served at once
MAX_SCANS = 8  # scans paging through etcd at once
MAX_QUEUED_SCANS = 1000  # scans waiting for one of those places

_ITEM = 8  # what a container slot or a number counts for: the payload's shape has a cost too


def payload_size(*payloads: Any, stop: int | None = None) -> int:
    """About how many bytes ``payloads`` take on the wire: strings and bytes by length, plus a
    little per item. Iterative (any nesting depth), and it stops counting past ``stop``."""
    total = 0
    pending: list[Any] = list(payloads)
    while pending:
        item = pending.pop()
        if isinstance(item, (str, bytes, bytearray)):
            total += len(item) + _ITEM
        elif isinstance(item, dict):
            total += _ITEM * (1 + len(item))
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)):
            total += _ITEM * (1 + len(item))
            pending.extend(item)
        else:
            total += _ITEM
        if stop is not None and total > stop:
            break
    return total


class Limits:
    """The component's admission control, shared by all its procedures."""

    def __init__(self, max_inflight_bytes: int = MAX_INFLIGHT_BYTES, max_scans: int = MAX_SCANS,
                 max_queued_scans: int = MAX_QUEUED_SCANS) -> None:
        self.max_inflight_bytes = max_inflight_bytes
        self.max_queued_scans = max_queued_scans
        self.inflight_bytes = 0
        self.inflight_calls = 0
        self.scans = defer.DeferredSemaphore(max_scans)

    @contextlib.contextmanager
    def admit(self, *payloads: Any) -> Any:
        """Count a call's arguments as in flight while the block runs, or refuse it with
        ``busy`` if that would pass ``max_inflight_bytes``."""
        size = payload_size(*payloads, stop=self.max_inflight_bytes)
        if self.inflight_calls and self.inflight_bytes + size > self.max_inflight_bytes:
            raise ProcedureError("busy", f"this component is serving {self.inflight_bytes} bytes "
                                         f"of calls (limit {self.max_inflight_bytes}); retry "
                                         "later")
        self.inflight_bytes += size
        self.inflight_calls += 1
        try:
            yield size
        finally:
            self.inflight_bytes -= size
            self.inflight_calls -= 1

    @contextlib.asynccontextmanager
    async def scan(self) -> AsyncIterator[None]:
        """Hold one of the scan places while the block runs; wait in line for one, or refuse
        with ``busy`` when the line is full."""
        if not self.scans.tokens and len(self.scans.waiting) >= self.max_queued_scans:
            raise ProcedureError("busy", f"{self.scans.limit} scans are running and "
                                         f"{len(self.scans.waiting)} are waiting; retry later")
        await self.scans.acquire()
        try:
            yield
        finally:
            self.scans.release()
