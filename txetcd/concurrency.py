"""Locks and leader elections on etcd's v3lock and v3election services (Go ``concurrency``).

Each lock or campaign runs on a session lease of its own, kept alive by ``Lease``; when that
lease is lost the holder's ``lost`` Deferred fires, because etcd has deleted (or will delete)
the lock or leader key. Lock and campaign requests block on the server until they succeed, so
they run without a deadline unless given one, and cancelling them closes their connection and
revokes the session lease (the pending key would otherwise wait in line until the lease died).

A lock alone does not guarantee mutual exclusion: a holder may stall (GC, swap, a partition)
past its lease and keep acting while another process holds the lock. Guard every write with
the lock key, e.g. ``CompCreated(lock.key, "==", lock.fencing_token)`` in the write's txn, or
hand the fencing token to the storage that must reject stale holders.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

from twisted.internet import defer
from twisted.python.failure import Failure

from .deferreds import started
from .errors import EtcdError, KeyNotFound, LeaseExpired, LeaseNotFound, LockNotHeld
from .lease import Acquirable, Lease, check_ttl
from .stream import Stream
from .types import Header, KeyValue, _strip, b64, to_int, unb64

if TYPE_CHECKING:
    from .client import Client

__all__ = ["Lock", "Election", "Leadership", "LeaderKey", "LeaderObserver", "NotLeader"]

DEFAULT_SESSION_TTL = 60  # Go's concurrency.NewSession default


class NotLeader(EtcdError):
    """The leadership was lost (its key is gone), so it can no longer proclaim."""


def _check_name(name: Any) -> bytes:
    if not isinstance(name, bytes):
        raise TypeError(f"name must be bytes, not {type(name).__name__}")
    if not name:
        raise ValueError("name must not be empty")
    return name


class _Session(Acquirable):
    """What a lock and a leadership share: a session lease, a blocking request made with it,
    the ``lost`` signal and the clean-up when the request fails or is cancelled."""

    def __init__(self, client: Client, name: bytes, ttl: int, timeout: float | None) -> None:
        super().__init__()
        self.client = client
        self.name = _check_name(name)
        self.ttl = check_ttl(ttl)
        if timeout is not None and (isinstance(timeout, bool) or timeout <= 0):
            raise ValueError(f"timeout must be > 0 seconds or None, not {timeout!r}")
        self.timeout = timeout
        self.lease: Lease | None = None
        self.header = Header()
        self.lost: defer.Deferred[EtcdError] = defer.Deferred()

    @property
    def alive(self) -> bool:
        """Held, and its lease alive as far as this client knows (a passed deadline included):
        what to check right before an action the lock or the leadership guards."""
        return (self._held and not self.lost.called and self.lease is not None
                and self.lease.alive)

    def _check_usable(self) -> None:
        if self.lost.called:
            raise RuntimeError(f"{self!r} was lost; create a new one")

    async def _blocking_call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Grant a session lease and make a blocking request with it; on failure or cancel
        revoke the lease so that the request's pending key leaves the queue."""
        lease = await self.client.lease(self.ttl, keepalive=True)
        try:
            body = {**body, "lease": lease.lease_id}
            # No deadline unless asked for (0 disables the client's default). Resending after a
            # broken connection is safe: etcd names the waiting key after the lease, so a resend
            # finds the key the first request made (Go's Mutex and Election do the same).
            request = defer.ensureDeferred(self.client.transport.call(
                path, body, idempotent=True, timeout=self.timeout or 0))
            lease.add_lost_callback(lambda _reason: request.cancel())
            try:
                reply = await request
            except Exception:
                if lease.lost_reason is not None:
                    raise lease.lost_reason from None
                raise
        except BaseException:
            await _end_session(lease)
            raise
        self.lease = lease
        lease.add_lost_callback(self._lease_lost)
        return reply

    def _lease_lost(self, reason: EtcdError) -> None:
        if self.lease is not None and not self.lost.called:
            self.lost.callback(reason)

    async def _end(self) -> None:
        lease, self.lease = self.lease, None
        self._held = False
        if lease is not None:
            await _end_session(lease)


async def _end_session(lease: Lease) -> None:
    """Revoke a session lease, tolerating one that is gone already."""
    if lease.alive:
        with contextlib.suppress(LeaseNotFound):
            await lease.revoke()


