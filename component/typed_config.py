"""The typed parts of a table's config: JSON Schema, FlatBuffers schema, secondary indexes.

Checked once at start like the rest of the config: a JSON Schema that does not compile, an
``.fbs`` that flatc refuses, an unknown root type or two index slots that collide are each a
``ConfigError`` naming the table, never a failure at the first call.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import zlib
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from txetcd.types import is_int

from .settings import WIRE_KEYS, ConfigError, FlatBuffersSettings, IndexSettings, TableSettings

__all__ = ["parse_typing", "check_index_slots", "default_index_slot", "compile_fbs"]

# Index entries default to slots 0x8000..0xFFFE, picked from the table and index names so that
# the same config always finds the same entries (and a pmap program can compute the slot too).
_INDEX_SLOTS = (0x8000, 0xFFFE)


def default_index_slot(table: str, index: str) -> int:
    """The slot of index ``index`` of ``table`` when the config does not name one."""
    low, high = _INDEX_SLOTS
    return low + zlib.crc32(f"{table}.{index}".encode()) % (high - low + 1)


def compile_fbs(path: Path) -> bytes:
    """The binary schema of ``path``: a shipped .bfbs as is, an .fbs compiled with flatc."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such schema file")
    if path.suffix == ".bfbs":
        return path.read_bytes()
    flatc = shutil.which("flatc")
    if flatc is None:
        raise FileNotFoundError("flatc is not installed (apt-get install flatbuffers-compiler), "
                                "so the .fbs cannot be compiled; ship a .bfbs instead")
    with tempfile.TemporaryDirectory() as out:
        run = subprocess.run([flatc, "-b", "--schema", "-o", out, str(path)],
                             capture_output=True, text=True, check=False)
        if run.returncode != 0:
            lines = (run.stderr or run.stdout).strip().splitlines()
            # flatc prints its usage before the error itself; the error is what helps.
            errors = [line for line in lines if "error" in line.lower()] or lines[-2:]
            raise ValueError(f"flatc failed: {' '.join(errors)[:400]}")
        return (Path(out) / (path.stem + ".bfbs")).read_bytes()


def _pointer(text: Any, where: str) -> str:
    if not isinstance(text, str) or not text:
        raise ConfigError(where, f"expected a field name or a JSON pointer, not {text!r:.60}")
    return text if text.startswith("/") else "/" + text.replace("~", "~0").replace("/", "~1")


def _index(raw: Any, where: str, table: str) -> IndexSettings:
    if not isinstance(raw, dict):
        raise ConfigError(where, f"expected an object, not {raw!r:.60}")
    unknown = sorted(set(raw) - {"name", "field", "unique", "key", "slot"})
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}", "unknown field (known: field, key, name, "
                                                   "slot, unique)")
    name = raw.get("name")
    if not isinstance(name, str) or not name.replace("_", "a").isalnum() or \
            name != name.lower() or name in ("get", "put", "delete", "scan", "count",
                                             "describe", "history", "on_change"):
        raise ConfigError(f"{where}.name", f"{name!r} must be lowercase letters, digits and _ "
                                           "and no procedure name (it becomes part of WAMP URIs)")
    unique = raw.get("unique", False)
    if not isinstance(unique, bool):
        raise ConfigError(f"{where}.unique", f"expected true or false, not {unique!r}")
    key = raw.get("key", "string")
    if key not in WIRE_KEYS:
        raise ConfigError(f"{where}.key", f"{key!r} is not one of {', '.join(WIRE_KEYS)}")
    slot = raw.get("slot", default_index_slot(table, name))
    if not is_int(slot) or not 1 <= slot < 0xFFFF:
        raise ConfigError(f"{where}.slot", f"must be 1..65534, not {slot!r}")
    return IndexSettings(name, _pointer(raw.get("field"), f"{where}.field"), unique, key, slot)


