"""Leases without an event loop: requests, answers, and when to renew or give a lease up.

Both ``Lease`` drivers (Twisted's ``txetcd.lease``, asyncio's ``txetcd.aio_lease``) keep their
state in a ``LeaseState`` and only do the I/O and the timers it asks for. The rules are Go
``clientv3``'s: the next keepalive goes out TTL/3 after each answer; the lease counts as lost
once TTL has passed since the *sending* of the last keepalive that etcd answered (etcd may have
renewed it at once), even if etcd never says so; a failed keepalive is retried soon, and the
deadline alone decides when to stop.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import EtcdError, LeaseExpired, LeaseNotFound, LeaseNotGranted, classify
from .types import Header, is_int, strip_namespace, to_int, unb64

__all__ = ["LeaseGrant", "LeaseInfo", "LeaseLost", "LeaseState", "check_ttl", "lease_id_of",
           "grant_request", "parse_grant", "parse_keepalive", "parse_time_to_live",
           "parse_leases", "time_to_live_request"]

Json = dict[str, Any]

# Seconds: a keepalive that failed (etcd unreachable or busy) is tried again this soon, at most.
RETRY_AFTER = 0.5
# Seconds: one keepalive attempt never gets less time than this, however short the TTL.
MIN_ATTEMPT = 1.0


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
    if not is_int(ttl):
        raise TypeError(f"ttl must be an int (seconds), not {type(ttl).__name__}")
    if ttl < 1:
        raise ValueError(f"ttl must be >= 1 s, not {ttl}")
    return ttl


def lease_id_of(lease: Any) -> int:
    """The ID of a ``Lease`` or of a plain int."""
    lease_id = getattr(lease, "lease_id", lease)
    if not is_int(lease_id):
        raise TypeError(f"lease must be a Lease or an int ID, not {type(lease).__name__}")
    if lease_id < 1:
        raise ValueError(f"lease ID must be >= 1, not {lease_id}")
    return lease_id


# -- requests and answers --------------------------------------------------------------------

def grant_request(ttl: int, lease_id: int | None) -> Json:
    body: Json = {"TTL": check_ttl(ttl)}
    if lease_id is not None:
        body["ID"] = lease_id_of(lease_id)
    return body


def parse_grant(reply: Json) -> LeaseGrant:
    if reply.get("error"):
        raise classify(400, {"message": reply["error"]})
    return LeaseGrant(to_int(reply.get("ID")), to_int(reply.get("TTL")),
                      Header.from_json(reply.get("header")))


def time_to_live_request(lease_id: int, keys: bool) -> Json:
    body: Json = {"ID": lease_id_of(lease_id)}
    if keys:
        body["keys"] = True
    return body


def parse_time_to_live(reply: Json, namespace: bytes) -> LeaseInfo:
    return LeaseInfo(to_int(reply.get("ID")), to_int(reply.get("TTL")),
                     to_int(reply.get("grantedTTL")), Header.from_json(reply.get("header")),
                     [strip_namespace(unb64(k), namespace) for k in reply.get("keys", ())])


def parse_leases(reply: Json) -> list[int]:
    return [to_int(item.get("ID")) for item in reply.get("leases", ())]


def parse_keepalive(reply: Json, lease_id: int) -> tuple[int, Header]:
    """The fresh TTL of a keepalive answer; ``LeaseExpired`` when etcd says the lease is gone."""
    if "error" in reply:
        raise classify(0, reply)
    result = reply.get("result", reply)
    ttl = to_int(result.get("TTL"))
    if ttl <= 0:  # etcd omits TTL when the lease does not exist any more
        raise gone(lease_id, "is gone (expired or revoked)")
    return ttl, Header.from_json(result.get("header"))


def gone(lease_id: int, why: str) -> LeaseExpired:
    return LeaseExpired(f"lease {lease_id:x} {why}", code=5, status=404)


# -- one lease's state -----------------------------------------------------------------------

class Phase(enum.Enum):
    NEW = "not granted"
    GRANTED = "granted"
    REVOKED = "revoked"
    LOST = "lost"


class LeaseState:
    """Everything a ``Lease`` knows and decides, given the time; drivers own timers and I/O.

    ``keepalive`` None means "decided by use": ``async with`` keeps the lease alive, a plain
    ``await`` does not (txaioetcd's lease, renewed by ``refresh()``).
    """

    def __init__(self, ttl: int, lease_id: int | None, keepalive: bool | None) -> None:
        self.ttl = check_ttl(ttl)
        self.lease_id = lease_id_of(lease_id) if lease_id is not None else 0
        self.keepalive = keepalive
        self.header = Header()
        self.phase = Phase.NEW
        self.lost_reason: EtcdError | None = None
        self.deadline: float | None = None  # local expiry: sending of the last answer + TTL

    def __repr__(self) -> str:
        return f"<Lease {self.lease_id:x} ttl={self.ttl} {self.phase.value}>"

    def alive(self, now: float) -> bool:
        """Granted, neither revoked nor lost, and its deadline not passed. A passed deadline
        counts before its timer ran: after a stall, I/O callbacks may run before timers do."""
        return self.phase is Phase.GRANTED and (self.deadline is None or self.deadline > now)

    def check_usable(self) -> None:
        """Raise if the lease can no longer be granted or used."""
        if self.lost_reason is not None:
            raise self.lost_reason
        if self.phase is Phase.REVOKED:
            raise LeaseNotFound(f"lease {self.lease_id:x} was revoked", code=5, status=404)

    def check_granted(self) -> None:
        self.check_usable()
        if self.phase is not Phase.GRANTED:
            raise LeaseNotGranted(f"{self!r} is not granted yet: `lease = await "
                                  "client.lease(ttl)` (or `yield` it) before using it")

    def id_for_write(self, now: float) -> int:
        """The lease's ID for a write, or the reason a write must not use it (nothing sent)."""
        self.check_granted()
        if not self.alive(now):
            raise gone(self.lease_id, f"passed its TTL of {self.ttl} s without a keepalive: "
                       "it is gone")
        return self.lease_id

    def granted(self, grant: LeaseGrant, sent_at: float, now: float) -> float | None:
        """Record a grant; raises if the lease was revoked meanwhile (the driver then revokes
        the granted ID). Returns the delay to the first keepalive, None when not kept alive."""
        self.lease_id, self.header = grant.lease_id, grant.header
        if self.phase is Phase.REVOKED:
            raise LeaseNotFound(f"lease {self.lease_id:x} was revoked", code=5, status=404)
        self.phase = Phase.GRANTED
        return self.renewed(sent_at, grant.ttl, now)

    def entered(self, now: float) -> float | None:
        """``async with`` got the lease: keep it alive unless told not to; the delay to the
        first keepalive, or None."""
        if self.keepalive is None:
            self.keepalive = True
            if self.alive(now):
                return self.ttl / 3
        return None

    def renewed(self, sent_at: float, ttl: int, now: float) -> float | None:
        """etcd restarted the lease's clock no earlier than ``sent_at``: move the deadline.
        Returns the delay to the next keepalive, or None when the lease is not kept alive."""
        self.ttl = ttl
        self.deadline = sent_at + ttl
        return ttl / 3 if self.keepalive else None

    def time_left(self, now: float) -> float:
        return max(0.0, (self.deadline if self.deadline is not None else now) - now)

    @property
    def attempt_timeout(self) -> float:
        """One keepalive gives up in time to try again before the deadline."""
        return max(MIN_ATTEMPT, self.ttl / 3)

    @property
    def retry_delay(self) -> float:
        return min(RETRY_AFTER, self.ttl / 6)

    def keepalive_failed(self, error: BaseException) -> float | None:
        """A keepalive failed: the delay to the next attempt, or None when the failure says
        the lease is gone (the driver then declares it lost)."""
        return None if isinstance(error, LeaseExpired) else self.retry_delay

    def deadline_passed(self) -> LeaseLost:
        return LeaseLost(f"lease {self.lease_id:x}: no keepalive answered within its TTL of "
                         f"{self.ttl} s", code=4, status=0)

    def lose(self, reason: EtcdError) -> bool:
        """Mark the lease lost; True the first time (the driver then stops its timers and tells
        everybody), False when it was already lost or revoked."""
        if self.lost_reason is not None or self.phase is Phase.REVOKED:
            return False
        self.lost_reason = reason
        self.phase = Phase.LOST
        self.deadline = None
        return True

    def revoke(self) -> bool:
        """Mark the lease revoked; whether it was granted (only then is etcd asked)."""
        self.check_usable()
        was_granted = self.phase is Phase.GRANTED
        self.phase = Phase.REVOKED
        self.deadline = None
        return was_granted

    def info_says_gone(self, info: LeaseInfo) -> bool:
        """A lease nobody keeps alive counts as gone once less than a second is left (etcd's
        TTL 0), as txaioetcd reported it; a kept-alive one is renewed long before that."""
        return not info.alive or (info.ttl == 0 and not self.keepalive)


# -- one request each, on either loop (they only await the transport) ------------------------

class Caller(Protocol):
    """The part of a transport (Twisted's or asyncio's) that the lease requests need."""

    async def call(self, path: str, body: Json, *, idempotent: bool,
                   timeout: float | None = None) -> Json: ...


async def grant(transport: Caller, ttl: int, lease_id: int | None = None,
                timeout: float | None = None) -> LeaseGrant:
    """Grant a lease; etcd picks the ID unless ``lease_id`` is given."""
    # Not idempotent: a resent grant with ID 0 would leak a second lease.
    return parse_grant(await transport.call("lease/grant", grant_request(ttl, lease_id),
                                            idempotent=False, timeout=timeout))


async def revoke(transport: Caller, lease_id: int, timeout: float | None = None) -> Header:
    """Revoke a lease, deleting its keys; raises ``LeaseNotFound`` if it is already gone."""
    # Resending is safe: the lease ends up revoked either way (the resend may say not found).
    reply = await transport.call("lease/revoke", {"ID": lease_id_of(lease_id)},
                                 idempotent=True, timeout=timeout)
    return Header.from_json(reply.get("header"))


async def time_to_live(transport: Caller, namespace: bytes, lease_id: int, keys: bool = False,
                       timeout: float | None = None) -> LeaseInfo:
    """Remaining and granted TTL of a lease, and its keys if ``keys``; ttl is -1 once gone."""
    reply = await transport.call("lease/timetolive", time_to_live_request(lease_id, keys),
                                 idempotent=True, timeout=timeout)
    return parse_time_to_live(reply, namespace)


async def leases(transport: Caller, timeout: float | None = None) -> list[int]:
    """The IDs of every lease the cluster holds (not only this client's)."""
    return parse_leases(await transport.call("lease/leases", {}, idempotent=True,
                                             timeout=timeout))


async def keep_alive_once(transport: Caller, lease_id: int,
                          timeout: float | None = None) -> tuple[int, Header]:
    """Renew a lease once; returns its fresh TTL, or raises ``LeaseExpired`` if it is gone."""
    # lease/keepalive is a stream, but over HTTP/1.1 the server answers once and ends it.
    reply = await transport.call("lease/keepalive", {"ID": lease_id}, idempotent=True,
                                 timeout=timeout)
    return parse_keepalive(reply, lease_id)
