"""The component's configuration: parsed from Crossbar's ``extra`` or a JSON file, checked once.

Every problem raises ``ConfigError`` naming the offending field (``tables[1].value``), so a
bad deployment fails at start with a message a person can act on, not at the first call.
Fields whose names start with ``//`` are comments and ignored, at every level the parser reads.
"""

from __future__ import annotations

import re
from typing import Any

from procedures.payload import DEFAULT_MAX_DEPTH, MAX_DEPTH
from txetcd.pmap.codecs import KEY_CODECS, VALUE_CODECS

from .settings import (
    RESERVED_SLOT,
    WIRE_KEYS,
    WIRE_VALUES,
    ConfigError,
    EtcdSettings,
    FlatBuffersSettings,
    IndexSettings,
    Settings,
    TableSettings,
)
from .typed_config import check_index_slots, parse_typing

__all__ = ["ConfigError", "EtcdSettings", "TableSettings", "IndexSettings",
           "FlatBuffersSettings", "Settings", "parse_settings", "split_endpoints",
           "WIRE_KEYS", "WIRE_VALUES"]


def split_endpoints(text: str | None) -> tuple[str, ...]:
    """``--etcd``/``$ETCD_ENDPOINTS``: comma-separated etcd URLs (none when empty)."""
    return tuple(url.strip() for url in (text or "").split(",") if url.strip())

# A URI component under loose and strict Crossbar URI rules alike.
_URI_PART = re.compile(r"^[a-z0-9_]+$")


def _expect(obj: Any, kind: type | tuple[type, ...], where: str) -> Any:
    if isinstance(obj, bool) and kind is not bool or not isinstance(obj, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(where, f"expected {names}, got {type(obj).__name__} {obj!r:.60}")
    return obj


def _uri_part(text: Any, where: str) -> str:
    _expect(text, str, where)
    if not _URI_PART.match(text):
        raise ConfigError(where, f"{text!r} must be lowercase letters, digits and _ only "
                                 "(it becomes part of WAMP URIs)")
    return str(text)


def _reject_unknown(obj: dict[str, Any], known: set[str], where: str) -> None:
    # JSON has no comments: a field whose name starts with "//" is one (see tables.json).
    unknown = sorted(k for k in set(obj) - known if not str(k).startswith("//"))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}" if where else unknown[0],
                          f"unknown field (known: {', '.join(sorted(known))})")


def parse_settings(raw: Any) -> Settings:
    """Check and convert a config dict; raises ``ConfigError`` naming the first bad field."""
    _expect(raw, dict, "(top level)")
    # Crossbar adds cbdir to extra; relative schema paths are resolved against it.
    _reject_unknown(raw, {"prefix", "etcd", "tables", "position_interval", "cbdir", "linked",
                          *_LIMITS}, "")
    prefix = _parse_prefix(raw.get("prefix", "etcd"))
    etcd = _parse_etcd(raw.get("etcd") or {})
    tables = _parse_tables(raw.get("tables"), raw.get("cbdir"))
    interval = _expect(raw.get("position_interval", 0.1), (int, float), "position_interval")
    if not 0 <= interval <= 3600:
        raise ConfigError("position_interval", f"must be 0..3600 seconds, not {interval}")
    limits = {name: _limit(raw, name) for name in _LIMITS}
    linked = _expect(raw.get("linked", False), bool, "linked")
    return Settings(prefix, etcd, tables, float(interval), **limits, linked=linked)


def _parse_prefix(text: Any) -> str:
    """The WAMP URI prefix: dot-separated URI components."""
    _expect(text, str, "prefix")
    for i, part in enumerate(text.split(".")):
        _uri_part(part, f"prefix (component {i})")
    return str(text)


def _parse_etcd(raw: Any) -> EtcdSettings:
    """The ``etcd`` section: endpoints, namespace and credentials."""
    _expect(raw, dict, "etcd")
    _reject_unknown(raw, {"endpoints", "namespace", "user", "password", "ca", "cluster_id"},
                    "etcd")
    endpoints = raw.get("endpoints", ["http://127.0.0.1:2379"])
    _expect(endpoints, list, "etcd.endpoints")
    if not endpoints:
        raise ConfigError("etcd.endpoints", "needs at least one URL")
    for i, url in enumerate(endpoints):
        _expect(url, str, f"etcd.endpoints[{i}]")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"etcd.endpoints[{i}]", f"{url!r} is not an http(s):// URL")
    namespace = raw.get("namespace") or ""
    _expect(namespace, str, "etcd.namespace")
    for name in ("user", "password", "ca"):
        if raw.get(name) is not None:
            _expect(raw[name], str, f"etcd.{name}")
    if (raw.get("user") is None) != (raw.get("password") is None):
        raise ConfigError("etcd.user", "user and password go together")
    return EtcdSettings(list(endpoints), namespace.encode(), raw.get("user"),
                        raw.get("password"), raw.get("ca"), _cluster_id(raw.get("cluster_id")))


