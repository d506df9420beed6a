"""A WAMP client session for the CLI's table commands, joined like any other client.

A ``wss://`` router is checked against the system's CAs, or the one given. Authentication is
WAMP-ticket (``authid`` + ticket), WAMP-cryptosign (``authid`` + an Ed25519
key file) or anonymous. The serializer is CBOR, so binary keys and values arrive as bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from autobahn.twisted.component import Component
from twisted.internet import defer

from .__main__ import transport_for
from .login import Credentials, load_key

__all__ = ["ClientOptions", "ConnectFailed", "connect"]

JOIN_TIMEOUT = 30.0


class ConnectFailed(RuntimeError):
    """The router could not be reached, or it refused to let us join."""


@dataclass(frozen=True)
class ClientOptions:
    router: str = "ws://127.0.0.1:8080/ws"
    realm: str = "realm1"
    authid: str | None = None
    ticket: str | None = None
    key: str | None = None  # an Ed25519 private key file (cryptosign; see component.login)
    ca: str | None = None  # PEM file of the CA that signed a wss:// router's certificate


def _credentials(options: ClientOptions) -> Credentials:
    if options.key is not None:
        return Credentials(authid=options.authid, key=load_key(options.key))
    if options.authid:
        return Credentials(authid=options.authid, ticket=options.ticket or "")
    return Credentials()


async def connect(reactor: Any, options: ClientOptions) -> Any:
    """A joined session; ``ConnectFailed`` saying why if the router cannot be joined."""
    joined: defer.Deferred[Any] = defer.Deferred()
    transport = {**transport_for(options.router, options.ca), "max_retries": 0}
    component = Component(transports=[transport], realm=options.realm,
                          authentication=_credentials(options).authentication())
    failed = _report_join(component, joined, options)
    component.start(reactor).addErrback(failed)

    def _timeout() -> None:
        if not joined.called:
            joined.errback(ConnectFailed(f"no answer from {options.router} within "
                                         f"{JOIN_TIMEOUT:.0f} s"))

    timer = reactor.callLater(JOIN_TIMEOUT, _timeout)
    try:
        return await joined
    finally:
        if timer.active():
            timer.cancel()


def _report_join(component: Any, joined: defer.Deferred[Any],
                 options: ClientOptions) -> Callable[[Any], None]:
    """Fire ``joined`` with the session, or with ``ConnectFailed`` on the first refusal or
    connection failure; returns the errback for the component's start."""

    @component.on_join
    def _joined(session: Any, details: Any) -> None:
        if not joined.called:
            joined.callback(session)

    @component.on_leave
    def _left(session: Any, details: Any) -> None:
        if not joined.called:
            joined.errback(ConnectFailed(f"{options.router} refused to let us join realm "
                                         f"{options.realm}: {details.reason} {details.message}"))

    causes: list[str] = []

    @component.on_connectfailure
    def _connect_failed(component: Any, error: Exception) -> None:
        causes.append(str(error) or type(error).__name__)  # e.g. certificate verify failed

    def _failed(failure: Any) -> None:
        if not joined.called:
            why = causes[-1] if causes else failure.getErrorMessage()
            joined.errback(ConnectFailed(f"cannot join {options.router}: {why}"))

    return _failed
