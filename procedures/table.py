"""The get/put/delete/scan/count procedures of one table, over txetcd.

A table's rows live at ``<namespace><slot uint16 big-endian><encoded key>``, the layout of
``txetcd.pmap.layout``, so a WAMP client and a pmap program see the same rows. Arguments are
checked before etcd is touched, so a refused call writes nothing.

A stored row the table cannot decode or deliver (written by another program: bad JSON, a short
uuid key, invalid UTF-8, a NUL-led string) never breaks a call: ``get`` refuses it with
``corrupt_row`` naming the key, and ``scan`` yields a marker ``{"corrupt_row": <key bytes as
hex, after the table's slot>, "error": <why>}`` in its place and goes on. ``count`` counts it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from txetcd import Client, CompModified, Deleted, KeySet, OpDel, OpSet, prefix_end
from txetcd.interface import env_of
from txetcd.pmap import Database, PersistentMap, TableLayout, ValueCodec
from txetcd.types import KeyValue, Range, is_int

from .answers import Answer, fill
from .errors import ProcedureError
from .flatbuf import FlatBuffersSchema
from .history import history
from .indexes import IndexSpec, RowWrite, TableIndex, write_rows
from .payload import DEFAULT_MAX_DEPTH, ROW_SLOTS, payload_size
from .wire import CorruptRow, KeyWire, TableWire, ValueWire

__all__ = ["Table"]

MAX_SCAN_LIMIT = 100_000
SCAN_PAGE = 1000  # rows of the first etcd page of a scan; later pages hold about
SCAN_PAGE_BYTES = 1 << 20  # this many bytes (etcd's gateway costs per request, not per row)


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ProcedureError("invalid_argument", f"{name} must be true or false, not {value!r}")
    return value


def _revision_arg(value: Any, name: str = "if_revision") -> int | None:
    if value is None:
        return None
    if not is_int(value) or value < 0:
        raise ProcedureError("invalid_argument",
                             f"{name} must be a revision (an int >= 0; 0 = only if absent), "
                             f"not {value!r}")
    return value


class Table:
    """One configured table: its codecs, its key range in etcd, and its operations."""

    def __init__(self, name: str, slot: int, key_kind: str, value_kind: str,
                 client: Client, values: ValueCodec[Any] | None = None,
                 indexes: Sequence[IndexSpec] = (), max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        self.name = name
        self.slot = slot
        # Keys and values in their WAMP form, apart from the calls: the event path uses it.
        self.wire = TableWire(TableLayout.of(slot), KeyWire(key_kind),
                              ValueWire(value_kind, values, max_depth))
        self.prefix = self.wire.layout.prefix
        self.key_offset = len(self.prefix)  # a row's etcd key, less this, is its encoded key
        self.keys = self.wire.keys
        self.values = self.wire.values
        self.client = client
        # The same rows as a pmap map: indexed tables write through it (index upkeep), and a
        # pmap program that opens it shares the schema and the index entries.
        self.db = Database(client)
        self.map: PersistentMap[Any, Any] = PersistentMap(slot, self.keys.codec,
                                                          self.values.codec, name=name)
        self.indexes = {spec.name: TableIndex(self, spec) for spec in indexes}

    def description(self) -> dict[str, Any]:
        """Key kind, value kind, schema and indexes: what a client builds forms from."""
        codec = self.values.codec
        schema = getattr(codec, "schema", None)
        flatbuffers = schema.describe() if isinstance(schema, FlatBuffersSchema) else None
        return {"table": self.name, "slot": self.slot, "key": self.keys.kind,
                "value": self.values.kind, "schema": None if flatbuffers else schema,
                "flatbuffers": flatbuffers,
                "indexes": [index.describe() for index in self.indexes.values()]}

    async def describe(self) -> dict[str, Any]:
        return self.description()

    async def history(self, key: Any, limit: Any = 10, before_revision: Any = None) -> Any:
        return await history(self, key, limit, before_revision)

    @property
    def keyset(self) -> KeySet:
        return self.wire.keyset

    def etcd_key(self, key: Any) -> bytes:
        return self.wire.etcd_key(key)

    def wire_key(self, etcd_key: bytes) -> Any:
        return self.wire.wire_key(etcd_key)

    def guarded_put(self, key: Any, value: Any, if_revision: Any) -> tuple[list[Any], OpSet]:
        """The compares and the op of a put; shared by ``put`` and ``txn``."""
        revision = _revision_arg(if_revision)
        op = OpSet(self.etcd_key(key), self.values.encode(value))
        return self.compares(op.key, revision), op

    def guarded_delete(self, key: Any, if_revision: Any) -> tuple[list[Any], OpDel]:
        revision = _revision_arg(if_revision)
        op = OpDel(self.etcd_key(key))
        return self.compares(op.keys.key, revision), op

    @staticmethod
    def compares(etcd_key: bytes, revision: int | None) -> list[Any]:
        # mod_revision of an absent key is 0, so if_revision=0 means "only if absent".
        return [] if revision is None else [CompModified(etcd_key, "==", revision)]

    def get(self, key: Any, meta: Any = False) -> Any:
        """The value at ``key`` (with ``meta``, and its revisions), or None.

        A Deferred chain rather than a coroutine: this is the call a table serves most, and
        the coroutine's driving cost a get a tenth of the component's CPU (issue #17)."""
        with_meta = _flag(meta, "meta")
        return self.client.get(self.etcd_key(key)).addCallback(self._found, key, with_meta)

    def _found(self, found: Range, key: Any, with_meta: bool) -> Any:
        if not found.kvs:
            return None
        kv = found.kvs[0]
        try:
            value = self.values.decode(kv.value)
        except CorruptRow as exc:
            raise self.corrupt(key, exc) from None
        if not with_meta:
            return value
        return {"value": value, "revision": kv.mod_revision, "version": kv.version,
                "created": kv.create_revision}

    def corrupt(self, key: Any, cause: Any) -> ProcedureError:
        """The ``corrupt_row`` error of a get whose stored row at ``key`` cannot be read."""
        return ProcedureError("corrupt_row", f"{self.name}: the row at key {key!r:.80} cannot "
                                             f"be read: {cause}")

    def row_write(self, kind: str, key: Any, value: Any, if_revision: Any) -> RowWrite:
        """A write through the pmap path (indexed tables); checked like guarded_put."""
        revision = _revision_arg(if_revision)
        native = self.keys.to_codec(key)
        if kind == "put":
            self.values.encode(value)  # the schema and codec refusals, before etcd is touched
            value = self.values.to_codec(value)
        return RowWrite(self, kind, native, value, revision)

    async def put(self, key: Any, value: Any, if_revision: Any = None) -> int:
        if self.indexes:
            return (await write_rows(self.client, [self.row_write("put", key, value,
                                                                  if_revision)]))[0]
        compares, op = self.guarded_put(key, value, if_revision)
        if not compares:
            return (await self.client.set(op.key, op.value)).revision
        result = await self.client.txn(compare=compares, success=[op])
        if not result.succeeded:
            raise ProcedureError("conflict", f"{self.name}: key {key!r:.80} is not at revision "
                                             f"{if_revision} any more (reload and retry)")
        return result.header.revision

    async def delete(self, key: Any, if_revision: Any = None) -> bool:
        if self.indexes:
            _, existed = await write_rows(self.client, [self.row_write("delete", key, None,
                                                                       if_revision)])
            return existed[0]
        compares, op = self.guarded_delete(key, if_revision)
        if not compares:
            return (await self.client.delete(op.keys)).deleted > 0
        result = await self.client.txn(compare=compares, success=[op])
        if not result.succeeded:
            raise ProcedureError("conflict", f"{self.name}: key {key!r:.80} is not at revision "
                                             f"{if_revision} any more (reload and retry)")
        deleted = result.responses[0]
        assert isinstance(deleted, Deleted)
        return deleted.deleted > 0

    def bounds(self, from_key: Any, to_key: Any, prefix: Any, after: Any = None,
               reverse: bool = False) -> KeySet:
        """The etcd range of a scan or count: ``[from_key, to_key)`` and/or a key prefix, and
        for a cursor only what comes after ``after`` in the scan's direction."""
        if prefix is not None:
            low = self.prefix + self.keys.encode_prefix(prefix)
            high = prefix_end(low)
        else:
            low, high = self.wire.layout.bounds
        if from_key is not None:
            low = max(low, self.etcd_key(from_key))
        if to_key is not None:
            high = min(high, self.etcd_key(to_key))
        if after is not None:
            position = self.prefix + self.cursor_key(after)
            if reverse:
                high = min(high, position)
            else:
                low = max(low, position + b"\0")
        if high <= low:
            high = low + b"\0"  # an empty range that etcd still accepts; nothing matches it
            return KeySet(low, range_end=high)
        return KeySet(low, range_end=high)

    async def scan(self, from_key: Any = None, to_key: Any = None, prefix: Any = None,
                   limit: Any = 1000, reverse: Any = False, keys_only: Any = False,
                   after: Any = None, page: Any = False, revision: Any = None,
                   progress: Callable[[list[Any]], None] | None = None) -> Any:
        """Rows in key order as ``[key, value]`` (or keys); chunks go to ``progress`` if given.

        With progress the final result is an empty list: every row was already delivered.
        Cancelling the call stops paging through etcd. ``after`` (a key, exclusive) continues
        where a page ended; ``page=True`` returns ``{"rows", "last", "next_after", "partial"}``
        instead (``partial``: ended early by bytes, ``procedures.answers``). ``revision`` reads
        the table as it was then (several calls, one snapshot: how ``etcd-wamp export`` pages).
        """
        if not is_int(limit) or not 1 <= limit <= MAX_SCAN_LIMIT:
            raise ProcedureError("invalid_argument",
                                 f"limit must be an int from 1 to {MAX_SCAN_LIMIT}, not {limit!r}")
        backwards = _flag(reverse, "reverse")
        only_keys = _flag(keys_only, "keys_only")
        paged = _flag(page, "page")
        at_revision = _revision_arg(revision, "revision") or None
        keys = self.bounds(from_key, to_key, prefix, after, backwards)
        answer = Answer(f"{self.name}.scan", progress, paged)
        # A page reads one row more than it returns: that row says whether it is the last.
        want = limit + 1 if paged else limit
        rows = self.client.scan(keys, page_size=min(want, SCAN_PAGE), limit=want,
                                reverse=backwards, keys_only=only_keys, revision=at_revision,
                                page_bytes=SCAN_PAGE_BYTES)
        sized_row = self.sized_key if only_keys else self.sized_kv
        filled = await fill(answer, rows, sized_row, limit, self.turn)
        if not paged:
            return answer.rows
        cursor = filled.row  # the last row's key, or its marker:
        if isinstance(cursor, dict):
            # A corrupt row's marker is a cursor too: a page that ends in one (or holds only
            # such rows) still says where the next page starts.
            cursor = {"corrupt_row": cursor["corrupt_row"]}
        elif cursor is not None and not only_keys:
            cursor = cursor[0]
        return {"rows": answer.rows, "last": not filled.more,
                "next_after": cursor if filled.more else None, "partial": answer.partial}

    def cursor_key(self, after: Any) -> bytes:
        """The encoded key an ``after`` cursor names: a wire key, or a corrupt-row marker's
        ``{"corrupt_row": hex}``, which names a stored key the table cannot decode."""
        if isinstance(after, dict) and set(after) <= {"corrupt_row", "error"} \
                and isinstance(after.get("corrupt_row"), str):
            try:
                return bytes.fromhex(after["corrupt_row"])
            except ValueError:
                raise ProcedureError("invalid_argument", "after: a corrupt_row cursor holds "
                                     "the key's bytes in hex") from None
        return self.keys.encode(after, "after")

    def turn(self) -> Awaitable[None]:
        """One turn of the client's event loop."""
        return env_of(self.client).driver.sleep(0)

    def sized_kv(self, kv: KeyValue) -> tuple[Any, int]:
        """A scan row of a stored row as etcd gave it: ``[key, value]`` (or its corrupt-row
        marker) and its size on the wire (``payload_size(row, wire=True)``), found by the
        same walk that checks it can be delivered. Runs for every row a scan delivers."""
        try:
            key, key_size = self.keys.decode_sized(kv.key[self.key_offset:])
            value, value_size = self.values.decode_sized(kv.value)
        except CorruptRow as exc:
            return self.corrupt_marker(kv.key, exc)
        return [key, value], ROW_SLOTS + key_size + value_size

    def sized_key(self, kv: KeyValue) -> tuple[Any, int]:
        """``sized_kv`` of a stored row's key alone (a ``keys_only`` scan)."""
        try:
            return self.keys.decode_sized(kv.key[self.key_offset:])
        except CorruptRow as exc:
            return self.corrupt_marker(kv.key, exc)

    def corrupt_marker(self, etcd_key: bytes, cause: CorruptRow) -> tuple[Any, int]:
        """What a scan delivers in place of a row it cannot read, and its size on the wire."""
        marker = {"corrupt_row": etcd_key[self.key_offset:].hex(), "error": str(cause)}
        return marker, payload_size(marker, wire=True)

    async def count(self, from_key: Any = None, to_key: Any = None, prefix: Any = None) -> int:
        return (await self.client.get(self.bounds(from_key, to_key, prefix),
                                      count_only=True)).count
