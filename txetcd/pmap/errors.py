"""Errors of the persistent-map layer: conflicts, transaction misuse, index and catalog rules."""

from __future__ import annotations

from ..errors import TooManyOps

__all__ = [
    "PmapError", "TransactionConflict", "ReadOnlyTransaction", "TransactionClosed",
    "TransactionTooLarge", "UniqueViolation", "NullValueConstraint", "SlotConflict",
    "TableNotAttached",
]


class PmapError(Exception):
    """Base of the errors the pmap layer raises itself (etcd errors keep their own types)."""


class TransactionConflict(PmapError):
    """Someone changed what the transaction read before it committed; nothing was written.

    Re-running the transaction (``Database.run`` does it) sees the new state.
    """

    def __init__(self, message: str, snapshot: int | None, revision: int) -> None:
        super().__init__(message)
        self.snapshot = snapshot  # the revision the transaction read at
        self.revision = revision  # the store revision when the commit was refused


class ReadOnlyTransaction(PmapError, TypeError):
    """A write was attempted in a transaction begun with ``write=False``."""


class TransactionClosed(PmapError, RuntimeError):
    """The transaction was committed or aborted already, or an earlier buffered write failed."""


class TransactionTooLarge(PmapError, TooManyOps):
    """The commit would exceed etcd's ``--max-txn-ops``; raised before anything is sent."""


class UniqueViolation(PmapError, ValueError):
    """A unique index already maps the new index key to another primary key."""

    def __init__(self, message: str, index: str) -> None:
        super().__init__(message)
        self.index = index


class NullValueConstraint(PmapError, ValueError):
    """An index key function returned None for an index that is not nullable."""


class SlotConflict(PmapError, ValueError):
    """The slot catalog disagrees with a table: its slot holds another table, or no slot is free."""


class TableNotAttached(PmapError, RuntimeError):
    """A map without a slot was used before ``Database.attach_table`` gave it one."""
