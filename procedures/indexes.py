"""Secondary indexes of a table over WAMP, in txetcd.pmap's index layout.

An index is a ``txetcd.pmap.Index``: its entries live in their own slot (outside the table's
key range, so table events never carry them), a unique index at ``<slot><indexed value>``, a
non-unique one at ``<slot><indexed value><primary key>`` (a ``CompoundKey``); the entry's value
is the row's key in the table's key codec. A pmap program that opens the same map
(``Table.map``) keeps the same entries in its own transactions.

Every WAMP write of an indexed table (``put``, ``delete``, ``txn``) runs as one optimistic pmap
transaction: the row and every unique entry it claims are read, and the commit is one etcd txn
guarded by those reads, so a unique value goes to exactly one of any number of racing writers
and a refused write writes nothing. A missing field (or null) means "no entry".
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet import task

from txetcd import Client, KeySet, OpGet, Transaction, prefix_end
from txetcd.pmap import (
    CompoundKey,
    Database,
    DbTransaction,
    Index,
    KeyCodec,
    PersistentMap,
    TransactionConflict,
    UniqueViolation,
    ValueCodec,
)
from txetcd.types import KeyValue, is_int

from .answers import Answer, fill
from .arguments import refusal_kind
from .errors import ProcedureError
from .parts import TableParts
from .payload import SLOT
from .schema import SchemaViolation
from .wire import KeyWire

__all__ = ["IndexSpec", "TableIndex", "RowWrite", "write_rows", "resolve_pointer",
           "IndexMaintenance", "Disagreement", "WRITE_ATTEMPTS"]

WRITE_ATTEMPTS = 20  # a conflict means another writer committed; each retry sees its result
ROWS_PER_TXN = 100  # rows read per etcd txn by index scans (etcd allows 128 ops by default)
MAX_SCAN_LIMIT = 100_000


class IndexSpec(Protocol):
    """What an index declares (``component.config.IndexSettings`` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def field(self) -> str: ...  # a JSON pointer
    @property
    def unique(self) -> bool: ...
    @property
    def key(self) -> str: ...
    @property
    def slot(self) -> int: ...


class KeyAsValue(ValueCodec[Any]):
    """An index entry's value: the row's key, encoded by the table's key codec."""

    def __init__(self, keys: KeyCodec[Any]) -> None:
        self.keys = keys
        self.name = f"key-{keys.name}"

    def encode(self, value: Any) -> bytes:
        return self.keys.encode(value)

    def decode(self, data: bytes) -> Any:
        return self.keys.decode(data)


_MISSING = object()


def resolve_pointer(document: Any, pointer: str) -> Any:
    """The part of ``document`` at JSON pointer ``pointer``, or None when it is absent."""
    node = document
    for raw in pointer.split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict):
            node = node.get(part, _MISSING)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
        if node is _MISSING:
            return None
    return node