def parse_typing(table: dict[str, Any], where: str, name: str, value: str,
                 cbdir: Any) -> dict[str, Any]:
    """The ``schema``, ``flatbuffers`` and ``indexes`` of one table's config, checked."""
    typed: dict[str, Any] = {}
    schema = table.get("schema")
    if schema is not None:
        typed["schema"] = _schema(schema, where, name, value)
    fbs = table.get("flatbuffers")
    if fbs is not None:
        typed["flatbuffers"] = _flatbuffers(fbs, where, name, value, cbdir)
    typed["indexes"] = _indexes(table.get("indexes", []), where, name,
                                value in ("json", "cbor") or fbs is not None)
    return typed


def _schema(schema: Any, where: str, name: str, value: str) -> Any:
    """A JSON Schema 2020-12 for json/cbor values, checked to compile."""
    if value not in ("json", "cbor"):
        raise ConfigError(f"{where}.schema", f"table {name!r}: a JSON Schema needs json or "
                                             f"cbor values, not {value}")
    if not isinstance(schema, (dict, bool)):
        raise ConfigError(f"{where}.schema", f"table {name!r}: a JSON Schema is an object")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        path = "/" + "/".join(str(p) for p in exc.path)
        raise ConfigError(f"{where}.schema", f"table {name!r}: the JSON Schema does not "
                                             f"compile at {path}: {exc.message}") from None
    return schema


def _flatbuffers(fbs: Any, where: str, name: str, value: str,
                 cbdir: Any) -> FlatBuffersSettings:
    """A flatbuffers table's schema (relative to ``cbdir``), compiled and its root type found."""
    if value != "flatbuffers":
        raise ConfigError(f"{where}.flatbuffers", f"table {name!r} has {value} values")
    if not isinstance(fbs, dict) or set(fbs) != {"schema", "root_type"} or not all(
            isinstance(v, str) for v in fbs.values()):
        raise ConfigError(f"{where}.flatbuffers", f"table {name!r}: expected "
                                                  '{"schema": "x.fbs", "root_type": "T"}')
    fbs_path = Path(fbs["schema"])
    if not fbs_path.is_absolute() and isinstance(cbdir, str):
        fbs_path = Path(cbdir) / fbs_path
    try:
        bfbs = compile_fbs(fbs_path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{where}.flatbuffers.schema", f"table {name!r}: {exc}") from None
    from procedures.flatbuf import FlatBuffersSchema  # the one reader of .bfbs files

    try:
        FlatBuffersSchema(bfbs, fbs["root_type"])
    except ValueError as exc:
        raise ConfigError(f"{where}.flatbuffers.root_type",
                          f"table {name!r}: {exc}") from None
    return FlatBuffersSettings(str(fbs_path), fbs["root_type"], bfbs)


def _indexes(indexes: Any, where: str, name: str,
             structured: bool) -> tuple[IndexSettings, ...]:
    """A table's secondary indexes; only ``structured`` values (json, cbor, flatbuffers) have
    fields to index."""
    if not isinstance(indexes, list):
        raise ConfigError(f"{where}.indexes", "expected a list of indexes")
    if indexes and not structured:
        raise ConfigError(f"{where}.indexes", f"table {name!r}: indexes need json or cbor "
                                              "values, or flatbuffers with a schema")
    parsed = [_index(raw, f"{where}.indexes[{i}]", name) for i, raw in enumerate(indexes)]
    if len({i.name for i in parsed}) < len(parsed):
        raise ConfigError(f"{where}.indexes", f"table {name!r} names an index twice")
    return tuple(parsed)


def check_index_slots(tables: list[TableSettings]) -> None:
    """Every index slot differs from every table slot and every other index slot."""
    taken = {t.slot: f"table {t.name!r}" for t in tables}
    for i, table in enumerate(tables):
        for j, index in enumerate(table.indexes):
            owner = taken.get(index.slot)
            if owner is not None:
                raise ConfigError(f"tables[{i}].indexes[{j}].slot",
                                  f"slot {index.slot} of index {table.name}.{index.name} is "
                                  f"already {owner}; give the index another \"slot\"")
            taken[index.slot] = f"index {table.name}.{index.name}"
