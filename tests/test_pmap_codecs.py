"""Property tests for txetcd.pmap.codecs: key order preservation, prefix scans, round trips."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import flatbuffers
import flatbuffers.encode
import flatbuffers.number_types
import flatbuffers.packer
import flatbuffers.table
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from txetcd.pmap.codecs import (
    KEY_CODECS,
    VALUE_CODECS,
    BinaryKey,
    BinaryValue,
    CborValue,
    CompoundKey,
    FlatBuffersValue,
    JsonValue,
    KeyCodec,
    Marshalled,
    OidKey,
    OidValue,
    PickleValue,
    SlotKey,
    StringKey,
    StringValue,
    TimestampKey,
    UuidKey,
    UuidSetValue,
    UuidValue,
    ValueCodec,
    with_marshal,
)

SETTINGS = settings(max_examples=100, deadline=None)

# Small alphabets make equal prefixes/parts likely, which is where escaping bugs show up.
TRICKY_CHARS = "\x00\x01ab\x7f\xff\u0100\U0001f600"
TRICKY_BYTES = [b"\x00", b"\x01", b"\xfe", b"\xff", b"a"]

texts = st.text(alphabet=st.sampled_from(TRICKY_CHARS), max_size=6) | st.text(max_size=12)
binaries = (st.lists(st.sampled_from(TRICKY_BYTES), max_size=6).map(b"".join)
            | st.binary(max_size=12))
oids = st.sampled_from([0, 1, 255, 256, 2**63, 2**64 - 1]) | st.integers(0, 2**64 - 1)
slots = st.integers(0, 2**16 - 1)
timestamps = (st.sampled_from([-(2**63), -1, 0, 1, 2**63 - 1])
              | st.integers(-(10**18), 10**18) | st.integers(-(2**63), 2**63 - 1))
uuids = st.uuids() | st.sampled_from([uuid.UUID(int=0), uuid.UUID(int=1),
                                      uuid.UUID(int=2**128 - 1)])

# pytest-twisted (active through the project's addopts) rewrites ``hypothesis.inner_test`` on
# the test function object, which breaks ``@pytest.mark.parametrize`` combined with
# ``@given``. Each case therefore gets its own function object, built by a factory.


def _key_properties(codec: KeyCodec[Any], keys: st.SearchStrategy[Any]) -> Any:
    """Hypothesis test: encoded order equals natural order, and every key round-trips."""

    @SETTINGS
    @given(sample=st.lists(keys, max_size=20), a=keys, b=keys)
    def test(sample: list[Any], a: Any, b: Any) -> None:
        assert sorted(sample) == sorted(sample, key=codec.encode)
        ea, eb = codec.encode(a), codec.encode(b)
        assert isinstance(ea, bytes)
        assert (a < b) == (ea < eb)
        assert (a == b) == (ea == eb)
        decoded = codec.decode(ea)
        assert decoded == a
        assert type(decoded) is type(a)
        # The part encoding decodes at an offset and consumes exactly its own bytes.
        part = codec.encode_part(a)
        assert codec.decode_part(b"junk" + part + b"tail", 4) == (a, 4 + len(part))

    return test


test_key_string = _key_properties(StringKey(), texts)
test_key_binary = _key_properties(BinaryKey(), binaries)
test_key_oid = _key_properties(OidKey(), oids)
test_key_slot = _key_properties(SlotKey(), slots)
test_key_uuid = _key_properties(UuidKey(), uuids)
test_key_timestamp = _key_properties(TimestampKey(), timestamps)
test_key_string_oid = _key_properties(CompoundKey(StringKey(), OidKey()),
                                      st.tuples(texts, oids))
test_key_uuid_string = _key_properties(
    CompoundKey(UuidKey(), StringKey()),
    st.tuples(st.sampled_from([uuid.UUID(int=7), uuid.UUID(int=2**127)]) | uuids, texts))
test_key_timestamp_string_binary = _key_properties(
    CompoundKey(TimestampKey, StringKey, BinaryKey),
    st.tuples(st.sampled_from([-1, 0, 1]) | timestamps, texts, binaries))
test_key_string_string = _key_properties(CompoundKey(StringKey(), StringKey()),
                                         st.tuples(texts, texts))
test_key_binary_binary = _key_properties(CompoundKey(BinaryKey(), BinaryKey()),
                                         st.tuples(binaries, binaries))
test_key_slot_uuid_uuid = _key_properties(CompoundKey(SlotKey(), UuidKey(), UuidKey()),
                                          st.tuples(st.integers(0, 3), uuids, uuids))
test_key_nested_compound = _key_properties(
    CompoundKey(StringKey(), CompoundKey(BinaryKey(), OidKey())),
    st.tuples(texts, st.tuples(binaries, oids)))


def test_timestamps_before_1970_sort_first() -> None:
    codec = TimestampKey()
    ordered = [-(2**63), -(10**18), -86_400 * 10**9, -1, 0, 1, 10**18, 2**63 - 1]
    encoded = [codec.encode(ns) for ns in ordered]
    assert encoded == sorted(encoded)
    assert [codec.decode(e) for e in encoded] == ordered


def test_timestamp_accepts_aware_datetime() -> None:
    codec = TimestampKey()
    before = datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    assert codec.decode(codec.encode(before)) == -1_000
    plus2 = timezone(timedelta(hours=2))
    assert codec.encode(datetime(1970, 1, 1, 2, tzinfo=plus2)) == codec.encode(0)
    with pytest.raises(ValueError, match="TimestampKey.*naive"):
        codec.encode(datetime(2020, 1, 1))


def test_compound_escaping_scheme() -> None:
    codec = CompoundKey(StringKey(), BinaryKey())
    assert codec.encode(("", b"")) == b"\x00\x00\x00\x00"
    assert codec.encode(("a\x00b", b"\x00")) == b"a\x00\xffb\x00\x00" + b"\x00\xff\x00\x00"
    # Top-level variable-length keys stay raw.
    assert StringKey().encode("a\x00b") == b"a\x00b"
    assert BinaryKey().encode(bytearray(b"\x00")) == b"\x00"  # type: ignore[arg-type]
    assert OidKey().encode(1) == b"\x00" * 7 + b"\x01"
    assert SlotKey().encode(258) == b"\x01\x02"
    assert TimestampKey().encode(0) == b"\x80" + b"\x00" * 7
    assert TimestampKey().encode(-1) == b"\x7f" + b"\xff" * 7


# --- prefix scans ---------------------------------------------------------------------------


def test_prefix_does_not_match_longer_string() -> None:
    codec = CompoundKey(StringKey(), OidKey())
    prefix = codec.encode_prefix(("user1",))
    assert codec.encode(("user1", 5)).startswith(prefix)
    assert not codec.encode(("user10", 5)).startswith(prefix)
    assert not codec.encode(("user1\x00", 5)).startswith(prefix)
    assert codec.encode_prefix(()) == b""
    assert codec.encode_prefix(("user1", 5)) == codec.encode(("user1", 5))


def _prefix_property(codec: CompoundKey, keys: st.SearchStrategy[tuple[Any, ...]]) -> Any:
    """Hypothesis test: a key starts with encode_prefix(p) iff its first len(p) parts are p."""

    @SETTINGS
    @given(a=keys, b=keys, data=st.data())
    def test(a: tuple[Any, ...], b: tuple[Any, ...], data: st.DataObject) -> None:
        k = data.draw(st.integers(0, len(codec.parts)), label="k")
        prefix = codec.encode_prefix(a[:k])
        assert codec.encode(b).startswith(prefix) == (b[:k] == a[:k])
        # A key built from a's first k parts always matches.
        assert codec.encode(a[:k] + b[k:]).startswith(prefix)

    return test


# Tiny alphabets so that random pairs often share parts or string prefixes.
_short_texts = st.text(alphabet="\x001a", max_size=4)
test_prefix_string_oid = _prefix_property(CompoundKey(StringKey(), OidKey()),
                                          st.tuples(_short_texts, st.integers(0, 2)))
test_prefix_binary_string_timestamp = _prefix_property(
    CompoundKey(BinaryKey(), StringKey(), TimestampKey()),
    st.tuples(st.binary(max_size=2), _short_texts, st.integers(-2, 2)))
test_prefix_uuid_string = _prefix_property(
    CompoundKey(UuidKey(), StringKey()),
    st.tuples(st.sampled_from([uuid.UUID(int=0), uuid.UUID(int=2**128 - 1)]), texts))


@SETTINGS
@given(key=texts, prefix=texts)
def test_top_level_string_prefix_is_raw(key: str, prefix: str) -> None:
    codec = StringKey()
    assert codec.encode(key).startswith(codec.encode_prefix(prefix)) == key.startswith(prefix)


def test_fixed_width_prefix_is_the_whole_key() -> None:
    assert OidKey().encode_prefix(7) == OidKey().encode(7)
    u = uuid.uuid4()
    assert UuidKey().encode_prefix(u) == u.bytes


# --- key codecs: bad input ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codec", "key", "error", "match"),
    [
        (OidKey(), "1", TypeError, "OidKey: expected int, got str"),
        (OidKey(), 1.0, TypeError, "OidKey"),
        (OidKey(), True, TypeError, "OidKey"),
        (OidKey(), -1, ValueError, "OidKey: -1 is out of range"),
        (OidKey(), 2**64, ValueError, "OidKey"),
        (SlotKey(), 2**16, ValueError, "SlotKey"),
        (TimestampKey(), 2**63, ValueError, "TimestampKey"),
        (TimestampKey(), -(2**63) - 1, ValueError, "TimestampKey"),
        (TimestampKey(), "2020", TypeError, "TimestampKey"),
        (StringKey(), b"x", TypeError, "StringKey: expected str, got bytes"),
        (StringKey(), "\ud800", ValueError, "StringKey"),
        (BinaryKey(), "x", TypeError, "BinaryKey: expected bytes, got str"),
        (UuidKey(), str(uuid.UUID(int=1)), TypeError, "UuidKey: expected uuid.UUID"),
        (CompoundKey(StringKey(), OidKey()), ["a", 1], TypeError, "expected tuple"),
        (CompoundKey(StringKey(), OidKey()), ("a",), ValueError, "expected 2 parts"),
        (CompoundKey(StringKey(), OidKey()), ("a", 1, 2), ValueError, "expected 2 parts"),
        (CompoundKey(StringKey(), OidKey()), ("a", "1"), TypeError,
         r"CompoundKey\(StringKey, OidKey\) part 1: OidKey"),
        (CompoundKey(StringKey(), OidKey()), ("a", -5), ValueError, "part 1"),
    ],
)
def test_key_encode_rejects_bad_input(codec: KeyCodec[Any], key: Any,
                                      error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        codec.encode(key)


def test_encode_prefix_rejects_bad_input() -> None:
    codec = CompoundKey(StringKey(), OidKey())
    with pytest.raises(ValueError, match="at most 2 parts"):
        codec.encode_prefix(("a", 1, 2))
    with pytest.raises(TypeError, match="expected tuple"):
        codec.encode_prefix("a")
    with pytest.raises(TypeError, match="part 0"):
        codec.encode_prefix((1,))
    with pytest.raises(TypeError, match="CompoundKey: part 1 is not a KeyCodec"):
        CompoundKey(StringKey(), int)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("codec", "data", "match"),
    [
        (OidKey(), b"\x00" * 7, "expected 8 bytes, got 7"),
        (OidKey(), b"\x00" * 9, "expected 8 bytes, got 9"),
        (SlotKey(), b"\x00", "SlotKey"),
        (TimestampKey(), b"", "TimestampKey"),
        (UuidKey(), b"\x00" * 15, "UuidKey"),
        (StringKey(), b"\xff", "StringKey: cannot decode UTF-8"),
        (CompoundKey(StringKey(), OidKey()), b"abc", "unterminated"),
        (CompoundKey(StringKey(), OidKey()), b"a\x00\x01\x00\x00" + b"\x00" * 8,
         "bad escape 0x00 0x01"),
        (CompoundKey(StringKey(), OidKey()), b"a\x00\x00" + b"\x00" * 7, "need 8 bytes"),
        (CompoundKey(StringKey(), OidKey()), b"a\x00\x00" + b"\x00" * 9, "trailing"),
        (CompoundKey(StringKey(), StringKey()), b"a\x00\x00\xff\x00\x00", "part 1"),
    ],
)
def test_key_decode_rejects_malformed_bytes(codec: KeyCodec[Any], data: bytes,
                                            match: str) -> None:
    with pytest.raises(ValueError, match=match):
        codec.decode(data)


def test_key_decode_rejects_non_bytes() -> None:
    with pytest.raises(TypeError, match="OidKey: expected bytes"):
        OidKey().decode("12345678")  # type: ignore[arg-type]


# --- value codecs ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
    | st.binary(),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text() | st.integers(), inner, max_size=4),
    max_leaves=20,
)
pickle_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
    | st.binary() | st.uuids() | st.frozensets(st.integers(), max_size=4),
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)

def _value_round_trip(codec: ValueCodec[Any], values: st.SearchStrategy[Any]) -> Any:
    """Hypothesis test: decode(encode(v)) == v and the encoding is bytes."""

    @SETTINGS
    @given(value=values)
    def test(value: Any) -> None:
        encoded = codec.encode(value)
        assert isinstance(encoded, bytes)
        assert codec.decode(encoded) == value

    return test


test_value_string = _value_round_trip(StringValue(), st.text())
test_value_binary = _value_round_trip(BinaryValue(), st.binary())
test_value_oid = _value_round_trip(OidValue(), oids)
test_value_uuid = _value_round_trip(UuidValue(), st.uuids())
test_value_uuid_set = _value_round_trip(
    UuidSetValue(), st.sets(st.uuids(), max_size=40) | st.frozensets(uuids, max_size=5))
test_value_json = _value_round_trip(JsonValue(), json_values)
test_value_cbor = _value_round_trip(CborValue(), cbor_values)
test_value_pickle = _value_round_trip(PickleValue(), pickle_values)


def test_uuid_set_keeps_every_element() -> None:
    codec = UuidSetValue()
    many = {uuid.uuid4() for _ in range(1000)} | {uuid.UUID(int=0), uuid.UUID(int=2**128 - 1)}
    encoded = codec.encode(frozenset(many))
    assert len(encoded) == 16 * len(many)
    decoded = codec.decode(encoded)
    assert isinstance(decoded, set)
    assert decoded == many
    assert codec.decode(codec.encode(set())) == set()
    # Equal sets encode identically whatever their iteration order.
    assert codec.encode(set(reversed(sorted(many)))) == encoded


@dataclass(frozen=True)
class User:
    """Small domain object used for FlatBuffers and marshalling tests."""

    name: str
    oid: int

    def marshal(self) -> dict[str, Any]:
        return {"name": self.name, "oid": self.oid}

    @staticmethod
    def parse(data: dict[str, Any]) -> User:
        return User(data["name"], data["oid"])


def build_user(user: User, builder: flatbuffers.Builder) -> int:
    """Write ``table User { name: string; oid: uint64; }`` by hand (no flatc)."""
    name = builder.CreateString(user.name)
    builder.StartObject(2)
    builder.PrependUOffsetTRelativeSlot(0, name, 0)
    builder.PrependUint64Slot(1, user.oid, 0)
    return int(builder.EndObject())


def cast_user(buf: bytes) -> User:
    """Read the table written by ``build_user``; vtable slot i lives at offset 4 + 2*i."""
    root = flatbuffers.encode.Get(flatbuffers.packer.uoffset, buf, 0)
    table = flatbuffers.table.Table(buf, root)
    off = table.Offset(4)
    name = table.String(off + table.Pos).decode("utf-8") if off else ""
    off = table.Offset(6)
    oid = table.Get(flatbuffers.number_types.Uint64Flags, off + table.Pos) if off else 0
    return User(name, oid)


users = st.builds(User, st.text(max_size=30), oids)


@SETTINGS
@given(user=users)
def test_flatbuffers_round_trip(user: User) -> None:
    codec = FlatBuffersValue(build_user, cast_user)
    assert codec.decode(codec.encode(user)) == user
    via_registry = VALUE_CODECS["flatbuffers"](build=build_user, cast=cast_user)
    assert via_registry.decode(via_registry.encode(user)) == user


def test_flatbuffers_rejects_bad_input() -> None:
    codec = FlatBuffersValue(build_user, cast_user)
    with pytest.raises(TypeError, match="FlatBuffersValue: cannot build"):
        codec.encode("not a user")
    with pytest.raises(ValueError, match="FlatBuffersValue: not a FlatBuffers buffer"):
        codec.decode(b"\x01")
    with pytest.raises(ValueError, match="FlatBuffersValue"):
        codec.decode(b"\xff\xff\x00\x00" + b"\x00" * 8)
    with pytest.raises(TypeError, match="must be callable"):
        FlatBuffersValue(None, cast_user)  # type: ignore[arg-type]


@SETTINGS
@given(user=users)
def test_marshalled_round_trip(user: User) -> None:
    for inner in (JsonValue(), CborValue()):
        codec = Marshalled(inner, User.marshal, User.parse)
        assert codec.decode(codec.encode(user)) == user
        assert codec.name == inner.name
    helper = with_marshal(CborValue(), marshal=User.marshal, unmarshal=User.parse)
    assert helper.decode(helper.encode(user)) == user


def test_marshalled_errors_and_passthrough() -> None:
    cbor = CborValue()
    assert with_marshal(cbor) is cbor
    codec = Marshalled(JsonValue(), User.marshal, User.parse)
    with pytest.raises(TypeError, match=r"Marshalled\(JsonValue\): cannot marshal"):
        codec.encode("not a user")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot unmarshal"):
        codec.decode(b'{"name":"x"}')
    with pytest.raises(ValueError, match="JsonValue"):
        codec.decode(b"{")
    only_unmarshal = Marshalled(JsonValue(), unmarshal=User.parse)
    assert only_unmarshal.decode(b'{"name":"x","oid":1}') == User("x", 1)
    with pytest.raises(TypeError, match="inner must be a ValueCodec"):
        Marshalled(JsonValue)  # type: ignore[arg-type]


class _Local:
    """Defined at module level on purpose; instances pickle, the class below does not."""


@pytest.mark.parametrize(
    ("codec", "value", "error", "match"),
    [
        (StringValue(), None, TypeError, "StringValue: expected str, got NoneType"),
        (StringValue(), b"x", TypeError, "StringValue"),
        (BinaryValue(), "x", TypeError, "BinaryValue: expected bytes"),
        (OidValue(), -1, ValueError, "OidValue"),
        (OidValue(), "1", TypeError, "OidValue"),
        (UuidValue(), "x", TypeError, "UuidValue"),
        (UuidSetValue(), [uuid.UUID(int=1)], TypeError, "UuidSetValue: expected set"),
        (UuidSetValue(), {"x"}, TypeError, "UuidSetValue: expected uuid.UUID"),
        (JsonValue(), object(), TypeError, "JsonValue: cannot encode JSON"),
        (JsonValue(), {"a": {1, 2}}, TypeError, "JsonValue"),
        (JsonValue(), float("nan"), ValueError, "JsonValue"),
        (CborValue(), object(), TypeError, "CborValue: cannot encode CBOR"),
        (PickleValue(), lambda: None, TypeError, "PickleValue: cannot pickle"),
    ],
)
def test_value_encode_rejects_bad_input(codec: ValueCodec[Any], value: Any,
                                        error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        codec.encode(value)


def test_json_rejects_cycles() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(ValueError, match="JsonValue"):
        JsonValue().encode(cycle)


@pytest.mark.parametrize(
    ("codec", "data", "match"),
    [
        (StringValue(), b"\xff", "StringValue: cannot decode UTF-8"),
        (OidValue(), b"\x00", "OidValue: expected 8 bytes"),
        (UuidValue(), b"\x00" * 17, "UuidValue"),
        (UuidSetValue(), b"\x00" * 17, "not a multiple of 16"),
        (UuidSetValue(), b"\x00" * 32, "duplicate"),
        (JsonValue(), b"{", "JsonValue: cannot decode JSON"),
        (JsonValue(), b"NaN", "JsonValue"),
        (JsonValue(), b"\xff", "JsonValue"),
        (CborValue(), b"\x82\x01", "CborValue: cannot decode CBOR"),
        (CborValue(), b"\x01\x02", "CborValue: 1 trailing bytes"),
        (PickleValue(), b"not a pickle", "PickleValue: cannot unpickle"),
    ],
)
def test_value_decode_rejects_malformed_bytes(codec: ValueCodec[Any], data: bytes,
                                              match: str) -> None:
    with pytest.raises(ValueError, match=match):
        codec.decode(data)


def test_registries() -> None:
    assert set(KEY_CODECS) == {"string", "binary", "oid", "uuid", "timestamp"}
    for name, key_cls in KEY_CODECS.items():
        assert key_cls().name == name
    assert set(VALUE_CODECS) == {"string", "binary", "oid", "uuid", "uuid-set", "json",
                                 "cbor", "pickle", "flatbuffers"}
    for name, factory in VALUE_CODECS.items():
        if name != "flatbuffers":
            assert factory().name == name
    assert CompoundKey(StringKey, OidKey).name == "(string,oid)"
    assert repr(CompoundKey(StringKey, OidKey)) == "CompoundKey(StringKey, OidKey)"
