"""Optimistic, serializable transactions over a pmap ``Database``.

The first read fixes a snapshot revision ``S`` (from its response header: no extra round trip)
and every later read uses ``revision=S``. Writes are buffered and sent at commit as ONE etcd txn
whose compares re-check everything the transaction read:

* a key read present: ``mod_revision == <the mod_revision read>``;
* a key read absent: ``create_revision == 0`` (still absent);
* a scanned (or write-txn counted) range ``[a, b)``: ``mod_revision < S + 1`` over the whole
  range, which fails for any key created or changed in it after ``S``; together with the
  per-key compare on every key the scan returned (which fails once that key is deleted), the
  range must hold exactly the keys and values the scan saw.

So a committed write transaction read exactly what the store held just before its commit
revision: write transactions are serializable in commit order, and a read-only one (which
commits nothing) sees a consistent snapshot. If any compare fails, nothing is written and
``TransactionConflict`` is raised: an update is never lost, it is refused (``Database.run``
re-runs the transaction). A range guard is conservative: a change to a key of the range that the
scan did not return to the caller (past ``limit``, or one the transaction overwrote) also counts
as a conflict.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from functools import wraps
from typing import Any, ParamSpec, Protocol, TypeVar

from ..core import Pager, in_range
from ..interface import Driver, Semaphore
from ..op import Comp, CompCreated, CompModified, Op, OpDel, OpSet, Transaction
from ..types import KeySet, KeyValue, Range
from .errors import (
    ReadOnlyTransaction,
    TransactionClosed,
    TransactionConflict,
    TransactionTooLarge,
)

__all__ = ["DbTransaction", "DbTransactionStats", "Store", "on_loop"]

P = ParamSpec("P")
T = TypeVar("T")


class Store(Protocol):
    """What a transaction needs of its database (``Database``): a client and a key prefix.

    The client is ``txetcd.Client`` or ``txetcd.asyncio.Client``: pmap uses only their common
    API and their ``driver`` (futures, locks, sleeps of the client's event loop)."""

    client: Any
    prefix: bytes


def _driver(owner: Any) -> Driver:
    """The driver of the client behind a Database, a transaction, or ``(txn, key)``."""
    if isinstance(owner, tuple) and owner:
        owner = owner[0]
    if isinstance(owner, DbTransaction):
        owner = owner.db
    client = getattr(owner, "client", None)
    if client is None:
        raise TypeError(f"expected a DbTransaction from db.begin(), not {type(owner).__name__}")
    driver: Driver = client.driver
    return driver


def on_loop(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Awaitable[T]]:
    """Run a coroutine method at once on its client's loop and return the loop's awaitable: a
    Deferred on Twisted (txaioetcd's contract: ``yield`` and ``await`` both work), a Task on
    asyncio. The client is the one of ``self`` (a Database or a transaction) or, for a map's
    methods, of their first argument (the transaction)."""

    @wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> Awaitable[T]:
        owner: Any = args[0]
        if not (isinstance(owner, DbTransaction) or hasattr(owner, "client")):
            owner = args[1] if len(args) > 1 else kwargs.get("txn")
        return _driver(owner).spawn(fn(*args, **kwargs))

    return run


@asynccontextmanager
async def _held(lock: Semaphore) -> AsyncIterator[None]:
    await lock.acquire()
    try:
        yield
    finally:
        lock.release()


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

    def __init__(self, db: Store, write: bool = False, stats: DbTransactionStats | None = None,
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
        driver = _driver(db)
        self._write_lock = driver.semaphore(1)
        self._snapshot_lock = driver.semaphore(1)
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
            async with _held(self._snapshot_lock):
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
        pager = Pager(start, end, page_size, reverse)
        want = page_size
        while want:
            page = await self._range(KeySet(pager.start, range_end=pager.end), limit=want,
                                     keys_only=keys_only,
                                     sort_order="DESCEND" if reverse else None)
            for kv in page.kvs:
                if kv.key not in skip and not self._is_cleared(kv.key):
                    self._remember(kv)
                    yield kv
            want = pager.advance(page.kvs, page.more)

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
        async with _held(self._write_lock):
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
        async with _held(self._write_lock):
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

    @on_loop
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
