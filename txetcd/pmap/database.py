"""A database of persistent maps in etcd: the slot catalog, and transactions over its maps.

Keys are ``<prefix><slot: uint16 big-endian><encoded key>`` (``txetcd.pmap.layout``); slot 0
is the catalog, whose entry for slot ``s`` is ``<prefix>\\0\\0<s: uint16 big-endian>``
holding CBOR ``{name, slot, key, value, ...}`` (zlmdb's catalog layout).

``db.begin()`` opens an optimistic, serializable transaction (``txetcd.pmap.transaction``
states the guarantee); ``db.run(fn)`` re-runs ``fn`` in a fresh one when a commit conflicts,
so concurrent read-modify-writes never lose an update.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from inspect import isawaitable
from typing import TYPE_CHECKING, Any

import cbor2

from ..errors import Compacted
from ..op import CompCreated, CompModified, OpSet, Transaction
from ..types import KeySet, is_int, prefix_end
from .errors import ReadOnlyTransaction, SlotConflict, TransactionConflict
from .layout import CATALOG_SLOT, MAX_SLOT, slot_bytes, slot_prefix
from .maps import PersistentMap
from .transaction import DbTransaction, DbTransactionStats, on_loop

if TYPE_CHECKING:
    from ..client import Client

__all__ = ["Database", "DbTransaction", "DbTransactionStats", "MAX_SLOT", "CATALOG_SLOT"]


_ATTACH_ATTEMPTS = 200  # each failed attempt means another process attached a table meanwhile


class Database:
    """Persistent maps in one etcd keyspace under ``prefix`` (txaioetcd's ``Database``)."""

    def __init__(self, client: Client, prefix: bytes = b"", readonly: bool = False) -> None:
        if not isinstance(prefix, bytes):
            raise TypeError(f"prefix must be bytes, not {type(prefix).__name__}")
        self.client = client
        self.prefix = prefix
        self.readonly = bool(readonly)

    def __repr__(self) -> str:
        return f"<Database prefix={self.prefix!r}>"

    @on_loop
    async def status(self) -> int:
        """The store's current revision."""
        return (await self.client.status()).header.revision

    def begin(self, write: bool = False, stats: DbTransactionStats | None = None,
              timeout: float | None = None) -> DbTransaction:
        """A new transaction; use it with ``async with``. Costs nothing until its first read.

        ``stats`` counts its puts and deletes; ``timeout`` bounds each of its requests.
        """
        if write and self.readonly:
            raise ReadOnlyTransaction("this Database was opened readonly=True")
        return DbTransaction(self, write, stats, timeout)

    def stats(self) -> dict[str, dict[str, int]]:
        """The client's request counts (txaioetcd's ``Database.stats()``)."""
        return self.client.stats()

    @on_loop
    async def run(self, fn: Callable[[DbTransaction], Any], retries: int = 10,
                  backoff: float = 0.002) -> Any:
        """Run ``fn(txn)`` (sync or async) in a write txn and commit; re-run it on conflict.

        A conflict (or a snapshot compacted away) re-runs ``fn`` in a fresh transaction up to
        ``retries`` times, after a short random pause that grows with each attempt. Other
        errors propagate at once: a commit whose outcome is unknown is never re-run.
        """
        if not is_int(retries) or retries < 0:
            raise ValueError(f"retries must be an int >= 0, not {retries!r}")
        attempt = 0
        while True:
            txn = self.begin(write=True)
            try:
                result = fn(txn)
                if isawaitable(result):
                    result = await result
                await txn.commit()
                return result
            except (TransactionConflict, Compacted):
                txn.abort()
                if attempt >= retries:
                    raise
            except BaseException:
                txn.abort()
                raise
            attempt += 1
            delay = random.uniform(0, backoff * 2 ** min(attempt, 6))
            await self.client.driver.sleep(delay)

    # -- slot catalog --------------------------------------------------------------------------

    def table_prefix(self, slot: int) -> bytes:
        return slot_prefix(slot, self.prefix)

    def _catalog_key(self, slot: int) -> bytes:
        return self.table_prefix(CATALOG_SLOT) + slot_bytes(slot)

    async def _catalog(self) -> tuple[dict[int, dict[str, Any]], int]:
        """Every catalog entry by slot, and the revision it was read at."""
        start = self.table_prefix(CATALOG_SLOT)
        # One read, so the revision the allocation guard uses is the one the entries are from.
        result = await self.client.get(KeySet(start, range_end=prefix_end(start)))
        entries = {int.from_bytes(kv.key[len(start):], "big"): cbor2.loads(kv.value)
                   for kv in result.kvs}
        revision = result.header.revision
        return entries, revision

    @on_loop
    async def tables(self) -> dict[str, int]:
        """Slot of every table in the catalog, by name."""
        entries, _ = await self._catalog()
        return {str(e.get("name")): slot for slot, e in entries.items()}

    @on_loop
    async def attach_table(self, table: Any, name: str | None = None,
                           description: str | None = None) -> PersistentMap[Any, Any]:
        """Record ``table`` in the slot catalog; a table without a slot gets one by name.

        ``table`` is a map instance, or (as in txaioetcd) a map class decorated with zlmdb's
        ``@table(oid, ...)`` (or ``txetcd.pmap.table``), whose slot is found by its oid and
        whose instance is returned. The same name (oid) always gets the same slot; a new slot
        is claimed with compare-and-swap (the slot key must not exist, and no catalog entry may
        have appeared since the catalog was read), so processes attaching tables at once never
        share a slot.
        """
        if isinstance(table, type) and issubclass(table, PersistentMap):
            return await self._attach_decorated(table, name, description)
        if not isinstance(table, PersistentMap):
            raise TypeError("attach_table takes a map instance such as MapUuidCbor(1) or a "
                            f"@table-decorated map class, not {table!r}")
        name = name if name is not None else table.name
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"name must be a non-empty str, not {name!r}")
        if table.slot is None and name is None:
            raise ValueError("a map without a slot needs a name to find or allocate one")
        for _attempt in range(_ATTACH_ATTEMPTS):
            entries, revision = await self._catalog()
            slot = self._choose_slot(table, name, entries)
            if slot in entries or await self._claim(slot, revision, self._entry(
                    table, slot, name, description)):
                table.bind(slot, name)
                return table
        raise SlotConflict(f"could not claim a slot for {name!r} in {_ATTACH_ATTEMPTS} "
                           "attempts: the catalog kept changing")

    async def _attach_decorated(self, klass: type[PersistentMap[Any, Any]], name: str | None,
                                description: str | None) -> PersistentMap[Any, Any]:
        """txaioetcd's ``attach_table(Class)``: the slot whose catalog entry has the class's oid."""
        oid = getattr(klass, "_zlmdb_oid", None)
        if oid is None:
            raise TypeError(f"{klass.__qualname__} is not decorated as a table: decorate it with "
                            "@table(oid, ...) (zlmdb's or txetcd.pmap's), or pass an instance "
                            f"such as {klass.__name__}(slot)")
        name = name or f"{klass.__module__}.{klass.__qualname__}"  # txaioetcd's qual(klass)
        description = description or (klass.__doc__ or "").strip() or None
        options: dict[str, Any] = {"compress": getattr(klass, "_zlmdb_compress", None)}
        for option, attribute in (("marshal", "_zlmdb_marshal"), ("unmarshal", "_zlmdb_parse"),
                                  ("build", "_zlmdb_build"), ("cast", "_zlmdb_cast")):
            if getattr(klass, attribute, None) is not None:
                options[option] = getattr(klass, attribute)
        for _attempt in range(_ATTACH_ATTEMPTS):
            entries, revision = await self._catalog()
            found = [slot for slot, e in entries.items() if e.get("oid") == str(oid)]
            slot = found[0] if found else self._free_slot(entries)
            table = klass(slot, **options)
            if found:
                self._check_codecs(table, slot, entries[slot])
            elif not await self._claim(slot, revision, {
                    "oid": str(oid), "creator": "txetcd",
                    **self._entry(table, slot, name, description)}):
                continue
            table.bind(slot, str(entries.get(slot, {}).get("name") or name))
            return table
        raise SlotConflict(f"could not claim a slot for {name!r} in {_ATTACH_ATTEMPTS} "
                           "attempts: the catalog kept changing")

    @staticmethod
    def _entry(table: PersistentMap[Any, Any], slot: int, name: str | None,
               description: str | None) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": name, "slot": slot, "key": table.key_codec.name,
                                 "value": table.value_codec.name}
        if description is not None:
            entry["description"] = description
        return entry

    async def _claim(self, slot: int, revision: int, entry: dict[str, Any]) -> bool:
        """Write a catalog entry for a free ``slot`` unless the catalog changed since
        ``revision``; False if it did (read it again and retry)."""
        catalog = self.table_prefix(CATALOG_SLOT)
        guard = [CompCreated(self._catalog_key(slot), "==", 0),
                 CompModified(KeySet(catalog, range_end=prefix_end(catalog)), "<",
                              revision + 1)]
        result = await self.client.txn(Transaction(
            guard, [OpSet(self._catalog_key(slot), cbor2.dumps(entry))]))
        return result.succeeded

    @staticmethod
    def _free_slot(entries: dict[int, dict[str, Any]]) -> int:
        free = next((s for s in range(1, MAX_SLOT + 1) if s not in entries), None)
        if free is None:
            raise SlotConflict("every slot 1..65535 is taken")
        return free

    @staticmethod
    def _check_codecs(table: PersistentMap[Any, Any], slot: int, entry: dict[str, Any]) -> None:
        """Refuse a table whose codecs differ from those its catalog entry records.

        Entries written by txaioetcd (or zlmdb) record no codecs: they are taken on trust.
        """
        codecs = (entry.get("key"), entry.get("value"))
        if codecs != (None, None) and codecs != (table.key_codec.name, table.value_codec.name):
            raise SlotConflict(f"slot {slot} stores {codecs[0]} keys and {codecs[1]} "
                               f"values, not {table.key_codec.name}/{table.value_codec.name}")

    @staticmethod
    def _choose_slot(table: PersistentMap[Any, Any], name: str | None,
                     entries: dict[int, dict[str, Any]]) -> int:
        """The slot ``table`` belongs in; raises ``SlotConflict`` where the catalog disagrees."""
        by_name = {e.get("name"): slot for slot, e in entries.items()}
        if table.slot is None:
            if name not in by_name:
                return Database._free_slot(entries)
            slot = by_name[name]
        else:
            slot = table.slot
            if name is not None and by_name.get(name, slot) != slot:
                raise SlotConflict(f"table {name!r} is in slot {by_name[name]}, "
                                   f"not {slot}")
        entry = entries.get(slot)
        if entry is not None:
            if name is not None and entry.get("name") != name:
                raise SlotConflict(f"slot {slot} holds table {entry.get('name')!r}, "
                                   f"not {name!r}")
            Database._check_codecs(table, slot, entry)
        return slot