class TableIndex:
    """One index of one table: the pmap ``Index`` kept on ``table.map``, and its reads."""

    def __init__(self, table: TableParts, spec: IndexSpec) -> None:
        self.table = table
        self.name = spec.name
        self.field = spec.field
        self.unique = spec.unique
        self.values = KeyWire(spec.key)
        entry_keys: KeyCodec[Any] = self.values.codec if spec.unique else CompoundKey(
            self.values.codec, table.keys.codec)
        self.map: PersistentMap[Any, Any] = PersistentMap(spec.slot, entry_keys,
                                                          KeyAsValue(table.keys.codec))
        self.index: Index = table.map.attach_index(spec.name, self.map, self.indexed,
                                                   unique=spec.unique, nullable=True)
        self.prefix = self.map.table_prefix(table.db)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "field": self.field, "unique": self.unique,
                "key": self.values.kind, "slot": self.map.slot}

    def indexed(self, value: Any) -> Any:
        """The indexed value of a row's value (codec form), or None: the index's ``fkey``."""
        found = resolve_pointer(value, self.field)
        if found is None:
            return None
        try:
            return self.values.to_codec(found, f"index {self.name}: field {self.field} value",
                                        "invalid_value")
        except ProcedureError as exc:
            raise SchemaViolation(self.field, "index_key", exc.message) from None

    def entry_key(self, indexed: Any, primary: Any) -> bytes:
        return self.prefix + self.map.key_codec.encode(indexed if self.unique else
                                                       (indexed, primary))

    def split_entry(self, etcd_key: bytes, data: bytes) -> tuple[Any, Any]:
        """``(indexed value, row key)`` of an entry, both in codec form."""
        decoded = self.map.key_codec.decode(etcd_key[len(self.prefix):])
        primary = self.map.value_codec.decode(data)
        return (decoded if self.unique else decoded[0]), primary

    def probe(self, value: Any, what: str) -> Any:
        """An indexed value a caller passed in argument ``what``, as the index's codec takes it.
        Refused with the kind the argument check gives that argument (``refusal_kind``), so
        that one argument has one error kind whatever is wrong with it."""
        return self.values.to_codec(value, what, refusal_kind([what]))

    # -- reads -------------------------------------------------------------------------------

    async def get(self, value: Any) -> Any:
        """The row ``[key, value]`` whose indexed field is ``value``, or None (unique only)."""
        if not self.unique:
            raise ProcedureError("invalid_argument", f"index {self.name} is not unique: use "
                                                     f"{self.name}.scan")
        entry = self.prefix + self.values.codec.encode(self.probe(value, "value"))
        client = self.table.client
        found = await client.get(entry)
        if not found.kvs:
            return None
        primary = self.map.value_codec.decode(found.kvs[0].value)
        async for _, _, kv in self.rows([(value, primary)], found.header.revision):
            row, _ = self.table.sized_kv(kv)
            if isinstance(row, dict):
                raise self.table.corrupt(self.table.keys.from_codec(primary), row["error"])
            return row
        return None

    async def rows(self, entries: list[tuple[Any, Any]],
                   revision: int) -> AsyncIterator[tuple[Any, Any, KeyValue]]:
        """``(indexed, primary, row)`` of each ``(indexed, primary)`` entry whose row exists at
        ``revision``, in entry order: an etcd txn per ``ROWS_PER_TXN``. (An entry without its
        row is what ``check`` reports.)"""
        table = self.table
        for i in range(0, len(entries), ROWS_PER_TXN):
            chunk = entries[i:i + ROWS_PER_TXN]
            result = await table.client.txn(Transaction([], [
                OpGet(table.prefix + table.keys.codec.encode(primary), revision=revision)
                for _, primary in chunk]))
            for (indexed, primary), found in zip(chunk, result.responses, strict=True):
                kvs = getattr(found, "kvs", None)
                if kvs:
                    yield indexed, primary, kvs[0]

    async def entry_rows(self, low: bytes, high: bytes, want: int,
                         reverse: bool) -> AsyncIterator[tuple[Any, Any, KeyValue]]:
        """``rows`` of the entries in ``[low, high)`` in index order (or reversed), up to
        ``want`` entries, all read at the revision of the first page."""
        seen = 0
        revision: int | None = None
        while high > low and seen < want:
            got = await self.table.client.get(
                KeySet(low, range_end=high), limit=min(want - seen, 1000), revision=revision,
                sort_order="DESCEND" if reverse else None)
            revision = revision or got.header.revision
            seen += len(got.kvs)
            async for found in self.rows([self.split_entry(kv.key, kv.value)
                                          for kv in got.kvs], revision):
                yield found
            if not got.more or not got.kvs:
                break
            high, low = (got.kvs[-1].key, low) if reverse else (high, got.kvs[-1].key + b"\0")

    def sized_row(self, found: tuple[Any, Any, KeyValue]) -> tuple[Any, int]:
        """An index scan row ``[indexed value, key, value]`` (or the table's corrupt-row
        marker in its place) and its size on the wire, from the table's ``sized_kv``."""
        indexed, _, kv = found
        row, size = self.table.sized_kv(kv)
        if isinstance(row, dict):
            return row, size
        wire, indexed_size = self.values.from_codec_sized(indexed)
        return [wire, *row], size + SLOT + indexed_size

    def bounds(self, from_value: Any, to_value: Any, after: Any,
               reverse: bool) -> tuple[bytes, bytes]:
        low, high = self.prefix, prefix_end(self.prefix)
        codec = self.map.key_codec
        if from_value is not None:
            part = self.probe(from_value, "from_value")
            low = max(low, self.prefix + (codec.encode(part) if self.unique
                                          else codec.encode_prefix((part,))))
        if to_value is not None:
            part = self.probe(to_value, "to_value")
            high = min(high, self.prefix + (codec.encode(part) if self.unique
                                            else codec.encode_prefix((part,))))
        if after is not None:
            if not self.unique and not (isinstance(after, list) and len(after) == 2):
                raise ProcedureError("invalid_argument", "after must be [index_value, key] "
                                                         "(the first two items of a row)")
            indexed = after[0] if isinstance(after, list) and len(after) == 2 else after
            position = codec.encode(self.probe(indexed, "after") if self.unique else (
                self.probe(indexed, "after"), self.table.keys.to_codec(after[1], "after key")))
            if reverse:
                high = min(high, self.prefix + position)
            else:
                low = max(low, self.prefix + position + b"\0")
        return low, high

    async def scan(self, from_value: Any = None, to_value: Any = None, limit: Any = 1000,
                   reverse: Any = False, after: Any = None, page: Any = False,
                   progress: Callable[[list[Any]], None] | None = None) -> Any:
        """Rows ``[indexed value, key, value]`` ordered by indexed value, then key."""
        if not is_int(limit) or not 1 <= limit <= MAX_SCAN_LIMIT:
            raise ProcedureError("invalid_argument",
                                 f"limit must be an int from 1 to {MAX_SCAN_LIMIT}, not {limit!r}")
        for flag, name in ((reverse, "reverse"), (page, "page")):
            if not isinstance(flag, bool):
                raise ProcedureError("invalid_argument", f"{name} must be true or false")
        low, high = self.bounds(from_value, to_value, after, reverse)
        answer = Answer(f"{self.table.name}.{self.name}.scan", progress, page)
        want = limit + 1 if page else limit  # one more row tells whether this page is last
        filled = await fill(answer, self.entry_rows(low, high, want, reverse), self.sized_row,
                            limit, self.table.turn)
        if not page:
            return answer.rows
        cursor = None
        if filled.more and filled.item is not None:  # the last entry's place, even if its
            indexed, primary, _ = filled.item  # row was a corrupt-row marker
            cursor = [self.values.from_codec(indexed), self.table.keys.from_codec(primary)]
        return {"rows": answer.rows, "last": not filled.more, "next_after": cursor,
                "partial": answer.partial}


