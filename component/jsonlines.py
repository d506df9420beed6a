"""The JSON Lines format of ``etcd-wamp export`` and ``import``: one row per line, sans-IO.

The first line is a header naming the table and its kinds, so that an export is never loaded
into a table that would read its keys differently::

    {"format": "etcd-wamp-export/1", "table": "users", "key_kind": "uuid",
     "value_kind": "json", "revision": 1234, "count": 2}
    {"key": "0b6f3f0e-5c1c-4c55-9d7a-6f0e2b7c9a10", "value": {"name": "alice"}}

Each row is ``{"key": K, "value": V}``, K and V in the JSON form of the table's kinds:

- keys: ``string`` a string, ``binary`` standard base64 (padded), ``uuid`` the canonical
  string, ``oid`` an int, ``timestamp`` an int of nanoseconds since the epoch;
- values: ``json`` the JSON value itself, ``string`` a string, ``oid`` an int, ``uuid`` a
  string, ``binary`` and ``flatbuffers`` base64; ``cbor`` the value itself when JSON says it
  exactly (strings as map keys, no bytes, no tags, finite floats), otherwise the line carries
  ``"cbor": <base64 of the CBOR encoding>`` instead of ``"value"``.

Import reads the same form (the header is optional for hand-written files); a line it cannot
read raises ``RowError`` with the reason, which the caller reports with the line number.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from typing import Any

import cbor2

__all__ = ["FORMAT", "Header", "RowError", "RowFormat"]

FORMAT = "etcd-wamp-export/1"
_BASE64_KINDS = ("binary", "flatbuffers")


class RowError(ValueError):
    """A line is not a row of this table; the message says what is wrong with it."""


@dataclass(frozen=True)
class Header:
    """An export's first line."""

    table: str
    key_kind: str
    value_kind: str
    revision: int
    count: int

    def dumps(self) -> str:
        return json.dumps({"format": FORMAT, "table": self.table, "key_kind": self.key_kind,
                           "value_kind": self.value_kind, "revision": self.revision,
                           "count": self.count})

    @staticmethod
    def parse(obj: Any) -> Header | None:
        """The header if ``obj`` (a decoded line) is one, else None; ``RowError`` if it is a
        header of another format."""
        if not isinstance(obj, dict) or "format" not in obj:
            return None
        if obj["format"] != FORMAT:
            raise RowError(f"unknown export format {obj['format']!r} (this is {FORMAT})")
        try:
            return Header(str(obj["table"]), str(obj["key_kind"]), str(obj["value_kind"]),
                          int(obj.get("revision", 0)), int(obj.get("count", 0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise RowError(f"incomplete header: {exc}") from None


def _exact_json(value: Any) -> bool:
    """Whether ``json.loads(json.dumps(value))`` gives ``value`` back, types included."""
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_exact_json(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _exact_json(v) for k, v in value.items())
    return False


def _b64decode(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise RowError(f"{what} must be a base64 string, not {type(text).__name__}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RowError(f"{what} is not valid base64: {exc}") from None


class RowFormat:
    """Rows of one table between their WAMP form (what ``scan`` returns and ``put`` takes)
    and their JSON Lines form."""

    def __init__(self, key_kind: str, value_kind: str) -> None:
        self.key_kind = key_kind
        self.value_kind = value_kind

    def dumps(self, key: Any, value: Any) -> str:
        """One line (without the newline) for a row as ``scan`` returned it."""
        row: dict[str, Any] = {"key": self._key_out(key)}
        if self.value_kind in _BASE64_KINDS:
            row["value"] = base64.b64encode(value).decode()
        elif self.value_kind == "cbor" and not _exact_json(value):
            row["cbor"] = base64.b64encode(cbor2.dumps(value)).decode()
        else:
            row["value"] = value
        return json.dumps(row, ensure_ascii=False, allow_nan=False)

    def loads(self, line: str) -> tuple[Any, Any]:
        """The ``(key, value)`` for ``put`` of one line; ``RowError`` if it is not a row."""
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RowError(f"not JSON: {exc}") from None
        return self.row(obj)

    def row(self, obj: Any) -> tuple[Any, Any]:
        """The ``(key, value)`` of a decoded line."""
        if not isinstance(obj, dict) or "key" not in obj:
            raise RowError("a row is an object with \"key\" and \"value\" (or \"cbor\")")
        extra = set(obj) - {"key", "value", "cbor"}
        if extra:
            raise RowError(f"unknown fields {sorted(extra)}")
        key = obj["key"]
        if self.key_kind == "binary":
            key = _b64decode(key, "binary key")
        if "cbor" in obj:
            if self.value_kind != "cbor" or "value" in obj:
                raise RowError("\"cbor\" is only for cbor tables, instead of \"value\"")
            try:
                return key, cbor2.loads(_b64decode(obj["cbor"], "cbor value"))
            except cbor2.CBORDecodeError as exc:
                raise RowError(f"cbor value does not decode: {exc}") from None
        if "value" not in obj:
            raise RowError("the row has no \"value\"")
        value = obj["value"]
        if self.value_kind in _BASE64_KINDS:
            value = _b64decode(value, f"{self.value_kind} value")
        return key, value

    def _key_out(self, key: Any) -> Any:
        return base64.b64encode(key).decode() if self.key_kind == "binary" else key
