"""The etcd v3 client for Twisted: KV, transactions, leases and watches.

Every method returns a Deferred (or is a coroutine usable with ``await``). The call shapes of
txaioetcd are kept (``Client(reactor, url=...)``, ``get``, ``set``, ``delete``, ``submit``,
``status``, ``lease``) and extended; see ``txetcd.kv`` for the KV body it shares with
``txetcd.asyncio.Client``, ``txetcd.services`` for the lease and watch calls,
``txetcd.op`` for the operations and ``txetcd.types`` for results. Locks and elections are
recipes on top of a client: ``txetcd.concurrency.Lock(client, name)``, ``Election``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet import defer
from twisted.web.client import HTTPConnectionPool

from .core import MAX_PAGE_ROWS, MAX_REQUEST_BYTES, MAX_TXN_OPS, TLSConfig
from .deferreds import Acquiring
from .errors import EtcdError
from .kv import DEFAULT_URL, KVClient
from .lease import Lease
from .op import as_keyset
from .services import LeaseWatchCalls
from .twisted_driver import TwistedDriver

__all__ = ["Client", "DEFAULT_URL", "MAX_TXN_OPS", "MAX_REQUEST_BYTES", "MAX_PAGE_ROWS"]


class Client(LeaseWatchCalls, KVClient):
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
        return Acquiring(self._new_lease(ttl, lease_id, keepalive, on_lost, timeout))

    def close(self) -> defer.Deferred[None]:
        """Stop the client's watches and lease keepalives, and close its connections.

        Leases are not revoked: etcd expires them after their TTL (revoke first to end them now).
        """
        self._stop_background()
        return super().close()


# Re-exported for callers that build KeySets from a key or a KeySet.
__all__ += ["as_keyset"]
