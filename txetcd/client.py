"""The etcd v3 client for Twisted: KV, transactions, leases, locks, elections and watches.

Every method returns a Deferred (or is a coroutine usable with ``await``). The call shapes of
txaioetcd are kept (``Client(reactor, url=...)``, ``get``, ``set``, ``delete``, ``submit``,
``status``, ``lease``) and extended; see ``txetcd.kv`` for the KV body it shares with
``txetcd.asyncio.Client``, ``txetcd.op`` for the operations and ``txetcd.types`` for results.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet import defer
from twisted.web.client import HTTPConnectionPool

from . import lease as _lease
from .concurrency import DEFAULT_SESSION_TTL, Election, Lock
from .core import MAX_PAGE_ROWS, MAX_REQUEST_BYTES, MAX_TXN_OPS, TLSConfig
from .errors import EtcdError
from .kv import DEFAULT_URL, KVClient
from .lease import Acquiring, Lease, LeaseGrant, LeaseInfo
from .op import as_keyset
from .twisted_driver import TwistedDriver
from .types import Header
from .watch import PROBE_INTERVAL, Watch

__all__ = ["Client", "DEFAULT_URL", "MAX_TXN_OPS", "MAX_REQUEST_BYTES", "MAX_PAGE_ROWS"]


def _as_deferred(coro: Any) -> defer.Deferred[Any]:
    return defer.ensureDeferred(coro)


class Client(KVClient):
    """A Twisted client for etcd's v3 API over its gRPC JSON gateway (txaioetcd's signature).

    ``url`` (or ``$ETCD_URL``) names one member; ``endpoints`` several, tried in turn.
    ``namespace`` is prepended to every key and stripped from every result, so an application
    can live in its own corner of a shared cluster. ``batching`` (default on) sends concurrent
    gets, puts and deletes as shared txns (``txetcd.batch``); explicit txns are never merged.
    ``pool`` (Twisted's) carries streams; unary requests use txetcd's own keep-alive pool.
    """

    def __init__(self, reactor: Any, url: str | None = None, pool: HTTPConnectionPool | None = None,
                 timeout: float | None = 10.0, connect_timeout: float | None = 5.0, *,
                 endpoints: Sequence[str] | None = None, namespace: bytes = b"",
                 pool_size: int = 32, max_txn_ops: int = MAX_TXN_OPS,
                 max_request_bytes: int = MAX_REQUEST_BYTES, user: str | None = None,
                 password: str | None = None, ca: str | None = None, cert: str | None = None,
                 key: str | None = None, batching: bool = True) -> None:
        def make_driver(tls: TLSConfig | None, connect: float, size: int) -> TwistedDriver:
            return TwistedDriver(reactor, tls=tls, connect_timeout=connect, pool=pool,
                                 pool_size=size)

        super().__init__(make_driver, url, endpoints, timeout=timeout,
                         connect_timeout=connect_timeout, namespace=namespace,
                         pool_size=pool_size, max_txn_ops=max_txn_ops,
                         max_request_bytes=max_request_bytes, user=user, password=password,
                         ca=ca, cert=cert, key=key, batching=batching)
        self.reactor = reactor
        self.driver: TwistedDriver
        # Running watches and kept-alive leases, stopped by close(); weak so that a dropped,
        # finished one is not kept alive by the client.
        self._background: weakref.WeakSet[Watch | Lease] = weakref.WeakSet()

    # -- leases, locks and elections -----------------------------------------------------------

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
        lease = Lease(self, ttl, lease_id, keepalive=keepalive, on_lost=on_lost, timeout=timeout)
        self._background.add(lease)
        return lease.acquiring()

    def lease_grant(self, ttl: int, lease_id: int | None = None,
                    timeout: float | None = None) -> defer.Deferred[LeaseGrant]:
        """Grant a bare lease (no keepalive); never resent after an ambiguous failure."""
        _lease.check_ttl(ttl)
        if lease_id is not None:
            _lease.lease_id_of(lease_id)
        return _as_deferred(_lease.grant(self, ttl, lease_id, timeout))

    def lease_revoke(self, lease: Any, timeout: float | None = None) -> defer.Deferred[Header]:
        """Revoke a lease (a ``Lease`` or an ID); raises ``LeaseNotFound`` if it is gone."""
        return _as_deferred(_lease.revoke(self, _lease.lease_id_of(lease), timeout))

    def lease_time_to_live(self, lease: Any, keys: bool = False,
                           timeout: float | None = None) -> defer.Deferred[LeaseInfo]:
        """A lease's remaining TTL (-1 once gone), granted TTL and, if ``keys``, its keys."""
        return _as_deferred(_lease.time_to_live(self, _lease.lease_id_of(lease), keys, timeout))

    def leases(self, timeout: float | None = None) -> defer.Deferred[list[int]]:
        """The IDs of all leases in the cluster."""
        return _as_deferred(_lease.leases(self, timeout))

    def lock(self, name: bytes, ttl: int = DEFAULT_SESSION_TTL, *,
             timeout: float | None = None) -> Acquiring[Lock]:
        """A distributed lock: a Deferred of the held ``Lock``. ``await`` (or ``yield``)
        waits until held; ``async with`` also releases it. Waits without deadline unless
        ``timeout``; cancellable."""
        return Lock(self, name, ttl, timeout=timeout).acquiring()

    def election(self, name: bytes) -> Election:
        """A leader election: ``campaign``, ``leader`` and ``observe``."""
        return Election(self, name)

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
        watch = Watch(self, keys, callback, start_revision=start_revision,
                     prev_kv=prev_kv or bool(return_previous), filters=filters,
                     progress_notify=progress_notify, probe_interval=probe_interval)
        self._background.add(watch)
        return watch

    def close(self) -> defer.Deferred[None]:
        """Stop the client's watches and lease keepalives, and close its connections.

        Leases are not revoked: etcd expires them after their TTL (revoke first to end them now).
        """
        for running in list(self._background):
            if isinstance(running, Lease):
                running.close()
            else:
                running.cancel()
        self._background.clear()
        return super().close()


# Re-exported for callers that build KeySets from a key or a KeySet.
__all__ += ["as_keyset"]
