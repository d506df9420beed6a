"""Linked routers: N Crossbar nodes serving one realm, joined by router-to-router links.

Every node gets a TCP RawSocket transport for the other nodes' links (WAMP-cryptosign, the node
keys of all N nodes authorized as role ``rlink``) and one link (``rlinks`` in its realm) to each
other node that forwards *local subscriptions* only: node A subscribes on B for A's
subscribers and republishes B's events on A, so users' own topics reach every node, each event
across one link once.

The component does not rely on the links (they lose and repeat events under churn, turn a
forwarded call's error into a null result, and carry neither retained events nor
``wamp.session.kill``; the README's "Linked routers" lists each with its reproduction in
``tests/test_linked_routers.py``). Each node is served as if it were alone: its own instances
(``"linked": true``) elect a publisher per table for that router, which publishes past the
links (``exclude_authrole``), and calls are not forwarded (``forward_local_invocations:
false``), so a call is answered by an instance on the caller's router, with its typed errors.
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import socket
import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["LINK_ROLE", "link_config", "linked_tables", "node_key", "node_name",
           "write_linked_nodes"]

LINK_ROLE = "rlink"  # the role the links' sessions get on the router they connect to


def node_key(cbdir: str | os.PathLike[str]) -> str:
    """The node's Ed25519 key in Crossbar's ``key.priv``/``key.pub`` form, made once (Crossbar
    would make one at its first start, too late to authorize it on the other nodes); returns
    its public key (64 hex digits)."""
    cbdir = Path(cbdir)
    private = cbdir / "key.priv"
    if private.exists():
        for line in private.read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "public-key-ed25519":
                return value.strip()
        raise ValueError(f"{private}: no public-key-ed25519 line")
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes_raw().hex()
    tags = {"creator": f"etcd-wamp@{socket.gethostname()}",
            "created-at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "machine-id": uuid.uuid4().hex, "public-key-ed25519": public}
    body = "".join(f"{name}: {value}\n" for name, value in tags.items())
    cbdir.mkdir(parents=True, exist_ok=True)
    (cbdir / "key.pub").write_text("Crossbar.io node public key\n\n" + body)
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("Crossbar.io node private key - KEEP THIS SAFE!\n\n" + body
                  + f"private-key-ed25519: {key.private_bytes_raw().hex()}\n")
    return public


def node_name(index: int) -> str:
    """Node ``index``'s id (``node1`` ...): its router's name for its sessions and links."""
    return f"node{index + 1}"


def link_config(config: dict[str, Any], index: int, rlink_ports: list[int],
                public_keys: list[str], host: str = "127.0.0.1",
                hosts: list[str] | None = None, forward_calls: bool = False) -> dict[str, Any]:
    """Node ``index`` of ``len(rlink_ports)``: ``config`` (a single node's) with the links'
    role, the transport the other nodes' links log in on, a link to every other node
    (``hosts[j]:rlink_ports[j]``), and its component instances told they are linked.
    ``forward_calls`` forwards registrations too (not for the component: see the module doc)."""
    config = copy.deepcopy(config)
    hosts = hosts or [host] * len(rlink_ports)
    # The node's id is what its sessions see as their router (``x_cb_node``): what the
    # instances attached to it scope their publisher elections by.
    config.setdefault("controller", {})["id"] = node_name(index)
    router = next(w for w in config["workers"] if w["type"] == "router")
    realm = router["realms"][0]
    for worker in config["workers"]:
        for component in worker.get("components", []):
            if "etcd" in component.get("extra", {}):
                component["extra"]["linked"] = True
    backend = next((r for r in realm["roles"] if r["name"] == "backend"), None)
    if backend is not None and not any(p["uri"] == "wamp.session.get"
                                       for p in backend["permissions"]):
        # The instances ask who subscribes: a link's session is not a subscriber to publish for.
        backend["permissions"].append({
            "uri": "wamp.session.get", "match": "exact",
            "allow": {"call": True, "register": False, "publish": False, "subscribe": False},
            "disclose": {"caller": False, "publisher": False}, "cache": True})
    realm["roles"] = [r for r in realm["roles"] if r["name"] != LINK_ROLE] + [{
        "name": LINK_ROLE,
        "permissions": [{"uri": "", "match": "prefix",
                         "allow": {"call": True, "register": True, "publish": True,
                                   "subscribe": True},
                         "disclose": {"caller": True, "publisher": True}, "cache": True}]}]
    router["transports"] = [t for t in router["transports"] if t.get("id") != LINK_ROLE] + [{
        "type": "rawsocket", "id": LINK_ROLE,
        "endpoint": {"type": "tcp", "interface": host, "port": rlink_ports[index]},
        "serializers": ["cbor"],
        "auth": {"cryptosign": {"type": "static", "principals": {
            node_name(other): {"realm": realm["name"], "role": LINK_ROLE,
                               "authorized_keys": [key]}
            for other, key in enumerate(public_keys) if other != index}}}}]
    realm["rlinks"] = [{
        "id": f"to_node{other + 1}", "realm": realm["name"],
        # Local subscriptions go to the other node; nothing comes back over the same link, so
        # an event crosses one link once. Calls are not forwarded: a forwarded call's error
        # reaches its caller as a null result, so each call stays on the caller's router.
        "forward_local_events": True, "forward_remote_events": False,
        "forward_local_invocations": forward_calls, "forward_remote_invocations": False,
        "transport": {"type": "rawsocket", "serializer": "cbor",
                      "endpoint": {"type": "tcp", "host": hosts[other],
                                   "port": rlink_ports[other]},
                      "url": f"rs://{hosts[other]}:{rlink_ports[other]}"}}
        for other in range(len(rlink_ports)) if other != index]
    return config


def linked_tables(text: str) -> str:
    """A component configuration (the text of a ``tables.json``) with ``"linked": true``,
    its comments and layout kept."""
    body = text.rstrip()
    if not body.endswith("}"):
        raise ValueError("not a JSON object")
    comment = ("Routers linked by rlinks (etcd-wamp init --nodes N): the instances of each "
               "router elect a publisher for that router's subscribers.")
    return (body[:-1].rstrip() + f',\n  "// linked": {json.dumps(comment)},\n'
            '  "linked": true\n}\n')


def write_linked_nodes(targets: list[Path], config: dict[str, Any], tables: str,
                       link_port: int) -> None:
    """Node dirs ``targets`` (``.crossbar/`` with config and node key, ``tables.json``) of
    ``config`` linked to each other; node i's web and link ports are ``config``'s and
    ``link_port`` plus i."""
    keys = [node_key(target / ".crossbar") for target in targets]
    link_ports = [link_port + i for i in range(len(targets))]
    for index, target in enumerate(targets):
        node = link_config(config, index, link_ports, keys)
        for worker in node["workers"]:
            for transport in worker.get("transports", []):
                if transport.get("type") == "web":
                    transport["endpoint"]["port"] += index
        (target / ".crossbar" / "config.json").write_text(json.dumps(node, indent=2) + "\n")
        (target / "tables.json").write_text(linked_tables(tables))
