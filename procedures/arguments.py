"""The one argument check every procedure's call passes before its handler runs.

A call is bound to the handler's signature (unknown or reserved kwargs, too many positional
args and missing ones are refused) and every argument must follow the payload policy
(``procedures.payload``). Each refusal is a ``ProcedureError``: ``invalid_key`` when the
problem lies in something named like a key, ``invalid_value`` in a value, ``too_large`` for an
oversized string, ``invalid_argument`` otherwise. So no argument shape reaches a handler that
it could trip over, and no refused call touches etcd.
"""

from __future__ import annotations

import inspect
from typing import Any

from .errors import ProcedureError
from .payload import ANSWER_WRAPPING, MAX_DEPTH, problem

__all__ = ["RESERVED", "check_call"]

# Names the component passes itself (progressive results, call details): never a caller's.
RESERVED = frozenset({"progress", "details"})
KEY_FIELDS = frozenset({"key", "from_key", "to_key", "prefix"})
# A txn op nests its key and value two levels below the argument (ops list, op dict).
ARGUMENT_DEPTH = MAX_DEPTH + ANSWER_WRAPPING


def check_call(signature: inspect.Signature, args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> None:
    """Refuse a call whose arguments the handler behind ``signature`` must never see."""
    reserved = sorted(RESERVED & set(kwargs))
    if reserved:
        raise ProcedureError("invalid_argument", f"unexpected keyword argument {reserved[0]!r}")
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise ProcedureError("invalid_argument", f"bad arguments: {exc}") from None
    for name, value in bound.arguments.items():
        if name in RESERVED:
            raise ProcedureError("invalid_argument", f"too many positional arguments "
                                                     f"({len(args)})")
        found = problem(value, ARGUMENT_DEPTH, name)
        if found is None:
            continue
        fields = found.fields()
        if found.too_large:
            kind = "too_large"
        elif "value" in fields:
            kind = "invalid_value"
        elif KEY_FIELDS & set(fields):
            kind = "invalid_key"
        else:
            kind = "invalid_argument"
        raise ProcedureError(kind, str(found))
