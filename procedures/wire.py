"""Keys and values between their WAMP form and their etcd bytes.

On the wire a uuid key is its canonical string, an oid an int, a string a str, binary bytes and
a timestamp an int of nanoseconds; json and cbor values are native payloads, binary and
flatbuffers values are bytes. Anything else is refused with ``invalid_key``/``invalid_value``
before etcd is touched, and so is anything outside the payload policy (``procedures.payload``):
a table stores only what every serializer can deliver. A stored row outside it (written by
another program) decodes to ``CorruptRow``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from txetcd import KeySet
from txetcd.pmap.codecs import KEY_CODECS, VALUE_CODECS, KeyCodec, ValueCodec
from txetcd.pmap.layout import TableLayout
from txetcd.types import is_int

from .errors import ProcedureError
from .payload import DEFAULT_MAX_DEPTH, UINT64_MAX, inspect, problem
from .schema import SchemaViolation

__all__ = ["KeyWire", "ValueWire", "TableWire", "CorruptRow"]


class CorruptRow(ValueError):
    """Stored bytes that the table cannot decode, or that not every serializer can carry."""


def _uuid_from_wire(text: Any) -> uuid.UUID:
    if not isinstance(text, str):
        raise TypeError(f"expected a UUID string, got {type(text).__name__}")
    return uuid.UUID(text)


def _check_int(number: Any) -> int:
    if not is_int(number):
        raise TypeError(f"expected an int, got {type(number).__name__}")
    return number


# WAMP form -> codec input, and codec output -> WAMP form, per kind.
_TO_CODEC: dict[str, Callable[[Any], Any]] = {"uuid": _uuid_from_wire, "oid": _check_int,
                                              "timestamp": _check_int}
_FROM_CODEC: dict[str, Callable[[Any], Any]] = {"uuid": str}


class KeyWire:
    """Converts a table's keys between WAMP and the bytes after the table's slot prefix."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.codec: KeyCodec[Any] = KEY_CODECS[kind]()
        #: The key and its size on the wire (``payload_size(key, wire=True)``), from its bytes.
        self.decode_sized: Callable[[bytes], tuple[Any, int]] = partial(
            _deliverable, _decoder(self.codec, _FROM_CODEC.get(kind)), 0, kind, "key")

    def encode(self, key: Any, what: str = "key") -> bytes:
        return self.checked(key, what)[1]

    def to_codec(self, key: Any, what: str = "key", kind: str = "invalid_key") -> Any:
        """The key as its codec takes it (a uuid string becomes a UUID), checked."""
        return self.checked(key, what, kind)[0]

    def checked(self, key: Any, what: str = "key",
                kind: str = "invalid_key") -> tuple[Any, bytes]:
        """The key as its codec takes it, and its bytes; ``ProcedureError`` if it is no key of
        this table (checked and encoded once: every get and put starts here)."""
        found = problem(key, 0)
        if found is not None:
            raise ProcedureError("too_large" if found.too_large else kind,
                                 f"{what} is not a valid {self.kind} key: {found}")
        try:
            convert = _TO_CODEC.get(self.kind)
            native = key if convert is None else convert(key)
            return native, self.codec.encode(native)
        except (TypeError, ValueError) as exc:
            raise ProcedureError(kind, f"{what} {key!r:.80} is not a valid "
                                       f"{self.kind} key: {exc}") from None

    def from_codec(self, key: Any) -> Any:
        return _FROM_CODEC.get(self.kind, lambda k: k)(key)

    def encode_prefix(self, prefix: Any) -> bytes:
        if self.kind not in ("string", "binary"):
            raise ProcedureError("invalid_argument", f"prefix scans need string or binary "
                                                     f"keys; this table has {self.kind} keys")
        return self.encode(prefix, "prefix") if prefix != "" and prefix != b"" else b""

    def decode(self, data: bytes) -> Any:
        return self.decode_sized(data)[0]

    def from_codec_sized(self, key: Any) -> tuple[Any, int]:
        """``decode_sized`` of a key already decoded by its codec (a part of a compound key),
        ``CorruptRow`` if it cannot be delivered."""
        return _sized(_FROM_CODEC.get(self.kind, lambda k: k)(key), 0, self.kind, "key")


