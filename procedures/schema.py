"""Value schemas of typed tables: JSON Schema 2020-12 for json/cbor, FlatBuffers for flatbuffers.

``value_codec(kind, schema=..., flatbuffers=...)`` returns the pmap value codec a table stores
with, for the component and pmap programs alike: json/cbor values checked against a compiled
JSON Schema on every write, flatbuffers tables with a schema taking plain maps (see
``procedures.flatbuf``), and without a schema the plain codec of today. A refused value raises
``SchemaViolation``, whose message names the JSON pointer of the failing part and the rule.
Stored values are never checked on read: rows written before a schema existed stay readable.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from txetcd.pmap.codecs import VALUE_CODECS, ValueCodec

from .errors import SchemaViolation
from .flatbuf import FlatBuffersMapValue, FlatBuffersSchema

__all__ = ["SchemaViolation", "JsonSchemaValue", "value_codec"]


def json_pointer(parts: Any) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


class JsonSchemaValue(ValueCodec[Any]):
    """Wraps a json or cbor codec: every encoded value must match ``schema`` first."""

    def __init__(self, inner: ValueCodec[Any], schema: dict[str, Any] | bool) -> None:
        self.inner = inner
        self.name = inner.name
        self.schema = schema
        self.validator = Draft202012Validator(schema)  # compiled once, used for every write

    def check(self, value: Any) -> None:
        error = best_match(self.validator.iter_errors(value))
        if error is not None:
            raise SchemaViolation(json_pointer(error.absolute_path), str(error.validator),
                                  error.message)

    def encode(self, value: Any) -> bytes:
        self.check(value)
        return self.inner.encode(value)

    def decode(self, data: bytes) -> Any:
        return self.inner.decode(data)


def value_codec(kind: str, schema: dict[str, Any] | bool | None = None,
                flatbuffers: tuple[bytes, str] | None = None) -> ValueCodec[Any]:
    """The codec of a table's values: ``flatbuffers`` is ``(bfbs, root_type)``."""
    if flatbuffers is not None:
        return FlatBuffersMapValue(FlatBuffersSchema(*flatbuffers))
    # flatbuffers without a schema travel as the serialized bytes, as before.
    codec = VALUE_CODECS["binary" if kind == "flatbuffers" else kind]()
    return codec if schema is None else JsonSchemaValue(codec, schema)
