"""The client body both event loops share: KV, transactions, scans, maintenance and cluster.

``txetcd.Client`` (Twisted) and ``txetcd.asyncio.Client`` are this class on their driver. Every
method returns the driver's awaitable: a Deferred on Twisted (txaioetcd's contract), an asyncio
Future or Task on asyncio. Loop-free: no module here imports an event loop.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeAlias

from .batch import BATCHABLE, Batcher
from .core import MAX_REQUEST_BYTES, MAX_TXN_OPS, Pager, TLSConfig
from .errors import Failed, FutureRevision, RequestTooLarge, TooManyOps
from .interface import Driver, Env
from .op import Op, OpDel, OpGet, OpSet, OpTxn, Transaction, int_arg
from .transport import Transport, check_endpoints
from .types import KeySet, KeyValue, Member, Range, Status, Success, is_int

__all__ = ["KVClient", "DEFAULT_URL", "Pending"]

DEFAULT_URL = "http://localhost:2379"

#: What a client method returns: ``Deferred[T]`` on Twisted, an asyncio Future/Task of T on
#: asyncio; ``await`` works on both.
Pending: TypeAlias = Any

DriverFactory = Callable[[TLSConfig | None, float, int], Driver]


def _endpoints(url: str | None, endpoints: Sequence[str] | None) -> list[str]:
    """The endpoint URLs: ``endpoints``, else ``url``, else ``$ETCD_URL``, else localhost."""
    if url is not None and endpoints is not None:
        raise ValueError("pass either url or endpoints, not both")
    if isinstance(endpoints, str):
        raise TypeError("endpoints must be a list of URLs, not one string")
    return check_endpoints(list(endpoints or [url or os.environ.get("ETCD_URL") or DEFAULT_URL]))


def _tls(ca: str | None, cert: str | None, key: str | None) -> TLSConfig | None:
    if key and not cert:
        raise ValueError("key= needs cert=: a client key without its certificate is useless")
    return TLSConfig(ca, cert, key) if ca or cert or key else None


def _positive(name: str, value: Any) -> int:
    if not is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive int, not {value!r}")
    return value


class KVClient:
    """An etcd v3 client over its gRPC JSON gateway, on the event loop of its driver.

    ``url`` (or ``$ETCD_URL``) names one member; ``endpoints`` several, tried in turn.
    ``namespace`` is prepended to every key and stripped from every result, so an application
    can live in its own corner of a shared cluster. ``batching`` (default on) sends concurrent
    gets, puts and deletes as shared txns (``txetcd.batch``); explicit txns are never merged.
    """

    def __init__(self, make_driver: DriverFactory, url: str | None = None,
                 endpoints: Sequence[str] | None = None, *, timeout: float | None = 10.0,
                 connect_timeout: float | None = 5.0, namespace: bytes = b"",
                 pool_size: int = 32, max_txn_ops: int = MAX_TXN_OPS,
                 max_request_bytes: int = MAX_REQUEST_BYTES, user: str | None = None,
                 password: str | None = None, ca: str | None = None, cert: str | None = None,
                 key: str | None = None, batching: bool = True) -> None:
        urls = _endpoints(url, endpoints)
        if not isinstance(namespace, bytes):
            raise TypeError(f"namespace must be bytes, not {type(namespace).__name__}")
        self.max_txn_ops = _positive("max_txn_ops", max_txn_ops)
        self.max_request_bytes = _positive("max_request_bytes", max_request_bytes)
        if not is_int(pool_size) or pool_size < 1:
            raise ValueError(f"pool_size must be a positive int, not {pool_size!r}")
        self.namespace = namespace
        self.driver = make_driver(_tls(ca, cert, key), connect_timeout or 5.0, pool_size)
        self.transport = Transport(self.driver, urls, timeout=timeout, pool_size=pool_size,
                                   user=user, password=password)
        #: What services (lease, watch, lock, election) take from this client.
        self.env = Env(self.transport, namespace, self.driver)
        # Concurrent gets, puts and deletes go as shared txns (see txetcd.batch); None: one
        # request per op.
        self.batcher = (Batcher(self.transport, namespace, max_txn_ops, max_request_bytes)
                        if batching else None)

    # -- plumbing ------------------------------------------------------------------------------

    def _run(self, op: Op, timeout: float | None) -> Pending:
        # No coroutine around a batched op: one future from the caller to its batch.
        if op.size() > self.max_request_bytes:
            try:
                self._check_size(op.size())
            except RequestTooLarge as exc:
                return self._failed(exc)
        if self.batcher is not None and type(op) in BATCHABLE:
            return self.batcher.submit(op, timeout)
        return self.driver.spawn(self._call(op, timeout))

    def _failed(self, exc: BaseException) -> Pending:
        future = self.driver.future()
        self.driver.fail(future, exc)
        return future

    async def _call(self, op: Op, timeout: float | None) -> Any:
        reply = await self.transport.call(op.path, op.request(self.namespace),
                                          idempotent=not op.is_write, timeout=timeout)
        return op.result(reply, self.namespace)

    def _check_size(self, size: int) -> None:
        if size > self.max_request_bytes:
            raise RequestTooLarge(f"request of about {size} bytes exceeds the limit of "
                                  f"{self.max_request_bytes} bytes (max_request_bytes)")

    def _check_txn(self, txn: Transaction) -> None:
        if not isinstance(txn, Transaction):
            raise TypeError(f"txn must be a Transaction, not {type(txn).__name__}")
        txn.check_leases()
        ops = txn.max_branch()
        if ops > self.max_txn_ops:
            raise TooManyOps(f"txn has {ops} operations in one list; the limit is "
                             f"{self.max_txn_ops} (max_txn_ops)")
        self._check_size(txn.size())

    # -- KV ------------------------------------------------------------------------------------

    def get(self, key: bytes | KeySet, range_end: bytes | None = None, *,
            timeout: float | None = None, **options: Any) -> Pending:
        """Read one key, a range or a prefix (``KeySet``) -> ``Range``; every ``RangeRequest``
        option works.

        Options: count_only, keys_only, limit, revision, serializable, sort_order
        (NONE/ASCEND/DESCEND), sort_target (KEY/VERSION/CREATE/MOD/VALUE),
        min/max_mod_revision, min/max_create_revision.
        """
        if range_end is None and not options:
            op = OpGet.one(key)
        else:
            op = OpGet(key, range_end, **options)
        batcher = self.batcher  # the hot path, without _run in between
        if batcher is not None and op.wire_size <= self.max_request_bytes:
            return batcher.submit(op, timeout)
        return self._run(op, timeout)

    def set(self, key: bytes, value: bytes, lease: Any = None,
            return_previous: bool | None = None, timeout: float | None = None, *,
            ignore_value: bool = False, ignore_lease: bool = False) -> Pending:
        """Write ``value`` at ``key`` -> ``Revision`` (with the old kv if asked)."""
        if lease is None and not (return_previous or ignore_value or ignore_lease):
            op = OpSet.plain_put(key, value)
        else:
            op = OpSet(key, value, lease, return_previous, ignore_value=ignore_value,
                       ignore_lease=ignore_lease)
        batcher = self.batcher  # the hot path, without _run in between
        if batcher is not None and op.wire_size <= self.max_request_bytes:
            return batcher.submit(op, timeout)
        return self._run(op, timeout)

    put = set  # etcd's name; ``set`` is txaioetcd's and stays primary

    def delete(self, key: bytes | KeySet, return_previous: bool | None = None,
               timeout: float | None = None, *, range_end: bytes | None = None) -> Pending:
        """Delete one key, a range or a prefix -> ``Deleted`` (how many keys went)."""
        return self._run(OpDel(key, return_previous, range_end=range_end), timeout)

    async def scan(self, key: bytes | KeySet, range_end: bytes | None = None, *,
                   page_size: int = 1000, revision: int | None = None, keys_only: bool = False,
                   reverse: bool = False, limit: int | None = None,
                   timeout: float | None = None,
                   page_bytes: int | None = None) -> AsyncIterator[KeyValue]:
        """Iterate over a range of any size, ``page_size`` keys per request, in key order.

        Every page reads at the revision of the first one, so the whole scan is one snapshot
        (unless the revision gets compacted mid-scan, which raises ``Compacted``). With
        ``page_bytes``, the pages after the first hold about that many bytes of keys and values
        (1 to ``MAX_PAGE_ROWS`` keys): etcd's gateway costs per request, so small rows go in big
        pages, and big rows never make a huge one. The next page is requested before this one
        is handed out, so etcd prepares it while the consumer works.
        """
        pager = _scan_pager(key, range_end, page_size, revision, keys_only, reverse, limit,
                            page_bytes)
        if pager is None:
            return
        read = _PageReader(self, pager, revision, keys_only, timeout)
        pending: Any = read.next(pager.want(page_size))
        try:
            while pending is not None:
                page = await pending
                pending = None
                rows = read.advance(page)
                if rows:
                    pending = read.next(rows)
                for kv in page.kvs:
                    yield kv
        finally:
            if pending is not None:  # the consumer stopped early: drop the prefetched page
                self.driver.discard(pending)

    def compact(self, revision: int, physical: bool = False,
                timeout: float | None = None) -> Pending:
        """Discard the history before ``revision``; ``physical`` waits until it is on disk."""
        if int_arg("revision", revision) < 1:
            raise ValueError(f"revision must be >= 1, not {revision}")
        body: dict[str, Any] = {"revision": revision, "physical": bool(physical)}
        # Compacting twice to the same revision is harmless, so it may be resent.
        return self.driver.spawn(self.transport.call("kv/compaction", body, idempotent=True,
                                                     timeout=timeout))

    # -- transactions --------------------------------------------------------------------------

    def submit(self, txn: Transaction, timeout: float | None = None) -> Pending:
        """Run a transaction; return ``Success`` or raise ``Failed`` (txaioetcd's contract, the
        primary name). ``txn`` returns the result of whichever branch ran instead."""

        async def run() -> Success:
            result = await self.txn(txn, timeout=timeout)
            if not result.succeeded:
                raise Failed(result.header, result.responses)
            return Success(result.header, result.responses)

        return self.driver.spawn(run())

    def txn(self, txn: Transaction | None = None, *, compare: list[Any] | None = None,
            success: list[Op] | None = None, failure: list[Op] | None = None,
            timeout: float | None = None) -> Pending:
        """Run a transaction -> ``TxnResult``, whichever branch ran (Go's ``Txn().Commit()``)."""
        txn = txn if txn is not None else Transaction(compare, success, failure)
        self._check_txn(txn)
        return self._run(OpTxn(txn), timeout)

    # -- maintenance and cluster ---------------------------------------------------------------

    def status(self, timeout: float | None = None) -> Pending:
        """The answering member's ``Status`` (version, db size, leader, raft index)."""
        return self.driver.spawn(self._ask("maintenance/status", Status.from_json, timeout))

    def member_list(self, timeout: float | None = None) -> Pending:
        """The cluster's members (``list[Member]``) with their peer and client URLs."""
        return self.driver.spawn(self._ask("cluster/member/list", _members, timeout))

    async def _ask(self, path: str, decode: Callable[[Any], Any], timeout: float | None) -> Any:
        return decode(await self.transport.call(path, {}, idempotent=True, timeout=timeout))

    def version(self) -> Pending:
        """The server version of the active endpoint, e.g. ``(3, 5, 1)``."""

        async def run() -> tuple[int, ...]:
            await self.transport.prefix(self.transport.endpoint)
            return self.transport.server_version

        return self.driver.spawn(run())

    def stats(self) -> dict[str, dict[str, int]]:
        """Requests sent so far by URL, txaioetcd's shape: ``{"posts": {url: count}}``."""
        return {"posts": dict(self.transport.posts)}

    def close(self) -> Pending:
        """Close the client's connections."""
        return self.driver.spawn(self.transport.close())


def _members(reply: Any) -> list[Member]:
    return [Member.from_json(m) for m in reply.get("members", ())]


def _scan_pager(key: bytes | KeySet, range_end: bytes | None, page_size: int,
                revision: int | None, keys_only: bool, reverse: bool, limit: int | None,
                page_bytes: int | None) -> Pager | None:
    """Check a scan's arguments (each by its own name); None when it asks for nothing."""
    int_arg("page_size", page_size, minimum=1)
    if page_bytes is not None:
        int_arg("page_bytes", page_bytes, minimum=1)
    first = OpGet(key, range_end, revision=revision, keys_only=keys_only)
    if limit is not None and int_arg("limit", limit) == 0:
        return None
    start, end = first.keys.key, first.keys.range_end
    if not end:  # a single key: nothing to page
        end = start + b"\0"
    return Pager(start, end, page_size, reverse, limit, page_bytes)


class _PageReader:
    """Reads a scan's pages, all at the revision of the first one."""

    def __init__(self, client: KVClient, pager: Pager, revision: int | None, keys_only: bool,
                 timeout: float | None) -> None:
        self.client, self.pager, self.pinned = client, pager, revision
        self.keys_only, self.timeout = keys_only, timeout

    def next(self, rows: int) -> Any:
        """Ask for the next ``rows`` keys at once (a pending future)."""
        return self.client.driver.spawn(self._page(self.pager.start, self.pager.end, rows))

    def advance(self, page: Range) -> int:
        self.pinned = self.pinned or page.header.revision
        return self.pager.advance(page.kvs, page.more)

    async def _page(self, start: bytes, end: bytes, rows: int) -> Range:
        if not self.pinned:
            return await self._read(start, end, rows, False)
        # A page at a pinned revision reads history, which no member can change: the member
        # may answer it locally (no leader round trip), unless it has not applied the revision
        # yet, and then the leader is asked.
        try:
            return await self._read(start, end, rows, True)
        except FutureRevision:
            return await self._read(start, end, rows, False)

    def _read(self, start: bytes, end: bytes, rows: int, serializable: bool) -> Any:
        return self.client.get(KeySet(start, range_end=end), limit=rows, revision=self.pinned,
                               keys_only=self.keys_only, timeout=self.timeout,
                               serializable=serializable,
                               sort_order="DESCEND" if self.pager.reverse else None)

