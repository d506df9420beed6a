"""Key and value codecs for persistent maps stored in etcd.

etcd sorts keys bytewise, so every key codec is *order-preserving*: for keys ``a < b`` in
their natural Python order, ``encode(a) < encode(b)`` bytewise. Range scans and prefix scans
over a table therefore return keys in natural order.

Layout of a key codec's output:

* ``StringKey``/``BinaryKey`` at top level: the raw UTF-8/raw bytes. UTF-8 byte order equals
  code point order, and a proper prefix sorts first, as in Python.
* ``OidKey`` (uint64), ``SlotKey`` (uint16): unsigned big-endian, fixed width.
* ``TimestampKey`` (int64 ns since the epoch): big-endian of ``n + 2**63`` (the sign bit
  flipped), so instants before 1970 sort before later ones.
* ``UuidKey``: the 16 bytes of the UUID (big-endian, which is ``uuid.UUID``'s own order).
* ``CompoundKey(*parts)``: the concatenation of each part's *self-delimiting* encoding.
  Fixed-width parts are written as above. Strings and bytes are escaped and terminated:
  every ``0x00`` byte becomes ``0x00 0xFF`` and the part ends with ``0x00 0x00``. Inside
  an escaped part a ``0x00`` is always followed by ``0xFF``, so the terminator cannot occur
  in it and the part code is prefix-free. Ordering is kept: at the first position where two
  raw strings differ, either both bytes are non-zero (compared as-is), or one side has a
  ``0x00`` (written ``0x00 0xFF``) against a larger byte, or one string ended (``0x00 0x00``)
  against a byte that is larger or is an escaped ``0x00`` (``0x00 0xFF``); in every case
  the encodings differ at that point in the same direction, before any later part is
  reached. A prefix-free, order-preserving code per part makes the concatenation
  order-preserving for tuples, and ``encode_prefix(("user1",))`` (``user1 00 00``) cannot be
  a prefix of the encoding of ``("user10", ...)``.

Prefix scans: ``KeyCodec.encode_prefix(p)`` returns the bytes that exactly the matching keys
start with. For top-level strings/bytes ``p`` is a raw prefix (all keys starting with ``p``),
for fixed-width codecs it is a whole key (only that key), and for ``CompoundKey`` it is a
tuple of the first ``k`` parts (all keys whose first ``k`` parts equal ``p``).

Value codecs turn a value into bytes and back; they need not preserve order. ``Marshalled``
composes any value codec with a user ``marshal``/``unmarshal`` pair.
"""

from __future__ import annotations

import io
import json
import pickle
import uuid
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, Literal, TypeVar

import cbor2

from ..types import is_int

__all__ = [
    "KEY_CODECS",
    "VALUE_CODECS",
    "BinaryKey",
    "BinaryValue",
    "CborValue",
    "CompoundKey",
    "FlatBuffersValue",
    "JsonValue",
    "KeyCodec",
    "Marshalled",
    "OidKey",
    "OidValue",
    "PickleValue",
    "SlotKey",
    "StringKey",
    "StringValue",
    "TimestampKey",
    "UuidKey",
    "UuidSetValue",
    "UuidValue",
    "ValueCodec",
    "with_marshal",
    "ZlibValue",
]

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ESCAPED_NUL = b"\x00\xff"
_TERMINATOR = b"\x00\x00"


# --- shared helpers -------------------------------------------------------------------------


def _type_name(obj: object) -> str:
    return type(obj).__name__