@dataclass
class Disagreement:
    """An index entry that is missing, points elsewhere, or has no row that maps to it."""

    kind: str  # "missing", "stale" or "duplicate"
    key: Any  # the row's key (wire form)
    value: Any  # the indexed value (wire form)

    def __str__(self) -> str:
        what = {"missing": "row has no entry", "stale": "entry matches no row",
                "duplicate": "another row holds the same unique value"}[self.kind]
        return f"{self.kind}: key {self.key!r} value {self.value!r}: {what}"


class IndexMaintenance:
    """Builds an index over the rows a table already has, and checks it against them.

    Both work page by page; ``build_page`` is one pmap transaction (guarded by the page's rows,
    so live writes meanwhile are safe), which also stores ``marker`` so an interrupted build
    resumes where it stopped.
    """

    def __init__(self, index: TableIndex) -> None:
        self.index = index
        self.table = index.table

    def _decode_row(self, etcd_key: bytes, data: bytes) -> tuple[Any, Any]:
        table = self.table
        return table.keys.codec.decode(etcd_key[len(table.prefix):]), table.values.codec.decode(
            data)

    def _expected(self, primary: Any, value: Any) -> bytes | None:
        indexed = self.index.indexed(value)
        return None if indexed is None else self.index.entry_key(indexed, primary)

    async def build_page(self, phase: str, after: bytes | None, size: int, marker: bytes,
                         marker_value: Callable[[str, bytes], bytes]) -> bytes | None:
        """Index one page of rows (phase "rows") or drop one page of stale entries (phase
        "entries") after ``after``; returns the page's last etcd key, None when done."""
        table, index = self.table, self.index
        prefix = table.prefix if phase == "rows" else index.prefix
        start = prefix if after is None else after + b"\0"
        page = await table.client.get(KeySet(start, range_end=prefix_end(prefix)), limit=size,
                                      keys_only=True)
        if not page.kvs:
            return None
        last = page.kvs[-1].key
        for attempt in range(WRITE_ATTEMPTS):
            txn = table.db.begin(write=True)
            try:
                async for key, data in txn.scan_raw(start, last + b"\0"):
                    if phase == "rows":
                        await self._index_row(txn, key, data)
                    else:
                        await self._drop_if_stale(txn, key, data)
                txn.put_raw(marker, marker_value(phase, last))
                await txn.commit()
                return last
            except TransactionConflict:
                txn.abort()
            except BaseException:
                txn.abort()
                raise
            await task.deferLater(table.client.reactor, random.uniform(0, 0.01 * attempt),
                                  lambda: None)
        raise ProcedureError("conflict", "a page kept conflicting with live writes; run the "
                                         "build again to resume")

    async def _index_row(self, txn: DbTransaction, key: bytes, data: bytes) -> None:
        primary, value = self._decode_row(key, data)
        try:
            for entry, pointer in await self.index.index.changes(txn, primary, None, value):
                if pointer is not None:
                    txn.put_raw(entry, pointer)
        except UniqueViolation:
            indexed = self.index.indexed(value)
            holder = await txn.get_raw(self.index.entry_key(indexed, primary))
            other = None if holder is None else self.index.map.value_codec.decode(holder)
            raise ProcedureError("conflict", f"index {self.index.name}: rows "
                                             f"{self.table.keys.from_codec(other)!r} and "
                                             f"{self.table.keys.from_codec(primary)!r} both "
                                             f"hold {self.index.values.from_codec(indexed)!r}"
                                 ) from None

    async def _drop_if_stale(self, txn: DbTransaction, entry: bytes, data: bytes) -> None:
        _, primary = self.index.split_entry(entry, data)
        row = await txn.get_raw(self.table.prefix + self.table.keys.codec.encode(primary))
        expected = None if row is None else self._expected(primary, self.table.values.codec
                                                           .decode(row))
        if expected != entry:
            txn.delete_raw(entry)

    async def check(self) -> tuple[int, int, list[Disagreement]]:
        """Rows, entries, and every disagreement between them, all read at one revision."""
        table, index = self.table, self.index
        client = table.client
        revision = (await client.get(table.prefix)).header.revision
        expected: dict[bytes, Any] = {}
        problems: list[Disagreement] = []
        rows = 0
        async for kv in client.scan(table.keyset, revision=revision):
            rows += 1
            primary, value = self._decode_row(kv.key, kv.value)
            entry = self._expected(primary, value)
            if entry is None:
                continue
            if entry in expected:
                problems.append(Disagreement("duplicate", table.keys.from_codec(primary),
                                             index.values.from_codec(index.indexed(value))))
            expected[entry] = primary
        entries = 0
        async for kv in client.scan(KeySet(index.prefix, prefix=True), revision=revision):
            entries += 1
            indexed, primary = index.split_entry(kv.key, kv.value)
            if expected.get(kv.key, _MISSING) != primary:
                problems.append(Disagreement("stale", table.keys.from_codec(primary),
                                             index.values.from_codec(indexed)))
            expected.pop(kv.key, None)
        for entry, primary in expected.items():
            indexed, _ = index.split_entry(entry, index.map.value_codec.encode(primary))
            problems.append(Disagreement("missing", table.keys.from_codec(primary),
                                         index.values.from_codec(indexed)))
        return rows, entries, problems


