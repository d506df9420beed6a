"""``python -m component``: run EtcdComponent standalone against a WAMP router.

It logs in anonymously (the node's local unix socket), with WAMP-cryptosign (``--key``, an
Ed25519 private key file) or with WAMP-ticket (``--authid`` and a ticket from ``--ticket-file``
or ``$ETCD_WAMP_BACKEND_TICKET``), over ``ws://``, ``wss://`` (``--ca`` for a private CA) or
``unix:/path``. It reconnects while the router is unreachable, and exits with status 1 when the
router refuses the login, its TLS certificate does not verify, or the socket is not this user's
to open: retrying would not change that.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from typing import Any

import txaio
from autobahn.twisted.component import Component
from autobahn.websocket.util import parse_url
from OpenSSL import SSL
from twisted.internet import defer
from twisted.internet.error import ConnectError
from twisted.python.failure import Failure

from txetcd.twisted_driver import tls_reason

from .config import ConfigError, parse_settings, split_endpoints
from .login import Credentials, KeyFileError, load_key, make_key, refusal
from .session import EtcdComponent

__all__ = ["main", "transport_for", "credentials_from"]

RECONNECT = {"max_retries": -1, "initial_retry_delay": 0.5, "max_retry_delay": 5,
             "retry_delay_growth": 1.5}


def transport_for(router: str, ca: str | None = None) -> dict[str, Any]:
    """A WebSocket URL (``--ca``: the CA file a ``wss://`` router's certificate must chain to),
    or ``unix:/path/router.sock`` for a node's local RawSocket."""
    if ca and not router.startswith("wss://"):
        raise ValueError(f"--ca is for wss:// routers only, not {router!r}")
    if router.startswith("unix:"):
        return {"type": "rawsocket", "url": "rs://localhost", "serializer": "cbor",
                "endpoint": {"type": "unix", "path": router[len("unix:"):]}, **RECONNECT}
    if router.startswith(("ws://", "wss://")):
        transport = {"type": "websocket", "url": router, "serializers": ["cbor"], **RECONNECT}
        if ca:
            if not os.path.isfile(ca):
                raise ValueError(f"--ca {ca}: no such file")
            _, host, port, *_ = parse_url(router)
            transport["endpoint"] = {"type": "tcp", "host": host, "port": port,
                                     "tls": {"hostname": host, "trust_root": ca}}
        return transport
    raise ValueError(f"--router must be ws://, wss:// or unix:/path, not {router!r}")


def credentials_from(args: argparse.Namespace) -> Credentials:
    """The login the arguments ask for; secrets come from files or the environment."""
    if args.key:
        return Credentials(authid=args.authid, key=load_key(args.key))
    ticket = os.environ.get("ETCD_WAMP_BACKEND_TICKET")
    if args.ticket_file:
        try:
            with open(args.ticket_file) as f:
                ticket = f.read().strip()
        except OSError as exc:
            raise ValueError(f"cannot read --ticket-file {args.ticket_file}: "
                             f"{exc.strerror}") from None
    if args.authid:
        if not ticket:
            raise ValueError("--authid without --key needs a ticket: --ticket-file FILE or "
                             "$ETCD_WAMP_BACKEND_TICKET")
        return Credentials(authid=args.authid, ticket=ticket)
    if args.ticket_file:
        raise ValueError("--ticket-file needs --authid")
    return Credentials()


def parser(prog: str = "python -m component") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=(
        "Serve etcd tables as WAMP procedures and events (the component standalone)."))
    p.add_argument("--router", default="ws://127.0.0.1:8080/ws",
                   help="ws://host:port/path, wss://host:port/path or unix:/path/to/router.sock")
    p.add_argument("--realm", default="realm1")
    p.add_argument("--config", help="tables.json: prefix, etcd, tables")
    p.add_argument("--etcd", default=os.environ.get("ETCD_ENDPOINTS"), metavar="ENDPOINTS",
                   help="comma-separated etcd URLs replacing the config's etcd.endpoints "
                        "(also $ETCD_ENDPOINTS), e.g. the etcd of `etcd-wamp run --etcd-port`")
    p.add_argument("--key", default=os.environ.get("ETCD_WAMP_BACKEND_KEY"),
                   help="log in with WAMP-cryptosign using this Ed25519 private key file "
                        "(also $ETCD_WAMP_BACKEND_KEY)")
    p.add_argument("--authid", default=None,
                   help="the authid to log in as; without --key: WAMP-ticket, the ticket from "
                        "--ticket-file or $ETCD_WAMP_BACKEND_TICKET")
    p.add_argument("--ticket-file", default=None, help="a file holding the WAMP ticket")
    p.add_argument("--ca", default=None,
                   help="PEM file of the CA a wss:// router's certificate must chain to "
                        "(also $ETCD_WAMP_CA; default: the system's trust store)")
    p.add_argument("--make-key", metavar="FILE", default=None,
                   help="write a new Ed25519 private key to FILE (mode 0600), print its "
                        "public key for the router's authorized_keys, and exit")
    p.add_argument("--log-level", default="info")
    return p


