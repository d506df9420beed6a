"""txetcd for asyncio: ``from txetcd.asyncio import Client``.

The same client as ``txetcd.Client`` (the same KV, transaction, scan, maintenance and cluster
calls, auto-batching, namespaces, several endpoints, auth and TLS, and the same guarantees:
typed errors, ``outcome_unknown`` carried to the caller, a write never resent after an
ambiguous failure), on an asyncio event loop with its own HTTP/1.1 client
(``txetcd.aio_http``). Methods return awaitables (Futures or Tasks)::

    async with Client("http://localhost:2379") as etcd:
        await etcd.set(b"k", b"v")
        print((await etcd.get(b"k")).kvs[0].value)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Self

from .asyncio_driver import AsyncioDriver
from .core import MAX_REQUEST_BYTES, MAX_TXN_OPS, TLSConfig
from .errors import EtcdError
from .kv import KVClient
from .lease import Lease
from .services import LeaseWatchCalls

__all__ = ["Client"]


class Client(LeaseWatchCalls, KVClient):
    """An asyncio client for etcd's v3 API over its gRPC JSON gateway.

    ``url`` (or ``$ETCD_URL``) names one member; ``endpoints`` several, tried in turn.
    ``namespace`` is prepended to every key and stripped from every result. ``batching``
    (default on) sends the gets, puts and deletes issued in one turn of the loop as shared
    txns. ``ca``, ``cert``, ``key``: PEM files for https endpoints. ``loop``: default, the
    running loop at first use.
    """

    def __init__(self, url: str | None = None, *, endpoints: Sequence[str] | None = None,
                 timeout: float | None = 10.0, connect_timeout: float | None = 5.0,
                 namespace: bytes = b"", pool_size: int = 32, max_txn_ops: int = MAX_TXN_OPS,
                 max_request_bytes: int = MAX_REQUEST_BYTES, user: str | None = None,
                 password: str | None = None, ca: str | None = None, cert: str | None = None,
                 key: str | None = None, batching: bool = True,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        def make_driver(tls: TLSConfig | None, connect: float, size: int) -> AsyncioDriver:
            return AsyncioDriver(tls=tls, connect_timeout=connect, pool_size=size, loop=loop)

        super().__init__(make_driver, url, endpoints, timeout=timeout,
                         connect_timeout=connect_timeout, namespace=namespace,
                         pool_size=pool_size, max_txn_ops=max_txn_ops,
                         max_request_bytes=max_request_bytes, user=user, password=password,
                         ca=ca, cert=cert, key=key, batching=batching)
        self.driver: AsyncioDriver

    def lease(self, ttl: int, lease_id: int | None = None, *, keepalive: bool | None = None,
              on_lost: Callable[[EtcdError], object] | None = None,
              timeout: float | None = None) -> Lease:
        """A lease of ``ttl`` seconds, as on Twisted: ``await client.lease(ttl)`` grants it (not
        kept alive unless ``keepalive=True``; ``refresh()`` renews it); ``async with
        client.lease(ttl) as lease`` grants it, keeps it alive in the background (unless
        ``keepalive=False``) and revokes it on exit. ``lease.lost`` (a Future) resolves and
        ``on_lost`` is called when it is lost."""
        return self._new_lease(ttl, lease_id, keepalive, on_lost, timeout)

    def close(self) -> Any:
        """Stop the client's watches and lease keepalives, and close its connections (leases
        are not revoked: etcd expires them after their TTL)."""
        self._stop_background()
        return super().close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()
