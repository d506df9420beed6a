"""The payload policy's one walk (``procedures.payload.inspect``): what it finds and the size it
counts are what the separate definitions say, for any payload, so scans can take each row's
size from the check that decodes it (issue #17: the second walk was a fifth of a scan's CPU)."""

from __future__ import annotations

import math
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st

from procedures.payload import INT64_MAX, MAX_BLOB_BYTES, UINT64_MAX, inspect, payload_size, problem
from procedures.table import Table
from txetcd.types import KeyValue

LEAVES = (st.none() | st.booleans() | st.integers(min_value=-(2**64), max_value=2**65)
          | st.floats(allow_nan=True, allow_infinity=True) | st.text() | st.binary()
          | st.sampled_from(["\0x", "a\x01\"\\", "é€𝄞", "\ud800", "x" * 5000 + "\n"]))
PAYLOADS = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=6) | st.sampled_from(["\0k", "\udc00"]),
                                          inner, max_size=4), max_leaves=25)


@settings(max_examples=600, deadline=None)
@given(PAYLOADS, st.integers(min_value=0, max_value=6))
def test_the_size_is_payload_size_wherever_nothing_is_wrong(payload: Any, depth: int) -> None:
    found, size = inspect(payload, depth, int_max=UINT64_MAX)
    assert found == problem(payload, depth, int_max=UINT64_MAX)
    if found is None:
        assert size == payload_size(payload, wire=True)


def test_each_problem_is_named_at_its_place() -> None:
    cases: list[tuple[Any, str, str]] = [
        ({"a": [1, {"b": "\0x"}]}, "a[1].b", "may not begin with NUL"),
        ([0, [2**63]], "[1][0]", "outside int64"),
        ({"f": [1.0, math.inf]}, "f[1]", "not a finite number"),
        ({"k": {"\0k": 1}}, "k", "map key"),
        ({"\udc00": 1}, "\udc00", "unpaired surrogates"),
        ([[["deep"]]], "[0][0]", "nested deeper than 2"),
        ({"t": (1, 2)}, "t", "tuple is not a WAMP payload type"),
        ("x" * (MAX_BLOB_BYTES + 1), "", "over"),
        ({"b": b"\0" * (MAX_BLOB_BYTES + 1)}, "b", "over"),
    ]
    for payload, path, words in cases:
        found = problem(payload, 2 if path == "[0][0]" else 64)
        assert found is not None, payload
        assert found.path == path and words in found.message, (found, path, words)
    assert problem(2**63, int_max=UINT64_MAX) is None and problem(2**63) is not None
    assert problem(INT64_MAX) is None
    big = inspect("x" * (MAX_BLOB_BYTES + 1))[0]
    assert big is not None and big.too_large


def test_a_scan_row_is_sized_by_the_walk_that_checks_it() -> None:
    table = Table("settings", 2, "string", "cbor", client=cast(Any, None))  # no etcd needed
    key = table.etcd_key("k\"1")
    value = {"name": "n\n" * 50, "blob": b"b" * 99, "n": [1, 2.5, None, True]}
    stored = table.values.encode(value)
    row, size = table.sized_kv(KeyValue(key, stored))
    assert row == ["k\"1", value] and size == payload_size(row, wire=True)
    only_key, key_size = table.sized_key(KeyValue(key))
    assert only_key == "k\"1" and key_size == payload_size(only_key, wire=True)
    marker, marker_size = table.sized_kv(KeyValue(key, b"\xff\xfe not cbor"))
    assert "corrupt_row" in marker and marker_size == payload_size(marker, wire=True)
