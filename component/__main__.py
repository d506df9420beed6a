"""``python -m component``: run EtcdComponent standalone against a WAMP router."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from autobahn.twisted.component import Component, run

from .config import ConfigError, parse_settings
from .session import EtcdComponent


def transport_for(router: str) -> dict[str, Any]:
    """A WebSocket URL, or ``unix:/path/router.sock`` for the node's local RawSocket."""
    reconnect = {"max_retries": -1, "initial_retry_delay": 0.5, "max_retry_delay": 5,
                 "retry_delay_growth": 1.5}
    if router.startswith("unix:"):
        return {"type": "rawsocket", "url": "rs://localhost", "serializer": "cbor",
                "endpoint": {"type": "unix", "path": router[len("unix:"):]}, **reconnect}
    if router.startswith(("ws://", "wss://")):
        return {"type": "websocket", "url": router, "serializers": ["cbor"], **reconnect}
    raise ValueError(f"--router must be ws://, wss:// or unix:/path, not {router!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m component", description=(
        "Serve etcd tables as WAMP procedures and events (the component standalone)."))
    parser.add_argument("--router", default="ws://127.0.0.1:8080/ws",
                        help="ws://host:port/path, or unix:/path/to/router.sock")
    parser.add_argument("--realm", default="realm1")
    parser.add_argument("--config", required=True, help="tables.json: prefix, etcd, tables")
    parser.add_argument("--authid", default=None,
                        help="log in with WAMP-Ticket as this authid (ticket from "
                             "$ETCD_WAMP_BACKEND_TICKET)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    try:
        with open(args.config) as f:
            extra = json.load(f)
        parse_settings(extra)  # fail now, naming the field, not after connecting
        transport = transport_for(args.router)
    except (OSError, ValueError) as exc:  # ConfigError is a ValueError
        kind = "config" if isinstance(exc, (ConfigError, json.JSONDecodeError)) else "error"
        print(f"{kind}: {exc}", file=sys.stderr)
        return 2
    auth = None
    if args.authid:
        auth = {"ticket": {"authid": args.authid,
                           "ticket": os.environ.get("ETCD_WAMP_BACKEND_TICKET", "")}}
    component = Component(transports=[transport], realm=args.realm, extra=extra,
                          authentication=auth, session_factory=EtcdComponent)
    run([component], log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