def _as_bytes(codec: _Codec, data: object) -> bytes:
    """Return ``data`` as ``bytes``; any bytes-like object is accepted, nothing else. Takes
    the codec rather than its label: the label is only needed for the error, and this runs
    for every row decoded."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"{codec.label}: expected bytes, got {_type_name(data)}")


class _reraise:  # noqa: N801 - used as a function: ``with _reraise(...)``
    """Turn library errors into TypeError/ValueError that name the codec; first match wins.

    A class, not ``@contextmanager``: it wraps every encode and decode of every row, and a
    generator-based context manager cost more than the cbor2 decode it wrapped."""

    __slots__ = ("label", "action", "mapping")

    def __init__(self, label: str, action: str,
                 *mapping: tuple[type[BaseException], type[Exception]]) -> None:
        self.label = label
        self.action = action
        self.mapping = mapping

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> Literal[False]:
        if exc is None or not isinstance(exc, Exception):
            return False
        for caught, raised in self.mapping:
            if isinstance(exc, caught):
                raise raised(f"{self.label}: cannot {self.action}: {exc}") from exc
        return False


def _utf8_encode(label: str, value: object) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"{label}: expected str, got {_type_name(value)}")
    # Lone surrogates are valid in a Python str but not in UTF-8.
    with _reraise(label, "encode as UTF-8", (UnicodeError, ValueError)):
        return value.encode("utf-8")


def _utf8_decode(label: str, data: bytes) -> str:
    with _reraise(label, "decode UTF-8", (UnicodeError, ValueError)):
        return data.decode("utf-8")


def _check_length(label: str, data: bytes, width: int) -> None:
    if len(data) != width:
        raise ValueError(f"{label}: expected {width} bytes, got {len(data)}")


def _uuid_to_bytes(label: str, value: object) -> bytes:
    if not isinstance(value, uuid.UUID):
        raise TypeError(f"{label}: expected uuid.UUID, got {_type_name(value)}")
    return value.bytes


def _uuid_from_bytes(label: str, data: bytes) -> uuid.UUID:
    _check_length(label, data, 16)
    return uuid.UUID(bytes=data)


class _IntLayout:
    """Fixed-width big-endian integer; signed values are biased by 2**(bits-1) so that byte
    order equals numeric order (two's complement would put negatives last)."""

    __slots__ = ("width", "bias", "low", "high")

    def __init__(self, bits: int, *, signed: bool) -> None:
        self.width = bits // 8
        self.bias = 1 << (bits - 1) if signed else 0
        self.low = -self.bias
        self.high = (1 << bits) - self.bias  # exclusive

    def pack(self, label: str, value: object) -> bytes:
        # bool is an int subclass, but accepting it would decode as a different type.
        if not is_int(value):
            raise TypeError(f"{label}: expected int, got {_type_name(value)}")
        if not self.low <= value < self.high:
            raise ValueError(f"{label}: {value} is out of range [{self.low}, {self.high})")
        return (value + self.bias).to_bytes(self.width, "big")

    def unpack(self, label: str, data: bytes) -> int:
        _check_length(label, data, self.width)
        return int.from_bytes(data, "big") - self.bias


_UINT16 = _IntLayout(16, signed=False)
_UINT64 = _IntLayout(64, signed=False)
_INT64 = _IntLayout(64, signed=True)


def _escape(raw: bytes) -> bytes:
    """Self-delimiting, order-preserving form of a variable-length part (see module doc)."""
    return raw.replace(b"\x00", _ESCAPED_NUL) + _TERMINATOR


def _unescape(label: str, data: bytes, pos: int) -> tuple[bytes, int]:
    """Inverse of ``_escape`` starting at ``pos``; returns the raw bytes and the end offset."""
    out = bytearray()
    start = pos
    while True:
        nul = data.find(0, pos)
        if nul < 0 or nul + 1 >= len(data):
            raise ValueError(f"{label}: unterminated component at offset {start}")
        out += data[pos:nul]
        marker = data[nul + 1]
        if marker == 0x00:
            return bytes(out), nul + 2
        if marker != 0xFF:
            raise ValueError(f"{label}: bad escape 0x00 0x{marker:02x} at offset {nul}")
        out.append(0)
        pos = nul + 2


# --- key codecs -----------------------------------------------------------------------------


class _Codec:
    """What key and value codecs share: a registry name and a label for error messages."""

    #: Registry name, e.g. ``"oid"`` or ``"json"``; ``CompoundKey`` derives it from its parts.
    name: str = ""

    @property
    def label(self) -> str:
        """Human-readable codec name used in error messages."""
        return type(self).__name__

    def __repr__(self) -> str:
        return f"{self.label}()"


class KeyCodec(_Codec, ABC, Generic[K]):
    """Order-preserving bijection between keys of one type and bytes."""

    @abstractmethod
    def encode(self, key: K) -> bytes:
        """Encode ``key``; raises TypeError/ValueError for a key this codec cannot hold."""

    @abstractmethod
    def decode(self, data: bytes) -> K:
        """Decode bytes produced by ``encode``; raises ValueError for malformed data."""

    def encode_prefix(self, prefix: Any) -> bytes:
        """Bytes that exactly the keys matching ``prefix`` start with.

        For fixed-width codecs the prefix is a whole key, so only that key matches.
        """
        return self.encode(prefix)

    @abstractmethod
    def encode_part(self, key: K) -> bytes:
        """Self-delimiting (prefix-free) encoding used as a part of a ``CompoundKey``."""

    @abstractmethod
    def decode_part(self, data: bytes, pos: int) -> tuple[K, int]:
        """Decode one ``encode_part`` output at ``pos``; return it and the offset after it."""


class _FixedWidthKey(KeyCodec[K]):
    """A key with a fixed byte width, which is self-delimiting as it stands."""

    width: ClassVar[int]

    def encode_part(self, key: K) -> bytes:
        return self.encode(key)

    def decode_part(self, data: bytes, pos: int) -> tuple[K, int]:
        end = pos + self.width
        if end > len(data):
            raise ValueError(f"{self.label}: need {self.width} bytes at offset {pos}, "
                             f"only {len(data) - pos} left")
        return self.decode(data[pos:end]), end


class _IntKey(_FixedWidthKey[int]):
    """An integer key in a fixed ``_IntLayout``."""

    _layout: ClassVar[_IntLayout]

    def encode(self, key: int) -> bytes:
        return self._layout.pack(self.label, key)

    def decode(self, data: bytes) -> int:
        return self._layout.unpack(self.label, _as_bytes(self, data))


class OidKey(_IntKey):
    """Object id: unsigned 64-bit integer, big-endian."""

    name = "oid"
    _layout = _UINT64
    width = _UINT64.width


class SlotKey(_IntKey):
    """Table slot: unsigned 16-bit integer, big-endian (as txaioetcd's MapSlotUuidUuid)."""

    name = "slot"
    _layout = _UINT16
    width = _UINT16.width


class TimestampKey(_IntKey):
    """Signed int64 nanoseconds since the Unix epoch; sign-flipped so pre-1970 sorts first.

    ``encode`` also takes a timezone-aware ``datetime``; ``decode`` always returns int ns.
    """

    name = "timestamp"
    _layout = _INT64
    width = _INT64.width

    def encode(self, key: int | datetime) -> bytes:
        if isinstance(key, datetime):
            key = self._datetime_ns(key)
        return super().encode(key)

    def _datetime_ns(self, value: datetime) -> int:
        # A naive datetime would silently depend on the host's local timezone.
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"{self.label}: naive datetime {value!r} needs a tzinfo")
        delta = value - _EPOCH
        # Integer arithmetic: float seconds would lose nanosecond/microsecond precision.
        return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1_000


