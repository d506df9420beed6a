"""``EtcdComponent``: etcd tables as WAMP procedures, under Crossbar or standalone.

The same class runs in a Crossbar container worker (configured by the component's ``extra``)
and standalone (``python -m component``). Every join registers everything anew: a reconnect
is a new session, and no per-session state survives it. Procedures are registered with
``invoke: roundrobin``, so several instances (on one router) share the load; per table, one of
them is elected in etcd to publish the change events (``component.publisher``).
"""

from __future__ import annotations

import functools
import gc
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, cast

from autobahn.twisted.wamp import ApplicationSession, Session
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallDetails, RegisterOptions
from twisted.internet import defer, reactor
from twisted.python.failure import Failure

from procedures.arguments import CallShape, check_call
from procedures.errors import ProcedureError, to_application_error
from procedures.table import Table
from procedures.txn import run_txn
from txetcd import Client

from .config import Settings, parse_settings
from .events import EventRelay
from .health import EtcdHealth
from .limits import Admission, Limits
from .linked import LINK_ROLE
from .serializer import decode_deep
from .store import store_status
from .subscriptions import CancelSafeSubscriptions
from .tables import connect, open_tables

# Every instance registers with the same policy, so any number of them share the calls.
SHARED = RegisterOptions(invoke="roundrobin")
# Lease keepalives and position updates must move off a stalled member well within a lease.
COORDINATION_TIMEOUT = 1.0

__all__ = ["EtcdComponent"]


