"""The lease and watch calls of both clients (txaioetcd had ``lease`` and ``watch`` on its
``Client``), in one body for both loops.

``LeaseWatchCalls`` is mixed into ``txetcd.Client`` and ``txetcd.asyncio.Client`` in front of
``KVClient``. It only builds ``Lease`` and ``Watch`` objects on the client's ``env`` and stops
them on ``close()``; the services themselves import no client, and locks and elections
(``txetcd.concurrency``) are recipes the clients do not know.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

from . import lease_core
from .errors import EtcdError
from .interface import Env
from .lease import Lease
from .watch import PROBE_INTERVAL, Watch

__all__ = ["LeaseWatchCalls"]

Pending = Any  # the driver's awaitable: a Deferred on Twisted, a Future or Task on asyncio


class LeaseWatchCalls:
    """``lease*`` and ``watch`` for a client that has an ``env`` (``KVClient``)."""

    env: Env

    def _background(self) -> weakref.WeakSet[Lease | Watch]:
        # Running watches and kept-alive leases, stopped by close(); weak so that a dropped,
        # finished one is not kept alive by the client.
        running: weakref.WeakSet[Lease | Watch] | None = self.__dict__.get("_running")
        if running is None:
            running = self.__dict__["_running"] = weakref.WeakSet()
        return running

    def _new_lease(self, ttl: int, lease_id: int | None, keepalive: bool | None,
                   on_lost: Callable[[EtcdError], object] | None,
                   timeout: float | None) -> Lease:
        lease = Lease(self.env, ttl, lease_id, keepalive=keepalive, on_lost=on_lost,
                      timeout=timeout)
        self._background().add(lease)
        return lease

    def _spawn(self, coro: Any) -> Pending:
        return self.env.driver.spawn(coro)

    def lease_grant(self, ttl: int, lease_id: int | None = None,
                    timeout: float | None = None) -> Pending:
        """Grant a bare lease (no keepalive); never resent after an ambiguous failure."""
        lease_core.check_ttl(ttl)
        if lease_id is not None:
            lease_core.lease_id_of(lease_id)
        return self._spawn(lease_core.grant(self.env.transport, ttl, lease_id, timeout))

    def lease_revoke(self, lease: Any, timeout: float | None = None) -> Pending:
        """Revoke a lease (a ``Lease`` or an ID); raises ``LeaseNotFound`` if it is gone."""
        return self._spawn(lease_core.revoke(self.env.transport, lease_core.lease_id_of(lease),
                                             timeout))

    def lease_time_to_live(self, lease: Any, keys: bool = False,
                           timeout: float | None = None) -> Pending:
        """A lease's remaining TTL (-1 once gone), granted TTL and, if ``keys``, its keys."""
        return self._spawn(lease_core.time_to_live(self.env.transport, self.env.namespace,
                                                   lease_core.lease_id_of(lease), keys, timeout))

    def leases(self, timeout: float | None = None) -> Pending:
        """The IDs of all leases in the cluster."""
        return self._spawn(lease_core.leases(self.env.transport, timeout))

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
        self._background().add(watch)
        return watch

    def _stop_background(self) -> None:
        """Stop the watches and lease keepalives (leases are not revoked: etcd expires them
        after their TTL; revoke first to end them now)."""
        running = self._background()
        for item in list(running):
            item.close()
        running.clear()