class Lock(_Session):
    """A lock held with a session lease: ``await client.lock(name)`` or ``async with``.

    ``key`` is the holder's key (namespace stripped), ``fencing_token`` its create revision:
    it grows with every new holder, so storage can reject a stale holder's writes.
    """

    def __init__(self, client: Client, name: bytes, ttl: int = DEFAULT_SESSION_TTL, *,
                 timeout: float | None = None) -> None:
        super().__init__(client, name, ttl, timeout)
        self._key = b""
        self._fencing_token = 0
        self._released = False

    def __repr__(self) -> str:
        state = f"held as {self._key!r}" if self._held else "not held"
        return f"<Lock {self.name!r} {state}>"

    def _check_held(self, use: str) -> None:
        # Once held, the key and token stay readable (after a loss or a release too): a fenced
        # write with them reaches etcd and is refused there, which is what a fencing token is for.
        if not self._key:
            raise LockNotHeld(f"{self!r}: {use} before it is held; `lock = await "
                              "client.lock(name)` (or `yield` it) first")

    def _check_usable(self) -> None:
        super()._check_usable()
        if self._released:
            raise LockNotHeld(f"{self!r} was released; acquire a new lock")

    @property
    def key(self) -> bytes:
        """The holder's lock key (namespace stripped); raises ``LockNotHeld`` if not held."""
        self._check_held("key")
        return self._key

    @property
    def fencing_token(self) -> int:
        """The lock key's create revision; raises ``LockNotHeld`` if not held."""
        self._check_held("fencing_token")
        return self._fencing_token

    async def _acquire(self) -> None:
        ns = self.client.namespace
        reply = await self._blocking_call("lock/lock", {"name": b64(ns + self.name)})
        try:
            key = _strip(unb64(reply.get("key")), ns)
            # The reply's header may be that of an earlier read; the key's own create revision
            # is the token (the order in which holders queued up).
            found = await self.client.get(key)
            lease_id = self.lease.lease_id if self.lease else 0
            if not found.kvs or found.kvs[0].lease != lease_id:
                raise LeaseExpired(f"lock key {key!r} vanished: its lease is gone")
            self._key, self._fencing_token = key, found.kvs[0].create_revision
            self.header = found.header
        except BaseException:
            await self._end()
            raise

    @started
    async def release(self) -> None:
        """Unlock: delete the lock key and revoke the session lease (also when not awaited).

        Raises ``LockNotHeld`` for a lock that was never held or is released already; after a
        loss it only cleans up.
        """
        self._check_held("release()")
        if self._released:
            raise LockNotHeld(f"{self!r}: released already; acquire a new lock")
        self._released = True
        if self.lease is None:
            return
        try:
            await self.client.transport.call("lock/unlock",
                                             {"key": b64(self.client.namespace + self._key)},
                                             idempotent=True)
        finally:
            await self._end()

    unlock = release

    async def _release(self) -> None:
        if not self._released:
            await self.release()


@dataclass(frozen=True, slots=True)
class LeaderKey:
    """The leader's identity as etcd returns it and wants it back (namespace included)."""

    name: bytes
    key: bytes
    rev: int
    lease: int

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> LeaderKey:
        return cls(unb64(obj.get("name")), unb64(obj.get("key")), to_int(obj.get("rev")),
                   to_int(obj.get("lease")))

    def to_json(self) -> dict[str, Any]:
        return {"name": b64(self.name), "key": b64(self.key), "rev": self.rev,
                "lease": self.lease}


class Leadership(_Session):
    """A campaign for an election and, once it returns, the leadership it won.

    ``await election.campaign(value)`` waits until this campaigner leads; ``async with`` also
    resigns on exit. ``lost`` fires if the session lease is lost while leading.
    """

    def __init__(self, election: Election, value: bytes, ttl: int = DEFAULT_SESSION_TTL, *,
                 timeout: float | None = None) -> None:
        super().__init__(election.client, election.name, ttl, timeout)
        if not isinstance(value, bytes):
            raise TypeError(f"value must be bytes, not {type(value).__name__}")
        self.election = election
        self.value = value
        self.leader: LeaderKey | None = None
        self.key = b""
        self.revision = 0

    def __repr__(self) -> str:
        state = f"leading as {self.key!r}" if self._held else "not leading"
        return f"<Leadership {self.name!r} {state}>"

    async def _acquire(self) -> None:
        ns = self.client.namespace
        reply = await self._blocking_call("election/campaign", {
            "name": b64(ns + self.name), "value": b64(self.value)})
        self.leader = LeaderKey.from_json(reply.get("leader", {}))
        self.key = _strip(self.leader.key, ns)
        self.revision = self.leader.rev
        self.header = Header.from_json(reply.get("header"))

    def _require_leader(self) -> LeaderKey:
        if self.leader is None or self.lease is None:
            raise NotLeader(f"{self!r} does not lead")
        return self.leader

    async def proclaim(self, value: bytes) -> Header:
        """Change the leader's value without an election."""
        if not isinstance(value, bytes):
            raise TypeError(f"value must be bytes, not {type(value).__name__}")
        leader = self._require_leader()
        try:
            reply = await self.client.transport.call(
                "election/proclaim", {"leader": leader.to_json(), "value": b64(value)},
                idempotent=True)
        except EtcdError as exc:
            if "not leader" in exc.message:
                raise NotLeader(exc.message, exc.code, exc.status) from None
            raise
        self.value = value
        return Header.from_json(reply.get("header"))

    async def resign(self) -> None:
        """Give up leadership so that the next campaigner takes over, and end the session."""
        leader, self.leader = self.leader, None
        if leader is None:
            return
        try:
            await self.client.transport.call("election/resign", {"leader": leader.to_json()},
                                             idempotent=True)
        finally:
            await self._end()

    async def _release(self) -> None:
        await self.resign()