class UuidKey(_FixedWidthKey[uuid.UUID]):
    """UUID as its 16 big-endian bytes, which sort like ``uuid.UUID`` compares."""

    name = "uuid"
    width = 16

    def encode(self, key: uuid.UUID) -> bytes:
        return _uuid_to_bytes(self.label, key)

    def decode(self, data: bytes) -> uuid.UUID:
        return _uuid_from_bytes(self.label, _as_bytes(self, data))


class _VariableKey(KeyCodec[K]):
    """A variable-length key: raw at top level, escaped and terminated inside a compound."""

    @abstractmethod
    def _to_raw(self, key: object) -> bytes:
        """Validate ``key`` and return its raw, unescaped bytes."""

    @abstractmethod
    def _from_raw(self, raw: bytes) -> K:
        """Inverse of ``_to_raw``."""

    def encode(self, key: K) -> bytes:
        return self._to_raw(key)

    def decode(self, data: bytes) -> K:
        return self._from_raw(_as_bytes(self, data))

    def encode_prefix(self, prefix: Any) -> bytes:
        """Raw prefix: matches every top-level key that starts with ``prefix``."""
        return self._to_raw(prefix)

    def encode_part(self, key: K) -> bytes:
        return _escape(self._to_raw(key))

    def decode_part(self, data: bytes, pos: int) -> tuple[K, int]:
        raw, end = _unescape(self.label, data, pos)
        return self._from_raw(raw), end


