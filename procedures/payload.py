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
           "ANSWER_WRAPPING", "MAX_BLOB_BYTES", "Problem", "ROW_SLOTS", "SLOT", "inspect",
           "problem", "payload_size"]

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


_ITEM = 8  # what a container slot or a number counts for: the payload's shape has a cost too
ROW_SLOTS = _ITEM * 3  # what a ``[key, value]`` row adds to its key's and value's sizes
SLOT = _ITEM  # what one more item adds to a container's size, besides the item's own

_BASES: tuple[type[Any], ...] = (str, dict, list, int, float, bytes)


def _plain(item: Any) -> Any:
    """An instance of a subclass of a payload type as that type (what a serializer sends of
    it), or None for a type no serializer carries."""
    for base in _BASES:
        if isinstance(item, base):
            return base(item)
    return None


def _path(root: str, trail: Any, step: Any) -> str:
    """The path of a place ``inspect`` reached: ``step`` into the container at ``trail``
    (``(parent trail, step)`` links up to the root, whose trail and step are None)."""
    steps: list[Any] = []
    while step is not None:
        steps.append(step)
        trail, step = trail if trail is not None else (None, None)
    path = root
    for part in reversed(steps):
        path = f"{path}[{part}]" if isinstance(part, int) else (f"{path}.{part}" if path
                                                                 else part)
    return path


_SCAN_COPY = 4096  # past this length a C copy (translate) beats isprintable's per-char test


# One loop, exact types first and the common short string inline, on purpose: it runs over
# every argument of every call and every row a scan or an event delivers. Split into per-kind
# functions it measured 25 % slower; building each child's path up front (rather than when a
# problem is found) 2x slower; a generator pushing a list's children (its variables become
# cells for the whole loop) 4-20 % slower per row than the plain loop (cachegrind).
def inspect(obj: Any, max_depth: int = MAX_DEPTH, path: str = "",  # noqa: C901, PLR0911, PLR0912, PLR0915
            int_max: int = INT64_MAX, wire: bool = True) -> tuple[Problem | None, int]:
    """The first reason ``obj`` breaks the payload policy (or None when every serializer can
    carry it), and its size: with ``wire`` on the costliest serializer, as
    ``payload_size(obj, wire=True)``; without, a rough one (strings by their UTF-8 bytes).
    Stored rows may hold ints up to ``UINT64_MAX`` (an oid), which msgpack carries too; a
    caller's ints stay within etcd's int64."""
    if type(obj) is str and len(obj) < _SCAN_COPY and obj.isascii() and obj.isprintable():
        # A lone short printable string (a key, most arguments): the loop's first case, here
        # without the loop's set-up, which cost such a string as much as its check.
        return None, (_wire_text(obj) if wire and ('"' in obj or "\\" in obj)
                      else len(obj)) + _ITEM
    size = 0
    # (item, depth, the trail of its container, its step there): a container's own trail is
    # made only when it is reached, and a path only when a problem is found.
    stack: list[tuple[Any, int, Any, Any]] = [(obj, 0, None, None)]
    while stack:
        item, depth, trail, step = stack.pop()
        kind = type(item)
        if kind is str:
            # Short printable ASCII (not NUL-led, no surrogates, within every limit) needs
            # no check, and with nothing to escape its size is its length; anything else is
            # checked below. Sizes on the wire are _wire_text's, the one rule for strings.
            if len(item) < _SCAN_COPY and item.isascii() and item.isprintable():
                size += (_wire_text(item) if wire and ('"' in item or "\\" in item)
                         else len(item)) + _ITEM
                continue
            if item[:1] == "\0":
                return Problem(_path(path, trail, step), "a string may not begin with NUL "
                               "(WAMP-JSON reads it as bytes)"), size
            if item.isascii():  # no surrogates, one byte a character
                utf8 = len(item)
            else:
                try:
                    utf8 = len(item.encode("utf-8"))
                except UnicodeEncodeError:
                    return Problem(_path(path, trail, step), "a string with unpaired "
                                   "surrogates is not Unicode text"), size
            if utf8 > MAX_BLOB_BYTES:
                return Problem(_path(path, trail, step), f"a string of {utf8} bytes is over "
                               f"{MAX_BLOB_BYTES}", too_large=True), size
            size += (_wire_text(item) if wire else utf8) + _ITEM
        elif kind is dict or kind is list:
            if depth >= max_depth:
                return Problem(_path(path, trail, step),
                               f"nested deeper than {max_depth} levels"), size
            size += _ITEM * (1 + len(item))
            here = (trail, step)
            below = depth + 1
            if kind is list:
                for i, child in enumerate(item):
                    stack.append((child, below, here, i))
                continue
            for key, child in item.items():
                if type(key) is not str and not isinstance(key, str) or key[:1] == "\0":
                    return Problem(_path(path, trail, step), f"map key {key!r:.40} is not a "
                                   "string that every serializer carries"), size
                stack.append((child, below, here, key))
                stack.append((key, below, here, key))  # checked and counted as a string
        elif kind is int:
            if not INT64_MIN <= item <= int_max:
                shown_int = item if item.bit_length() < 128 else f"of {item.bit_length()} bits"
                return Problem(_path(path, trail, step), f"integer {shown_int} is outside "
                               f"{'int64' if int_max == INT64_MAX else 'uint64'}"), size
            size += _ITEM
        elif item is None or kind is bool:
            size += _ITEM
        elif kind is float:
            if not math.isfinite(item):
                return Problem(_path(path, trail, step), f"{item} is not a finite number"), size
            size += _ITEM
        elif kind is bytes:
            if len(item) > MAX_BLOB_BYTES:
                return Problem(_path(path, trail, step), f"{len(item)} bytes are over "
                               f"{MAX_BLOB_BYTES}", too_large=True), size
            # _wire_text's base64 rule, inline: a call here cost a binary row 6 % more.
            size += (len(item) * 4 // 3 + 4 if wire else len(item)) + _ITEM
        elif isinstance(item, bool):
            size += _ITEM
        else:
            plain = _plain(item)
            if plain is None:
                return Problem(_path(path, trail, step), f"{type(item).__name__} is not a "
                               "WAMP payload type"), size
            stack.append((plain, depth, trail, step))
    return None, size


def problem(obj: Any, max_depth: int = MAX_DEPTH, path: str = "",
            int_max: int = INT64_MAX) -> Problem | None:
    """The first reason ``obj`` breaks the payload policy, or None (``inspect``)."""
    return inspect(obj, max_depth, path, int_max, wire=False)[0]




def _wire_text(item: str | bytes | bytearray) -> int:
    """An upper bound of a string's bytes on the costliest serializer: WAMP-JSON carries bytes
    as base64 (4/3) and may escape a control or non-ASCII character as ``\\uXXXX`` (6)."""
    if not isinstance(item, str):
        return len(item) * 4 // 3 + 4
    if not item.isascii():
        return 6 * len(item)
    if len(item) < _SCAN_COPY and item.isprintable():  # only '"' and '\\' are escaped
        return len(item) + 5 * (item.count('"') + item.count("\\"))
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
