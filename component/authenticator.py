"""Ticket authentication and authorization of the demo node's users, secrets from the environment.

Crossbar's static ticket principals cannot read environment variables, so this router-embedded
component answers ``etcd.authenticate`` instead: ``reader`` logs in with
``$ETCD_WAMP_READER_TICKET`` (default ``reader-secret``), ``writer`` with
``$ETCD_WAMP_WRITER_TICKET`` (default ``writer-secret``). A standalone component on another
host logs in as ``backend`` with ``$ETCD_WAMP_BACKEND_TICKET``, which has no default: without
it, only the local unix socket grants the backend role.

It also answers ``etcd.authorize`` for the ``reader`` and ``writer`` roles. Static wildcard
permissions cannot say "get, scan and count of every table" (Crossbar files ``etcd..get`` and
``etcd..scan`` under the same key, so only one survives), and per-table rules would have to be
kept in step with the component's tables.
"""

from __future__ import annotations

import hmac
import os
from typing import Any

from autobahn.twisted.wamp import ApplicationSession
from autobahn.wamp.exception import ApplicationError

__all__ = ["TicketAuthenticator", "tickets", "authorize"]

DEFAULT_TICKETS = {"reader": "reader-secret", "writer": "writer-secret"}
PREFIX = "etcd."
READ_PROCEDURES = ("get", "scan", "count", "describe", "history")


def tickets() -> dict[str, str]:
    """authid -> ticket; an authid's role has the same name."""
    known = {authid: os.environ.get(f"ETCD_WAMP_{authid.upper()}_TICKET", default)
             for authid, default in DEFAULT_TICKETS.items()}
    backend = os.environ.get("ETCD_WAMP_BACKEND_TICKET")
    if backend:
        known["backend"] = backend
    return known


def authorize(role: str, uri: str, action: str) -> bool:
    """Readers call the read procedures and subscribe; writers also call everything else."""
    if not uri.startswith(PREFIX) or uri.startswith(PREFIX + "auth"):
        return False
    if action == "subscribe":
        return role in ("reader", "writer")
    if action != "call":
        return False
    if role == "writer":
        return True
    return role == "reader" and (uri == PREFIX + "status" or
                                 uri.rsplit(".", 1)[-1] in READ_PROCEDURES)


class TicketAuthenticator(ApplicationSession):
    async def onJoin(self, details: Any) -> None:  # noqa: N802 - autobahn API
        await self.register(self.authenticate, PREFIX + "authenticate")
        await self.register(self.authorize, PREFIX + "authorize")

    def authenticate(self, realm: str, authid: str, details: dict[str, Any]) -> dict[str, str]:
        expected = tickets().get(authid)
        ticket = details.get("ticket") or ""
        if expected is None or not hmac.compare_digest(str(ticket).encode(), expected.encode()):
            # WAMP's own URI: clients recognise a refused login by it and stop retrying.
            raise ApplicationError("wamp.error.not_authorized", "unknown user or wrong ticket")
        return {"role": authid}

    def authorize(self, session: dict[str, Any], uri: str, action: str,
                  options: Any = None) -> dict[str, bool]:
        allowed = authorize(str(session.get("authrole")), uri, action)
        return {"allow": allowed, "disclose": True, "cache": True}
