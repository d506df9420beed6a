"""Typed errors, classified from etcd's error messages.

The gateway's HTTP status codes collide (400 covers compaction, txn limits and duplicate keys;
429 covers both back-pressure and a full disk), so errors are classified by the message that
etcd's ``rpctypes`` put in the body, and the status is only the fallback.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "EtcdError", "Error", "Compacted", "FutureRevision", "TooManyOps", "RequestTooLarge",
    "DuplicateKey", "LeaseNotFound", "LeaseExpired", "Expired", "LeaseNotGranted", "LockNotHeld",
    "PermissionDenied", "AuthFailed",
    "InvalidAuthToken", "Unavailable", "Timeout", "TooManyRequests", "NoSpace", "KeyNotFound",
    "UnsupportedServer", "ProtocolError", "Failed", "classify",
]


class EtcdError(Exception):
    """Base of every error txetcd raises for an etcd request.

    ``code`` is the gRPC status code, ``status`` the HTTP status (0 when there was no answer).
    """

    def __init__(self, message: str, code: int = 0, status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


Error = EtcdError  # txaioetcd's name


class Compacted(EtcdError):
    """The requested revision has been compacted away; re-read at the latest revision."""

    def __init__(self, message: str, code: int = 11, status: int = 400,
                 compact_revision: int = 0) -> None:
        super().__init__(message, code, status)
        self.compact_revision = compact_revision


class FutureRevision(EtcdError):
    """The requested revision is newer than the member's store."""


class TooManyOps(EtcdError):
    """A txn branch holds more operations than the server allows (``--max-txn-ops``)."""


class RequestTooLarge(EtcdError):
    """The request exceeds the server's size limit (``--max-request-bytes``)."""


class DuplicateKey(EtcdError):
    """A txn writes the same key twice."""


class KeyNotFound(EtcdError):
    """A key the request needs (e.g. an election leader) does not exist."""


class Expired(EtcdError):
    """The lease is gone (revoked, expired, lost or never known to etcd): txaioetcd's name, and
    the base of every such error, so ``except Expired`` catches them all."""


class LeaseNotFound(Expired):
    """The lease does not exist (revoked or expired)."""


class LeaseExpired(LeaseNotFound):
    """The lease is known to be gone; its keys are deleted."""


class LeaseNotGranted(RuntimeError):
    """A ``Lease`` was used before it was granted: ``await`` (or ``yield``) ``client.lease(ttl)``
    first. Raised before anything is sent."""


class LockNotHeld(RuntimeError):
    """A lock was used (its key, fencing token or release) while not held: ``await`` (or
    ``yield lock.acquire()``) ``Lock(client, name)`` first, or it was released already."""


class PermissionDenied(EtcdError):
    """The authenticated user lacks the permission for this request."""


class AuthFailed(EtcdError):
    """Authentication failed: wrong user name or password, or auth not enabled."""


class InvalidAuthToken(EtcdError):
    """The token expired or was never valid; re-authenticating fixes it (txetcd does)."""


class Unavailable(EtcdError):
    """No member could serve the request.

    When ``outcome_unknown`` is true the request may or may not have been applied (a write whose
    connection broke after it was sent); txetcd never resends such a request.
    """

    def __init__(self, message: str, code: int = 14, status: int = 503,
                 outcome_unknown: bool = False) -> None:
        super().__init__(message, code, status)
        self.outcome_unknown = outcome_unknown


class Timeout(Unavailable):
    """The request did not complete within its deadline."""

    def __init__(self, message: str, code: int = 4, status: int = 504,
                 outcome_unknown: bool = True) -> None:
        super().__init__(message, code, status, outcome_unknown)


class TooManyRequests(EtcdError):
    """The server shed the request before proposing it: safe to retry after a pause (txetcd
    does, ``core.RetryPolicy.busy_attempts`` times)."""


class NoSpace(EtcdError):
    """The database quota is exhausted (NOSPACE alarm); an operator must compact and defrag."""


class UnsupportedServer(EtcdError):
    """The server is too old (etcd < 3.3 has no usable v3 gateway) or is not etcd at all."""


class ProtocolError(EtcdError):
    """The server answered something that is not what the gateway protocol promises."""


class Failed(RuntimeError):
    """A transaction's compares failed; the failure branch ran (txaioetcd raises this too)."""

    def __init__(self, header: Any, responses: list[Any]) -> None:
        super().__init__(f"transaction failed at revision {getattr(header, 'revision', '?')}")
        self.header = header
        self.responses = responses


# Substrings of etcd's error messages (api/v3rpc/rpctypes/error.go), most specific first.
_BY_MESSAGE: list[tuple[str, type[EtcdError]]] = [
    ("required revision has been compacted", Compacted),
    ("required revision is a future revision", FutureRevision),
    ("too many operations in txn request", TooManyOps),
    ("request is too large", RequestTooLarge),
    ("received message larger than max", RequestTooLarge),
    ("duplicate key given in txn request", DuplicateKey),
    ("requested lease not found", LeaseNotFound),
    ("lease not found", LeaseNotFound),
    ("election: no leader", KeyNotFound),
    ("permission denied", PermissionDenied),
    ("authentication failed", AuthFailed),
    ("user name is empty", AuthFailed),
    ("authentication is not enabled", AuthFailed),
    ("invalid auth token", InvalidAuthToken),
    ("revision of auth store is old", InvalidAuthToken),
    ("user name not found", AuthFailed),
    ("database space exceeded", NoSpace),
    ("too many requests", TooManyRequests),
    ("no leader", Unavailable),
    ("leader changed", Unavailable),
    ("request timed out", Timeout),
    # A member without a leader never accepts the proposal; its deadline ends as this (500).
    ("context deadline exceeded", Timeout),
    ("server stopped", Unavailable),
    ("unhealthy cluster", Unavailable),
    ("request cancelled", Unavailable),
]

_BY_STATUS: dict[int, type[EtcdError]] = {
    401: InvalidAuthToken, 403: PermissionDenied, 404: KeyNotFound, 413: RequestTooLarge,
    503: Unavailable, 504: Timeout,
}


def classify(status: int, body: bytes | dict[str, Any]) -> EtcdError:
    """Turn an error response (HTTP status and body, v1 or v2 gateway shape) into an EtcdError."""
    obj: Any = body
    if isinstance(body, (bytes, bytearray)):
        try:
            obj = json.loads(body)
        except ValueError:
            obj = {"message": body.decode("utf-8", "replace").strip()}
    if not isinstance(obj, dict):
        obj = {"message": str(obj)}
    if isinstance(obj.get("error"), dict):  # a stream error frame
        obj = obj["error"]
    message = str(obj.get("message") or obj.get("error") or f"HTTP {status}")
    code = int(obj.get("code", obj.get("grpc_code", 0)) or 0)
    status = int(obj.get("http_code", status) or status)
    lowered = message.lower()
    for fragment, cls in _BY_MESSAGE:
        if fragment in lowered:
            return cls(message, code=code, status=status)
    cls = _BY_STATUS.get(status, EtcdError)
    return cls(message, code=code, status=status)
