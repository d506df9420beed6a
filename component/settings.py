"""The component's settings as ``component.config`` parses them: frozen dataclasses, and the
``ConfigError`` that names a bad field. Kept apart from the parser so that the parts of it
(``component.typed_config``) and the settings' users share them without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from procedures.payload import DEFAULT_MAX_DEPTH

from .limits import MAX_INFLIGHT_BYTES, MAX_QUEUED_SCANS, MAX_SCANS

__all__ = ["ConfigError", "EtcdSettings", "TableSettings", "IndexSettings",
           "FlatBuffersSettings", "Settings", "WIRE_KEYS", "WIRE_VALUES", "RESERVED_SLOT"]

# Key and value kinds that have a faithful WAMP representation.
WIRE_KEYS = ("string", "binary", "oid", "uuid", "timestamp")
WIRE_VALUES = ("string", "binary", "oid", "uuid", "json", "cbor", "flatbuffers")

# The last slot of the namespace is the component's own: publisher elections and positions.
RESERVED_SLOT = 0xFFFF

class ConfigError(ValueError):
    """The configuration is invalid; ``field`` names where."""

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"config field {field_name}: {problem}")
        self.field = field_name


@dataclass(frozen=True)
class EtcdSettings:
    endpoints: list[str] = field(default_factory=lambda: ["http://127.0.0.1:2379"])
    namespace: bytes = b""
    user: str | None = None
    password: str | None = None
    ca: str | None = None
    # etcd's cluster ID (hex, as etcdctl prints it): the component serves no other cluster.
    cluster_id: int | None = None


@dataclass(frozen=True)
class IndexSettings:
    """A secondary index: ``field`` is a JSON pointer into the value (``email`` = ``/email``)."""

    name: str
    field: str
    unique: bool
    key: str  # the key kind of the indexed value
    slot: int  # where its entries live: another slot, so table events never carry them


@dataclass(frozen=True)
class FlatBuffersSettings:
    schema: str  # the .bfbs (or .fbs, compiled with flatc at start) file
    root_type: str
    bfbs: bytes = field(repr=False, default=b"")  # the binary schema, read once


@dataclass(frozen=True)
class TableSettings:
    name: str
    slot: int
    key: str
    value: str
    schema: dict[str, Any] | None = None  # JSON Schema 2020-12 of json/cbor values
    flatbuffers: FlatBuffersSettings | None = None
    indexes: tuple[IndexSettings, ...] = ()
    # Containers a stored value may nest (see procedures.payload): deeper puts are refused.
    max_depth: int = DEFAULT_MAX_DEPTH


@dataclass(frozen=True)
class Settings:
    prefix: str
    etcd: EtcdSettings
    tables: list[TableSettings]
    # Seconds between two writes of a publisher's position while events flow (see
    # component.publisher): what a lone instance may resend after a crash, against etcd writes.
    position_interval: float = 0.1
    # Admission control (component.limits): call bytes in flight, scans at once and waiting.
    max_inflight_bytes: int = MAX_INFLIGHT_BYTES
    max_scans: int = MAX_SCANS
    max_queued_scans: int = MAX_QUEUED_SCANS
    # Routers linked by rlinks (component.linked): one publisher per table and router, elected
    # among the instances of that router, whose node id (the router says it on joining) scopes
    # the election and the stored position.
    linked: bool = False