def main(argv: list[str] | None = None, prog: str = "python -m component") -> int:
    """Run the component until it is stopped; 2 for bad arguments, 1 for a refused login.
    ``prog`` names the command in usage messages (``etcd-wamp component`` delegates here)."""
    args = parser(prog).parse_args(argv)
    if args.make_key:
        try:
            print(make_key(args.make_key))
        except KeyFileError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    if not args.config:
        print("error: --config is required", file=sys.stderr)
        return 2
    try:
        with open(args.config) as f:
            extra = json.load(f)
        if split_endpoints(args.etcd) and isinstance(extra, dict):
            extra["etcd"] = {**(extra.get("etcd") or {}),
                             "endpoints": list(split_endpoints(args.etcd))}
        parse_settings(extra)  # fail now, naming the field, not after connecting
        # $ETCD_WAMP_CA may be set for every component on a host; it applies to wss:// only.
        ca = args.ca or (os.environ.get("ETCD_WAMP_CA") if args.router.startswith("wss://")
                         else None)
        transport = transport_for(args.router, ca)
        credentials = credentials_from(args)
    except (OSError, ValueError) as exc:  # ConfigError and KeyFileError are ValueErrors
        kind = "config" if isinstance(exc, (ConfigError, json.JSONDecodeError)) else "error"
        print(f"{kind}: {exc}", file=sys.stderr)
        return 2
    return serve(transport, args.realm, extra, credentials, args.log_level,
                 where=args.router)


def serve(transport: dict[str, Any], realm: str, extra: Any, credentials: Credentials,
          log_level: str, where: str) -> int:
    """Run the component on the reactor; returns when it stops (1 if it was refused)."""
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor  # twisted's module-level reactor is typed as a bare module
    refused: list[str] = []

    def is_fatal(exc: BaseException) -> bool:
        reason = refusal(exc, credentials) or connection_refusal(exc)
        if reason:
            refused.append(reason)
        return bool(reason)

    component = Component(transports=[transport], realm=realm, extra=extra,
                          authentication=credentials.authentication(),
                          session_factory=EtcdComponent, is_fatal=is_fatal)
    txaio.start_logging(level=log_level)  # type: ignore[attr-defined]

    def stopped(result: Any) -> None:
        if isinstance(result, Failure) and not refused:
            refused.append(f"failed: {result.getErrorMessage()}")
        if reactor.running:
            reactor.stop()

    reactor.callWhenRunning(lambda: defer.maybeDeferred(component.start, reactor)
                            .addBoth(stopped))
    reactor.run()
    if refused:
        # Past the log's redirection of sys.stderr: the last line an operator sees, as is.
        print(f"error: {where} {refused[0]}", file=sys.__stderr__, flush=True)
        return 1
    return 0


def connection_refusal(exc: BaseException) -> str | None:
    """A socket this user may not open, or a TLS handshake that fails (a router certificate
    that does not verify), fails every retry the same way."""
    if isinstance(exc, ConnectError) and exc.osError == errno.EACCES:
        return ("cannot be opened by this user: permission denied (a node's local socket is "
                "only for the node's own user)")
    if isinstance(exc, SSL.Error):
        return f"failed the TLS handshake: {tls_reason(exc)} (check --ca)"
    return None


if __name__ == "__main__":
    sys.exit(main())