class StringKey(_VariableKey[str]):
    """Text key as UTF-8, whose byte order equals code point order."""

    name = "string"

    def _to_raw(self, key: object) -> bytes:
        if type(key) is str:  # the common case, without the helpers (every get and put)
            try:
                return key.encode("utf-8")
            except UnicodeError as exc:  # lone surrogates are valid in a str, not in UTF-8
                raise ValueError(f"{self.label}: cannot encode as UTF-8: {exc}") from exc
        return _utf8_encode(self.label, key)

    def _from_raw(self, raw: bytes) -> str:
        return _utf8_decode(self.label, raw)

    def decode(self, data: bytes) -> str:
        if type(data) is bytes:  # the common case, without the helpers (every scanned row)
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"{self.label}: cannot decode UTF-8: {exc}") from exc
        return super().decode(data)


class BinaryKey(_VariableKey[bytes]):
    """Binary key; any bytes-like input is accepted, ``decode`` returns ``bytes``."""

    name = "binary"

    def _to_raw(self, key: object) -> bytes:
        return _as_bytes(self, key)

    def _from_raw(self, raw: bytes) -> bytes:
        return raw


class CompoundKey(KeyCodec[tuple[Any, ...]]):
    """Tuple key whose parts use the given codecs; tuples sort lexicographically.

    ``open_end=True`` writes the last part as it stands at top level (a string raw, without
    escape or terminator), which is txaioetcd's (zlmdb's) layout: order is kept, since nothing
    follows the last part, and decoding takes the rest of the key. Such a codec also reads keys
    whose last part is escaped and terminated (this codec's default layout) when the rest is
    exactly one such part; a raw last string ending in two NUL bytes would be misread that way.
    """

    def __init__(self, *parts: KeyCodec[Any] | type[KeyCodec[Any]],
                 open_end: bool = False) -> None:
        if not parts:
            raise ValueError("CompoundKey: needs at least one part codec")
        resolved: list[KeyCodec[Any]] = []
        for index, part in enumerate(parts):
            # Accept codec classes too, so CompoundKey(StringKey, OidKey) just works.
            codec = part() if isinstance(part, type) and issubclass(part, KeyCodec) else part
            if not isinstance(codec, KeyCodec):
                raise TypeError(f"CompoundKey: part {index} is not a KeyCodec: {part!r}")
            resolved.append(codec)
        self.parts: tuple[KeyCodec[Any], ...] = tuple(resolved)
        self.open_end = bool(open_end)
        self.name = "(" + ",".join(p.name for p in self.parts) + ")"

    @property
    def label(self) -> str:
        return "CompoundKey(" + ", ".join(p.label for p in self.parts) + ")"

    def __repr__(self) -> str:
        return self.label

    def _check_tuple(self, key: object, *, partial: bool) -> tuple[Any, ...]:
        if not isinstance(key, tuple):
            raise TypeError(f"{self.label}: expected tuple, got {_type_name(key)}")
        n = len(self.parts)
        if len(key) > n or (not partial and len(key) != n):
            wanted = f"at most {n}" if partial else str(n)
            raise ValueError(f"{self.label}: expected {wanted} parts, got {len(key)}")
        return key

    def _encode_parts(self, key: tuple[Any, ...]) -> bytes:
        out = []
        last = len(self.parts) - 1
        for index, (codec, value) in enumerate(zip(self.parts, key, strict=False)):
            try:
                raw = self.open_end and index == last
                out.append(codec.encode(value) if raw else codec.encode_part(value))
            except (TypeError, ValueError) as exc:
                raised = TypeError if isinstance(exc, TypeError) else ValueError
                raise raised(f"{self.label} part {index}: {exc}") from exc
        return b"".join(out)

    def encode(self, key: tuple[Any, ...]) -> bytes:
        return self._encode_parts(self._check_tuple(key, partial=False))

    def encode_prefix(self, prefix: Any) -> bytes:
        """Encoding of the first ``len(prefix)`` parts; ``()`` gives ``b""`` (all keys)."""
        return self._encode_parts(self._check_tuple(prefix, partial=True))

    def encode_part(self, key: tuple[Any, ...]) -> bytes:
        # Every part is self-delimiting, so the concatenation is too; compounds can nest.
        if self.open_end:
            raise TypeError(f"{self.label}: an open-ended compound key cannot be nested")
        return self.encode(key)

    def decode_part(self, data: bytes, pos: int) -> tuple[tuple[Any, ...], int]:
        values = []
        for index, codec in enumerate(self.parts):
            try:
                value, pos = codec.decode_part(data, pos)
            except ValueError as exc:
                raise ValueError(f"{self.label} part {index}: {exc}") from exc
            values.append(value)
        return tuple(values), pos

    def _decode_open_end(self, data: bytes) -> tuple[Any, ...]:
        values, pos = [], 0
        for index, codec in enumerate(self.parts[:-1]):
            try:
                value, pos = codec.decode_part(data, pos)
            except ValueError as exc:
                raise ValueError(f"{self.label} part {index}: {exc}") from exc
            values.append(value)
        last = self.parts[-1]
        if isinstance(last, _VariableKey) and data.endswith(_TERMINATOR):
            try:  # the escaped, terminated layout of this codec without open_end
                value, end = last.decode_part(data, pos)
                if end == len(data):
                    return (*values, value)
            except ValueError:
                pass
        return (*values, last.decode(data[pos:]))

    def decode(self, data: bytes) -> tuple[Any, ...]:
        data = _as_bytes(self, data)
        if self.open_end:
            return self._decode_open_end(data)
        key, end = self.decode_part(data, 0)
        if end != len(data):
            raise ValueError(f"{self.label}: {len(data) - end} trailing bytes after the key")
        return key