class Election:
    """A named election: campaign for it, read or observe its leader."""

    def __init__(self, client: Client, name: bytes) -> None:
        self.client = client
        self.name = _check_name(name)

    def __repr__(self) -> str:
        return f"<Election {self.name!r}>"

    def campaign(self, value: bytes, ttl: int = DEFAULT_SESSION_TTL, *,
                 timeout: float | None = None) -> Leadership:
        """Campaign with ``value``: await the result (or ``async with`` it) to lead."""
        return Leadership(self, value, ttl, timeout=timeout)

    def leader(self, timeout: float | None = None) -> defer.Deferred[KeyValue]:
        """The current leader's key and value; raises ``KeyNotFound`` when nobody leads."""

        async def run() -> KeyValue:
            reply = await self.client.transport.call(
                "election/leader", {"name": b64(self.client.namespace + self.name)},
                idempotent=True, timeout=timeout)
            if not reply.get("kv"):
                raise KeyNotFound("election: no leader", code=2, status=500)
            return KeyValue.from_json(reply["kv"], self.client.namespace)

        return defer.ensureDeferred(run())

    def observe(self) -> LeaderObserver:
        """An async iterator over the leader: the current one, then every change of leader or
        proclaimed value. Close it (or use ``async with``) to close its stream."""
        return LeaderObserver(self)


class _End:
    """Marks the end of an observe stream in the queue (with the error, if any)."""

    def __init__(self, failure: Failure | None) -> None:
        self.failure = failure


class LeaderObserver:
    """The leaders of an election as they change, read from an ``election/observe`` stream.

    The stream opens on ``open()``, ``async with`` or the first ``__anext__``; etcd answers only
    once somebody leads, so opening does not wait for the answer. A stream error ends the
    iteration with that error. It does not reconnect: open a new observer to continue.
    """

    def __init__(self, election: Election) -> None:
        self.election = election
        self._queue: defer.DeferredQueue[dict[str, Any] | _End] = defer.DeferredQueue()
        self._opening: defer.Deferred[Any] | None = None
        self._stream: Stream | None = None
        self._closed = False

    def open(self) -> None:
        """Send the observe request now, so that later leaders are not missed."""
        if self._opening is not None or self._closed:
            return
        client = self.election.client
        self._opening = defer.ensureDeferred(client.transport.open_stream(
            "election/observe", {"name": b64(client.namespace + self.election.name)},
            self._queue.put))
        self._opening.addCallbacks(self._opened, self._ended)

    def _opened(self, stream: Stream) -> None:
        self._stream = stream
        stream.done.addBoth(self._ended)

    def _ended(self, result: Any) -> None:
        self._queue.put(_End(result if isinstance(result, Failure) else None))

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> KeyValue:
        if self._closed:
            raise StopAsyncIteration
        self.open()
        item = await self._queue.get()
        if isinstance(item, _End):
            failed = item.failure is not None and not self._closed
            self._closed = True
            if failed:
                item.failure.raiseException()  # type: ignore[union-attr]
            raise StopAsyncIteration
        return KeyValue.from_json(item.get("kv", {}), self.election.client.namespace)

    def close(self) -> None:
        """Close the stream (or the request still waiting for a leader); iteration ends."""
        self._closed = True
        if self._stream is not None:
            self._stream.cancel()
        elif self._opening is not None:
            self._opening.cancel()

    async def __aenter__(self) -> Self:
        self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
