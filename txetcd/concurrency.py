"""Locks and leader elections, recipes on top of a client (Go's ``clientv3/concurrency``).

``Lock(client, name)`` and ``Election(client, name)`` work with the Twisted and the asyncio
client alike: they use only ``client.env`` (transport, namespace, driver) and
``client.lease(ttl, keepalive=True)``; the client does not know them.

Each lock or campaign runs on a session lease of its own, kept alive by ``Lease``; when that
lease is lost the holder's ``lost`` future resolves, because etcd has deleted (or will delete)
the lock or leader key. Lock and campaign requests block on the server until they succeed, so
they run without a deadline unless given one, and cancelling them closes their connection and
revokes the session lease (the pending key would otherwise wait in line until the lease died).

A lock alone does not guarantee mutual exclusion: a holder may stall (GC, swap, a partition)
past its lease and keep acting while another process holds the lock. Guard every write with
the lock key, e.g. ``CompCreated(lock.key, "==", lock.fencing_token)`` in the write's txn, or
hand the fencing token to the storage that must reject stale holders.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol, Self

from .acquirable import Acquirable
from .errors import EtcdError, KeyNotFound, LeaseExpired, LeaseNotFound, LockNotHeld
from .interface import Env, StreamHandle
from .lease import Lease
from .lease_core import check_ttl
from .op import OpGet
from .types import Header, KeyValue, Range, b64, strip_namespace, to_int, unb64

__all__ = ["Lock", "LockState", "Election", "Leadership", "LeaderKey", "LeaderObserver",
           "NotLeader", "SessionHost", "DEFAULT_SESSION_TTL"]

Json = dict[str, Any]

DEFAULT_SESSION_TTL = 60  # Go's concurrency.NewSession default


class NotLeader(EtcdError):
    """The leadership was lost (its key is gone), so it can no longer proclaim."""


class SessionHost(Protocol):
    """What a recipe needs from a client (both clients have it)."""

    env: Env

    def lease(self, ttl: int, lease_id: int | None = None, *,
              keepalive: bool | None = None) -> Awaitable[Lease]: ...


def _check_name(name: Any) -> bytes:
    if not isinstance(name, bytes):
        raise TypeError(f"name must be bytes, not {type(name).__name__}")
    if not name:
        raise ValueError("name must not be empty")
    return name


def _check_value(value: Any) -> bytes:
    if not isinstance(value, bytes):
        raise TypeError(f"value must be bytes, not {type(value).__name__}")
    return value


@dataclass(frozen=True, slots=True)
class LeaderKey:
    """The leader's identity as etcd returns it and wants it back (namespace included)."""

    name: bytes
    key: bytes
    rev: int
    lease: int

    @classmethod
    def from_json(cls, obj: Json) -> LeaderKey:
        return cls(unb64(obj.get("name")), unb64(obj.get("key")), to_int(obj.get("rev")),
                   to_int(obj.get("lease")))

    def to_json(self) -> Json:
        return {"name": b64(self.name), "key": b64(self.key), "rev": self.rev,
                "lease": self.lease}


def lock_key_of(found: Range, key: bytes, lease_id: int) -> KeyValue:
    """The lock key as read back right after locking; gone (or another lease's) means that the
    session lease died in between."""
    if not found.kvs or found.kvs[0].lease != lease_id:
        raise LeaseExpired(f"lock key {key!r} vanished: its lease is gone")
    return found.kvs[0]


def leader_of(reply: Json, namespace: bytes) -> KeyValue:
    if not reply.get("kv"):
        raise KeyNotFound("election: no leader", code=2, status=500)
    return KeyValue.from_json(reply["kv"], namespace)


class LockState:
    """A lock's life without I/O: not held, then held (key and fencing token), then released or
    lost (its session lease died). The key and token stay readable after a loss or a release:
    a fenced write with them reaches etcd and is refused there, which is what they are for."""

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.key = b""
        self.fencing_token = 0
        self.released = False
        self.lost_reason: EtcdError | None = None

    def __repr__(self) -> str:
        state = (f"lost as {self.key!r}" if self.lost_reason else "released" if self.released
                 else f"held as {self.key!r}" if self.key else "not held")
        return f"<Lock {self.name!r} {state}>"

    def check_usable(self) -> None:
        """Raise if the lock cannot be acquired (again)."""
        if self.lost_reason is not None:
            raise RuntimeError(f"{self!r} was lost; create a new one")
        if self.released:
            raise LockNotHeld(f"{self!r} was released; acquire a new lock")

    def check_held(self, use: str) -> None:
        if not self.key:
            raise LockNotHeld(f"{self!r}: {use} before it is held; `lock = await "
                              "Lock(client, name)` (or `yield lock.acquire()`) first")

    def held(self, key: bytes, found: Range, lease_id: int) -> None:
        """The lock service granted ``key``; ``found`` is the key read back right after."""
        self.key, self.fencing_token = key, lock_key_of(found, key, lease_id).create_revision

    def release(self) -> None:
        """Mark released; raises ``LockNotHeld`` if never held or released already."""
        self.check_held("release()")
        if self.released:
            raise LockNotHeld(f"{self!r}: released already; acquire a new lock")
        self.released = True

    def lose(self, reason: EtcdError) -> bool:
        """The session lease died; True the first time."""
        if self.lost_reason is not None:
            return False
        self.lost_reason = reason
        return True