# --- value codecs ---------------------------------------------------------------------------


class ValueCodec(_Codec, ABC, Generic[V]):
    """Converts values of one kind to bytes and back (no ordering guarantee)."""

    @abstractmethod
    def encode(self, value: V) -> bytes:
        """Encode ``value``; raises TypeError/ValueError for a value this codec cannot hold."""

    @abstractmethod
    def decode(self, data: bytes) -> V:
        """Decode bytes produced by ``encode``; raises ValueError for malformed data."""


class StringValue(ValueCodec[str]):
    """Text as UTF-8. ``None`` is rejected rather than conflated with ``""``."""

    name = "string"

    def encode(self, value: str) -> bytes:
        return _utf8_encode(self.label, value)

    def decode(self, data: bytes) -> str:
        return _utf8_decode(self.label, _as_bytes(self, data))


class BinaryValue(ValueCodec[bytes]):
    """Raw bytes; any bytes-like input is accepted."""

    name = "binary"

    def encode(self, value: bytes) -> bytes:
        return _as_bytes(self, value)

    def decode(self, data: bytes) -> bytes:
        return _as_bytes(self, data)


class OidValue(ValueCodec[int]):
    """Unsigned 64-bit integer, big-endian (``>Q``)."""

    name = "oid"

    def encode(self, value: int) -> bytes:
        return _UINT64.pack(self.label, value)

    def decode(self, data: bytes) -> int:
        return _UINT64.unpack(self.label, _as_bytes(self, data))


class UuidValue(ValueCodec[uuid.UUID]):
    """UUID as its 16 bytes."""

    name = "uuid"

    def encode(self, value: uuid.UUID) -> bytes:
        return _uuid_to_bytes(self.label, value)

    def decode(self, data: bytes) -> uuid.UUID:
        return _uuid_from_bytes(self.label, _as_bytes(self, data))


class UuidSetValue(ValueCodec[AbstractSet[uuid.UUID]]):
    """Set of UUIDs as sorted, concatenated 16-byte UUIDs; decoding keeps every element."""

    name = "uuid-set"

    def encode(self, value: AbstractSet[uuid.UUID]) -> bytes:
        # Lists are refused: duplicates in them would be dropped silently on decode.
        if not isinstance(value, AbstractSet):
            raise TypeError(f"{self.label}: expected set or frozenset, got {_type_name(value)}")
        # Sorting makes equal sets encode identically, which etcd value compares rely on.
        return b"".join(sorted(_uuid_to_bytes(self.label, item) for item in value))

    def decode(self, data: bytes) -> set[uuid.UUID]:
        data = _as_bytes(self, data)
        if len(data) % 16:
            raise ValueError(f"{self.label}: length {len(data)} is not a multiple of 16")
        items = {uuid.UUID(bytes=data[i:i + 16]) for i in range(0, len(data), 16)}
        if len(items) != len(data) // 16:
            raise ValueError(f"{self.label}: duplicate UUIDs in encoded set")
        return items


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON")


