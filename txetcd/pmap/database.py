"""A database of persistent maps in etcd: slot catalog and optimistic, serializable transactions.

Keys are ``<prefix><slot: uint16 big-endian><encoded key>`` (``txetcd.pmap.layout``); slot 0
is the catalog, whose entry for slot ``s`` is ``<prefix>\\0\\0<s: uint16 big-endian>``
holding CBOR ``{name, slot, key, value, ...}`` (zlmdb's catalog layout).

Transactions are optimistic. The first read fixes a snapshot revision ``S`` (from its response
header: no extra round trip) and every later read uses ``revision=S``. Writes are buffered and
sent at commit as ONE etcd txn whose compares re-check everything the transaction read:

* a key read present: ``mod_revision == <the mod_revision read>``;
* a key read absent: ``create_revision == 0`` (still absent);
* a scanned (or write-txn counted) range ``[a, b)``: ``mod_revision < S + 1`` over the whole
  range, which fails for any key created or changed in it after ``S``; together with the
  per-key compare on every key the scan returned (which fails once that key is deleted), the
  range must hold exactly the keys and values the scan saw.

So a committed write transaction read exactly what the store held just before its commit
revision: write transactions are serializable in commit order, and a read-only one (which
commits nothing) sees a consistent snapshot. If any compare fails, nothing is written and
``TransactionConflict`` is raised. A range guard is conservative: a change to a key of the
range that the scan did not return to the caller (past ``limit``, or one the transaction
overwrote) also counts as a conflict.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from inspect import isawaitable
from typing import TYPE_CHECKING, Any

import cbor2
from twisted.internet import defer, task

from ..deferreds import started
from ..errors import Compacted
from ..op import Comp, CompCreated, CompModified, Op, OpDel, OpSet, Transaction
from ..types import KeySet, KeyValue, Range, prefix_end
from .errors import (
    ReadOnlyTransaction,
    SlotConflict,
    TransactionClosed,
    TransactionConflict,
    TransactionTooLarge,
)
from .layout import CATALOG_SLOT, MAX_SLOT, slot_bytes, slot_prefix

if TYPE_CHECKING:
    from ..client import Client
    from .maps import PersistentMap

__all__ = ["Database", "DbTransaction", "DbTransactionStats", "MAX_SLOT", "CATALOG_SLOT"]


_ATTACH_ATTEMPTS = 200  # each failed attempt means another process attached a table meanwhile


# A coroutine method made to return a Deferred, as every txetcd call does.
deferred = started


def in_range(key: bytes, start: bytes, end: bytes) -> bool:
    """Whether ``key`` lies in ``[start, end)``; ``end == b"\\0"`` means no upper bound."""
    return start <= key and (end == b"\0" or key < end)


class DbTransactionStats:
    """Counts of the puts and deletes transactions made (txaioetcd's name): pass one to
    ``db.begin(stats=...)``; several transactions may share it."""

    def __init__(self) -> None:
        self.puts = 0
        self.dels = 0
        self._started = time.time()

    def __repr__(self) -> str:
        return f"<DbTransactionStats puts={self.puts} dels={self.dels}>"

    @property
    def started(self) -> float:
        return self._started

    @property
    def duration(self) -> float:
        """Seconds since creation or the last ``reset()``."""
        return time.time() - self._started

    def reset(self) -> None:
        self.puts = 0
        self.dels = 0
        self._started = time.time()


class DbTransaction:
    """One optimistic transaction over a ``Database`` (see the module doc for the guarantee).

    Use it as ``async with db.begin(write=True) as txn:``: leaving the block normally commits,
    an exception aborts (nothing is written). Maps read and write through it.
    """

    def __init__(self, db: Database, write: bool = False, stats: DbTransactionStats | None = None,
                 timeout: float | None = None) -> None:
        if stats is not None and not isinstance(stats, DbTransactionStats):
            raise TypeError(f"stats must be a DbTransactionStats, not {type(stats).__name__}")
        self.db = db
        self.write = bool(write)
        self.stats = stats
        self.timeout = timeout  # of each request, the commit included (None: the client's)
        #: The snapshot revision every read uses, fixed by the first read.
        self.revision: int | None = None
        #: The revision of the commit, once a write transaction committed writes.
        self.committed_revision: int | None = None
        self._reads: dict[bytes, int] = {}  # key -> mod_revision seen (0: absent)
        self._ranges: set[tuple[bytes, bytes]] = set()
        self._writes: dict[bytes, bytes | None] = {}  # None: delete
        self._cleared: set[tuple[bytes, bytes]] = set()  # buffered range deletes
        self._pending: deque[Callable[[], Awaitable[None]]] = deque()
        self._write_lock = defer.DeferredLock()
        self._snapshot_lock = defer.DeferredLock()
        self._closed = False
        self._failure: BaseException | None = None

    def __repr__(self) -> str:
        kind = "write" if self.write else "read"
        return f"<DbTransaction {kind} snapshot={self.revision} writes={len(self._writes)}>"

    def id(self) -> int | None:
        """The snapshot revision (txaioetcd's name); None before the first read."""
        return self.revision

    async def __aenter__(self) -> DbTransaction:
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc_type is not None:
            self.abort()
        else:
            await self.commit()
        return False

    # -- state checks --------------------------------------------------------------------------

    def check_usable(self) -> None:
        if self._closed:
            raise TransactionClosed("the transaction is committed or aborted already")
        if self._failure is not None:
            raise TransactionClosed(f"an earlier buffered write failed: {self._failure!r}"
                                    ) from self._failure

    def check_writable(self) -> None:
        self.check_usable()
        if not self.write:
            raise ReadOnlyTransaction("cannot write in a read-only transaction; "
                                      "use db.begin(write=True)")

    # -- reads ---------------------------------------------------------------------------------

    async def _range(self, keys: KeySet, **options: Any) -> Range:
        """Read at the snapshot; the first read fixes it from its own response header."""
        if self.revision is None:
            # Concurrent first reads must agree on one snapshot, so they take turns.
            async with self._snapshot_lock:
                if self.revision is None:
                    result = await self.db.client.get(keys, timeout=self.timeout, **options)
                    self.revision = result.header.revision
                    return result
        return await self.db.client.get(keys, revision=self.revision, timeout=self.timeout,
                                        **options)

    def _remember(self, kv: KeyValue) -> None:
        if self.write:
            self._reads.setdefault(kv.key, kv.mod_revision)

    def _is_cleared(self, key: bytes) -> bool:
        return any(in_range(key, start, end) for start, end in self._cleared)

    async def get_raw(self, key: bytes) -> bytes | None:
        """The value of ``key`` as this transaction sees it (its own writes first)."""
        self.check_usable()
        if key in self._writes:
            return self._writes[key]
        if self._is_cleared(key):
            return None
        result = await self._range(KeySet(key))
        if not result.kvs:
            if self.write:
                self._reads.setdefault(key, 0)
            return None
        self._remember(result.kvs[0])
        return result.kvs[0].value

    async def _stored(self, start: bytes, end: bytes, reverse: bool, keys_only: bool,
                      page_size: int, skip: set[bytes]) -> AsyncIterator[KeyValue]:
        """The snapshot's kvs in ``[start, end)`` page by page, minus keys this txn replaced."""
        low, high = start, end
        while True:
            page = await self._range(KeySet(low, range_end=high), limit=page_size,
                                     keys_only=keys_only,
                                     sort_order="DESCEND" if reverse else None)
            for kv in page.kvs:
                if kv.key not in skip and not self._is_cleared(kv.key):
                    self._remember(kv)
                    yield kv
            if not page.more or not page.kvs:
                return
            if reverse:
                high = page.kvs[-1].key  # range_end is exclusive
            else:
                low = page.kvs[-1].key + b"\0"

    async def scan_raw(self, start: bytes, end: bytes, *, reverse: bool = False,
                       limit: int | None = None, keys_only: bool = False,
                       page_size: int = 1000) -> AsyncIterator[tuple[bytes, bytes]]:
        """``(key, value)`` in ``[start, end)`` in key order, this txn's writes merged in."""
        self.check_usable()
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, not {page_size}")
        if limit is not None and limit < 1:
            return
        if end != b"\0" and start >= end:
            return
        if self.write:
            self._ranges.add((start, end))
        buffered = sorted(((k, v) for k, v in self._writes.items() if in_range(k, start, end)),
                          reverse=reverse)
        stored = self._stored(start, end, reverse, keys_only,
                              min(page_size, limit or page_size), {k for k, _ in buffered})
        nxt = await anext(stored, None)
        emitted, i = 0, 0
        while limit is None or emitted < limit:
            if i < len(buffered) and (nxt is None or (buffered[i][0] > nxt.key) == reverse):
                key, value = buffered[i]
                i += 1
                if value is None:
                    continue
                yield key, value
            elif nxt is not None:
                yield nxt.key, nxt.value
                nxt = await anext(stored, None)
            else:
                return
            emitted += 1

    async def count_raw(self, start: bytes, end: bytes) -> int:
        """How many keys ``[start, end)`` holds as this transaction sees it."""
        self.check_usable()
        if end != b"\0" and start >= end:
            return 0
        if not self.write:
            # Read-only: no buffered writes to merge and nothing to guard, so count_only does.
            return (await self._range(KeySet(start, range_end=end), count_only=True)).count
        # A write txn must notice deleted keys at commit, which needs each key's own guard.
        count = 0
        async for _ in self.scan_raw(start, end, keys_only=True):
            count += 1
        return count

    # -- writes --------------------------------------------------------------------------------

    def put_raw(self, key: bytes, value: bytes) -> None:
        self.check_writable()
        self._writes[key] = value
        if self.stats is not None:
            self.stats.puts += 1

    def delete_raw(self, key: bytes) -> None:
        self.check_writable()
        self._writes[key] = None
        if self.stats is not None:
            self.stats.dels += 1

    def clear_raw(self, start: bytes, end: bytes) -> None:
        """Delete every key of ``[start, end)``: one DeleteRange at commit."""
        self.check_writable()
        for key in [k for k in self._writes if in_range(k, start, end)]:
            del self._writes[key]
        self._cleared.add((start, end))

    def defer_write(self, job: Callable[[], Awaitable[None]]) -> None:
        """Queue a write that must read first (index upkeep); it runs before the next read.

        Synchronous ``map[txn, key] = value`` cannot await, so such writes run at the next
        ``flush`` (every read and the commit flush first), in the order they were made.
        """
        self.check_writable()
        self._pending.append(job)

    async def flush(self) -> None:
        """Run queued writes; if one fails the transaction is unusable (later ones assumed it)."""
        self.check_usable()
        if not self._pending:
            return
        async with self._write_lock:
            while self._pending:
                job = self._pending.popleft()
                try:
                    await job()
                except BaseException as exc:
                    self._pending.clear()
                    self._failure = exc
                    raise

    async def write_now(self, job: Callable[[], Awaitable[None]]) -> None:
        """Run one write job at once, after the queued ones; its error leaves the txn usable."""
        self.check_writable()
        await self.flush()
        async with self._write_lock:
            await job()

    # -- commit --------------------------------------------------------------------------------

    def _compares(self) -> list[Comp]:
        compares: list[Comp] = [
            CompModified(key, "==", mod) if mod else CompCreated(key, "==", 0)
            for key, mod in sorted(self._reads.items())]
        if self.revision is not None:
            compares += [CompModified(KeySet(start, range_end=end), "<", self.revision + 1)
                         for start, end in sorted(self._ranges)]
        return compares

    def _write_ops(self) -> list[Op]:
        puts = sorted(k for k, v in self._writes.items() if v is not None)
        ops: list[Op] = [OpSet(k, self._writes[k] or b"") for k in puts]
        for start, end in sorted(self._cleared):
            # etcd refuses a put inside a DeleteRange of the same txn, so the range is cut
            # around the keys this transaction writes into it again.
            low = start
            for key in (k for k in puts if in_range(k, start, end)):
                if low < key:
                    ops.append(OpDel(KeySet(low, range_end=key)))
                low = key + b"\0"
            if end == b"\0" or low < end:
                ops.append(OpDel(KeySet(low, range_end=end)))
        ops += [OpDel(k) for k, v in sorted(self._writes.items())
                if v is None and not self._is_cleared(k)]
        return ops

    @deferred
    async def commit(self) -> int | None:
        """Send the buffered writes as one etcd txn guarded by the read set.

        Returns the commit revision (the snapshot revision when there was nothing to write);
        raises ``TransactionConflict`` if a compare failed, in which case nothing was written.
        """
        self.check_usable()
        try:
            await self.flush()
            if not self.write or not (self._writes or self._cleared):
                return self.revision
            compares, ops = self._compares(), self._write_ops()
            limit = self.db.client.max_txn_ops
            if max(len(compares), len(ops)) > limit:
                raise TransactionTooLarge(
                    f"the commit needs {len(compares)} compares ({len(self._reads)} keys read, "
                    f"{len(self._ranges)} ranges scanned) and {len(ops)} writes (index entries "
                    f"included), but etcd allows {limit} per list (max_txn_ops); "
                    "split the work into smaller transactions")
            result = await self.db.client.txn(Transaction(compares, ops), timeout=self.timeout)
            if not result.succeeded:
                raise TransactionConflict(
                    f"a key read at revision {self.revision} changed before the commit "
                    f"(store revision {result.header.revision})",
                    self.revision, result.header.revision)
            self.committed_revision = result.header.revision
            return self.committed_revision
        finally:
            self._closed = True

    def abort(self) -> None:
        """Drop every buffered write; nothing is sent."""
        self._closed = True
        self._writes.clear()
        self._cleared.clear()
        self._pending.clear()


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

    @deferred
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

    @deferred
    async def run(self, fn: Callable[[DbTransaction], Any], retries: int = 10,
                  backoff: float = 0.002) -> Any:
        """Run ``fn(txn)`` (sync or async) in a write txn and commit; re-run it on conflict.

        A conflict (or a snapshot compacted away) re-runs ``fn`` in a fresh transaction up to
        ``retries`` times, after a short random pause that grows with each attempt. Other
        errors propagate at once: a commit whose outcome is unknown is never re-run.
        """
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
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
            await task.deferLater(self.client.reactor, delay, lambda: None)

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

    @deferred
    async def tables(self) -> dict[str, int]:
        """Slot of every table in the catalog, by name."""
        entries, _ = await self._catalog()
        return {str(e.get("name")): slot for slot, e in entries.items()}

    @deferred
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
        from .maps import PersistentMap

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