@dataclass(frozen=True)
class RowWrite:
    """One op of a write through the pmap path: put, delete or check (codec-form key)."""

    table: TableParts
    kind: str
    key: Any
    value: Any = None
    if_revision: int | None = None


async def _mod_revision(client: Client, key: bytes, revision: int | None) -> int:
    found = await client.get(key, revision=revision)
    return found.kvs[0].mod_revision if found.kvs else 0


async def _apply(txn: DbTransaction, writes: Sequence[RowWrite]) -> list[bool]:
    existed = []
    for write in writes:
        table = write.table
        row = table.map.key_bytes(txn, write.key)
        existed.append(await txn.get_raw(row) is not None)  # read: guarded at commit
        # The same snapshot as the read above, whose guard holds this until the commit.
        if write.if_revision is not None and \
                await _mod_revision(table.client, row, txn.revision) != write.if_revision:
            raise ProcedureError("conflict", f"{table.name}: key "
                                             f"{table.keys.from_codec(write.key)!r:.80} is "
                                             f"not at revision {write.if_revision} any "
                                             "more; nothing was written (reload and retry)")
        try:
            if write.kind == "put":
                await table.map.put(txn, write.key, write.value)
            elif write.kind == "delete":
                await table.map.delete(txn, write.key)
        except UniqueViolation as exc:
            index = table.indexes[exc.index]
            taken = index.values.from_codec(index.indexed(write.value))
            raise ProcedureError("conflict", f"{table.name}: unique index {exc.index} already "
                                             f"holds {taken!r:.80} for another row; nothing "
                                             "was written") from None
        except SchemaViolation as exc:
            raise ProcedureError("invalid_value", f"{table.name}: {exc}") from None
    return existed


async def write_rows(client: Client, writes: Sequence[RowWrite]) -> tuple[int, list[bool]]:
    """Apply ``writes`` with index upkeep in one etcd txn; returns the revision and, per write,
    whether its row existed. Re-runs on conflict with another writer (each re-run sees it)."""
    db = Database(client)
    for attempt in range(WRITE_ATTEMPTS):
        txn = db.begin(write=True)
        try:
            existed = await _apply(txn, writes)
            revision = await txn.commit()
            assert revision is not None
            return revision, existed
        except TransactionConflict:
            txn.abort()
        except BaseException:
            txn.abort()
            raise
        delay = random.uniform(0, 0.002 * 2 ** min(attempt, 6))
        await task.deferLater(client.reactor, delay, lambda: None)
    raise ProcedureError("conflict", f"the write kept conflicting with other writers "
                                     f"({WRITE_ATTEMPTS} attempts); nothing was written, retry")
