"""Ticket authentication for the demo node's browser users, secrets from the environment.

Crossbar's static ticket principals cannot read environment variables, so this router-embedded
component answers ``etcd.authenticate`` instead: ``reader`` logs in with
``$ETCD_WAMP_READER_TICKET`` (default ``reader-secret``), ``writer`` with
``$ETCD_WAMP_WRITER_TICKET`` (default ``writer-secret``). A standalone component on another
host logs in as ``backend`` with ``$ETCD_WAMP_BACKEND_TICKET``, which has no default: without
it, only the local unix socket grants the backend role.
"""

from __future__ import annotations

import hmac
import os
from typing import Any

from autobahn.twisted.wamp import ApplicationSession
from autobahn.wamp.exception import ApplicationError

__all__ = ["TicketAuthenticator", "tickets"]

DEFAULT_TICKETS = {"reader": "reader-secret", "writer": "writer-secret"}


def tickets() -> dict[str, str]:
    """authid -> ticket; an authid's role has the same name."""
    known = {authid: os.environ.get(f"ETCD_WAMP_{authid.upper()}_TICKET", default)
             for authid, default in DEFAULT_TICKETS.items()}
    backend = os.environ.get("ETCD_WAMP_BACKEND_TICKET")
    if backend:
        known["backend"] = backend
    return known


class TicketAuthenticator(ApplicationSession):
    async def onJoin(self, details: Any) -> None:  # noqa: N802 - autobahn API
        await self.register(self.authenticate, "etcd.authenticate")

    def authenticate(self, realm: str, authid: str, details: dict[str, Any]) -> dict[str, str]:
        expected = tickets().get(authid)
        ticket = details.get("ticket") or ""
        if expected is None or not hmac.compare_digest(str(ticket).encode(), expected.encode()):
            raise ApplicationError("etcd.error.not_authorized", "unknown user or wrong ticket")
        return {"role": authid}
