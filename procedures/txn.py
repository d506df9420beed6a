"""``<prefix>.txn(ops)``: an all-or-nothing batch of puts, deletes and checks across tables."""

from __future__ import annotations

from typing import Any

from txetcd import Client, DuplicateKey, Op

from .errors import ProcedureError
from .indexes import RowWrite, write_rows
from .table import Table

__all__ = ["run_txn"]

_OP_FIELDS = {"table", "op", "key", "value", "if_revision"}


async def run_txn(client: Client, tables: dict[str, Table], ops: Any) -> int:
    """Apply every op or none; returns the new revision. A failed ``if_revision`` is a conflict."""
    if not isinstance(ops, list) or not ops:
        raise ProcedureError("invalid_argument", "ops must be a non-empty list of ops")
    # A txn touching an indexed table runs as one pmap transaction, index entries included.
    indexed = {name for name, table in tables.items() if table.indexes}
    if any(isinstance(spec, dict) and isinstance(spec.get("table"), str)
           and spec["table"] in indexed for spec in ops):
        return await _indexed_txn(client, [_row_write(_op_table(tables, spec, i), spec, i)
                                           for i, spec in enumerate(ops)])
    compares: list[Any] = []
    writes: list[Op] = []
    for i, spec in enumerate(ops):
        guard, op = _guarded(_op_table(tables, spec, i), spec, i)
        compares += guard
        if op is not None:
            writes.append(op)
    return await _plain_txn(client, compares, writes)


def _op_table(tables: dict[str, Table], spec: Any, i: int) -> Table:
    """The table of ``ops[i]``, once the op is an object with known fields only."""
    if not isinstance(spec, dict):
        raise ProcedureError("invalid_argument", f"ops[{i}] must be an object")
    unknown = set(spec) - _OP_FIELDS
    if unknown:
        raise ProcedureError("invalid_argument", f"ops[{i}] has unknown fields "
                                                 f"{sorted(unknown)}")
    name = spec.get("table")
    table = tables.get(name) if isinstance(name, str) else None
    if table is None:
        raise ProcedureError("invalid_argument", f"ops[{i}].table {name!r:.80} "
                                                 f"is not one of {sorted(tables)}")
    return table


def _op_kind(spec: dict[str, Any], i: int) -> str:
    """put, delete or check (which needs ``if_revision``)."""
    kind = spec.get("op")
    if kind not in ("put", "delete", "check"):
        raise ProcedureError("invalid_argument",
                             f"ops[{i}].op must be put, delete or check, not {kind!r}")
    if kind == "check" and spec.get("if_revision") is None:
        raise ProcedureError("invalid_argument", f"ops[{i}]: a check needs if_revision")
    return str(kind)


def _row_write(table: Table, spec: dict[str, Any], i: int) -> RowWrite:
    return table.row_write(_op_kind(spec, i), spec.get("key"), spec.get("value"),
                           spec.get("if_revision"))


def _guarded(table: Table, spec: dict[str, Any], i: int) -> tuple[list[Any], Op | None]:
    """The compares of ``ops[i]`` and its write (none for a check)."""
    kind = _op_kind(spec, i)
    if kind == "put":
        return table.guarded_put(spec.get("key"), spec.get("value"), spec.get("if_revision"))
    guard, delete = table.guarded_delete(spec.get("key"), spec.get("if_revision"))
    return guard, (delete if kind == "delete" else None)


async def _indexed_txn(client: Client, rows: list[RowWrite]) -> int:
    written = [(id(w.table), w.table.map.key_codec.encode(w.key)) for w in rows
               if w.kind != "check"]
    if len(set(written)) < len(written):
        raise ProcedureError("invalid_argument", "a txn may write each key only once")
    return (await write_rows(client, rows))[0]


async def _plain_txn(client: Client, compares: list[Any], writes: list[Op]) -> int:
    try:
        result = await client.txn(compare=compares, success=writes)
    except DuplicateKey:
        raise ProcedureError("invalid_argument", "a txn may write each key only once") from None
    if not result.succeeded:
        raise ProcedureError("conflict", "a key of the txn is not at its if_revision any more; "
                                         "nothing was written (reload and retry)")
    return result.header.revision
