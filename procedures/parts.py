"""What the history and index operations need of a table, as a protocol.

``procedures.Table`` provides it; ``history`` and ``indexes`` are written against this protocol
rather than the class, so ``table`` imports them and nothing imports ``table`` back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any, Protocol

from txetcd import Client, KeySet
from txetcd.pmap import Database, PersistentMap
from txetcd.types import KeyValue

from .errors import ProcedureError
from .wire import KeyWire, ValueWire

__all__ = ["TableParts"]


class TableParts(Protocol):
    """A configured table's name, codecs, key range, etcd client and pmap view."""

    name: str
    client: Client
    prefix: bytes
    keys: KeyWire
    values: ValueWire
    db: Database
    map: PersistentMap[Any, Any]

    @property
    def indexes(self) -> Mapping[str, Any]: ...

    @property
    def keyset(self) -> KeySet: ...

    def etcd_key(self, key: Any) -> bytes: ...

    def sized_kv(self, kv: KeyValue) -> tuple[Any, int]: ...

    def corrupt(self, key: Any, cause: Any) -> ProcedureError: ...

    def turn(self) -> Awaitable[None]: ...
