"""FlatBuffers values as plain maps, driven by a binary schema (.bfbs) through reflection.

``FlatBuffersSchema(bfbs, root_type)`` reads the schema once; ``encode(map)`` checks the map
against the root table (unknown fields, types, integer ranges, required fields; each refusal
names the JSON pointer of the failing part and the rule) and builds the FlatBuffers bytes a
``flatc --python`` class reads; ``decode(bytes)`` gives the map back (absent scalars as their
defaults, absent strings, vectors and tables left out). Supported: scalars, enums (as ints),
strings, tables, structs and vectors of all of those; unions and fixed arrays are refused when
the schema is loaded, so a table either works fully or fails at start.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import flatbuffers
from flatbuffers import number_types as N  # noqa: N812 - flatbuffers' own idiom
from flatbuffers.table import Table

from txetcd.pmap.codecs import ValueCodec
from txetcd.types import is_int

from .errors import SchemaViolation

__all__ = ["FlatBuffersSchema", "FlatBuffersMapValue"]

BOOL, BYTE, UBYTE, SHORT, USHORT, INT, UINT, LONG, ULONG, FLOAT, DOUBLE = range(2, 13)
STRING, VECTOR, OBJ, UNION, ARRAY = range(13, 18)
UTYPE = 1

# base type -> (struct format, flatbuffers flags, name)
_SCALARS: dict[int, tuple[str, Any, str]] = {
    BOOL: ("<?", N.BoolFlags, "bool"), BYTE: ("<b", N.Int8Flags, "int8"),
    UBYTE: ("<B", N.Uint8Flags, "uint8"), SHORT: ("<h", N.Int16Flags, "int16"),
    USHORT: ("<H", N.Uint16Flags, "uint16"), INT: ("<i", N.Int32Flags, "int32"),
    UINT: ("<I", N.Uint32Flags, "uint32"), LONG: ("<q", N.Int64Flags, "int64"),
    ULONG: ("<Q", N.Uint64Flags, "uint64"), FLOAT: ("<f", N.Float32Flags, "float32"),
    DOUBLE: ("<d", N.Float64Flags, "float64"),
}


def _child(pointer: str, part: Any) -> str:
    return f"{pointer}/{str(part).replace('~', '~0').replace('/', '~1')}"


def _check_table_fields(obj: _Object, value: Any, pointer: str) -> None:
    """A table's value is a map of its fields with every required one present."""
    if not isinstance(value, dict):
        raise SchemaViolation(pointer, "type", f"{obj.name} must be a map, not "
                                               f"{type(value).__name__}")
    fields = {f.name: f for f in obj.fields}
    for name in value:
        if name not in fields:
            raise SchemaViolation(_child(pointer, name), "unknown_field",
                                  f"{obj.name} has no field {name!r:.40}")
    for f in obj.fields:
        if f.required and value.get(f.name) is None:
            raise SchemaViolation(_child(pointer, f.name), "required",
                                  f"{obj.name}.{f.name} is required")


@dataclass(frozen=True)
class _Field:
    name: str
    id: int
    base: int
    element: int
    index: int  # object index for Obj (and vectors of Obj), enum index for enum scalars
    offset: int  # byte offset inside a struct
    default_int: int
    default_real: float
    required: bool


@dataclass(frozen=True)
class _Object:
    name: str
    is_struct: bool
    minalign: int
    bytesize: int
    fields: tuple[_Field, ...]

    @property
    def slots(self) -> int:
        return max((f.id for f in self.fields), default=-1) + 1


class _Reflect:
    """Reads a field of a reflection.fbs table by its id (the layout autobahn ships in
    ``autobahn/flatbuffers/reflection.fbs``; its generated classes import a top-level
    ``reflection`` package, so they are read here directly)."""

    def __init__(self, buf: bytearray, pos: int) -> None:
        self.tab = Table(buf, pos)

    def _at(self, field_id: int) -> int:
        return int(self.tab.Offset(4 + 2 * field_id))

    def num(self, field_id: int, flags: Any, default: Any = 0) -> Any:
        o = self._at(field_id)
        return self.tab.Get(flags, o + self.tab.Pos) if o else default

    def text(self, field_id: int) -> str:
        o = self._at(field_id)
        return self.tab.String(o + self.tab.Pos).decode() if o else ""

    def sub(self, field_id: int) -> _Reflect | None:
        o = self._at(field_id)
        return _Reflect(self.tab.Bytes, self.tab.Indirect(o + self.tab.Pos)) if o else None

    def items(self, field_id: int) -> list[_Reflect]:
        o = self._at(field_id)
        if not o:
            return []
        start = self.tab.Vector(o)
        return [_Reflect(self.tab.Bytes, self.tab.Indirect(start + 4 * i))
                for i in range(self.tab.VectorLen(o))]


