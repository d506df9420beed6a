"""The etcd v3 client for Twisted: KV, transactions, maintenance and cluster calls.

Every method returns a Deferred (or is a coroutine usable with ``await``). The call shapes of
txaioetcd are kept (``Client(reactor, url=...)``, ``get``, ``set``, ``delete``, ``submit``,
``status``) and extended; see ``txetcd.op`` for the operations and ``txetcd.types`` for results.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from twisted.internet import defer
from twisted.web.client import HTTPConnectionPool

from . import lease_core as _lease
from .batch import BATCHABLE, Batcher
from .core import TLSConfig
from .deferreds import Acquiring
from .errors import EtcdError, Failed, FutureRevision, RequestTooLarge, TooManyOps
from .interface import Env
from .lease import Lease, LeaseGrant, LeaseInfo
from .op import Op, OpDel, OpGet, OpSet, OpTxn, Transaction, _int_arg, as_keyset
from .transport import Transport, check_endpoints
from .twisted_driver import TwistedDriver
from .types import (
    Deleted,
    Header,
    KeySet,
    KeyValue,
    Member,
    Range,
    Revision,
    Status,
    Success,
    TxnResult,
)
from .watch import PROBE_INTERVAL, Watch

__all__ = ["Client", "DEFAULT_URL", "MAX_TXN_OPS", "MAX_REQUEST_BYTES"]

DEFAULT_URL = "http://localhost:2379"
MAX_TXN_OPS = 128  # etcd's --max-txn-ops default
MAX_REQUEST_BYTES = 1536 * 1024  # etcd's --max-request-bytes default (1.5 MiB)
MAX_PAGE_ROWS = 10_000  # the most keys a scan asks for at once


def _as_deferred(coro: Any) -> defer.Deferred[Any]:
    return defer.ensureDeferred(coro)


class Client:
    """A Twisted client for etcd's v3 API over its gRPC JSON gateway.

    ``url`` (or ``$ETCD_URL``) names one member; ``endpoints`` several, tried in turn.
    ``namespace`` is prepended to every key and stripped from every result, so an application
    can live in its own corner of a shared cluster. ``batching`` (default on) sends concurrent
    gets, puts and deletes as shared txns (``txetcd.batch``); explicit txns are never merged.
    """

    def __init__(self, reactor: Any, url: str | None = None, pool: HTTPConnectionPool | None = None,
                 timeout: float | None = 10.0, connect_timeout: float | None = 5.0, *,
                 endpoints: Sequence[str] | None = None, namespace: bytes = b"",
                 pool_size: int = 32, max_txn_ops: int = MAX_TXN_OPS,
                 max_request_bytes: int = MAX_REQUEST_BYTES, user: str | None = None,
                 password: str | None = None, ca: str | None = None, cert: str | None = None,
                 key: str | None = None, batching: bool = True) -> None:
        if url is not None and endpoints is not None:
            raise ValueError("pass either url or endpoints, not both")
        if isinstance(endpoints, str):
            raise TypeError("endpoints must be a list of URLs, not one string")
        if not isinstance(namespace, bytes):
            raise TypeError(f"namespace must be bytes, not {type(namespace).__name__}")
        for name, limit in (("max_txn_ops", max_txn_ops), ("max_request_bytes", max_request_bytes)):
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise ValueError(f"{name} must be a positive int, not {limit!r}")
        urls = list(endpoints or [url or os.environ.get("ETCD_URL") or DEFAULT_URL])
        self.reactor = reactor
        self.namespace = namespace
        # Running watches and kept-alive leases, stopped by close(); weak so that a dropped,
        # finished one is not kept alive by the client.
        self._background: weakref.WeakSet[Watch | Lease] = weakref.WeakSet()
        self.max_txn_ops = max_txn_ops
        self.max_request_bytes = max_request_bytes
        tls = TLSConfig(ca, cert, key) if ca or cert or key else None
        if tls is not None and tls.key and not tls.cert:
            raise ValueError("key= needs cert=: a client key without its certificate is useless")
        check_endpoints(urls)
        if not isinstance(pool_size, int) or pool_size < 1:
            raise ValueError(f"pool_size must be a positive int, not {pool_size!r}")
        self.driver = TwistedDriver(reactor, tls=tls, connect_timeout=connect_timeout or 5.0,
                                    pool=pool, pool_size=pool_size)
        self.transport = Transport(self.driver, urls, timeout=timeout, pool_size=pool_size,
                                   user=user, password=password)
        # What leases, watches, locks and elections take from a client (txetcd.interface).
        self.env = Env(self.transport, namespace, self.driver)
        # Concurrent gets, puts and deletes go as shared txns (see txetcd.batch); False: one
        # request per op.
        self.batcher = Batcher(self) if batching else None

    # -- plumbing ------------------------------------------------------------------------------

    def _run(self, op: Op, timeout: float | None) -> defer.Deferred[Any]:
        # No coroutine around a batched op: one Deferred from the caller to its batch.
        try:
            self._check_size(op.size())
        except RequestTooLarge:
            return defer.fail()
        if self.batcher is not None and type(op) in BATCHABLE:
            return self.batcher.submit(op, timeout)
        return _as_deferred(self._call(op, timeout))

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
            timeout: float | None = None, **options: Any) -> defer.Deferred[Range]:
        """Read one key, a range or a prefix (``KeySet``); every ``RangeRequest`` option works.

        Options: count_only, keys_only, limit, revision, serializable, sort_order
        (NONE/ASCEND/DESCEND), sort_target (KEY/VERSION/CREATE/MOD/VALUE),
        min/max_mod_revision, min/max_create_revision.
        """
        return self._run(OpGet(key, range_end, **options), timeout)

    def set(self, key: bytes, value: bytes, lease: Any = None,
            return_previous: bool | None = None, timeout: float | None = None, *,
            ignore_value: bool = False, ignore_lease: bool = False) -> defer.Deferred[Revision]:
        """Write ``value`` at ``key``; returns the new revision (and the old kv if asked)."""
        op = OpSet(key, value, lease, return_previous, ignore_value=ignore_value,
                   ignore_lease=ignore_lease)
        return self._run(op, timeout)

    put = set

    def delete(self, key: bytes | KeySet, return_previous: bool | None = None,
               timeout: float | None = None, *,
               range_end: bytes | None = None) -> defer.Deferred[Deleted]:
        """Delete one key, a range or a prefix; returns how many keys were deleted."""
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
        pages, and big rows never make a huge one.
        """
        if page_bytes is not None and _int_arg("page_bytes", page_bytes) < 1:
            raise ValueError(f"page_bytes must be >= 1, not {page_bytes}")
        first = OpGet(key, range_end, limit=page_size, revision=revision, keys_only=keys_only)
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, not {page_size}")
        if limit is not None and _int_arg("limit", limit) == 0:
            return
        start, end = first.keys.key, first.keys.range_end
        if not end:  # a single key: nothing to page
            end = start + b"\0"
        remaining = limit
        pinned = revision

        def fetch(start: bytes, end: bytes, want: int) -> defer.Deferred[Range]:
            def read(serializable: bool) -> defer.Deferred[Range]:
                return self.get(KeySet(start, range_end=end), limit=want, revision=pinned,
                                keys_only=keys_only, timeout=timeout, serializable=serializable,
                                sort_order="DESCEND" if reverse else None)

            if not pinned:
                return read(False)
            # A page at a pinned revision reads history, which no member can change: the member
            # may answer it locally (no leader round trip), unless it has not applied the
            # revision yet, and then the leader is asked.
            page = read(True)
            page.addErrback(lambda failure: failure.trap(FutureRevision) and read(False))
            return page

        # The next page is requested before this one is handed out, so that etcd prepares it
        # while the consumer works: one round trip of waiting per scan instead of per page.
        pending: defer.Deferred[Range] | None = fetch(
            start, end, page_size if remaining is None else min(page_size, remaining))
        try:
            while pending is not None:
                page = await pending
                pending = None
                pinned = pinned or page.header.revision
                if remaining is not None:
                    remaining -= len(page.kvs)
                if page.more and page.kvs and (remaining is None or remaining > 0):
                    if reverse:
                        end = page.kvs[-1].key  # range_end is exclusive: ends before it
                    else:
                        start = page.kvs[-1].key + b"\0"
                    want = page_size
                    if page_bytes is not None:
                        row = sum(len(kv.key) + len(kv.value) for kv in page.kvs) // len(page.kvs)
                        want = min(max(1, page_bytes // max(row, 1)), MAX_PAGE_ROWS)
                    pending = fetch(start, end, want if remaining is None else min(want,
                                                                                   remaining))
                for kv in page.kvs:
                    yield kv
        finally:
            if pending is not None:  # the consumer stopped early: drop the prefetched page
                pending.addErrback(lambda failure: failure.trap(defer.CancelledError))
                pending.cancel()

    def compact(self, revision: int, physical: bool = False,
                timeout: float | None = None) -> defer.Deferred[Any]:
        """Discard the history before ``revision``; ``physical`` waits until it is on disk."""
        if isinstance(revision, bool) or not isinstance(revision, int):
            raise TypeError(f"revision must be an int, not {type(revision).__name__}")
        if revision < 1:
            raise ValueError(f"revision must be >= 1, not {revision}")
        body: dict[str, Any] = {"revision": revision, "physical": bool(physical)}
        # Compacting twice to the same revision is harmless, so it may be resent.
        return _as_deferred(self.transport.call("kv/compaction", body, idempotent=True,
                                                timeout=timeout))

    # -- transactions --------------------------------------------------------------------------

    def txn(self, txn: Transaction | None = None, *, compare: list[Any] | None = None,
            success: list[Op] | None = None, failure: list[Op] | None = None,
            timeout: float | None = None) -> defer.Deferred[TxnResult]:
        """Run a transaction and return its result, whichever branch ran."""
        txn = txn if txn is not None else Transaction(compare, success, failure)
        self._check_txn(txn)
        return self._run(OpTxn(txn), timeout)

    def submit(self, txn: Transaction, timeout: float | None = None) -> defer.Deferred[Success]:
        """Run a transaction; return ``Success`` or raise ``Failed`` (txaioetcd's contract)."""

        async def run() -> Success:
            result = await self.txn(txn, timeout=timeout)
            if not result.succeeded:
                raise Failed(result.header, result.responses)
            return Success(result.header, result.responses)

        return _as_deferred(run())

    # -- maintenance and cluster ---------------------------------------------------------------

    def status(self, timeout: float | None = None) -> defer.Deferred[Status]:
        """The answering member's status (version, db size, leader, raft index)."""

        async def run() -> Status:
            reply = await self.transport.call("maintenance/status", {}, idempotent=True,
                                              timeout=timeout)
            return Status.from_json(reply)

        return _as_deferred(run())

    def member_list(self, timeout: float | None = None) -> defer.Deferred[list[Member]]:
        """The cluster's members with their peer and client URLs."""

        async def run() -> list[Member]:
            reply = await self.transport.call("cluster/member/list", {}, idempotent=True,
                                              timeout=timeout)
            return [Member.from_json(m) for m in reply.get("members", ())]

        return _as_deferred(run())

    def version(self) -> defer.Deferred[tuple[int, ...]]:
        """The server version of the active endpoint, e.g. ``(3, 5, 1)``."""

        async def run() -> tuple[int, ...]:
            await self.transport.prefix(self.transport.endpoint)
            return self.transport.server_version

        return _as_deferred(run())

    # -- leases (locks and elections are recipes: txetcd.concurrency) -------------------------

    def lease(self, ttl: int, lease_id: int | None = None, *, keepalive: bool | None = None,
              on_lost: Callable[[EtcdError], object] | None = None,
              timeout: float | None = None) -> Acquiring[Lease]:
        """A lease of ``ttl`` seconds: a Deferred of the granted ``Lease``.

        ``lease = await client.lease(ttl)`` (or ``yield`` in inlineCallbacks) grants it, as
        txaioetcd did: not kept alive unless ``keepalive=True`` (``lease.refresh()`` renews it).
        ``async with client.lease(ttl) as lease`` grants it, keeps it alive in the background
        (unless ``keepalive=False``) and revokes it on exit. ``lease.lost`` fires (and
        ``on_lost`` is called) when it is lost.
        """
        lease = Lease(self.env, ttl, lease_id, keepalive=keepalive, on_lost=on_lost,
                      timeout=timeout)
        self._background.add(lease)
        return Acquiring(lease)

    def lease_grant(self, ttl: int, lease_id: int | None = None,
                    timeout: float | None = None) -> defer.Deferred[LeaseGrant]:
        """Grant a bare lease (no keepalive); never resent after an ambiguous failure."""
        _lease.check_ttl(ttl)
        if lease_id is not None:
            _lease.lease_id_of(lease_id)
        return _as_deferred(_lease.grant(self.transport, ttl, lease_id, timeout))

    def lease_revoke(self, lease: Any, timeout: float | None = None) -> defer.Deferred[Header]:
        """Revoke a lease (a ``Lease`` or an ID); raises ``LeaseNotFound`` if it is gone."""
        return _as_deferred(_lease.revoke(self.transport, _lease.lease_id_of(lease), timeout))

    def lease_time_to_live(self, lease: Any, keys: bool = False,
                           timeout: float | None = None) -> defer.Deferred[LeaseInfo]:
        """A lease's remaining TTL (-1 once gone), granted TTL and, if ``keys``, its keys."""
        return _as_deferred(_lease.time_to_live(self.transport, self.namespace,
                                                _lease.lease_id_of(lease), keys, timeout))

    def leases(self, timeout: float | None = None) -> defer.Deferred[list[int]]:
        """The IDs of all leases in the cluster."""
        return _as_deferred(_lease.leases(self.transport, timeout))

    def stats(self) -> dict[str, dict[str, int]]:
        """Requests sent so far by URL, txaioetcd's shape: ``{"posts": {url: count}}``."""
        return {"posts": dict(self.transport.posts)}

    # -- watch ---------------------------------------------------------------------------------

    def watch(self, keys: Any, callback: Callable[[Any], Any] | None = None, *,
              start_revision: int | None = None, prev_kv: bool = False,
              filters: Sequence[str] | None = (), progress_notify: bool = False,
              return_previous: bool | None = None,
              probe_interval: float | None = PROBE_INTERVAL) -> Watch:
        """Watch keys or KeySets (one or a list) from ``start_revision`` (default: now).

        Returns a running ``Watch``: events go to ``callback`` or to ``async for``, it resumes
        across disconnects and signals compaction; see ``txetcd.watch``. ``return_previous`` is
        txaioetcd's name for ``prev_kv``. After ``probe_interval`` silent seconds the watch checks
        that its member still answers, and moves on if not (None: never).
        """
        watch = Watch(self.env, keys, callback, start_revision=start_revision,
                     prev_kv=prev_kv or bool(return_previous), filters=filters,
                     progress_notify=progress_notify, probe_interval=probe_interval)
        self._background.add(watch)
        return watch

    def close(self) -> defer.Deferred[None]:
        """Stop the client's watches and lease keepalives, and close its connections.

        Leases are not revoked: etcd expires them after their TTL (revoke first to end them now).
        """
        for running in list(self._background):
            running.close()
        self._background.clear()
        return _as_deferred(self.transport.close())


# Re-exported for callers that build KeySets from a key or a KeySet.
__all__ += ["as_keyset"]
