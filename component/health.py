"""Whether the component's etcd answers, as the cluster it expects; what calls do meanwhile.

A component whose etcd is unreachable must not claim to serve: ``EtcdHealth`` probes etcd's
status (one short request) until it answers, and logs, while it does not, that it is waiting
for etcd, naming the endpoints and the cause. The component says "ready" only once etcd
answered as the expected cluster: the ``etcd.cluster_id`` configured, else the first cluster
that answered (a later answer from another cluster, e.g. endpoints now pointing at a fresh
etcd, counts as unreachable). It keeps probing while serving, so that a call made while etcd
is unreachable is refused at once with ``<prefix>.error.unavailable`` instead of hanging for
the client's timeout, and ``<prefix>.status`` says which state etcd is in and why.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import defer
from twisted.internet.task import deferLater
from twisted.logger import Logger

from procedures.errors import ProcedureError
from txetcd import AuthFailed, Client, PermissionDenied

from .config import RESERVED_SLOT

__all__ = ["EtcdHealth", "WAITING", "PROBE_INTERVAL", "RETRY_INTERVAL"]

WAITING = "etcd component waiting for etcd"  # what the log says, and `etcd-wamp run` repeats
PROBE_INTERVAL = 1.0  # seconds between two probes while etcd answers
RETRY_INTERVAL = 1.0  # ... while it does not
# Long enough for a refused connection to be retried and reported as refused, not as slow.
PROBE_TIMEOUT = 3.0
PROBE_KEY = RESERVED_SLOT.to_bytes(2, "big") + b"wamp/health"  # read, never written
REPEAT_WAITING = 30.0  # seconds after which an unchanged cause is logged again

log = Logger()


class EtcdHealth:
    """etcd's state as the component sees it: ``waiting`` (it never answered yet), ``ready``,
    or ``unreachable`` (it answered before); probed through ``probe``."""

    def __init__(self, probe: Client, endpoints: list[str], cluster_id: int | None,
                 clock: Any) -> None:
        self.probe = probe
        self.endpoints = list(endpoints)
        self.expected = cluster_id
        self.clock = clock
        self.state = "waiting"
        self.cause: str | None = None
        self.version: str | None = None
        self.since = time.time()  # when the current state began
        self.logged_at = 0.0  # when the cause was last logged (monotonic)
        self.waiters: list[defer.Deferred[None]] = []
        self.doubted = False  # the last probe failed while ready; one more decides
        self.probed: list[defer.Deferred[None]] = []  # waiting for the end of the next probe
        self.task: defer.Deferred[None] | None = None

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def start(self) -> None:
        """Probe from now on, until ``stop``."""
        self.task = defer.ensureDeferred(self.run())
        self.task.addErrback(lambda failure: failure.trap(defer.CancelledError))

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        for waiter in self.waiters + self.probed:
            waiter.cancel()
        self.waiters.clear()
        self.probed.clear()

    def when_ready(self) -> defer.Deferred[None]:
        """Fires once etcd answered as the expected cluster (at once if it has); each caller
        gets its own Deferred, so cancelling it cancels nothing else."""
        if self.ready:
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self.waiters.append(waiter)
        return waiter

    def when_probed(self) -> defer.Deferred[None]:
        """Fires once the next probe has ended, whatever it found."""
        waiter: defer.Deferred[None] = defer.Deferred()
        self.probed.append(waiter)
        return waiter

    def check(self) -> None:
        """Refuse a call at once while etcd is not known to answer."""
        if not self.ready:
            raise ProcedureError("unavailable", f"etcd at {', '.join(self.endpoints)} is "
                                 f"{self.state}: {self.cause}")

    def describe(self) -> dict[str, Any]:
        """The state for ``<prefix>.status``."""
        return {"state": self.state, "endpoints": self.endpoints, "cause": self.cause,
                "since": self.since, "version": self.version,
                "cluster_id": None if self.expected is None else f"{self.expected:x}"}

    async def run(self) -> None:
        while True:
            try:
                await self.check_once()
            except defer.CancelledError:
                raise
            except (AuthFailed, PermissionDenied) as exc:
                # etcd answers, and refuses the component's etcd user: calls pass through and
                # get etcd's refusal as <prefix>.error.forbidden, which says why.
                if not self.ready:
                    log.warn("etcd at {endpoints} answers but refuses the component: {exc}",
                             endpoints=self.where(), exc=exc)
                self.answered()
            except Exception as exc:  # noqa: BLE001 - the probe's failure is the state
                if self.ready and not self.doubted:
                    # One member down is not etcd down: the client moved on to the next
                    # endpoint, so ask once more at once before refusing calls.
                    self.doubted = True
                    continue
                self.failed(str(exc) or type(exc).__name__)
            self.doubted = False
            probed, self.probed = self.probed, []
            for waiter in probed:
                waiter.callback(None)
            await deferLater(self.clock, PROBE_INTERVAL if self.ready else RETRY_INTERVAL,
                             lambda: None)

    async def check_once(self) -> None:
        # A linearizable read in the namespace: what every call needs (a member without a
        # leader refuses it), and permitted to the component's etcd user, unlike the
        # maintenance status, which etcd 3.5 answers only to root.
        found = await self.probe.get(PROBE_KEY, count_only=True, timeout=PROBE_TIMEOUT)
        cluster = found.header.cluster_id
        if self.expected is not None and cluster != self.expected:
            self.failed(f"it answers as cluster {cluster:x}, not the expected {self.expected:x}")
            return
        self.expected = cluster
        if not self.ready:
            try:  # for the log and the status only
                self.version = (await self.probe.status(timeout=PROBE_TIMEOUT)).version
            except Exception:  # noqa: BLE001 - not root, or gone again: the next probe tells
                self.version = None
        self.answered()

    def failed(self, cause: str) -> None:
        now = time.monotonic()
        if self.ready:
            self.state, self.since, self.logged_at = "unreachable", time.time(), now
            log.warn("etcd at {endpoints} is unreachable: {cause}; calls are refused as "
                     "unavailable until it answers again", endpoints=self.where(), cause=cause)
        elif cause != self.cause or now - self.logged_at > REPEAT_WAITING:
            self.logged_at = now
            log.info("{waiting} at {endpoints}: {cause}", waiting=WAITING,
                     endpoints=self.where(), cause=cause)
        self.cause = cause

    def answered(self) -> None:
        if self.ready:
            return
        log.info("etcd at {endpoints} answers: cluster {cluster}, etcd {version}{again}",
                 endpoints=self.where(), version=self.version,
                 cluster="unknown" if self.expected is None else f"{self.expected:x}",
                 again=" again" if self.state == "unreachable" else "")
        self.state, self.cause, self.since = "ready", None, time.time()
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def where(self) -> str:
        return ", ".join(self.endpoints)