def _cluster_id(text: Any) -> int | None:
    """``etcd.cluster_id``: hex, as etcdctl prints it."""
    if text is None:
        return None
    _expect(text, str, "etcd.cluster_id")
    try:
        return int(text, 16)
    except ValueError:
        raise ConfigError("etcd.cluster_id", f"{text!r} is not a hex ID") from None


def _parse_tables(raw: Any, cbdir: Any) -> list[TableSettings]:
    """The ``tables`` list: at least one, names and slots unique, index slots free."""
    _expect(raw, list, "tables")
    if not raw:
        raise ConfigError("tables", "configure at least one table")
    tables: list[TableSettings] = []
    for i, table in enumerate(raw):
        tables.append(_parse_table(table, f"tables[{i}]", tables, cbdir))
    check_index_slots(tables)
    return tables


def _parse_table(table: Any, where: str, earlier: list[TableSettings],
                 cbdir: Any) -> TableSettings:
    """One table; ``earlier`` are the tables before it, whose names and slots it may not reuse."""
    _expect(table, dict, where)
    _reject_unknown(table, {"name", "slot", "key", "value", "schema", "flatbuffers",
                            "indexes", "max_depth"}, where)
    name = _uri_part(table.get("name"), f"{where}.name")
    slot = _expect(table.get("slot"), int, f"{where}.slot")
    if not 1 <= slot < RESERVED_SLOT:
        raise ConfigError(f"{where}.slot", f"must be 1..{RESERVED_SLOT - 1}, not {slot} "
                                           f"(slot {RESERVED_SLOT} holds the component's "
                                           "elections and event positions)")
    key, value = _parse_kinds(table, where)
    for other in earlier:
        if other.name == name:
            raise ConfigError(f"{where}.name", f"table {name!r} is configured twice")
        if other.slot == slot:
            raise ConfigError(f"{where}.slot", f"slot {slot} is already table {other.name!r}")
    depth = _expect(table.get("max_depth", DEFAULT_MAX_DEPTH), int, f"{where}.max_depth")
    if not 1 <= depth <= MAX_DEPTH:
        raise ConfigError(f"{where}.max_depth", f"must be 1..{MAX_DEPTH} (what every WAMP "
                                                f"serializer carries), not {depth}")
    typed = parse_typing(table, where, name, value, cbdir)
    return TableSettings(name, slot, key, value, max_depth=depth, **typed)


def _parse_kinds(table: dict[str, Any], where: str) -> tuple[str, str]:
    """A table's key and value kinds: ones with a faithful WAMP form, never pickle."""
    key = _expect(table.get("key"), str, f"{where}.key")
    value = _expect(table.get("value"), str, f"{where}.value")
    if key not in KEY_CODECS or key not in WIRE_KEYS:
        raise ConfigError(f"{where}.key", f"{key!r} is not one of {', '.join(WIRE_KEYS)}")
    if value == "pickle":
        raise ConfigError(f"{where}.value", "pickle tables are never exposed over WAMP: "
                                            "unpickling data from the network runs code")
    if value not in VALUE_CODECS or value not in WIRE_VALUES:
        raise ConfigError(f"{where}.value",
                          f"{value!r} is not one of {', '.join(WIRE_VALUES)}")
    return key, value


# Admission limits (component.limits), each with the least value it may take.
_LIMITS = {"max_inflight_bytes": 1, "max_scans": 1, "max_queued_scans": 0}


def _limit(raw: dict[str, Any], name: str) -> int:
    """An int limit from the config, or ``Settings``'s default when absent."""
    value = _expect(raw.get(name, getattr(Settings, name)), int, name)
    if value < _LIMITS[name]:
        raise ConfigError(name, f"must be >= {_LIMITS[name]}, not {value}")
    return int(value)