def _read_objects(bfbs: bytes) -> list[_Object]:
    buf = bytearray(bfbs)
    schema = _Reflect(buf, flatbuffers.encode.Get(N.UOffsetTFlags.packer_type, buf, 0))
    objects = []
    for obj in schema.items(0):  # Schema.objects
        fields = []
        for f in obj.items(1):  # Object.fields
            if f.num(6, N.BoolFlags, False):  # Field.deprecated
                continue
            kind = f.sub(1)  # Field.type
            assert kind is not None
            fields.append(_Field(f.text(0), f.num(2, N.Uint16Flags), kind.num(0, N.Int8Flags),
                                 kind.num(1, N.Int8Flags), kind.num(2, N.Int32Flags, -1),
                                 f.num(3, N.Uint16Flags), f.num(4, N.Int64Flags),
                                 f.num(5, N.Float64Flags, 0.0), bool(f.num(7, N.BoolFlags))))
        objects.append(_Object(obj.text(0), bool(obj.num(2, N.BoolFlags)),
                               obj.num(3, N.Int32Flags), obj.num(4, N.Int32Flags),
                               tuple(sorted(fields, key=lambda x: x.id))))
    return objects


class FlatBuffersSchema:
    """One root table of a binary schema, as a map encoder/decoder (see the module doc)."""

    def __init__(self, bfbs: bytes, root_type: str) -> None:
        try:
            self.objects = _read_objects(bfbs)
        except Exception as exc:  # noqa: BLE001 - any failure means "not a .bfbs"
            raise ValueError(f"not a binary FlatBuffers schema (.bfbs): {exc}") from None
        by_name = {o.name: i for i, o in enumerate(self.objects)}
        short = {o.name.rsplit(".", 1)[-1]: i for i, o in enumerate(self.objects)}
        found = by_name.get(root_type, short.get(root_type))
        if found is None or self.objects[found].is_struct:
            tables = sorted(o.name for o in self.objects if not o.is_struct)
            raise ValueError(f"root_type {root_type!r} is not a table of the schema "
                             f"(tables: {', '.join(tables)})")
        self.root = self.objects[found]
        self.root_type = self.root.name
        self._check_supported(self.root, set())

    def _check_supported(self, obj: _Object, seen: set[str]) -> None:
        if obj.name in seen:
            return
        seen.add(obj.name)
        for f in obj.fields:
            kind = f.element if f.base == VECTOR else f.base
            if kind in (UNION, UTYPE, ARRAY) or f.base == ARRAY:
                raise ValueError(f"{obj.name}.{f.name}: unions and fixed arrays are not "
                                 "supported for tables served over WAMP")
            if kind == OBJ:
                self._check_supported(self.objects[f.index], seen)

    def describe(self) -> dict[str, Any]:
        """What describe() shows: the root type and each table's fields with their types."""
        names = {BOOL: "bool", STRING: "string", VECTOR: "vector", OBJ: "object",
                 **{k: v[2] for k, v in _SCALARS.items()}}

        def field(f: _Field) -> dict[str, Any]:
            out: dict[str, Any] = {"name": f.name, "type": names.get(f.base, str(f.base))}
            if f.base == VECTOR:
                out["element"] = names.get(f.element, str(f.element))
            if OBJ in (f.base, f.element):
                out["object"] = self.objects[f.index].name
            if f.required:
                out["required"] = True
            return out

        return {"root_type": self.root_type,
                "objects": {o.name: {"struct": o.is_struct, "fields": [field(f) for f in
                                                                       o.fields]}
                            for o in self.objects}}

    # -- checking --------------------------------------------------------------------------

    def _scalar(self, base: int, value: Any, pointer: str) -> Any:
        fmt, _, name = _SCALARS[base]
        if base == BOOL:
            if not isinstance(value, bool):
                raise SchemaViolation(pointer, "type", f"expected a bool, not {value!r:.40}")
            return value
        if base in (FLOAT, DOUBLE):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise SchemaViolation(pointer, "type", f"expected a {name}, not {value!r:.40}")
            if base == FLOAT and math.isfinite(value) and abs(value) > 3.4028234663852886e38:
                raise SchemaViolation(pointer, "range", f"{value} does not fit a float32")
            return float(value)
        if not is_int(value):
            raise SchemaViolation(pointer, "type", f"expected an {name}, not {value!r:.40}")
        try:
            struct.pack(fmt, value)
        except struct.error:
            raise SchemaViolation(pointer, "range", f"{value} does not fit an {name}") from None
        return value

    # -- encoding --------------------------------------------------------------------------

    def encode(self, value: Any) -> bytes:
        builder = flatbuffers.Builder(256)
        builder.Finish(self._table(builder, self.root, value, ""))
        return bytes(builder.Output())

    def _table(self, b: flatbuffers.Builder, obj: _Object, value: Any, pointer: str) -> int:
        _check_table_fields(obj, value, pointer)
        # Offsets of strings, vectors and tables first: nothing may be built inside a table.
        offsets: dict[str, int] = {}
        for f in obj.fields:
            item = value.get(f.name)
            if item is None or f.base in _SCALARS or (f.base == OBJ and
                                                      self.objects[f.index].is_struct):
                continue
            offsets[f.name] = self._offset(b, f, item, _child(pointer, f.name))
        scalars = {f.name: self._scalar(f.base, value[f.name], _child(pointer, f.name))
                   for f in obj.fields if f.base in _SCALARS and value.get(f.name) is not None}
        b.StartObject(obj.slots)
        for f in obj.fields:
            if f.name in offsets:
                b.PrependUOffsetTRelativeSlot(f.id, offsets[f.name], 0)
            elif f.name in scalars:
                flags = _SCALARS[f.base][1]
                # force_defaults: a value equal to the default is still stored, so that an
                # explicitly written field reads back as present.
                b.PrependSlot(flags, f.id, scalars[f.name], None)
            elif f.base == OBJ and value.get(f.name) is not None:
                sub = self.objects[f.index]
                b.PrependStructSlot(f.id, self._struct(b, sub, value[f.name],
                                                       _child(pointer, f.name)), 0)
        return int(b.EndObject())

    def _struct_bytes(self, obj: _Object, value: Any, pointer: str) -> bytes:
        if not isinstance(value, dict):
            raise SchemaViolation(pointer, "type", f"{obj.name} must be a map")
        data = bytearray(obj.bytesize)
        names = {f.name for f in obj.fields}
        for name in value:
            if name not in names:
                raise SchemaViolation(_child(pointer, name), "unknown_field",
                                      f"{obj.name} has no field {name!r:.40}")
        for f in obj.fields:
            where = _child(pointer, f.name)
            if f.name not in value:
                raise SchemaViolation(where, "required", f"struct {obj.name} needs every field")
            if f.base == OBJ:
                part = self._struct_bytes(self.objects[f.index], value[f.name], where)
                data[f.offset:f.offset + len(part)] = part
            else:
                struct.pack_into(_SCALARS[f.base][0], data, f.offset,
                                 self._scalar(f.base, value[f.name], where))
        return bytes(data)

    def _struct(self, b: flatbuffers.Builder, obj: _Object, value: Any, pointer: str) -> int:
        data = self._struct_bytes(obj, value, pointer)
        b.Prep(obj.minalign, obj.bytesize)
        b.head = b.head - obj.bytesize
        b.Bytes[b.head:b.head + obj.bytesize] = data
        return int(b.Offset())

    def _offset(self, b: flatbuffers.Builder, f: _Field, item: Any, pointer: str) -> int:
        if f.base == STRING:
            if not isinstance(item, str):
                raise SchemaViolation(pointer, "type", f"expected a string, not {item!r:.40}")
            return int(b.CreateString(item))
        if f.base == OBJ:
            return self._table(b, self.objects[f.index], item, pointer)
        return self._vector(b, f, item, pointer)

    def _vector(self, b: flatbuffers.Builder, f: _Field, item: Any, pointer: str) -> int:
        if f.element == UBYTE and isinstance(item, (bytes, bytearray)):
            return int(b.CreateByteVector(bytes(item)))
        if not isinstance(item, list):
            raise SchemaViolation(pointer, "type", f"expected a list, not {item!r:.40}")
        if f.element in _SCALARS:
            values = [self._scalar(f.element, v, _child(pointer, i)) for i, v in enumerate(item)]
            size = struct.calcsize(_SCALARS[f.element][0])
            b.StartVector(size, len(values), size)
            for v in reversed(values):
                b.Prepend(_SCALARS[f.element][1], v)
            return int(b.EndVector())
        if f.element == OBJ and self.objects[f.index].is_struct:
            return self._struct_vector(b, self.objects[f.index], item, pointer)
        offsets = [self._element_offset(b, f, v, _child(pointer, i)) for i, v in enumerate(item)]
        b.StartVector(4, len(offsets), 4)
        for off in reversed(offsets):
            b.PrependUOffsetTRelative(off)
        return int(b.EndVector())

    def _struct_vector(self, b: flatbuffers.Builder, sub: _Object, item: list[Any],
                       pointer: str) -> int:
        parts = [self._struct_bytes(sub, v, _child(pointer, i)) for i, v in enumerate(item)]
        b.StartVector(sub.bytesize, len(parts), sub.minalign)
        for part in reversed(parts):
            b.head = b.head - sub.bytesize
            b.Bytes[b.head:b.head + sub.bytesize] = part
        return int(b.EndVector())

    def _element_offset(self, b: flatbuffers.Builder, f: _Field, v: Any, where: str) -> int:
        """A string or table of a vector of them."""
        if f.element == STRING:
            if not isinstance(v, str):
                raise SchemaViolation(where, "type", f"expected a string, not {v!r:.40}")
            return int(b.CreateString(v))
        return self._table(b, self.objects[f.index], v, where)

    # -- decoding --------------------------------------------------------------------------

    def decode(self, data: bytes) -> dict[str, Any]:
        buf = bytearray(data)
        if len(buf) < 8:
            raise ValueError(f"not a FlatBuffers buffer ({len(buf)} bytes)")
        try:
            root = flatbuffers.encode.Get(N.UOffsetTFlags.packer_type, buf, 0)
            return self._read_table(Table(buf, root), self.root)
        except (IndexError, struct.error, UnicodeDecodeError) as exc:
            raise ValueError(f"corrupt FlatBuffers {self.root_type}: {exc}") from None

    def _read_table(self, tab: Table, obj: _Object) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in obj.fields:
            o = tab.Offset(4 + 2 * f.id)
            if f.base in _SCALARS:
                default: Any = f.default_real if f.base in (FLOAT, DOUBLE) else f.default_int
                if f.base == BOOL:
                    default = bool(default)
                out[f.name] = tab.Get(_SCALARS[f.base][1], o + tab.Pos) if o else default
            elif not o:
                continue
            elif f.base == STRING:
                out[f.name] = tab.String(o + tab.Pos).decode()
            elif f.base == OBJ:
                sub = self.objects[f.index]
                if sub.is_struct:
                    out[f.name] = self._read_struct(tab.Bytes, o + tab.Pos, sub)
                else:
                    out[f.name] = self._read_table(Table(tab.Bytes, tab.Indirect(o + tab.Pos)),
                                                   sub)
            elif f.base == VECTOR:
                out[f.name] = self._read_vector(tab, o, f)
        return out

    def _read_struct(self, buf: bytearray, pos: int, obj: _Object) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in obj.fields:
            if f.base == OBJ:
                out[f.name] = self._read_struct(buf, pos + f.offset, self.objects[f.index])
            else:
                out[f.name] = struct.unpack_from(_SCALARS[f.base][0], buf, pos + f.offset)[0]
        return out

    def _read_vector(self, tab: Table, o: int, f: _Field) -> Any:
        start, length = tab.Vector(o), tab.VectorLen(o)
        if f.element == UBYTE:
            return bytes(tab.Bytes[start:start + length])
        if f.element in _SCALARS:
            fmt = _SCALARS[f.element][0]
            size = struct.calcsize(fmt)
            return [struct.unpack_from(fmt, tab.Bytes, start + i * size)[0]
                    for i in range(length)]
        if f.element == STRING:
            return [tab.String(start + 4 * i).decode() for i in range(length)]
        sub = self.objects[f.index]
        if sub.is_struct:
            return [self._read_struct(tab.Bytes, start + i * sub.bytesize, sub)
                    for i in range(length)]
        return [self._read_table(Table(tab.Bytes, tab.Indirect(start + 4 * i)), sub)
                for i in range(length)]


class FlatBuffersMapValue(ValueCodec[Any]):
    """A pmap value codec: maps in, FlatBuffers bytes of ``schema``'s root table stored."""

    name = "flatbuffers"

    def __init__(self, schema: FlatBuffersSchema) -> None:
        self.schema = schema

    def encode(self, value: Any) -> bytes:
        return self.schema.encode(value)

    def decode(self, data: bytes) -> Any:
        return self.schema.decode(data)
