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
from typing import TypeVar

from twisted.internet import defer

from procedures.errors import ProcedureError

__all__ = ["Admission", "Limits", "MAX_INFLIGHT_BYTES", "MAX_SCANS", "MAX_QUEUED_SCANS"]

T = TypeVar("T")

MAX_INFLIGHT_BYTES = 32 << 20  # bytes of call arguments being served at once
MAX_SCANS = 8  # scans paging through etcd at once
MAX_QUEUED_SCANS = 1000  # scans waiting for one of those places

class Limits:
    """The component's admission control, shared by all its procedures."""

    def __init__(self, max_inflight_bytes: int = MAX_INFLIGHT_BYTES, max_scans: int = MAX_SCANS,
                 max_queued_scans: int = MAX_QUEUED_SCANS) -> None:
        self.max_inflight_bytes = max_inflight_bytes
        self.max_queued_scans = max_queued_scans
        self.inflight_bytes = 0
        self.inflight_calls = 0
        self.scans = defer.DeferredSemaphore(max_scans)
        self.scans_running = 0
        self.most_scans_running = 0  # since the component joined: shows the limit holds

    def admit(self, size: int) -> Admission:
        """Count a call's arguments (``size`` bytes) as in flight while the block runs, or
        refuse it with ``busy`` if that would pass ``max_inflight_bytes``."""
        if self.inflight_calls and self.inflight_bytes + size > self.max_inflight_bytes:
            raise ProcedureError("busy", f"this component is serving {self.inflight_bytes} bytes "
                                         f"of calls (limit {self.max_inflight_bytes}); retry "
                                         "later")
        self.inflight_bytes += size
        self.inflight_calls += 1
        return Admission(self, size)

    @contextlib.asynccontextmanager
    async def scan(self) -> AsyncIterator[None]:
        """Hold one of the scan places while the block runs; wait in line for one, or refuse
        with ``busy`` when the line is full."""
        if not self.scans.tokens and len(self.scans.waiting) >= self.max_queued_scans:
            raise ProcedureError("busy", f"{self.scans.limit} scans are running and "
                                         f"{len(self.scans.waiting)} are waiting; retry later")
        await self.scans.acquire()
        self.scans_running += 1
        self.most_scans_running = max(self.most_scans_running, self.scans_running)
        try:
            yield
        finally:
            self.scans_running -= 1
            self.scans.release()

    def scan_status(self) -> dict[str, int]:
        """Scans paging now, waiting now, and the most that ever paged at once."""
        return {"running": self.scans_running, "waiting": len(self.scans.waiting),
                "most_running": self.most_scans_running, "max_scans": self.scans.limit,
                "max_queued_scans": self.max_queued_scans}


class Admission:
    """One admitted call's share of ``Limits``, given back when its block ends. (A class, not
    ``@contextmanager``: it wraps every call the component serves.)"""

    __slots__ = ("limits", "size")

    def __init__(self, limits: Limits, size: int) -> None:
        self.limits = limits
        self.size = size

    def __enter__(self) -> int:
        return self.size

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self, result: T | None = None) -> T | None:
        """Give the call's share back; passes ``result`` on (a Deferred's callback)."""
        self.limits.inflight_bytes -= self.size
        self.limits.inflight_calls -= 1
        return result
