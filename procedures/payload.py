"""The payload policy: what every WAMP serializer (json, msgpack, cbor) carries end to end.

The router re-encodes each message for its receiver's serializer, so a payload only travels if
all three can carry it. The component therefore accepts and delivers only:

* ``None``, ``bool``, ``int`` within etcd's int64, finite ``float``, ``bytes``, and ``str`` that
  does not begin with NUL (WAMP-JSON reads a string that starts with ``\\0`` as base64 bytes);
* lists, and dicts whose keys are such strings (msgpack and JSON know no other map keys);
* nested at most ``max_depth`` containers deep (a table's limit, at most ``MAX_DEPTH``), so an
  answer that wraps a stored value a few levels deeper (a scan row, an event) still decodes in
  cbor2, whose limit is 400 levels for the whole message;
* strings and bytes of at most ``MAX_BLOB_BYTES`` (etcd refuses larger requests anyway).

``problem`` walks a payload without recursion, so a hostile 1,000-level argument costs a loop,
not the stack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["INT64_MIN", "INT64_MAX", "UINT64_MAX", "DEFAULT_MAX_DEPTH", "MAX_DEPTH",
           "ANSWER_WRAPPING", "MAX_BLOB_BYTES", "Problem", "problem", "payload_size"]

INT64_MIN, INT64_MAX, UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1
DEFAULT_MAX_DEPTH = 64  # containers a stored key or value may nest, unless a table says else
# cbor2 refuses messages nested deeper than 400; the deepest answer wraps a value in 4 levels
# (message, arguments, rows, row) and WAMP-JSON's pure-Python decoder spends two frames a
# level of a client's recursion limit: 256 leaves room for both.
MAX_DEPTH = 256
ANSWER_WRAPPING = 4
MAX_BLOB_BYTES = 3 << 19  # 1.5 MiB: etcd's default request limit


@dataclass(frozen=True)
class Problem:
    """Why a payload cannot travel: ``path`` names the place (``ops[0].value[2]``)."""

    path: str
    message: str
    too_large: bool = False

    def __str__(self) -> str:
        path = self.path if len(self.path) <= 120 else self.path[:117] + "..."
        return f"{path}: {self.message}" if path else self.message

    def fields(self) -> list[str]:
        """The dict fields and argument names on the way to the problem, outermost first."""
        return [part.split("[", 1)[0] for part in self.path.split(".") if part]


# One loop with no calls per item, on purpose: it runs over every value of every put, and split
# into per-kind functions (as the complexity rules would have it) it measured 25 % slower.
def problem(obj: Any, max_depth: int = MAX_DEPTH, path: str = "",  # noqa: C901, PLR0911, PLR0912
            int_max: int = INT64_MAX) -> Problem | None:
    """The first reason ``obj`` breaks the payload policy, or None when every serializer can
    carry it. Stored rows may hold ints up to ``UINT64_MAX`` (an oid), which msgpack carries
    too; a caller's ints stay within etcd's int64."""
    stack: list[tuple[Any, str, int]] = [(obj, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        if item is None or isinstance(item, bool):
            continue
        if isinstance(item, int):
            if not INT64_MIN <= item <= int_max:
                shown = item if item.bit_length() < 128 else f"of {item.bit_length()} bits"
                return Problem(where, f"integer {shown} is outside "
                                      f"{'int64' if int_max == INT64_MAX else 'uint64'}")
        elif isinstance(item, float):
            if not math.isfinite(item):
                return Problem(where, f"{item} is not a finite number")
        elif isinstance(item, str):
            if item.startswith("\0"):
                return Problem(where, "a string may not begin with NUL (WAMP-JSON reads it "
                                      "as bytes)")
            try:
                size = len(item.encode("utf-8"))
            except UnicodeEncodeError:
                return Problem(where, "a string with unpaired surrogates is not Unicode text")
            if size > MAX_BLOB_BYTES:
                return Problem(where, f"a string of {size} bytes is over {MAX_BLOB_BYTES}",
                               too_large=True)
        elif isinstance(item, bytes):
            if len(item) > MAX_BLOB_BYTES:
                return Problem(where, f"{len(item)} bytes are over {MAX_BLOB_BYTES}",
                               too_large=True)
        elif isinstance(item, (list, dict)):
            if depth >= max_depth:
                return Problem(where, f"nested deeper than {max_depth} levels")
            if isinstance(item, list):
                stack.extend((child, f"{where}[{i}]", depth + 1)
                             for i, child in enumerate(item))
                continue
            for key, child in item.items():
                if not isinstance(key, str) or key.startswith("\0"):
                    return Problem(where, f"map key {key!r:.40} is not a string that every "
                                          "serializer carries")
                stack.append((key, f"{where}.{key}" if where else key, depth + 1))
                stack.append((child, f"{where}.{key}" if where else key, depth + 1))
        else:
            return Problem(where, f"{type(item).__name__} is not a WAMP payload type")
    return None


_ITEM = 8  # what a container slot or a number counts for: the payload's shape has a cost too


def _wire_text(item: str | bytes | bytearray) -> int:
    """An upper bound of a string's bytes on the costliest serializer: WAMP-JSON carries bytes
    as base64 (4/3) and may escape a control or non-ASCII character as ``\\uXXXX`` (6)."""
    if not isinstance(item, str):
        return len(item) * 4 // 3 + 4
    if not item.isascii():
        return 6 * len(item)
    plain = len(item.translate(_ESCAPED))  # what JSON leaves as it is (a fast C loop)
    return plain + 6 * (len(item) - plain)


# ASCII that WAMP-JSON escapes: control characters (up to 6 bytes each), the quote, backslash.
_ESCAPED = str.maketrans("", "", "".join(map(chr, range(32))) + '"\\\x7f')


def payload_size(*payloads: Any, stop: int | None = None, wire: bool = False) -> int:
    """About how many bytes ``payloads`` take: strings and bytes by length (with ``wire``, by an
    upper bound of their size on any serializer), plus a little per item. Iterative (any
    nesting depth), and it stops counting past ``stop``."""
    total = 0
    pending: list[Any] = list(payloads)
    while pending:
        item = pending.pop()
        if isinstance(item, (str, bytes, bytearray)):
            total += (_wire_text(item) if wire else len(item)) + _ITEM
        elif isinstance(item, dict):
            total += _ITEM * (1 + len(item))
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)):
            total += _ITEM * (1 + len(item))
            pending.extend(item)
        else:
            total += _ITEM
        if stop is not None and total > stop:
            break
    return total
