"""Leases: grant, revoke and inspect them, and a ``Lease`` that keeps itself alive.

``Lease`` follows Go's ``clientv3`` semantics: the next keepalive goes out TTL/3 after each
answer, and the lease is declared lost locally once TTL has passed since the last keepalive that
etcd answered, even if etcd never says so (it may be unreachable). Loss is never silent: the
``lost`` Deferred fires and every ``on_lost`` callback runs, with the reason.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from .deferreds import LazyDeferred, started
from .errors import EtcdError, LeaseExpired, LeaseNotFound, LeaseNotGranted, classify
from .types import Header, _strip, to_int, unb64

if TYPE_CHECKING:
    from .client import Client

__all__ = ["Acquirable", "Acquiring", "Lease", "LeaseGrant", "LeaseInfo", "LeaseLost", "grant",
           "revoke", "time_to_live", "leases", "keep_alive_once", "check_ttl", "lease_id_of"]

_log = Logger()
LostCallback = Callable[[EtcdError], object]


class LeaseLost(LeaseExpired):
    """TTL passed without an answered keepalive, so the lease is taken as gone (etcd has expired
    it or will): whatever it guarded (keys, a lock, a leadership) must be given up."""


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    """Result of a grant: the lease's ID and the TTL etcd actually granted (at least 2 s)."""

    lease_id: int
    ttl: int
    header: Header


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """Result of time_to_live: remaining ``ttl`` (-1 once the lease is gone), ``granted_ttl``,
    and the keys attached to the lease (when asked for, namespace stripped)."""

    lease_id: int
    ttl: int
    granted_ttl: int
    header: Header
    keys: list[bytes] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return self.ttl >= 0


def check_ttl(ttl: Any) -> int:
    if isinstance(ttl, bool) or not isinstance(ttl, int):
        raise TypeError(f"ttl must be an int (seconds), not {type(ttl).__name__}")
    if ttl < 1:
        raise ValueError(f"ttl must be >= 1 s, not {ttl}")
    return ttl


def lease_id_of(lease: Any) -> int:
    """The ID of a ``Lease`` or of a plain int."""
    lease_id = getattr(lease, "lease_id", lease)
    if isinstance(lease_id, bool) or not isinstance(lease_id, int):
        raise TypeError(f"lease must be a Lease or an int ID, not {type(lease).__name__}")
    if lease_id < 1:
        raise ValueError(f"lease ID must be >= 1, not {lease_id}")
    return lease_id


# -- one request each ------------------------------------------------------------------------

async def grant(client: Client, ttl: int, lease_id: int | None = None,
                timeout: float | None = None) -> LeaseGrant:
    """Grant a lease; etcd picks the ID unless ``lease_id`` is given."""
    body: dict[str, Any] = {"TTL": check_ttl(ttl)}
    if lease_id is not None:
        body["ID"] = lease_id_of(lease_id)
    # Not idempotent: a resent grant with ID 0 would leak a second lease.
    reply = await client.transport.call("lease/grant", body, idempotent=False, timeout=timeout)
    if reply.get("error"):
        raise classify(400, {"message": reply["error"]})
    return LeaseGrant(to_int(reply.get("ID")), to_int(reply.get("TTL")),
                      Header.from_json(reply.get("header")))


async def revoke(client: Client, lease_id: int, timeout: float | None = None) -> Header:
    """Revoke a lease, deleting its keys; raises ``LeaseNotFound`` if it is already gone."""
    # Resending is safe: the lease ends up revoked either way (the resend may say not found).
    reply = await client.transport.call("lease/revoke", {"ID": lease_id_of(lease_id)},
                                        idempotent=True, timeout=timeout)
    return Header.from_json(reply.get("header"))


async def time_to_live(client: Client, lease_id: int, keys: bool = False,
                       timeout: float | None = None) -> LeaseInfo:
    """Remaining and granted TTL of a lease, and its keys if ``keys``; ttl is -1 once gone."""
    body: dict[str, Any] = {"ID": lease_id_of(lease_id)}
    if keys:
        body["keys"] = True
    reply = await client.transport.call("lease/timetolive", body, idempotent=True,
                                        timeout=timeout)
    return LeaseInfo(to_int(reply.get("ID")), to_int(reply.get("TTL")),
                     to_int(reply.get("grantedTTL")), Header.from_json(reply.get("header")),
                     [_strip(unb64(k), client.namespace) for k in reply.get("keys", ())])


