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
    compares: list[Any] = []
    writes: list[Op] = []
    # A txn touching an indexed table runs as one pmap transaction, index entries included.
    indexed = {name for name, table in tables.items() if table.indexes}
    rows: list[RowWrite] | None = [] if any(
        isinstance(spec, dict) and isinstance(spec.get("table"), str) and spec["table"] in indexed
        for spec in ops) else None
    for i, spec in enumerate(ops):
        if not isinstance(spec, dict):
            raise ProcedureError("invalid_argument", f"ops[{i}] must be an object")
        unknown = set(spec) - _OP_FIELDS
        if unknown:
            raise ProcedureError("invalid_argument", f"ops[{i}] has unknown fields "
                                                     f"{sorted(unknown)}")
        table = tables.get(spec.get("table"))  # type: ignore[arg-type]
        if table is None:
            raise ProcedureError("invalid_argument", f"ops[{i}].table {spec.get('table')!r} "
                                                     f"is not one of {sorted(tables)}")
        kind = spec.get("op")
        if rows is not None and kind in ("put", "delete", "check"):
            if kind == "check" and spec.get("if_revision") is None:
                raise ProcedureError("invalid_argument", f"ops[{i}]: a check needs if_revision")
            rows.append(table.row_write(kind, spec.get("key"), spec.get("value"),
                                        spec.get("if_revision")))
        elif kind == "put":
            guard, op = table.guarded_put(spec.get("key"), spec.get("value"),
                                          spec.get("if_revision"))
            compares += guard
            writes.append(op)
        elif kind == "delete":
            guard, delete = table.guarded_delete(spec.get("key"), spec.get("if_revision"))
            compares += guard
            writes.append(delete)
        elif kind == "check":
            if spec.get("if_revision") is None:
                raise ProcedureError("invalid_argument", f"ops[{i}]: a check needs if_revision")
            compares += table.guarded_delete(spec.get("key"), spec.get("if_revision"))[0]
        else:
            raise ProcedureError("invalid_argument",
                                 f"ops[{i}].op must be put, delete or check, not {kind!r}")
    if rows is not None:
        written = [(id(w.table), w.table.map.key_codec.encode(w.key)) for w in rows
                   if w.kind != "check"]
        if len(set(written)) < len(written):
            raise ProcedureError("invalid_argument", "a txn may write each key only once")
        return (await write_rows(client, rows))[0]
    try:
        result = await client.txn(compare=compares, success=writes)
    except DuplicateKey:
        raise ProcedureError("invalid_argument", "a txn may write each key only once") from None
    if not result.succeeded:
        raise ProcedureError("conflict", "a key of the txn is not at its if_revision any more; "
                                         "nothing was written (reload and retry)")
    return result.header.revision
