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
import itertools
from collections.abc import Iterable
from typing import Any

from .errors import ProcedureError
from .payload import ANSWER_WRAPPING, INT64_MAX, MAX_DEPTH
from .payload import inspect as inspect_payload

__all__ = ["RESERVED", "CallShape", "check_call", "refusal_kind"]

# Names the component passes itself (progressive results, call details): never a caller's.
RESERVED = frozenset({"progress", "details"})
KEY_FIELDS = frozenset({"key", "from_key", "to_key", "prefix"})
# A txn op nests its key and value two levels below the argument (ops list, op dict).
ARGUMENT_DEPTH = MAX_DEPTH + ANSWER_WRAPPING


class CallShape:
    """A handler's parameters, taken from its signature once: binding a call to them is on
    every call's path, and ``Signature.bind`` cost more than the rest of a get's checks."""

    def __init__(self, signature: inspect.Signature) -> None:
        self.signature = signature
        params = list(signature.parameters.values())
        self.plain = all(p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in params)
        self.positional = [p.name for p in params if p.kind == p.POSITIONAL_OR_KEYWORD]
        self.names = frozenset(p.name for p in params)
        self.required = frozenset(p.name for p in params if p.default is p.empty)
        # Positional args alone from ``least`` to ``most`` bind in order, with no reserved name
        # among them (most calls: ``get("k")``); any other call takes ``bind``'s way.
        callers = list(itertools.takewhile(lambda name: name not in RESERVED, self.positional))
        fits = self.plain and self.required <= set(callers)
        self.least = len(self.required) if fits else 1
        self.most = len(callers) if fits else 0

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The arguments by name, as ``Signature.bind`` has them; ``TypeError`` (with its
        message) when they do not fit."""
        if self.plain and len(args) <= len(self.positional):
            bound = dict(zip(self.positional, args, strict=False))
            fits = True
            for name, value in kwargs.items():
                if name in bound or name not in self.names:
                    fits = False
                    break
                bound[name] = value
            if fits and self.required <= bound.keys():
                return bound
        return dict(self.signature.bind(*args, **kwargs).arguments)


def check_call(shape: CallShape, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """Refuse a call whose arguments the handler behind ``shape`` must never see; returns
    the arguments' size (what the call holds in memory while it runs)."""
    if kwargs or not shape.least <= len(args) <= shape.most:
        reserved = sorted(RESERVED & kwargs.keys())
        if reserved:
            raise ProcedureError("invalid_argument",
                                 f"unexpected keyword argument {reserved[0]!r}")
        try:
            bound = shape.bind(args, kwargs)
        except TypeError as exc:
            raise ProcedureError("invalid_argument", f"bad arguments: {exc}") from None
        if RESERVED & bound.keys():
            raise ProcedureError("invalid_argument", f"too many positional arguments "
                                                     f"({len(args)})")
        named: Iterable[tuple[str, Any]] = bound.items()
    else:
        named = zip(shape.positional, args, strict=False)  # args may be fewer
    total = 0
    for name, value in named:
        found, size = inspect_payload(value, ARGUMENT_DEPTH, name, INT64_MAX, False)
        total += size
        if found is None:
            continue
        raise ProcedureError("too_large" if found.too_large else refusal_kind(found.fields()),
                             str(found))
    return total


def refusal_kind(fields: Iterable[str]) -> str:
    """The error kind of a refused argument, named after the fields on the way to the problem
    (outermost first): the one rule, also for what a handler checks itself."""
    names = set(fields)
    if "value" in names:
        return "invalid_value"
    if KEY_FIELDS & names:
        return "invalid_key"
    return "invalid_argument"
