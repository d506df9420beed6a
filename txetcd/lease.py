"""Leases on Twisted: grant, revoke and inspect them, and a ``Lease`` that keeps itself alive.

``Lease`` follows Go's ``clientv3`` semantics (the rules live in ``txetcd.lease_core``, shared
with asyncio): the next keepalive goes out TTL/3 after each answer, and the lease is declared
lost locally once TTL has passed since the last keepalive that etcd answered, even if etcd never
says so (it may be unreachable). Loss is never silent: the ``lost`` Deferred fires and every
``on_lost`` callback runs, with the reason.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from .deferreds import Acquirable, Acquiring, started
from .errors import EtcdError, LeaseExpired, LeaseNotFound
from .lease_core import (
    Caller,
    LeaseGrant,
    LeaseInfo,
    LeaseLost,
    LeaseState,
    check_ttl,
    grant,
    keep_alive_once,
    lease_id_of,
    leases,
    revoke,
    time_to_live,
)
from .types import Header

__all__ = ["Acquirable", "Acquiring", "Lease", "LeaseGrant", "LeaseHost", "LeaseInfo",
           "LeaseLost", "grant", "revoke", "time_to_live", "leases", "keep_alive_once",
           "check_ttl", "lease_id_of"]

_log = Logger()
LostCallback = Callable[[EtcdError], object]


class LeaseHost(Protocol):
    """What a Twisted ``Lease`` needs from its client: requests, the namespace, the reactor."""

    transport: Caller
    namespace: bytes
    reactor: Any


class Lease(Acquirable):
    """A lease that keeps itself alive in the background until revoked or lost.

    ``await client.lease(ttl)`` (or ``yield`` it) grants it, not kept alive unless
    ``keepalive=True`` (txaioetcd's lease: ``refresh()`` renews it); ``async with
    client.lease(ttl) as lease`` grants it, keeps it alive unless ``keepalive=False``, and revokes
    it on exit. ``lost`` fires (with a ``LeaseExpired``/``LeaseLost``) when etcd says it
    is gone or when TTL passed without an answered keepalive; it never fires after ``revoke()``.
    """

    def __init__(self, client: LeaseHost, ttl: int, lease_id: int | None = None, *,
                 keepalive: bool | None = None, on_lost: LostCallback | None = None,
                 timeout: float | None = None) -> None:
        super().__init__()
        self.client = client
        self.state = LeaseState(ttl, lease_id, keepalive)
        self.lost: defer.Deferred[EtcdError] = defer.Deferred()
        self._transport = client.transport
        self._reactor = client.reactor
        self._timeout = timeout
        self._on_lost: list[LostCallback] = [on_lost] if on_lost is not None else []
        self._next_keepalive: Any = None  # IDelayedCall
        self._deadline: Any = None  # IDelayedCall
        self._in_flight: defer.Deferred[Any] | None = None

    def __repr__(self) -> str:
        return repr(self.state)

    # The state's fields, under the names txetcd has always had.
    lease_id = property(lambda self: self.state.lease_id)
    ttl = property(lambda self: self.state.ttl)
    header = property(lambda self: self.state.header)
    lost_reason = property(lambda self: self.state.lost_reason)
    revoked = property(lambda self: self.state.phase.name == "REVOKED")

    @property
    def time_to_live(self) -> int:
        """The TTL etcd granted (txaioetcd's name)."""
        return self.state.ttl

    @property
    def alive(self) -> bool:
        """Granted, and neither revoked nor lost as far as this client knows (a passed deadline
        counts even before its timer ran)."""
        return self.state.alive(self._now())

    def add_lost_callback(self, callback: LostCallback) -> None:
        """Call ``callback(reason)`` when the lease is lost (at once if it already is)."""
        if self.state.lost_reason is not None:
            callback(self.state.lost_reason)
        else:
            self._on_lost.append(callback)

    def _entered(self) -> None:
        self._schedule_keepalive(self.state.entered(self._now()))

    def id_for_write(self) -> int:
        """The lease's ID for a write, or the reason a write must not use it (nothing sent)."""
        return self.state.id_for_write(self._now())

    def grant(self) -> defer.Deferred[Lease]:
        """Grant the lease (once) and start keeping it alive; fires with ``self``."""
        return self.acquire()

    def _check_usable(self) -> None:
        self.state.check_usable()

    async def _acquire(self) -> None:
        sent_at = self._now()
        state = self.state
        granted = await grant(self._transport, state.ttl, state.lease_id or None, self._timeout)
        try:
            delay = state.granted(granted, sent_at, self._now())
        except LeaseNotFound:  # revoke() was called while the grant was on its way
            await revoke(self._transport, granted.lease_id, self._timeout)
            raise
        self._arm_deadline()
        self._schedule_keepalive(delay)

    async def _release(self) -> None:
        # Leaving ``async with``: a lease that is already gone needs no revoke.
        if self.alive:
            with contextlib.suppress(LeaseNotFound):
                await self.revoke()

    # -- txaioetcd's methods ----------------------------------------------------------------

    @started
    async def revoke(self) -> Header:
        """Revoke the lease: keepalives stop and etcd deletes its keys (also when not awaited)."""
        was_granted = self.state.revoke()
        self._stop()
        if not was_granted:
            return Header()
        return await revoke(self._transport, self.state.lease_id, self._timeout)

    @started
    async def refresh(self, timeout: float | None = None) -> Header:
        """Send one keepalive now (also moves the local deadline); raises if the lease is gone."""
        self.state.check_granted()
        sent_at = self._now()
        try:
            ttl, header = await keep_alive_once(self._transport, self.state.lease_id,
                                                timeout=timeout or self._timeout)
        except EtcdError as exc:
            if self.state.keepalive_failed(exc) is None:
                self._declare_lost(exc)
            raise
        if self.alive:
            self._renewed(sent_at, ttl)
        return header

    @started
    async def info(self, keys: bool = False) -> LeaseInfo:
        """The lease's time_to_live answer; raises ``LeaseExpired`` once it is gone."""
        self.state.check_granted()
        result = await time_to_live(self._transport, self.client.namespace, self.state.lease_id,
                                    keys, self._timeout)
        if self.state.info_says_gone(result):
            error = LeaseExpired(f"lease {self.state.lease_id:x} is gone", code=5, status=404)
            self._declare_lost(error)
            raise error
        return result

    @started
    async def remaining(self) -> int:
        """Seconds until the lease expires unless kept alive."""
        return (await self.info()).ttl

    @started
    async def keys(self) -> list[bytes]:
        """The keys attached to the lease (namespace stripped)."""
        return (await self.info(keys=True)).keys

    # -- keepalive loop: the timers and requests LeaseState asks for -----------------------

    def _now(self) -> float:
        return float(self._reactor.seconds())

    def _renewed(self, sent_at: float, ttl: int) -> None:
        delay = self.state.renewed(sent_at, ttl, self._now())
        self._arm_deadline()
        self._schedule_keepalive(delay)

    def _arm_deadline(self) -> None:
        self._cancel(self._deadline)
        self._deadline = self._reactor.callLater(self.state.time_left(self._now()),
                                                 self._deadline_passed)

    def _schedule_keepalive(self, delay: float | None) -> None:
        if delay is None:
            return
        self._cancel(self._next_keepalive)
        self._next_keepalive = self._reactor.callLater(delay, self._send_keepalive)

    def _send_keepalive(self) -> None:
        self._next_keepalive = None
        sent_at = self._now()
        request = defer.ensureDeferred(keep_alive_once(
            self._transport, self.state.lease_id, timeout=self.state.attempt_timeout))
        self._in_flight = request
        request.addBoth(self._keepalive_answered, sent_at)

    def _keepalive_answered(self, result: Any, sent_at: float) -> None:
        self._in_flight = None
        if not self.alive:
            return  # revoked or lost meanwhile; a cancelled request ends here too
        if not isinstance(result, Failure):
            self._renewed(sent_at, result[0])
            return
        retry = self.state.keepalive_failed(result.value)
        if retry is None:
            self._declare_lost(result.value)
            return
        # etcd unreachable or busy: try again soon; the deadline decides when to stop.
        _log.debug("keepalive of lease {lease:x} failed: {error}", lease=self.state.lease_id,
                   error=result.getErrorMessage())
        self._schedule_keepalive(retry)

    def _deadline_passed(self) -> None:
        self._deadline = None
        self._declare_lost(self.state.deadline_passed())
        # Also ask etcd to drop it now, in case it still exists (e.g. a new etcd leader extended
        # it): its keys must not outlive our belief that they are gone. No use after the TTL.
        d = defer.ensureDeferred(revoke(self._transport, self.state.lease_id,
                                        timeout=self.state.ttl))
        d.addErrback(lambda _: None)

    def _declare_lost(self, reason: EtcdError) -> None:
        if not self.state.lose(reason):
            return
        self._stop()
        callbacks, self._on_lost = self._on_lost, []
        for callback in callbacks:
            try:
                callback(reason)
            except Exception:  # noqa: BLE001 - one failing callback must not silence the rest
                _log.failure("on_lost callback of lease {lease:x} failed",
                             lease=self.state.lease_id)
        self.lost.callback(reason)

    def close(self) -> None:
        """Stop keeping the lease alive, without revoking it (its client is closing)."""
        self._stop()

    def _stop(self) -> None:
        self._cancel(self._next_keepalive)
        self._cancel(self._deadline)
        self._next_keepalive = self._deadline = None
        if self._in_flight is not None:
            self._in_flight.cancel()

    @staticmethod
    def _cancel(call: Any) -> None:
        if call is not None and call.active():
            call.cancel()
