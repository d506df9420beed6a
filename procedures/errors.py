"""Errors the procedures raise, mapped to WAMP error URIs under ``<prefix>.error.``.

A caller gets a kind it can act on (README, "Error URIs", says what to do about each one) and
a message saying why; etcd's own errors are mapped by ``ETCD_ERRORS``, one table.
"""

from __future__ import annotations

from autobahn.wamp.exception import ApplicationError

from txetcd import (
    AuthFailed,
    Compacted,
    EtcdError,
    FutureRevision,
    NoSpace,
    PermissionDenied,
    RequestTooLarge,
    TooManyOps,
    Unavailable,
)

__all__ = ["ProcedureError", "SchemaViolation", "KINDS", "ETCD_ERRORS", "to_application_error"]

KINDS = ("invalid_key", "invalid_value", "invalid_argument", "too_large", "conflict",
         "unavailable", "forbidden", "busy", "no_space",
         "corrupt_row")

# What an operator does about etcd's NOSPACE alarm; writes are refused until it is disarmed.
NO_SPACE_ADVICE = ("etcd's storage quota is full (NOSPACE alarm): nothing can be written until "
                   "an operator frees space and disarms the alarm: compact the history "
                   "(etcdctl compact <current revision>), defragment every member "
                   "(etcdctl defrag), then etcdctl alarm disarm; or raise "
                   "--quota-backend-bytes. Reads still work")

# etcd's errors as callers see them, most specific first: class, kind, what the message says.
ETCD_ERRORS: tuple[tuple[type[EtcdError], str, str], ...] = (
    (PermissionDenied, "forbidden", "etcd does not permit this to the component's etcd user "
                                    "(its role needs access to the namespace)"),
    (AuthFailed, "forbidden", "etcd refused the component's etcd credentials"),
    (RequestTooLarge, "too_large", "too large for etcd"),
    (TooManyOps, "too_large", "too many operations for etcd"),
    (NoSpace, "no_space", NO_SPACE_ADVICE),
    # A revision argument etcd cannot read at: the same call fails again, so not unavailable.
    (Compacted, "invalid_argument", "that revision was compacted away (read at a newer one)"),
    (FutureRevision, "invalid_argument", "that revision is in the future of the store"),
    (Unavailable, "unavailable", "etcd is unavailable"),
    (EtcdError, "unavailable", "etcd refused the request"),
)


class SchemaViolation(ValueError):
    """A value does not match its table's schema; the message names the pointer and rule."""

    def __init__(self, pointer: str, rule: str, problem: str) -> None:
        super().__init__(f"at {pointer or '/'}: {problem} (rule {rule})")
        self.pointer = pointer or "/"
        self.rule = rule


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
        return ApplicationError(f"{prefix}.error.{exc.kind}", message=exc.message)
    for cls, kind, meaning in ETCD_ERRORS:
        if isinstance(exc, cls):
            unknown = (" (the write may or may not have been applied)"
                       if getattr(exc, "outcome_unknown", False) else "")
            return ApplicationError(f"{prefix}.error.{kind}",
                                    message=f"{meaning}: {exc}{unknown}")
    raise exc
