"""Leases on either event loop: a ``Lease`` that keeps itself alive, and knows when it is lost.

``Lease`` follows Go's ``clientv3`` semantics (the rules and the state live in the sans-IO
``txetcd.lease_core``; this module only runs the timers and requests they ask for, through the
client's driver): the next keepalive goes out TTL/3 after each answer, and the lease is declared
lost locally once TTL has passed since the last keepalive that etcd answered, even if etcd never
says so (it may be unreachable). Loss is never silent: the ``lost`` future resolves and every
``on_lost`` callback runs, with the reason.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from .acquirable import Acquirable
from .errors import EtcdError, LeaseNotFound
from .interface import Env, HasEnv, env_of
from .lease_core import (
    LeaseGrant,
    LeaseInfo,
    LeaseLost,
    LeaseState,
    Phase,
    check_ttl,
    gone,
    grant,
    keep_alive_once,
    lease_id_of,
    leases,
    revoke,
    time_to_live,
)
from .types import Header

__all__ = ["Lease", "LeaseGrant", "LeaseInfo", "LeaseLost", "grant", "revoke", "time_to_live",
           "leases", "keep_alive_once", "check_ttl", "lease_id_of"]

_log = logging.getLogger(__name__)
LostCallback = Callable[[EtcdError], object]


class Lease(Acquirable):
    """A lease that keeps itself alive in the background until revoked or lost.

    ``await client.lease(ttl)`` (or ``yield`` it on Twisted) grants it, not kept alive unless
    ``keepalive=True`` (txaioetcd's lease: ``refresh()`` renews it); ``async with
    client.lease(ttl) as lease`` grants it, keeps it alive unless ``keepalive=False``, and revokes
    it on exit. ``lost`` resolves (with a ``LeaseExpired``/``LeaseLost``) when etcd says it is
    gone or when TTL passed without an answered keepalive; never after ``revoke()``. Methods that
    talk to etcd return the loop's future and take effect whether or not they are awaited.
    """

    def __init__(self, env: Env | HasEnv, ttl: int, lease_id: int | None = None, *,
                 keepalive: bool | None = None, on_lost: LostCallback | None = None,
                 timeout: float | None = None) -> None:
        env = env_of(env)  # a client (``Lease(client, ttl)``) or its Env
        super().__init__(env.driver)
        self.env = env
        self.state = LeaseState(ttl, lease_id, keepalive)
        self.lost: Any = env.driver.future()
        self._transport = env.transport
        self._timeout = timeout
        self._on_lost: list[LostCallback] = [on_lost] if on_lost is not None else []
        self._next_keepalive: Any = None  # Timer
        self._deadline: Any = None  # Timer
        self._in_flight: Any = None

    def __repr__(self) -> str:
        return repr(self.state)

    @property
    def lease_id(self) -> int:
        return self.state.lease_id

    @property
    def ttl(self) -> int:
        return self.state.ttl

    time_to_live = ttl  # txaioetcd's name

    @property
    def header(self) -> Header:
        return self.state.header

    @property
    def lost_reason(self) -> EtcdError | None:
        return self.state.lost_reason

    @property
    def revoked(self) -> bool:
        return self.state.phase is Phase.REVOKED

    @property
    def alive(self) -> bool:
        """Granted, and neither revoked nor lost as far as this client knows (a passed deadline
        counts even before its timer ran)."""
        return self.state.alive(self._driver.now())

    def add_lost_callback(self, callback: LostCallback) -> None:
        """Call ``callback(reason)`` when the lease is lost (at once if it already is)."""
        if self.state.lost_reason is not None:
            callback(self.state.lost_reason)
        else:
            self._on_lost.append(callback)

    def id_for_write(self) -> int:
        """The lease's ID for a write, or the reason a write must not use it (nothing sent)."""
        return self.state.id_for_write(self._driver.now())

    def grant(self) -> Any:
        """Grant the lease (once); resolves to ``self``."""
        return self.acquire()

    # -- Acquirable ------------------------------------------------------------------------

    def _check_usable(self) -> None:
        self.state.check_usable()

    def _entered(self) -> None:
        self._schedule_keepalive(self.state.entered(self._driver.now()))

    async def _acquire(self) -> None:
        sent_at = self._driver.now()
        state = self.state
        granted = await grant(self._transport, state.ttl, state.lease_id or None, self._timeout)
        try:
            delay = state.granted(granted, sent_at, self._driver.now())
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

    def revoke(self) -> Any:
        """Revoke the lease: keepalives stop and etcd deletes its keys (also when not awaited)."""
        return self._driver.spawn(self._revoke())

    async def _revoke(self) -> Header:
        was_granted = self.state.revoke()
        self._stop()
        if not was_granted:
            return Header()
        return await revoke(self._transport, self.state.lease_id, self._timeout)

    def refresh(self, timeout: float | None = None) -> Any:
        """Send one keepalive now (also moves the local deadline); raises if the lease is gone."""
        return self._driver.spawn(self._refresh(timeout))

    async def _refresh(self, timeout: float | None) -> Header:
        self.state.check_granted()
        sent_at = self._driver.now()
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

    def info(self, keys: bool = False) -> Any:
        """The lease's time_to_live answer; raises ``LeaseExpired`` once it is gone."""
        return self._driver.spawn(self._info(keys))

    async def _info(self, keys: bool) -> LeaseInfo:
        self.state.check_granted()
        result = await time_to_live(self._transport, self.env.namespace, self.state.lease_id,
                                    keys, self._timeout)
        if self.state.info_says_gone(result):
            error = gone(self.state.lease_id, "is gone")
            self._declare_lost(error)
            raise error
        return result

    def remaining(self) -> Any:
        """Seconds until the lease expires unless kept alive."""
        return self._driver.spawn(self._remaining())

    async def _remaining(self) -> int:
        return (await self._info(False)).ttl

    def keys(self) -> Any:
        """The keys attached to the lease (namespace stripped)."""
        return self._driver.spawn(self._keys())

    async def _keys(self) -> list[bytes]:
        return (await self._info(True)).keys

    # -- keepalive loop: the timers and requests LeaseState asks for -----------------------

    def _renewed(self, sent_at: float, ttl: int) -> None:
        delay = self.state.renewed(sent_at, ttl, self._driver.now())
        self._arm_deadline()
        self._schedule_keepalive(delay)

    def _arm_deadline(self) -> None:
        _cancel(self._deadline)
        self._deadline = self._driver.call_later(self.state.time_left(self._driver.now()),
                                                 self._deadline_passed)

    def _schedule_keepalive(self, delay: float | None) -> None:
        if delay is None:
            return
        _cancel(self._next_keepalive)
        self._next_keepalive = self._driver.call_later(delay, self._send_keepalive)

    def _send_keepalive(self) -> None:
        self._next_keepalive = None
        self._in_flight = self._driver.spawn(self._keepalive())

    async def _keepalive(self) -> None:
        sent_at = self._driver.now()
        try:
            ttl, _header = await keep_alive_once(self._transport, self.state.lease_id,
                                                 timeout=self.state.attempt_timeout)
        except BaseException as exc:  # noqa: BLE001 - sorted below; cancellation ends here too
            self._in_flight = None
            self._keepalive_failed(exc)
            return
        self._in_flight = None
        if self.alive:
            self._renewed(sent_at, ttl)

    def _keepalive_failed(self, error: BaseException) -> None:
        if not self.alive or self._driver.is_cancelled(error):
            return  # revoked, lost or closed meanwhile
        retry = self.state.keepalive_failed(error)
        if retry is None and isinstance(error, EtcdError):
            self._declare_lost(error)
            return
        # etcd unreachable or busy: try again soon; the deadline decides when to stop.
        _log.debug("keepalive of lease %x failed: %s", self.state.lease_id, error)
        self._schedule_keepalive(retry or self.state.retry_delay)

    def _deadline_passed(self) -> None:
        self._deadline = None
        self._declare_lost(self.state.deadline_passed())
        # Also ask etcd to drop it now, in case it still exists (e.g. a new etcd leader extended
        # it): its keys must not outlive our belief that they are gone. No use after the TTL.
        self._driver.spawn(self._quiet_revoke())

    async def _quiet_revoke(self) -> None:
        with contextlib.suppress(Exception):
            await revoke(self._transport, self.state.lease_id, timeout=self.state.ttl)

    def _declare_lost(self, reason: EtcdError) -> None:
        if not self.state.lose(reason):
            return
        self._stop()
        callbacks, self._on_lost = self._on_lost, []
        for callback in callbacks:
            try:
                callback(reason)
            except Exception:  # noqa: BLE001 - one failing callback must not silence the rest
                _log.exception("on_lost callback of lease %x failed", self.state.lease_id)
        self._driver.resolve(self.lost, reason)

    def close(self) -> None:
        """Stop keeping the lease alive, without revoking it (its client is closing)."""
        self._stop()

    def _stop(self) -> None:
        _cancel(self._next_keepalive)
        _cancel(self._deadline)
        self._next_keepalive = self._deadline = None
        if self._in_flight is not None:
            in_flight, self._in_flight = self._in_flight, None
            in_flight.cancel()


def _cancel(timer: Any) -> None:
    if timer is not None and timer.active():
        timer.cancel()