async def leases(client: Client, timeout: float | None = None) -> list[int]:
    """The IDs of every lease the cluster holds (not only this client's)."""
    reply = await client.transport.call("lease/leases", {}, idempotent=True, timeout=timeout)
    return [to_int(item.get("ID")) for item in reply.get("leases", ())]


async def keep_alive_once(client: Client, lease_id: int,
                          timeout: float | None = None) -> tuple[int, Header]:
    """Renew a lease once; returns its fresh TTL, or raises ``LeaseExpired`` if it is gone."""
    # lease/keepalive is a stream, but over HTTP/1.1 the server answers once and ends it.
    reply = await client.transport.call("lease/keepalive", {"ID": lease_id}, idempotent=True,
                                        timeout=timeout)
    if "error" in reply:
        raise classify(0, reply)
    result = reply.get("result", reply)
    ttl = to_int(result.get("TTL"))
    if ttl <= 0:  # etcd omits TTL when the lease does not exist any more
        raise LeaseExpired(f"lease {lease_id:x} is gone (expired or revoked)", code=5,
                           status=404)
    return ttl, Header.from_json(result.get("header"))


# -- objects that are awaited or entered -----------------------------------------------------

class Acquirable:
    """Something acquired once (a granted lease, a held lock, a leadership) that callers either
    ``await`` (acquire, get it back) or use in ``async with`` (acquire, then release on exit).

    Concurrent awaits share one acquisition; cancelling the last waiter cancels it.
    """

    def __init__(self) -> None:
        self._held = False
        self._waiters: list[defer.Deferred[Any]] | None = None
        self._task: defer.Deferred[Any] | None = None

    async def _acquire(self) -> None:
        raise NotImplementedError

    async def _release(self) -> None:
        raise NotImplementedError

    def _check_usable(self) -> None:
        """Raise if this object cannot be (re)acquired."""

    def _entered(self) -> None:
        """Called once acquired by ``async with`` (a lease starts its keepalive here)."""

    def acquiring(self) -> Acquiring[Self]:
        """A Deferred of this object once acquired that is also an async context manager."""
        return Acquiring(self)

    def acquire(self) -> defer.Deferred[Self]:
        """A cancellable Deferred that fires with ``self`` once acquired."""
        try:
            self._check_usable()
        except Exception:
            return defer.fail()
        if self._held:
            return defer.succeed(self)
        waiter: defer.Deferred[Self] = defer.Deferred(self._cancel_waiter)
        if self._waiters is None:
            self._waiters = [waiter]
            self._task = defer.ensureDeferred(self._acquire())
            self._task.addBoth(self._acquired)
        else:
            self._waiters.append(waiter)
        return waiter

    def _cancel_waiter(self, waiter: defer.Deferred[Any]) -> None:
        if self._waiters is not None and waiter in self._waiters:
            self._waiters.remove(waiter)
            if not self._waiters and self._task is not None:
                self._task.cancel()

    def _acquired(self, result: Any) -> None:
        waiters, self._waiters, self._task = self._waiters or [], None, None
        self._held = not isinstance(result, Failure)
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(self)

    def __await__(self) -> Generator[Any, None, Self]:
        return self.acquire().__await__()

    async def __aenter__(self) -> Self:
        acquired = await self.acquire()
        self._entered()
        return acquired

    async def __aexit__(self, *exc_info: object) -> None:
        await self._release()


A = TypeVar("A", bound=Acquirable)


class Acquiring(LazyDeferred[A], Generic[A]):
    """What ``client.lease(ttl)`` and ``client.lock(name)`` return: a Deferred that fires with
    the granted lease (the held lock), so ``yield`` in ``inlineCallbacks`` and ``await`` both
    get a usable object, and an async context manager (``async with`` also releases it).

    The acquisition starts when the Deferred is first waited on (``yield``, ``await``,
    ``addCallback``, ``async with``); attributes of the object itself (``acquire()``, ``lost``,
    ...) are reachable through it.
    """

    def __init__(self, target: A) -> None:
        super().__init__()
        self.target = target

    def __repr__(self) -> str:
        return f"<Acquiring {self.target!r}>"

    def __getattr__(self, name: str) -> Any:
        # Deferred's own internals probe for missing attributes (``result``): never forward those.
        if name.startswith("_") or name == "result":
            raise AttributeError(name)
        return getattr(self.target, name)

    def _begin(self) -> defer.Deferred[A]:
        return self.target.acquire()

    async def __aenter__(self) -> A:
        acquired: A = await self
        acquired._entered()
        return acquired

    async def __aexit__(self, *exc_info: object) -> None:
        await self.target._release()