class JsonValue(ValueCodec[Any]):
    """Compact UTF-8 JSON. Tuples come back as lists and non-str dict keys as strings."""

    name = "json"

    def encode(self, value: Any) -> bytes:
        with _reraise(self.label, "encode JSON", (TypeError, TypeError),
                      (ValueError, ValueError), (RecursionError, ValueError)):
            # allow_nan=False: NaN/Infinity are not JSON and other parsers reject them.
            text = json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False)
        return _utf8_encode(self.label, text)

    def decode(self, data: bytes) -> Any:
        text = _utf8_decode(self.label, _as_bytes(self, data))
        with _reraise(self.label, "decode JSON", (ValueError, ValueError),
                      (RecursionError, ValueError)):
            return json.loads(text, parse_constant=_reject_constant)


class CborValue(ValueCodec[Any]):
    """CBOR via cbor2; arrays decode as lists."""

    name = "cbor"

    def encode(self, value: Any) -> bytes:
        with _reraise(self.label, "encode CBOR", (cbor2.CBOREncodeValueError, ValueError),
                      (ValueError, ValueError), (cbor2.CBORError, TypeError),
                      (TypeError, TypeError), (RecursionError, ValueError)):
            return cbor2.dumps(value)

    def decode(self, data: bytes) -> Any:
        data = _as_bytes(self, data)
        stream = io.BytesIO(data)
        try:  # not _reraise: this runs for every row a scan reads
            value = cbor2.CBORDecoder(stream).decode()
        except (cbor2.CBORError, ValueError, TypeError, RecursionError) as exc:
            raise ValueError(f"{self.label}: cannot decode CBOR: {exc}") from exc
        # cbor2.loads ignores trailing garbage; a value must be exactly one CBOR item.
        if stream.tell() != len(data):
            raise ValueError(f"{self.label}: {len(data) - stream.tell()} trailing bytes")
        return value


class PickleValue(ValueCodec[Any]):
    """Pickle at the highest protocol. Decoding runs arbitrary code: trusted data only."""

    name = "pickle"

    def encode(self, value: Any) -> bytes:
        with _reraise(self.label, "pickle", (pickle.PicklingError, TypeError),
                      (TypeError, TypeError), (AttributeError, TypeError),
                      (RecursionError, ValueError)):
            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def decode(self, data: bytes) -> Any:
        data = _as_bytes(self, data)
        # Malformed pickles raise almost any exception type, so all of them mean bad data.
        with _reraise(self.label, "unpickle", (Exception, ValueError)):
            return pickle.loads(data)


class FlatBuffersValue(ValueCodec[Any]):
    """FlatBuffers table: ``build(obj, builder) -> offset`` writes, ``cast(buf) -> obj`` reads."""

    name = "flatbuffers"

    def __init__(self, build: Callable[[Any, Any], int], cast: Callable[[bytes], Any],
                 initial_size: int = 256) -> None:
        if not callable(build) or not callable(cast):
            raise TypeError("FlatBuffersValue: build and cast must be callable")
        self.build = build
        self.cast = cast
        self.initial_size = initial_size

    def encode(self, value: Any) -> bytes:
        # Imported here, not at the top: flatbuffers imports numpy when it is installed, and a
        # program that never builds a FlatBuffers table should not carry it (import time, and
        # the objects every full garbage collection of the process walks).
        import flatbuffers

        builder = flatbuffers.Builder(self.initial_size)
        with _reraise(self.label, "build", (TypeError, TypeError),
                      (AttributeError, TypeError), (ValueError, ValueError)):
            offset = self.build(value, builder)
        if not is_int(offset):
            raise TypeError(f"{self.label}: build must return an int offset, "
                            f"got {_type_name(offset)}")
        builder.Finish(offset)
        return bytes(builder.Output())

    def decode(self, data: bytes) -> Any:
        data = _as_bytes(self, data)
        # Cheap sanity check of the root uoffset; the table itself is read lazily by cast.
        if len(data) < 8 or int.from_bytes(data[:4], "little") + 4 > len(data):
            raise ValueError(f"{self.label}: not a FlatBuffers buffer ({len(data)} bytes)")
        # cast is user code over possibly corrupt bytes; any failure means bad data.
        with _reraise(self.label, "cast", (Exception, ValueError)):
            return self.cast(data)