class _Session(Acquirable):
    """What a lock and a leadership share: a session lease, a blocking request made with it,
    the ``lost`` signal and the clean-up when the request fails or is cancelled."""

    def __init__(self, client: SessionHost, name: bytes, ttl: int,
                 timeout: float | None) -> None:
        self.env = client.env
        super().__init__(self.env.driver)
        self.client = client
        self.name = _check_name(name)
        self.ttl = check_ttl(ttl)
        if timeout is not None and (isinstance(timeout, bool) or timeout <= 0):
            raise ValueError(f"timeout must be > 0 seconds or None, not {timeout!r}")
        self.timeout = timeout
        self.lease: Lease | None = None
        self.header = Header()
        self.lost: Any = self.env.driver.future()
        self.state = LockState(self.name)

    @property
    def lost_reason(self) -> EtcdError | None:
        return self.state.lost_reason

    @property
    def alive(self) -> bool:
        """Held, and its lease alive as far as this client knows (a passed deadline included):
        what to check right before an action the lock or the leadership guards."""
        return (self._held and self.lost_reason is None and self.lease is not None
                and self.lease.alive)

    def _check_usable(self) -> None:
        self.state.check_usable()

    async def _call(self, path: str, body: Json, timeout: float | None = None) -> Json:
        return await self.env.transport.call(path, body, idempotent=True, timeout=timeout)

    async def _blocking_call(self, path: str, body: Json) -> Json:
        """Grant a session lease and make a blocking request with it; on failure or cancel
        revoke the lease so that the request's pending key leaves the queue."""
        lease = await self.client.lease(self.ttl, keepalive=True)
        try:
            body = {**body, "lease": lease.lease_id}
            # No deadline unless asked for (0 disables the client's default). Resending after a
            # broken connection is safe: etcd names the waiting key after the lease, so a resend
            # finds the key the first request made (Go's Mutex and Election do the same).
            request: Any = self.env.driver.spawn(self._call(path, body, self.timeout or 0))
            lease.add_lost_callback(lambda _reason: request.cancel())
            try:
                reply = await request
            except LeaseNotFound as exc:
                # etcd ended the wait because the session lease is gone, possibly before the
                # keepalive found out: either way the lease is known to be gone.
                raise lease.lost_reason or LeaseExpired(
                    f"lease {lease.lease_id:x} is gone: {exc.message}", exc.code,
                    exc.status) from None
            except BaseException:
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
        if self.lease is not None and self.state.lose(reason):
            self.env.driver.resolve(self.lost, reason)

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
    """A lock held with a session lease: ``await Lock(client, name)`` or ``async with``
    (``yield lock.acquire()`` in Twisted's inlineCallbacks).

    ``key`` is the holder's key (namespace stripped), ``fencing_token`` its create revision:
    it grows with every new holder, so storage can reject a stale holder's writes.
    """

    def __init__(self, client: SessionHost, name: bytes, ttl: int = DEFAULT_SESSION_TTL, *,
                 timeout: float | None = None) -> None:
        super().__init__(client, name, ttl, timeout)

    def __repr__(self) -> str:
        return repr(self.state)

    @property
    def key(self) -> bytes:
        """The holder's lock key (namespace stripped); raises ``LockNotHeld`` if not held."""
        self.state.check_held("key")
        return self.state.key

    @property
    def fencing_token(self) -> int:
        """The lock key's create revision; raises ``LockNotHeld`` if not held."""
        self.state.check_held("fencing_token")
        return self.state.fencing_token

    async def _acquire(self) -> None:
        ns = self.env.namespace
        reply = await self._blocking_call("lock/lock", {"name": b64(ns + self.name)})
        try:
            key = strip_namespace(unb64(reply.get("key")), ns)
            # The reply's header may be that of an earlier read; the key's own create revision
            # is the token (the order in which holders queued up).
            op = OpGet(key)
            found = op.result(await self._call(op.path, op.request(ns)), ns)
            self.state.held(key, found, self.lease.lease_id if self.lease else 0)
            self.header = found.header
        except BaseException:
            await self._end()
            raise

    def release(self) -> Any:
        """Unlock: delete the lock key and revoke the session lease (also when not awaited).

        Raises ``LockNotHeld`` for a lock that was never held or is released already; after a
        loss it only cleans up.
        """
        return self._driver.spawn(self._unlock())

    unlock = release

    async def _unlock(self) -> None:
        self.state.release()
        if self.lease is None:
            return
        try:
            await self._call("lock/unlock", {"key": b64(self.env.namespace + self.state.key)})
        finally:
            await self._end()

    async def _release(self) -> None:
        if not self.state.released:
            await self._unlock()


