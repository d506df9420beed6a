"""Typed persistent maps: a slot of a ``Database`` with a key codec and a value codec.

``PersistentMap(slot, key_codec, value_codec)`` composes any codecs (``txetcd.pmap.codecs``);
the ``Map<Key><Value>`` classes of txaioetcd are one-line declarations over the same codecs,
and an application declares its own the same way::

    class MapTimestampCbor(TypedMap, key=TimestampKey, value=CborValue): ...

Reads return the awaitables of the client's event loop (``await m[txn, key]``; Deferreds on
Twisted, Tasks on asyncio); ``m[txn, key] = v`` and ``del m[txn, key]`` buffer a write in the
transaction. Python's ``in`` cannot await, so membership is ``await m.contains(txn, key)``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from twisted.internet import defer

from ..deferreds import LazyDeferred
from ..types import KeySet, is_int, prefix_end
from ..watch import EventType, WatchEvent
from .codecs import (
    BinaryValue,
    CborValue,
    CompoundKey,
    FlatBuffersValue,
    JsonValue,
    KeyCodec,
    OidKey,
    OidValue,
    PickleValue,
    SlotKey,
    StringKey,
    StringValue,
    UuidKey,
    UuidSetValue,
    UuidValue,
    ValueCodec,
    ZlibValue,
    with_marshal,
)
from .errors import NullValueConstraint, TableNotAttached, UniqueViolation
from .layout import MAX_SLOT, TableLayout
from .transaction import DbTransaction, Store, on_loop

__all__ = [
    "PersistentMap", "TypedMap", "FlatBuffersMap", "Index", "Selection", "TableEvent",
    "TableWatch", "table", "COMPRESS_ZLIB", "COMPRESS_SNAPPY",
    "MapUuidString", "MapUuidOid", "MapUuidUuid", "MapUuidUuidSet", "MapUuidJson",
    "MapUuidCbor", "MapUuidPickle", "MapUuidFlatBuffers", "MapUuidBinary",
    "MapStringString", "MapStringOid", "MapStringUuid", "MapStringJson", "MapStringCbor",
    "MapStringPickle", "MapStringFlatBuffers", "MapStringBinary",
    "MapOidString", "MapOidOid", "MapOidUuid", "MapOidJson", "MapOidCbor", "MapOidPickle",
    "MapOidFlatBuffers", "MapOidBinary",
    "MapUuidStringUuid", "MapUuidUuidUuid", "MapUuidUuidCbor", "MapSlotUuidUuid",
]

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

_NO_KEY: Any = object()
Change = tuple[bytes, bytes | None]  # an etcd key and its new value (None: delete)


def _codec(codec: Any, base: type) -> Any:
    """Accept a codec instance or a codec class that takes no arguments."""
    instance = codec() if isinstance(codec, type) and issubclass(codec, base) else codec
    if not isinstance(instance, base):
        raise TypeError(f"expected a {base.__name__}, not {codec!r}")
    return instance


def _apply(txn: DbTransaction, changes: list[Change]) -> None:
    for key, data in changes:
        if data is None:
            txn.delete_raw(key)
        else:
            txn.put_raw(key, data)


def _split(txn_key: Any) -> tuple[DbTransaction, Any]:
    if not (isinstance(txn_key, tuple) and len(txn_key) == 2):
        raise TypeError("index a map with [txn, key]")
    txn, key = txn_key
    if not isinstance(txn, DbTransaction):
        raise TypeError(f"expected a DbTransaction from db.begin(), not {type(txn).__name__}")
    return txn, key


class Index:
    """A named secondary index of a map, kept in another map in the same transaction.

    Unique: the index map's key is ``fkey(value)``; non-unique: ``(fkey(value), primary
    key)``. Either way the index map's value is the primary key. ``fkey`` returning None
    means "no entry" if ``nullable``, else ``NullValueConstraint``.
    """

    def __init__(self, name: str, table: PersistentMap[Any, Any],
                 index_map: PersistentMap[Any, Any], fkey: Callable[[Any], Any],
                 unique: bool = True, nullable: bool = False) -> None:
        self.name = name
        self.table = table
        self.index_map = index_map
        self.fkey = fkey
        self.unique = bool(unique)
        self.nullable = bool(nullable)

    def __repr__(self) -> str:
        kind = "unique" if self.unique else "non-unique"
        return f"<Index {self.name!r} {kind} of {self.table!r} in {self.index_map!r}>"

    def entry_key(self, txn: DbTransaction, primary: Any, value: Any,
                  strict: bool = True) -> bytes | None:
        """The etcd key of ``value``'s index entry, or None when it has none."""
        indexed = self.fkey(value)
        if indexed is None:
            if self.nullable or not strict:  # a stored value never fails its removal
                return None
            raise NullValueConstraint(f"index {self.name!r}: the key function returned None "
                                      "and the index is not nullable")
        return self.index_map.key_bytes(txn, indexed if self.unique else (indexed, primary))

    async def changes(self, txn: DbTransaction, primary: Any, old: Any,
                      new: Any) -> list[Change]:
        """What writing ``new`` over ``old`` (None: absent) does to the index; checks first."""
        old_key = self.entry_key(txn, primary, old, strict=False) if old is not None else None
        new_key = self.entry_key(txn, primary, new) if new is not None else None
        if old_key == new_key:
            return []
        changes: list[Change] = [] if old_key is None else [(old_key, None)]
        if new_key is not None:
            pointer = self.index_map.value_codec.encode(primary)
            if self.unique:
                holder = await txn.get_raw(new_key)
                if holder is not None and holder != pointer:
                    raise UniqueViolation(f"index {self.name!r}: the key is taken by another "
                                          "record", self.name)
            changes.append((new_key, pointer))
        return changes