class ZlibValue(ValueCodec[T]):
    """Wraps a value codec with zlib compression (txaioetcd's ``compress=COMPRESS_ZLIB``)."""

    def __init__(self, inner: ValueCodec[T]) -> None:
        if not isinstance(inner, ValueCodec):
            raise TypeError(f"ZlibValue: inner must be a ValueCodec, got {_type_name(inner)}")
        self.inner = inner
        self.name = inner.name + "+zlib"

    @property
    def label(self) -> str:
        return f"ZlibValue({self.inner.label})"

    def __repr__(self) -> str:
        return self.label

    def encode(self, value: T) -> bytes:
        return zlib.compress(self.inner.encode(value))

    def decode(self, data: bytes) -> T:
        with _reraise(self.label, "decompress", (zlib.error, ValueError)):
            raw = zlib.decompress(_as_bytes(self, data))
        return self.inner.decode(raw)


class Marshalled(ValueCodec[T]):
    """Wraps a value codec: ``marshal(obj)`` before encoding, ``unmarshal(x)`` after decoding."""

    def __init__(self, inner: ValueCodec[Any], marshal: Callable[[T], Any] | None = None,
                 unmarshal: Callable[[Any], T] | None = None) -> None:
        if not isinstance(inner, ValueCodec):
            raise TypeError(f"Marshalled: inner must be a ValueCodec, got {_type_name(inner)}")
        self.inner = inner
        self.marshal = marshal
        self.unmarshal = unmarshal
        self.name = inner.name

    @property
    def label(self) -> str:
        return f"Marshalled({self.inner.label})"

    def __repr__(self) -> str:
        return self.label

    def encode(self, value: T) -> bytes:
        raw: Any = value
        if self.marshal is not None:
            with _reraise(self.label, "marshal", (TypeError, TypeError),
                          (AttributeError, TypeError), (ValueError, ValueError)):
                raw = self.marshal(value)
        return self.inner.encode(raw)

    def decode(self, data: bytes) -> T:
        raw: Any = self.inner.decode(data)
        if self.unmarshal is None:
            result: T = raw
            return result
        # A decoded value of the wrong shape is bad stored data, hence ValueError.
        with _reraise(self.label, "unmarshal", (TypeError, ValueError),
                      (AttributeError, ValueError), (KeyError, ValueError),
                      (ValueError, ValueError)):
            return self.unmarshal(raw)


def with_marshal(codec: ValueCodec[Any], marshal: Callable[[Any], Any] | None = None,
                 unmarshal: Callable[[Any], Any] | None = None) -> ValueCodec[Any]:
    """Return ``codec`` itself when no marshalling is asked for, else a ``Marshalled`` wrapper."""
    if marshal is None and unmarshal is None:
        return codec
    return Marshalled(codec, marshal, unmarshal)


# --- registries -----------------------------------------------------------------------------

#: Key codec classes by configuration name; instantiate with no arguments.
KEY_CODECS: dict[str, type[KeyCodec[Any]]] = {
    "string": StringKey,
    "binary": BinaryKey,
    "oid": OidKey,
    "uuid": UuidKey,
    "timestamp": TimestampKey,
}

#: Value codec factories by configuration name; all take no arguments except
#: ``"flatbuffers"``, which needs ``build`` and ``cast``.
VALUE_CODECS: dict[str, Callable[..., ValueCodec[Any]]] = {
    "string": StringValue,
    "binary": BinaryValue,
    "oid": OidValue,
    "uuid": UuidValue,
    "uuid-set": UuidSetValue,
    "json": JsonValue,
    "cbor": CborValue,
    "pickle": PickleValue,
    "flatbuffers": FlatBuffersValue,
}