def _decoder(codec: KeyCodec[Any] | ValueCodec[Any],
             convert: Callable[[Any], Any] | None) -> Callable[[bytes], Any]:
    """The codec's decode, followed by the kind's conversion to its WAMP form if it has one."""
    decode = codec.decode
    return decode if convert is None else lambda data: convert(decode(data))


def _deliverable(decode: Callable[[bytes], Any], max_depth: int, kind: str, what: str,
                 data: bytes) -> tuple[Any, int]:
    """The decoded row and its size on the wire, or ``CorruptRow`` if it does not decode or
    breaks the payload policy. One walk does both: a scan needs each row's size too. It runs
    for every row a scan or an event delivers, so each wire binds it to its codec once
    (``partial``) and it makes no further call of ours."""
    try:
        decoded = decode(data)
    except (TypeError, ValueError) as exc:
        raise CorruptRow(f"{data[:40]!r} is not a {kind} {what}: {exc}") from None
    found, size = inspect(decoded, max_depth, "", UINT64_MAX)
    if found is not None:
        raise CorruptRow(f"stored {kind} {what} cannot be delivered: {found}")
    return decoded, size


def _sized(decoded: Any, max_depth: int, kind: str, what: str) -> tuple[Any, int]:
    found, size = inspect(decoded, max_depth, "", UINT64_MAX)
    if found is not None:
        raise CorruptRow(f"stored {kind} {what} cannot be delivered: {found}")
    return decoded, size


class ValueWire:
    """Converts a table's values between WAMP payloads and stored bytes."""

    def __init__(self, kind: str, codec: ValueCodec[Any] | None = None,
                 max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        self.kind = kind
        self.max_depth = max_depth
        # flatbuffers without a schema travel as the serialized bytes; with one, the codec
        # (procedures.schema.value_codec) takes and gives maps.
        codec_kind = "binary" if kind == "flatbuffers" else kind
        self.codec: ValueCodec[Any] = codec or VALUE_CODECS[codec_kind]()
        #: The value and its size on the wire (``payload_size(value, wire=True)``).
        self.decode_sized: Callable[[bytes], tuple[Any, int]] = partial(
            _deliverable, _decoder(self.codec, _FROM_CODEC.get(kind)), max_depth, kind,
            "value")

    def to_codec(self, value: Any) -> Any:
        return _TO_CODEC.get(self.kind, lambda v: v)(value)

    def encode(self, value: Any) -> bytes:
        found = problem(value, self.max_depth)
        if found is not None:
            raise ProcedureError("too_large" if found.too_large else "invalid_value",
                                 f"value is not a valid {self.kind} value: {found}")
        try:
            return self.codec.encode(self.to_codec(value))
        except SchemaViolation as exc:
            raise ProcedureError("invalid_value", f"the value does not match the table's "
                                                  f"schema: {exc}") from None
        except (TypeError, ValueError, OverflowError) as exc:
            raise ProcedureError("invalid_value", f"value {value!r:.80} is not a valid "
                                                  f"{self.kind} value: {exc}") from None

    def decode(self, data: bytes) -> Any:
        return self.decode_sized(data)[0]


class TableWire:
    """A table's rows between etcd and WAMP: where they live and how keys and values convert.
    All that the component's event path needs of a table (``component.publisher.TableRows``)."""

    def __init__(self, layout: TableLayout, keys: KeyWire, values: ValueWire) -> None:
        self.layout = layout
        self.keys = keys
        self.values = values

    @property
    def keyset(self) -> KeySet:
        return self.layout.keyset

    def etcd_key(self, key: Any) -> bytes:
        return self.layout.key(self.keys.encode(key))

    def wire_key(self, etcd_key: bytes) -> Any:
        return self.keys.decode(self.layout.split(etcd_key))

    def wire_value(self, data: bytes) -> Any:
        return self.values.decode(data)
