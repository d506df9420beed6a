"""A WAMP client session for the CLI's table commands, joined like any other client.

A ``wss://`` router is checked against the system's CAs, or the one given. Authentication is
WAMP-ticket (``authid`` + ticket), WAMP-cryptosign (``authid`` + an Ed25519
key file) or anonymous. The serializer is CBOR, so binary keys and values arrive as bytes.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from autobahn.twisted.component import Component
from twisted.internet import defer

from .__main__ import transport_for

__all__ = ["ClientOptions", "ConnectFailed", "load_private_key", "connect"]

JOIN_TIMEOUT = 30.0


class ConnectFailed(RuntimeError):
    """The router could not be reached, or it refused to let us join."""


@dataclass(frozen=True)
class ClientOptions:
    router: str = "ws://127.0.0.1:8080/ws"
    realm: str = "realm1"
    authid: str | None = None
    ticket: str | None = None
    key: str | None = None  # path of an Ed25519 private key file (cryptosign)
    ca: str | None = None  # PEM file of the CA that signed a wss:// router's certificate


def load_private_key(path: str) -> str:
    """The hex seed of an Ed25519 private key file: Crossbar's key file format
    (``private-key-ed25519: <hex>``), 64 hex digits, or 32 raw bytes."""
    from autobahn.util import parse_keyfile

    with open(path, "rb") as f:
        data = f.read()
    if len(data) == 32:
        return data.hex()
    text = data.decode("ascii", errors="replace")
    seed = parse_keyfile(path).get("private-key-ed25519") if ":" in text else text.strip()
    try:
        if seed is not None and len(binascii.a2b_hex(seed)) == 32:
            return str(seed)
    except (binascii.Error, ValueError):
        pass
    raise ValueError(f"{path}: no Ed25519 private key (a Crossbar key file with "
                     "private-key-ed25519, 64 hex digits or 32 raw bytes)")


def _authentication(options: ClientOptions) -> dict[str, Any] | None:
    if options.key is not None:
        if not options.authid:
            raise ValueError("--key needs --authid")
        return {"cryptosign": {"authid": options.authid,
                               "privkey": load_private_key(options.key)}}
    if options.authid:
        return {"ticket": {"authid": options.authid, "ticket": options.ticket or ""}}
    return None


async def connect(reactor: Any, options: ClientOptions) -> Any:
    """A joined session; ``ConnectFailed`` saying why if the router cannot be joined."""
    joined: defer.Deferred[Any] = defer.Deferred()
    transport = {**transport_for(options.router), "max_retries": 0}
    if options.ca is not None:
        url = urlsplit(options.router)
        if url.scheme != "wss" or url.hostname is None:
            raise ValueError("--ca is for wss:// routers")
        transport["endpoint"] = {"type": "tcp", "host": url.hostname, "port": url.port or 443,
                                 "tls": {"hostname": url.hostname, "trust_root": options.ca}}
    component = Component(transports=[transport], realm=options.realm,
                          authentication=_authentication(options))

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

    component.start(reactor).addErrback(_failed)
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