class PersistentMap(Generic[K, V]):
    """A table of ``K -> V`` in slot ``slot`` (1..65535) of any ``Database``.

    ``slot=None`` leaves the slot to ``await db.attach_table(m, name=...)``; a map with a slot
    works without attaching (attaching records it in the catalog).
    """

    def __init__(self, slot: int | None, key_codec: KeyCodec[K] | type[KeyCodec[K]],
                 value_codec: ValueCodec[V] | type[ValueCodec[V]], *,
                 name: str | None = None) -> None:
        if slot is not None and not is_int(slot):
            raise TypeError(f"slot must be an int or None, not {type(slot).__name__}")
        if slot is not None and not 1 <= slot <= MAX_SLOT:
            raise ValueError(f"slot must be in 1..{MAX_SLOT} (0 is the catalog), not {slot}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        self.slot = slot
        self.name = name
        self.key_codec: KeyCodec[K] = _codec(key_codec, KeyCodec)
        self.value_codec: ValueCodec[V] = _codec(value_codec, ValueCodec)
        self._indexes: dict[str, Index] = {}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(slot={self.slot}, name={self.name!r}, "
                f"key={self.key_codec!r}, value={self.value_codec!r})")

    def bind(self, slot: int, name: str | None = None) -> None:
        """Set the slot the catalog gave this map (``Database.attach_table`` calls it)."""
        self.slot = slot
        if name is not None:
            self.name = name

    # -- keys ----------------------------------------------------------------------------------

    def layout(self, where: DbTransaction | Store) -> TableLayout:
        """Where this map's records live in ``where``'s database (``txetcd.pmap.layout``)."""
        db = where.db if isinstance(where, DbTransaction) else where
        if self.slot is None:
            raise TableNotAttached(f"{self!r} has no slot: await db.attach_table(map, name=...) "
                                   "first, or construct it with a slot")
        return TableLayout.of(self.slot, db.prefix)

    def table_prefix(self, where: DbTransaction | Store) -> bytes:
        """``<database prefix><slot>``, which every key of this map starts with."""
        return self.layout(where).prefix

    def key_bytes(self, txn: DbTransaction, key: K) -> bytes:
        return self.layout(txn).key(self.key_codec.encode(key))

    def _bound(self, key: Any) -> bytes:
        # A partial tuple is a valid bound of a compound key: it sorts before its extensions.
        if isinstance(self.key_codec, CompoundKey):
            return self.key_codec.encode_prefix(key)
        return self.key_codec.encode(key)

    def _range(self, where: DbTransaction | Store, from_key: Any, to_key: Any,
               prefix: Any) -> tuple[bytes, bytes]:
        """``[start, end)`` in etcd keys: ``from_key`` inclusive, ``to_key`` exclusive."""
        table = self.table_prefix(where)
        if prefix is not None:
            if from_key is not None or to_key is not None:
                raise ValueError("pass either prefix or from_key/to_key, not both")
            start = table + self.key_codec.encode_prefix(prefix)
            return start, prefix_end(start)
        start = table if from_key is None else table + self._bound(from_key)
        end = prefix_end(table) if to_key is None else table + self._bound(to_key)
        return start, end

    # -- single keys ---------------------------------------------------------------------------

    def __getitem__(self, txn_key: tuple[DbTransaction, K]) -> Awaitable[V | None]:
        return self.get(*_split(txn_key))

    def __setitem__(self, txn_key: tuple[DbTransaction, K], value: V) -> None:
        txn, key = _split(txn_key)
        self._enqueue(txn, key, value, delete=False)

    def __delitem__(self, txn_key: tuple[DbTransaction, K]) -> None:
        txn, key = _split(txn_key)
        self._enqueue(txn, key, None, delete=True)

    def __contains__(self, txn_key: object) -> bool:
        raise TypeError("`in` cannot wait for etcd: use `await m.contains(txn, key)`")

    @on_loop
    async def get(self, txn: DbTransaction, key: K) -> V | None:
        """The value at ``key`` as ``txn`` sees it, or None."""
        await txn.flush()
        data = await txn.get_raw(self.key_bytes(txn, key))
        return None if data is None else self.value_codec.decode(data)

    @on_loop
    async def contains(self, txn: DbTransaction, key: K) -> bool:
        await txn.flush()
        return await txn.get_raw(self.key_bytes(txn, key)) is not None

    @on_loop
    async def put(self, txn: DbTransaction, key: K, value: V) -> None:
        """``m[txn, key] = value``, with index errors raised here rather than later."""
        await txn.write_now(self._write_job(txn, key, value, delete=False))

    set = put

    @on_loop
    async def delete(self, txn: Any, key: Any = _NO_KEY) -> None:
        """``del m[txn, key]``; also takes txaioetcd's ``delete((txn, key))``."""
        if key is _NO_KEY:
            txn, key = _split(txn)
        await txn.write_now(self._write_job(txn, key, None, delete=True))

    def _enqueue(self, txn: DbTransaction, key: K, value: V | None, delete: bool) -> None:
        if self._indexes:
            # Index upkeep reads the old value, which a sync __setitem__ cannot await.
            txn.defer_write(self._write_job(txn, key, value, delete))
        else:
            _apply(txn, [self._change(txn, key, value, delete)])

    def _change(self, txn: DbTransaction, key: K, value: V | None, delete: bool) -> Change:
        txn.check_writable()
        data = None if delete else self.value_codec.encode(value)  # type: ignore[arg-type]
        return self.key_bytes(txn, key), data

    def _write_job(self, txn: DbTransaction, key: K, value: V | None,
                   delete: bool) -> Callable[[], Awaitable[None]]:
        """Encode now (bad input fails at once); write, with index upkeep, when run."""
        record = self._change(txn, key, value, delete)

        async def job() -> None:
            changes: list[Change] = []
            if self._indexes:
                old_data = await txn.get_raw(record[0])
                old = None if old_data is None else self.value_codec.decode(old_data)
                new = None if delete else value
                for index in list(self._indexes.values()):
                    changes += await index.changes(txn, key, old, new)
            # Every check passed: apply all of it or (above) none of it.
            _apply(txn, [*changes, record])

        return job

    # -- ranges --------------------------------------------------------------------------------

    async def scan(self, txn: DbTransaction, from_key: Any = None, to_key: Any = None,
                   prefix: Any = None, limit: int | None = None, reverse: bool = False,
                   keys_only: bool = False, page_size: int = 1000) -> AsyncIterator[Any]:
        """``(key, value)`` pairs (or keys) of ``[from_key, to_key)`` or ``prefix``, in order.

        Reads page by page at the snapshot, merging the transaction's own writes.
        """
        if limit is not None and not is_int(limit):
            raise TypeError(f"limit must be an int, not {type(limit).__name__}")
        start, end = self._range(txn, from_key, to_key, prefix)
        await txn.flush()
        async for item in self._records(txn, start, end, reverse=reverse, limit=limit,
                                        keys_only=keys_only, page_size=page_size):
            yield item

    async def _records(self, txn: DbTransaction, start: bytes, end: bytes,
                       **options: Any) -> AsyncIterator[Any]:
        """Decoded records of ``[start, end)``; no flush, so write jobs may use it."""
        layout = self.layout(txn)
        keys_only = options.get("keys_only", False)
        async for raw_key, raw_value in txn.scan_raw(start, end, **options):
            key = self.key_codec.decode(layout.split(raw_key))
            yield key if keys_only else (key, self.value_codec.decode(raw_value))

    def select(self, txn: DbTransaction, from_key: Any = None, to_key: Any = None,
               return_keys: bool = False, return_values: bool = True,
               **options: Any) -> Selection | AwaitableSelection:
        """txaioetcd's ``await m.select(txn, from_key, to_key, return_keys, return_values)``:
        a list of values (or keys, or ``(keys, values)``); ``async for`` over it iterates like
        ``scan`` (pairs), without loading everything first. ``options`` go to ``scan``."""
        if not (return_keys or return_values):
            raise ValueError("select needs return_keys or return_values")
        keys_only = options.pop("keys_only", False) or not return_values
        rows = self.scan(txn, from_key, to_key, keys_only=keys_only, **options)
        kind = Selection if txn.db.client.driver.name == "twisted" else AwaitableSelection
        return kind(rows, return_keys or keys_only, return_values and not keys_only)

    @on_loop
    async def count(self, txn: DbTransaction, prefix: Any = None, from_key: Any = None,
                    to_key: Any = None) -> int:
        """How many records ``[from_key, to_key)`` or ``prefix`` (default: all) holds."""
        start, end = self._range(txn, from_key, to_key, prefix)
        await txn.flush()
        return await txn.count_raw(start, end)

    @on_loop
    async def truncate(self, txn: DbTransaction) -> None:
        """Delete every record and every index entry: one DeleteRange per map at commit."""

        async def job() -> None:
            for table in [self, *(index.index_map for index in self._indexes.values())]:
                start = table.table_prefix(txn)
                txn.clear_raw(start, prefix_end(start))

        await txn.write_now(job)

    # -- indexes -------------------------------------------------------------------------------

    def attach_index(self, name: Any, index_map: Any = None, fkey: Any = None,
                     unique: bool = True, nullable: bool = False) -> Index:
        """Keep ``index_map`` as the index ``name`` of this map (see ``Index``).

        txaioetcd's form ``attach_index(index_map, fkey)`` works too: a unique index named
        after the index map (its name, else ``"slot<N>"``). Existing records are not indexed
        until ``rebuild_index``.
        """
        if isinstance(name, PersistentMap):  # txaioetcd: attach_index(index_map, fkey)
            if fkey is not None:
                raise TypeError("attach_index(index_map, fkey) takes two arguments, or "
                                "attach_index(name, index_map, fkey)")
            name, index_map, fkey = self._index_name(name), name, index_map
        if not isinstance(name, str) or not name:
            raise ValueError(f"index name must be a non-empty str, not {name!r}")
        if name in self._indexes:
            raise ValueError(f"index {name!r} is attached already")
        if not isinstance(index_map, PersistentMap) or index_map is self:
            raise TypeError("index_map must be another PersistentMap")
        if not callable(fkey):
            raise TypeError("fkey must be callable")
        index = Index(name, self, index_map, fkey, unique, nullable)
        self._indexes[name] = index
        return index

    def _index_name(self, index_map: PersistentMap[Any, Any]) -> str:
        if index_map.name:
            return index_map.name
        if index_map.slot is not None:
            return f"slot{index_map.slot}"
        return f"index{len(self._indexes) + 1}"

    def detach_index(self, index: str | Index) -> bool:
        """Stop keeping an index (by name, or the ``Index`` that ``attach_index`` returned);
        returns whether it was attached, as txaioetcd did."""
        name = index.name if isinstance(index, Index) else index
        return self._indexes.pop(name, None) is not None

    def indexes(self) -> list[str]:
        return list(self._indexes)

    @on_loop
    async def rebuild_index(self, txn: DbTransaction, name: str) -> int:
        """Recompute index ``name`` from every record; returns how many entries it holds."""
        index = self._indexes[name]

        async def job() -> None:
            start = index.index_map.table_prefix(txn)
            txn.clear_raw(start, prefix_end(start))
            table = self.table_prefix(txn)
            async for key, value in self._records(txn, table, prefix_end(table)):
                _apply(txn, await index.changes(txn, key, None, value))

        await txn.write_now(job)
        return await index.index_map.count(txn)

    @on_loop
    async def get_by_index(self, txn: DbTransaction, name: str, index_key: Any) -> V | None:
        """The record a unique index maps ``index_key`` to, or None."""
        index = self._indexes[name]
        if not index.unique:
            raise ValueError(f"index {name!r} is not unique: scan its map with prefix=(key,)")
        primary = await index.index_map.get(txn, index_key)
        return None if primary is None else await self.get(txn, primary)

    # -- watch ---------------------------------------------------------------------------------

    def watch(self, db: Store, from_key: Any = None, to_key: Any = None, prefix: Any = None,
              *, start_revision: int | None = None, prev_kv: bool = False,
              callback: Callable[[Any], Any] | None = None) -> TableWatch:
        """Watch this map's records (all, a key range or a prefix) in ``db``, decoded.

        Yields (or passes to ``callback``) a ``TableEvent`` per change, and the client's
        ``WatchCompacted`` when history was lost (re-read the table then).
        """
        start, end = self._range(db, from_key, to_key, prefix)
        return TableWatch(self, db, KeySet(start, range_end=end), start_revision=start_revision,
                          prev_kv=prev_kv, callback=callback)


class _Rows:
    """A selection's rows: an async iterator of them, or all of them at once (``_collect``)."""

    def __init__(self, rows: AsyncIterator[Any], return_keys: bool, return_values: bool) -> None:
        super().__init__()
        self._rows = rows
        self._keys = return_keys
        self._values = return_values

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._rows

    async def _collect(self) -> Any:
        keys: list[Any] = []
        values: list[Any] = []
        async for row in self._rows:
            if self._values:
                keys.append(row[0])
                values.append(row[1])
            else:
                keys.append(row)
        if self._keys and self._values:
            return keys, values
        return keys if self._keys else values


class Selection(_Rows, LazyDeferred[Any]):
    """What ``select`` returns on Twisted: a Deferred of lists (txaioetcd: ``await`` or
    ``yield`` it), or an async iterator of rows (``async for``), which pages through without
    loading them all."""

    def _begin(self) -> defer.Deferred[Any]:
        return defer.ensureDeferred(self._collect())


class AwaitableSelection(_Rows):
    """What ``select`` returns on asyncio: ``await`` it for the lists, or ``async for`` it."""

    def __await__(self) -> Generator[Any, None, Any]:
        return self._collect().__await__()


@dataclass(frozen=True, slots=True)
class TableEvent:
    """A change of one record: ``value`` is None for a delete, ``previous`` if asked for."""

    type: str  # "PUT" or "DELETE"
    key: Any
    value: Any
    revision: int
    previous: Any = None


class TableWatch:
    """A client ``Watch`` over one map's key range whose events come decoded."""

    def __init__(self, table: PersistentMap[Any, Any], db: Store, keys: KeySet, *,
                 start_revision: int | None, prev_kv: bool,
                 callback: Callable[[Any], Any] | None) -> None:
        self.table = table
        self._layout = table.layout(db)
        deliver = None if callback is None else (lambda item: callback(self._decode(item)))
        self.watch = db.client.watch(keys, deliver, start_revision=start_revision,
                                     prev_kv=prev_kv)
        self.done = self.watch.done

    def _decode(self, item: Any) -> Any:
        if not isinstance(item, WatchEvent):
            return item  # WatchCompacted: the consumer must re-read
        table = self.table
        previous = item.prev_kv
        return TableEvent(
            str(item.type), table.key_codec.decode(self._layout.split(item.kv.key)),
            None if item.type == EventType.DELETE else table.value_codec.decode(item.kv.value),
            item.kv.mod_revision,
            table.value_codec.decode(previous.value) if previous is not None else None)

    def when_started(self) -> Awaitable[None]:
        return self.watch.when_started()

    def cancel(self) -> None:
        self.watch.cancel()

    stop = cancel

    def __aiter__(self) -> TableWatch:
        self.watch.__aiter__()  # refuses when a callback was given
        return self

    async def __anext__(self) -> Any:
        return self._decode(await self.watch.__anext__())

    async def __aenter__(self) -> TableWatch:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        await self.watch.__aexit__(exc_type, *exc)


COMPRESS_ZLIB = 1  # txaioetcd's (zlmdb's) PersistentMap.COMPRESS_ZLIB
COMPRESS_SNAPPY = 2


def _compressed(codec: ValueCodec[Any], compress: int | None) -> ValueCodec[Any]:
    if compress is None:
        return codec
    if compress == COMPRESS_ZLIB:
        return ZlibValue(codec)
    if compress == COMPRESS_SNAPPY:
        raise ValueError("compress=COMPRESS_SNAPPY is not supported (it needs python-snappy): "
                         "re-write the table with COMPRESS_ZLIB or no compression")
    raise ValueError(f"compress must be None, COMPRESS_ZLIB (1) or COMPRESS_SNAPPY (2), "
                     f"not {compress!r}")


def table(oid: str | uuid.UUID, marshal: Callable[[Any], Any] | None = None,
          parse: Callable[[Any], Any] | None = None, build: Callable[[Any, Any], int] | None = None,
          cast: Callable[[bytes], Any] | None = None,
          compress: int | None = None) -> Callable[[type[T]], type[T]]:
    """zlmdb's ``@table(oid, ...)`` class decorator, for ``await db.attach_table(Class)``.

    It sets the same attributes as ``zlmdb.table``, so classes decorated by either attach
    alike; this one needs no zlmdb (and keeps no global registry).
    """
    table_oid = uuid.UUID(oid) if isinstance(oid, str) else oid
    if not isinstance(table_oid, uuid.UUID):
        raise TypeError(f"oid must be a UUID or its string, not {type(oid).__name__}")

    def decorate(cls: type[T]) -> type[T]:
        if not (isinstance(cls, type) and issubclass(cls, PersistentMap)):
            raise TypeError(f"@table decorates a map class, not {cls!r}")
        for attribute, value in (("oid", table_oid), ("marshal", marshal), ("parse", parse),
                                 ("build", build), ("cast", cast), ("compress", compress)):
            setattr(cls, f"_zlmdb_{attribute}", value)
        return cls

    return decorate


class TypedMap(PersistentMap[Any, Any]):
    """A map whose codecs are fixed by the class: ``class M(TypedMap, key=..., value=...)``.

    ``key`` is a key codec class or a tuple of them (a compound key); ``value`` a value codec
    class. Instances take ``(slot, marshal=None, unmarshal=None)`` as in txaioetcd.
    """

    key_parts: ClassVar[tuple[type[KeyCodec[Any]], ...]] = ()
    value_type: ClassVar[Callable[..., ValueCodec[Any]]]
    open_end: ClassVar[bool] = False
    COMPRESS_ZLIB: ClassVar[int] = COMPRESS_ZLIB
    COMPRESS_SNAPPY: ClassVar[int] = COMPRESS_SNAPPY

    def __init_subclass__(cls, key: Any = None, value: Any = None, open_end: bool | None = None,
                          **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if key is not None:
            cls.key_parts = key if isinstance(key, tuple) else (key,)
        if value is not None:
            cls.value_type = value
        if open_end is not None:
            cls.open_end = open_end

    def __init__(self, slot: int | None = None, marshal: Callable[[Any], Any] | None = None,
                 unmarshal: Callable[[Any], Any] | None = None, *, name: str | None = None,
                 compress: int | None = None) -> None:
        value = with_marshal(self.value_type(), marshal, unmarshal)
        super().__init__(slot, self._key_codec(), _compressed(value, compress), name=name)

    @classmethod
    def _key_codec(cls) -> KeyCodec[Any]:
        if not cls.key_parts:
            raise TypeError(f"{cls.__name__} declares no key codec")
        parts = cls.key_parts
        return parts[0]() if len(parts) == 1 else CompoundKey(*parts, open_end=cls.open_end)


class FlatBuffersMap(TypedMap):
    """A map of FlatBuffers values: ``(slot, build=None, cast=None)``, both required."""

    def __init__(self, slot: int | None = None, build: Callable[[Any, Any], int] | None = None,
                 cast: Callable[[bytes], Any] | None = None, *, name: str | None = None,
                 compress: int | None = None) -> None:
        if build is None or cast is None:
            raise TypeError(f"{type(self).__name__} needs build=(obj, builder) -> offset "
                            "and cast=(bytes) -> obj")
        PersistentMap.__init__(self, slot, self._key_codec(),
                               _compressed(FlatBuffersValue(build, cast), compress), name=name)


# txaioetcd's map classes, one line each over the codecs.
class MapUuidString(TypedMap, key=UuidKey, value=StringValue): ...
class MapUuidOid(TypedMap, key=UuidKey, value=OidValue): ...
class MapUuidUuid(TypedMap, key=UuidKey, value=UuidValue): ...
class MapUuidUuidSet(TypedMap, key=UuidKey, value=UuidSetValue): ...
class MapUuidJson(TypedMap, key=UuidKey, value=JsonValue): ...
class MapUuidCbor(TypedMap, key=UuidKey, value=CborValue): ...
class MapUuidPickle(TypedMap, key=UuidKey, value=PickleValue): ...
class MapUuidFlatBuffers(FlatBuffersMap, key=UuidKey): ...
class MapUuidBinary(TypedMap, key=UuidKey, value=BinaryValue): ...
class MapStringString(TypedMap, key=StringKey, value=StringValue): ...
class MapStringOid(TypedMap, key=StringKey, value=OidValue): ...
class MapStringUuid(TypedMap, key=StringKey, value=UuidValue): ...
class MapStringJson(TypedMap, key=StringKey, value=JsonValue): ...
class MapStringCbor(TypedMap, key=StringKey, value=CborValue): ...
class MapStringPickle(TypedMap, key=StringKey, value=PickleValue): ...
class MapStringFlatBuffers(FlatBuffersMap, key=StringKey): ...
class MapStringBinary(TypedMap, key=StringKey, value=BinaryValue): ...
class MapOidString(TypedMap, key=OidKey, value=StringValue): ...
class MapOidOid(TypedMap, key=OidKey, value=OidValue): ...
class MapOidUuid(TypedMap, key=OidKey, value=UuidValue): ...
class MapOidJson(TypedMap, key=OidKey, value=JsonValue): ...
class MapOidCbor(TypedMap, key=OidKey, value=CborValue): ...
class MapOidPickle(TypedMap, key=OidKey, value=PickleValue): ...
class MapOidFlatBuffers(FlatBuffersMap, key=OidKey): ...
class MapOidBinary(TypedMap, key=OidKey, value=BinaryValue): ...
# txaioetcd's layout: the string ends the key unterminated (see CompoundKey's open_end).
class MapUuidStringUuid(TypedMap, key=(UuidKey, StringKey), value=UuidValue, open_end=True): ...
class MapUuidUuidUuid(TypedMap, key=(UuidKey, UuidKey), value=UuidValue): ...
class MapUuidUuidCbor(TypedMap, key=(UuidKey, UuidKey), value=CborValue): ...
class MapSlotUuidUuid(TypedMap, key=(SlotKey, UuidKey), value=UuidValue): ...