class EtcdComponent(CancelSafeSubscriptions, ApplicationSession, Session):
    """Serves each configured table as ``<prefix>.<table>.get/put/delete/scan/count``.

    An ``ApplicationSession`` (Crossbar loads only those as ``classname``) that is also a
    ``Session``, whose ``add_authenticator`` lets autobahn's ``Component`` log it in with
    cryptosign or a ticket when it runs standalone. Its ``subscribe`` may be cancelled safely
    (``component.subscriptions``).
    """

    settings: Settings
    etcd: Client
    coordinator: Client
    tables: dict[str, Table]
    events: EventRelay
    limits: Limits
    health: EtcdHealth
    serving: defer.Deferred[None]

    router_node: str | None = None

    def onWelcome(self, welcome: Any) -> Any:  # noqa: N802 - autobahn API
        # The router's node id (Crossbar's WELCOME detail ``x_cb_node``): which router this
        # session is attached to, what linked routers' publishers are scoped by.
        self.router_node = welcome.custom.get("x_cb_node") if welcome.custom else None
        return super().onWelcome(welcome)

    def onOpen(self, transport: Any) -> None:  # noqa: N802 - autobahn API
        decode_deep(transport)  # before the first message: see component.serializer
        super().onOpen(transport)

    async def onJoin(self, details: Any) -> None:  # noqa: N802 - autobahn API
        self.settings = parse_settings(self.config.extra or {})
        self.limits = Limits(self.settings.max_inflight_bytes, self.settings.max_scans,
                             self.settings.max_queued_scans)
        self.etcd = self.connect_etcd()
        self.coordinator = self.connect_etcd(timeout=COORDINATION_TIMEOUT)
        self.tables = self.open_tables()
        self.health = EtcdHealth(self.coordinator, self.settings.etcd.endpoints,
                                 self.settings.etcd.cluster_id, reactor)
        probed = self.health.when_probed()
        self.health.start()
        self.events = EventRelay(self, self.settings.prefix,
                                 {name: table.wire for name, table in self.tables.items()},
                                 self.etcd, self.coordinator, self.settings.position_interval,
                                 clock=reactor, **self.linked_scope())
        # Registered once etcd answered or the cause is known: from then on, while etcd does
        # not answer, calls are refused as unavailable, saying why.
        await probed
        await self.register_table_procedures()
        await self.register_database_procedures()
        self.serving = defer.ensureDeferred(self.serve(details))

    def linked_scope(self) -> dict[str, Any]:
        """The relay's router scope where routers are linked (see ``component.linked``)."""
        if not self.settings.linked:
            return {}
        return {"node": self.router_node, "links": frozenset({LINK_ROLE})}

    async def serve(self, details: Any) -> None:
        """Once etcd answers: republish its changes, and say so."""
        try:
            await self.health.when_ready()
            if self.settings.linked and not self.router_node:
                self.log.error("linked: the router did not say its node id (x_cb_node), so "
                               "this instance cannot tell which router's events it would "
                               "publish; it serves calls only")
            else:
                await self.events.start()
        except defer.CancelledError:
            return  # the session left first
        # What is alive now (the router's and our modules, config, tables) lives as long as
        # the process: the collector's full passes skip it from here on. Each of them walked the
        # whole heap, 80-260 ms a pass, several times a second during a scan (issue #17).
        gc.freeze()
        self.log.info("etcd component ready: {n} tables under {prefix} (session {session}, "
                      "joined as {authid}, role {authrole}, by {authmethod})", n=len(self.tables),
                      prefix=self.settings.prefix, session=details.session, authid=details.authid,
                      authrole=details.authrole, authmethod=details.authmethod)

    def connect_etcd(self, timeout: float = 10.0) -> Client:
        return connect(self.settings, reactor, timeout)

    def open_tables(self) -> dict[str, Table]:
        return open_tables(self.settings, self.etcd)

    async def register_table_procedures(self) -> None:
        for name, table in self.tables.items():
            for op in ("get", "put", "delete", "count", "describe", "history"):
                await self.register(self.procedure(getattr(table, op),
                                                   writes=op in ("put", "delete")),
                                    f"{self.settings.prefix}.{name}.{op}", options=SHARED)
            await self.register_scan(table.scan, f"{self.settings.prefix}.{name}.scan")
            for index in table.indexes.values():
                uri = f"{self.settings.prefix}.{name}.{index.name}"
                await self.register(self.procedure(index.get), f"{uri}.get", options=SHARED)
                await self.register_scan(index.scan, f"{uri}.scan")

    async def register_scan(self, scan: Callable[..., Awaitable[Any]], uri: str) -> None:
        await self.register(self.procedure(self.progressive(scan)), uri,
                            options=RegisterOptions(details_arg="details", invoke=SHARED.invoke))

    async def register_database_procedures(self) -> None:
        await self.register(self.procedure(self.txn, writes=True),
                            f"{self.settings.prefix}.txn", options=SHARED)
        await self.register(self.procedure(self.status, needs_etcd=False),
                            f"{self.settings.prefix}.status", options=SHARED)

    def onLeave(self, details: Any) -> None:  # noqa: N802 - autobahn API
        if getattr(self, "serving", None) is not None:
            self.serving.cancel()
        if getattr(self, "health", None) is not None:
            self.health.stop()
        events = getattr(self, "events", None)
        # The publishers store their positions before the etcd clients close.
        stopped = events.stop() if events is not None else defer.succeed(None)
        stopped.addBoth(lambda _: self.close_etcd())
        # ApplicationSession's, not Session's: it also fails the requests (publish acks,
        # subscribes, calls) still waiting for the router, so none of them hangs.
        ApplicationSession.onLeave(self, details)

    def onUserError(self, fail: Any, msg: str) -> None:  # noqa: N802 - autobahn API
        """A refused call is answered to its caller as a typed error; logging each one (as
        autobahn does, a warning per call) would let any reader flood the node's log."""
        if isinstance(getattr(fail, "value", None), ApplicationError):
            return
        ApplicationSession.onUserError(self, fail, msg)

    def onDisconnect(self) -> None:  # noqa: N802 - autobahn API
        ApplicationSession.onDisconnect(self)  # as onLeave: fail what still waits

    def close_etcd(self) -> None:
        for name in ("etcd", "coordinator"):
            client = getattr(self, name, None)
            if client is not None:
                client.close()

    async def txn(self, ops: Any) -> int:
        return await run_txn(self.etcd, self.tables, ops)

    async def status(self) -> dict[str, Any]:
        served = {"session": self.session_id, "scans": self.limits.scan_status(),
                  "health": self.health.describe()}
        if not self.health.ready:  # what is known without etcd, at once
            return {"prefix": self.settings.prefix, "etcd": None,
                    "tables": [{"name": t.name, "publisher": None}
                               for t in self.settings.tables], **served}
        status = await store_status(
            self.etcd, self.settings.prefix, self.events.node,
            [{"name": t.name, "slot": t.slot, "key": t.key, "value": t.value,
              **{k: v for k, v in self.tables[t.name].description().items()
                 if k in ("schema", "flatbuffers", "indexes")}}
             for t in self.settings.tables])
        # Which session serves: a caller can tell the component was never replaced.
        # The scans' admission (``component.limits``): how many page through etcd at once.
        return {**status, **served}

    def progressive(self, scan: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        """Pass the caller's progress callback (if it asked for progressive results) to scan,
        which waits in line when ``max_scans`` run already."""

        @functools.wraps(scan)
        async def call(*args: Any, details: Any = None, **kwargs: Any) -> Any:
            progress = getattr(details, "progress", None)
            async with self.limits.scan():
                return await scan(*args, progress=progress, **kwargs)

        return call

    def procedure(self, handler: Callable[..., Awaitable[Any]], writes: bool = False,
                  needs_etcd: bool = True) -> Callable[..., Any]:
        """Wrap a handler: arguments are checked against its signature and the payload policy
        (``procedures.arguments``), typed errors become
        ``<prefix>.error.*`` ApplicationErrors, and the returned Deferred stays cancellable (a
        cancelled call stops its etcd work). While etcd does not answer, a call that
        ``needs_etcd`` is refused at once as unavailable (``component.health``). A write first
        waits until a table that just became wanted has its start revision
        (``EventRelay.settled``)."""
        prefix = self.settings.prefix
        shape = CallShape(inspect.signature(handler))

        def typed(failure: Failure, admitted: Admission) -> Any:
            admitted.release()
            if not failure.check(defer.CancelledError) and isinstance(failure.value, Exception):
                raise to_application_error(prefix, failure.value)
            return failure

        async def settled_then(*args: Any, **kwargs: Any) -> Any:
            await self.events.settled()
            return await handler(*args, **kwargs)

        # Plain function and callbacks rather than a coroutine around the handler's: this runs
        # for every call, and each coroutine layer under Twisted cost a get about 10 % more.
        def call(*args: Any, **kwargs: Any) -> defer.Deferred[Any]:
            # autobahn passes CallDetails as ``details`` where registered with details_arg.
            details = kwargs.pop("details", None) if isinstance(kwargs.get("details"),
                                                                 CallDetails) else None
            try:
                size = check_call(shape, args, kwargs)
                if needs_etcd:
                    self.health.check()
                admitted = self.limits.admit(size)
            except ProcedureError as error:
                return defer.fail(to_application_error(prefix, error))
            if details is not None:
                kwargs["details"] = details
            try:
                # A coroutine, or a Deferred (a handler that is a plain chain: ``Table.get``),
                # which may raise before it has one.
                work = (settled_then if writes else handler)(*args, **kwargs)
                done: defer.Deferred[Any] = defer.ensureDeferred(cast(Any, work))
            except Exception as error:  # noqa: BLE001 - becomes the call's typed error
                done = defer.fail(error)
            return done.addCallbacks(admitted.release, typed, errbackArgs=(admitted,))

        return call