class Leadership(_Session):
    """A campaign for an election and, once it returns, the leadership it won.

    ``await election.campaign(value)`` waits until this campaigner leads; ``async with`` also
    resigns on exit. ``lost`` resolves if the session lease is lost while leading.
    """

    def __init__(self, election: Election, value: bytes, ttl: int = DEFAULT_SESSION_TTL, *,
                 timeout: float | None = None) -> None:
        super().__init__(election.client, election.name, ttl, timeout)
        self.election = election
        self.value = _check_value(value)
        self.leader: LeaderKey | None = None
        self.key = b""
        self.revision = 0

    def __repr__(self) -> str:
        state = f"leading as {self.key!r}" if self._held else "not leading"
        return f"<Leadership {self.name!r} {state}>"

    async def _acquire(self) -> None:
        ns = self.env.namespace
        reply = await self._blocking_call("election/campaign", {
            "name": b64(ns + self.name), "value": b64(self.value)})
        self.leader = LeaderKey.from_json(reply.get("leader", {}))
        self.key = strip_namespace(self.leader.key, ns)
        self.revision = self.leader.rev
        self.header = Header.from_json(reply.get("header"))

    def _require_leader(self) -> LeaderKey:
        if self.leader is None or self.lease is None:
            raise NotLeader(f"{self!r} does not lead")
        return self.leader

    async def proclaim(self, value: bytes) -> Header:
        """Change the leader's value without an election."""
        _check_value(value)
        leader = self._require_leader()
        try:
            reply = await self._call("election/proclaim",
                                     {"leader": leader.to_json(), "value": b64(value)})
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
            await self._call("election/resign", {"leader": leader.to_json()})
        finally:
            await self._end()

    async def _release(self) -> None:
        await self.resign()


class Election:
    """A named election (``Election(client, name)``): campaign for it, read or observe its
    leader."""

    def __init__(self, client: SessionHost, name: bytes) -> None:
        self.client = client
        self.env = client.env
        self.name = _check_name(name)

    def __repr__(self) -> str:
        return f"<Election {self.name!r}>"

    def campaign(self, value: bytes, ttl: int = DEFAULT_SESSION_TTL, *,
                 timeout: float | None = None) -> Leadership:
        """Campaign with ``value``: await the result (or ``async with`` it) to lead."""
        return Leadership(self, value, ttl, timeout=timeout)

    def leader(self, timeout: float | None = None) -> Any:
        """The current leader's key and value; raises ``KeyNotFound`` when nobody leads."""
        return self.env.driver.spawn(self._leader(timeout))

    async def _leader(self, timeout: float | None) -> KeyValue:
        reply = await self.env.transport.call(
            "election/leader", {"name": b64(self.env.namespace + self.name)},
            idempotent=True, timeout=timeout)
        return leader_of(reply, self.env.namespace)

    def observe(self) -> LeaderObserver:
        """An async iterator over the leader: the current one, then every change of leader or
        proclaimed value. Close it (or use ``async with``) to close its stream."""
        return LeaderObserver(self)


class LeaderObserver:
    """The leaders of an election as they change, read from an ``election/observe`` stream.

    The stream opens on ``open()``, ``async with`` or the first ``__anext__``; etcd answers only
    once somebody leads, so opening does not wait for the answer. A stream error ends the
    iteration with that error. It does not reconnect: open a new observer to continue.
    """

    def __init__(self, election: Election) -> None:
        self.election = election
        self._env = election.env
        self._items: collections.deque[Json] = collections.deque()
        self._waiter: Any = None
        self._opening: Any = None
        self._stream: StreamHandle | None = None
        self._closed = False
        self._finished = False
        self._error: BaseException | None = None

    def open(self) -> None:
        """Send the observe request now, so that later leaders are not missed."""
        if self._opening is None and not self._closed:
            self._opening = self._env.driver.spawn(self._follow())

    async def _follow(self) -> None:
        env = self._env
        try:
            self._stream = await env.transport.open_stream(
                "election/observe", {"name": b64(env.namespace + self.election.name)},
                self._put)
            if self._closed:
                self._stream.cancel()
            await self._stream.done
        except BaseException as exc:  # noqa: BLE001 - ends the iteration with it
            self._finish(exc)
        else:
            self._finish(None)

    def _put(self, result: Json) -> None:
        self._items.append(result)
        self._wake()

    def _finish(self, error: BaseException | None) -> None:
        self._finished = True
        if error is not None and not self._closed and not self._env.driver.is_cancelled(error):
            self._error = error
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._env.driver.resolve(waiter, None)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> KeyValue:
        if self._closed:
            raise StopAsyncIteration
        self.open()
        while not self._items:
            if self._closed or self._finished:
                error, self._error = self._error, None
                self._closed = True
                if error is not None:
                    raise error
                raise StopAsyncIteration
            self._waiter = self._env.driver.future()
            await self._waiter
        return KeyValue.from_json(self._items.popleft().get("kv", {}), self._env.namespace)

    def close(self) -> None:
        """Close the stream (or the request still waiting for a leader); iteration ends."""
        self._closed = True
        if self._stream is not None:
            self._stream.cancel()
        elif self._opening is not None:
            self._opening.cancel()
        self._wake()

    async def __aenter__(self) -> Self:
        self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