class Lease(Acquirable):
    """A lease that keeps itself alive in the background until revoked or lost.

    ``await client.lease(ttl)`` (or ``yield`` it) grants it, not kept alive unless
    ``keepalive=True`` (txaioetcd's lease: ``refresh()`` renews it); ``async with
    client.lease(ttl) as lease`` grants it, keeps it alive unless ``keepalive=False``, and revokes
    it on exit. ``lost`` fires (with a ``LeaseExpired``/``LeaseLost``) when etcd says it
    is gone or when TTL passed without an answered keepalive; it never fires after ``revoke()``.
    """

    def __init__(self, client: Client, ttl: int, lease_id: int | None = None, *,
                 keepalive: bool | None = None, on_lost: LostCallback | None = None,
                 timeout: float | None = None) -> None:
        super().__init__()
        self.client = client
        self.ttl = check_ttl(ttl)
        self.lease_id = lease_id_of(lease_id) if lease_id is not None else 0
        self.header = Header()
        self.lost: defer.Deferred[EtcdError] = defer.Deferred()
        self.lost_reason: EtcdError | None = None
        self.revoked = False
        # None: decided by use (``async with``: kept alive; awaited: not, as in txaioetcd).
        self._keepalive = keepalive
        self._timeout = timeout
        self._on_lost: list[LostCallback] = [on_lost] if on_lost is not None else []
        self._next_keepalive: Any = None  # IDelayedCall
        self._deadline: Any = None  # IDelayedCall
        self._in_flight: defer.Deferred[Any] | None = None

    def __repr__(self) -> str:
        state = "lost" if self.lost_reason else "revoked" if self.revoked else (
            "granted" if self._held else "not granted")
        return f"<Lease {self.lease_id:x} ttl={self.ttl} {state}>"

    @property
    def time_to_live(self) -> int:
        """The TTL etcd granted (txaioetcd's name)."""
        return self.ttl

    @property
    def alive(self) -> bool:
        """Granted, and neither revoked nor lost as far as this client knows. A deadline that
        has passed counts even before its timer ran: after a stall (a paused process, a busy
        reactor) I/O callbacks may run before the timer does."""
        if not self._held or self.revoked or self.lost_reason is not None:
            return False
        return self._deadline is None or self._deadline.getTime() > self._now()

    def add_lost_callback(self, callback: LostCallback) -> None:
        """Call ``callback(reason)`` when the lease is lost (at once if it already is)."""
        if self.lost_reason is not None:
            callback(self.lost_reason)
        else:
            self._on_lost.append(callback)

    def _entered(self) -> None:
        if self._keepalive is None:
            self._keepalive = True
            if self.alive:
                self._schedule_keepalive(self.ttl / 3)

    def _check_granted(self) -> None:
        self._check_usable()
        if not self._held:
            raise LeaseNotGranted(f"{self!r} is not granted yet: `lease = await "
                                  "client.lease(ttl)` (or `yield` it) before using it")

    def id_for_write(self) -> int:
        """The lease's ID for a write, or the reason a write must not use it (nothing sent)."""
        self._check_granted()
        if not self.alive:
            raise LeaseExpired(f"lease {self.lease_id:x} passed its TTL of {self.ttl} s "
                               "without a keepalive: it is gone", code=5, status=404)
        return self.lease_id

    def grant(self) -> defer.Deferred[Lease]:
        """Grant the lease (once) and start keeping it alive; fires with ``self``."""
        return self.acquire()

    def _check_usable(self) -> None:
        if self.lost_reason is not None:
            raise self.lost_reason
        if self.revoked:
            raise LeaseNotFound(f"lease {self.lease_id:x} was revoked", code=5, status=404)

    async def _acquire(self) -> None:
        sent_at = self._now()
        granted = await grant(self.client, self.ttl, self.lease_id or None, self._timeout)
        self.lease_id, self.ttl, self.header = granted.lease_id, granted.ttl, granted.header
        if self.revoked:  # revoke() was called while the grant was on its way
            await revoke(self.client, self.lease_id, self._timeout)
            raise LeaseNotFound(f"lease {self.lease_id:x} was revoked", code=5, status=404)
        self._renewed(sent_at, granted.ttl)

    async def _release(self) -> None:
        # Leaving ``async with``: a lease that is already gone needs no revoke.
        if self.alive:
            with contextlib.suppress(LeaseNotFound):
                await self.revoke()

    # -- txaioetcd's methods ----------------------------------------------------------------

    @started
    async def revoke(self) -> Header:
        """Revoke the lease: keepalives stop and etcd deletes its keys (also when not awaited)."""
        self._check_usable()
        self.revoked = True
        self._stop()
        if not self._held:
            return Header()
        return await revoke(self.client, self.lease_id, self._timeout)

    @started
    async def refresh(self, timeout: float | None = None) -> Header:
        """Send one keepalive now (also moves the local deadline); raises if the lease is gone."""
        self._check_granted()
        sent_at = self._now()
        try:
            ttl, header = await keep_alive_once(self.client, self.lease_id,
                                                timeout=timeout or self._timeout)
        except LeaseExpired as exc:
            self._declare_lost(exc)
            raise
        if self.alive:
            self._renewed(sent_at, ttl)
        return header

    @started
    async def info(self, keys: bool = False) -> LeaseInfo:
        """The lease's time_to_live answer; raises ``LeaseExpired`` once it is gone.

        A lease nobody keeps alive counts as gone once less than a second is left (etcd's TTL
        0), as txaioetcd reported it; a kept-alive one is renewed long before that.
        """
        self._check_granted()
        result = await time_to_live(self.client, self.lease_id, keys, self._timeout)
        if not result.alive or (result.ttl == 0 and not self._keepalive):
            error = LeaseExpired(f"lease {self.lease_id:x} is gone", code=5, status=404)
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

    # -- keepalive loop ---------------------------------------------------------------------

    def _now(self) -> float:
        return float(self.client.reactor.seconds())

    def _renewed(self, sent_at: float, ttl: int) -> None:
        """etcd restarted the lease's clock no earlier than ``sent_at``: move the deadline."""
        self.ttl = ttl
        self._cancel(self._deadline)
        # Counted from when the request was sent, not answered: etcd may have renewed at once.
        remaining = max(0.0, sent_at + ttl - self._now())
        self._deadline = self.client.reactor.callLater(remaining, self._deadline_passed)
        if self._keepalive:
            self._schedule_keepalive(ttl / 3)

    def _schedule_keepalive(self, delay: float) -> None:
        self._cancel(self._next_keepalive)
        self._next_keepalive = self.client.reactor.callLater(delay, self._send_keepalive)

    def _send_keepalive(self) -> None:
        self._next_keepalive = None
        sent_at = self._now()
        # Give up on one attempt in time to try again before the deadline.
        request = defer.ensureDeferred(keep_alive_once(self.client, self.lease_id,
                                                       timeout=max(1.0, self.ttl / 3)))
        self._in_flight = request
        request.addBoth(self._keepalive_answered, sent_at)

    def _keepalive_answered(self, result: Any, sent_at: float) -> None:
        self._in_flight = None
        if not self.alive:
            return  # revoked or lost meanwhile; a cancelled request ends here too
        if isinstance(result, Failure):
            if isinstance(result.value, LeaseExpired):
                self._declare_lost(result.value)
            else:
                # etcd unreachable or busy: try again soon; the deadline decides when to stop.
                _log.debug("keepalive of lease {lease:x} failed: {error}", lease=self.lease_id,
                           error=result.getErrorMessage())
                self._schedule_keepalive(min(0.5, self.ttl / 6))
            return
        ttl, _header = result
        self._renewed(sent_at, ttl)

    def _deadline_passed(self) -> None:
        self._deadline = None
        self._declare_lost(LeaseLost(
            f"lease {self.lease_id:x}: no keepalive answered within its TTL of {self.ttl} s",
            code=4, status=0))
        # Also ask etcd to drop it now, in case it still exists (e.g. a new etcd leader extended
        # it): its keys must not outlive our belief that they are gone. No use after the TTL.
        d = defer.ensureDeferred(revoke(self.client, self.lease_id, timeout=self.ttl))
        d.addErrback(lambda _: None)

    def _declare_lost(self, reason: EtcdError) -> None:
        if self.lost_reason is not None or self.revoked:
            return
        self.lost_reason = reason
        self._stop()
        callbacks, self._on_lost = self._on_lost, []
        for callback in callbacks:
            try:
                callback(reason)
            except Exception:  # noqa: BLE001 - one failing callback must not silence the rest
                _log.failure("on_lost callback of lease {lease:x} failed", lease=self.lease_id)
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
