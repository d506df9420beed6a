"""Where a table's rows live in etcd: ``<database prefix><slot: uint16 big-endian><key bytes>``.

The one statement of the table layout. pmap maps (``txetcd.pmap``), the WAMP procedures
(``procedures.table``) and the component's event path (``component.publisher``) all place and
find rows through it, so a pmap program, a WAMP caller and an event subscriber see the same
rows. The key bytes are the table's key codec's; the value is stored as its value codec gives
it. Slot 0 is the catalog (``txetcd.pmap.database``); slot 65535 the component reserves for its
own coordination keys (``component.config.RESERVED_SLOT``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..types import KeySet, prefix_end

__all__ = ["CATALOG_SLOT", "MAX_SLOT", "TableLayout", "slot_bytes", "slot_prefix"]

CATALOG_SLOT = 0
MAX_SLOT = 0xFFFF


def slot_bytes(slot: int) -> bytes:
    """A slot number as it appears in keys (and as a catalog entry's key)."""
    return slot.to_bytes(2, "big")


def slot_prefix(slot: int, db_prefix: bytes = b"") -> bytes:
    """The prefix every key of slot ``slot`` of the database under ``db_prefix`` starts with."""
    return db_prefix + slot_bytes(slot)


@dataclass(frozen=True, slots=True)
class TableLayout:
    """The etcd keys of one table: its slot prefix followed by a key codec's bytes."""

    prefix: bytes

    @classmethod
    def of(cls, slot: int, db_prefix: bytes = b"") -> TableLayout:
        return cls(slot_prefix(slot, db_prefix))

    @property
    def keyset(self) -> KeySet:
        """Every key of the table (a prefix range)."""
        return KeySet(self.prefix, prefix=True)

    @property
    def bounds(self) -> tuple[bytes, bytes]:
        """The table's keys as ``[start, end)``."""
        return self.prefix, prefix_end(self.prefix)

    def key(self, encoded: bytes) -> bytes:
        """The etcd key of a row whose key codec gave ``encoded``."""
        return self.prefix + encoded

    def split(self, etcd_key: bytes) -> bytes:
        """The key codec's bytes of a row's etcd key (the inverse of ``key``)."""
        return etcd_key[len(self.prefix):]
