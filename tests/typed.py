"""Shared set-up of the typed-table tests: a node whose tables declare schemas and indexes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .wamp import CrossbarNode, connect, until_registered

SERIALIZERS = ["json", "cbor", "msgpack"]

GADGET_FBS = """
namespace shop;
struct Size { w: float; h: float; }
table Part { sku: string; count: int; }
table Gadget {
  name: string (required);
  email: string;
  price: ulong;
  rating: float;
  tags: [string];
  parts: [Part];
  size: Size;
  blob: [ubyte];
  active: bool = true;
}
root_type Gadget;
"""

USER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "email"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "email": {"type": "string", "pattern": "^[^@]+@[^@]+$"},
        "age": {"type": "integer", "minimum": 0},
        "address": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
    "additionalProperties": False,
}


def typed_tables(workdir: Path) -> list[dict[str, Any]]:
    (workdir / "gadget.fbs").write_text(GADGET_FBS)
    kinds = ["string", "binary", "oid", "uuid", "timestamp"]
    return [
        {"name": "users", "slot": 1, "key": "uuid", "value": "json", "schema": USER_SCHEMA,
         "indexes": [{"name": "by_email", "field": "email", "unique": True},
                     {"name": "by_city", "field": "/address/city"}]},
        {"name": "notes", "slot": 2, "key": "string", "value": "cbor",
         "schema": {"type": "object", "required": ["text"],
                    "properties": {"text": {"type": "string", "maxLength": 20}}}},
        {"name": "gadgets", "slot": 3, "key": "string", "value": "flatbuffers",
         "flatbuffers": {"schema": str(workdir / "gadget.fbs"), "root_type": "Gadget"},
         "indexes": [{"name": "by_email", "field": "email", "unique": True}]},
        {"name": "plain", "slot": 4, "key": "string", "value": "json"},
        *({"name": f"k_{kind}", "slot": 10 + i, "key": kind, "value": "json"}
          for i, kind in enumerate(kinds)),
    ]


def typed_node(workdir: Path, etcd_url: str) -> CrossbarNode:
    """The repo's node with the typed tables above instead of the demo's."""
    node = CrossbarNode(workdir, etcd_url)
    node.extra["tables"] = typed_tables(workdir)
    write_node_config(node)
    return node


def write_node_config(node: CrossbarNode) -> None:
    """Store ``node.extra`` (changed after construction) in the node's config.json."""
    config_path = node.cbdir / "config.json"
    config = json.loads(config_path.read_text())
    config["workers"][1]["components"][0]["extra"] = node.extra
    config_path.write_text(json.dumps(config, indent=2))


def write_config(node: CrossbarNode) -> Path:
    """The node's table config as a file, for the CLIs."""
    path = node.workdir / "tables.json"
    path.write_text(json.dumps(node.extra))
    return path


async def session_as(url: str, serializer: str = "cbor", authid: str = "writer") -> Any:
    """A joined session on one serializer, once the component answers."""
    return await until_registered(await connect(url, authid, f"{authid}-secret", serializer))
