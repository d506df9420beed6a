"""Errors the procedures raise, mapped to WAMP error URIs under ``<prefix>.error.``."""

from __future__ import annotations

from autobahn.wamp.exception import ApplicationError

from txetcd import EtcdError, NoSpace, RequestTooLarge, TooManyOps, Unavailable

__all__ = ["ProcedureError", "KINDS", "to_application_error"]

KINDS = ("invalid_key", "invalid_value", "invalid_argument", "too_large", "conflict",
         "unavailable", "busy", "no_space")

# What an operator does about etcd's NOSPACE alarm; writes are refused until it is disarmed.
NO_SPACE_ADVICE = ("etcd's storage quota is full (NOSPACE alarm): nothing can be written until "
                   "an operator frees space and disarms the alarm: compact the history "
                   "(etcdctl compact <current revision>), defragment every member "
                   "(etcdctl defrag), then etcdctl alarm disarm; or raise "
                   "--quota-backend-bytes. Reads still work.")


class ProcedureError(Exception):
    """A call was refused; ``kind`` is the last component of the error URI."""

    def __init__(self, kind: str, message: str) -> None:
        assert kind in KINDS, kind
        super().__init__(message)
        self.kind = kind
        self.message = message


def to_application_error(prefix: str, exc: Exception) -> ApplicationError:
    """The ApplicationError a caller sees for ``exc``, with a message a person can act on."""
    if isinstance(exc, ProcedureError):
        kind, message = exc.kind, exc.message
    elif isinstance(exc, (RequestTooLarge, TooManyOps)):
        kind, message = "too_large", str(exc)
    elif isinstance(exc, NoSpace):
        kind, message = "no_space", f"{NO_SPACE_ADVICE} ({exc})"
    elif isinstance(exc, Unavailable):
        unknown = " (the write may or may not have been applied)" if exc.outcome_unknown else ""
        kind, message = "unavailable", f"etcd is unavailable: {exc}{unknown}"
    elif isinstance(exc, EtcdError):
        kind, message = "unavailable", f"etcd refused the request: {exc}"
    else:
        raise exc
    return ApplicationError(f"{prefix}.error.{kind}", message=message)
