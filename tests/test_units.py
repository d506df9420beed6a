"""Pure units of the client core: prefix math, stream framing, error classification."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from txetcd import (
    AuthFailed,
    Compacted,
    DuplicateKey,
    EtcdError,
    FutureRevision,
    InvalidAuthToken,
    KeySet,
    LeaseNotFound,
    NoSpace,
    PermissionDenied,
    ProtocolError,
    RequestTooLarge,
    Timeout,
    TooManyOps,
    TooManyRequests,
    Unavailable,
    UnsupportedServer,
    prefix_end,
)
from txetcd.core import decode_json, decode_reply, plan_batches, plan_batches_by_rules
from txetcd.errors import classify
from txetcd.op import OpDel, OpGet, OpSet
from txetcd.stream import JsonStreamParser
from txetcd.transport import api_prefix
from txetcd.types import Header, KeyValue, Range, b64


@given(st.binary(max_size=12))
def test_prefix_end_bounds_exactly_the_prefixed_keys(prefix: bytes) -> None:
    end = prefix_end(prefix)
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        assert end == b"\0"  # no upper bound
        return
    assert end > prefix and not end.startswith(prefix)
    assert len(end) == len(stripped)


@given(st.binary(min_size=1, max_size=8), st.binary(max_size=8))
def test_every_key_with_the_prefix_is_inside(prefix: bytes, suffix: bytes) -> None:
    end = prefix_end(prefix)
    key = prefix + suffix
    assert key >= prefix and (end == b"\0" or key < end)


@given(st.binary(min_size=1, max_size=8), st.binary(min_size=1, max_size=8))
def test_keys_without_the_prefix_are_outside(prefix: bytes, other: bytes) -> None:
    end = prefix_end(prefix)
    if other.startswith(prefix):
        return
    assert other < prefix or (end != b"\0" and other >= end)


def test_prefix_end_examples() -> None:
    assert prefix_end(b"a") == b"b"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"a\xfe") == b"a\xff"
    assert prefix_end(b"\xff\xff") == b"\0"
    assert prefix_end(b"") == b"\0"
    assert KeySet(b"ab\xff", prefix=True).range_end == b"ac"


def test_namespace_applies_inside_keysets() -> None:
    assert KeySet.all().namespaced(b"app/") == (b"app/\0", b"app0")
    assert KeySet(b"x", prefix=True).namespaced(b"app/") == (b"app/x", b"app/y")
    assert KeySet(b"x").namespaced(b"app/") == (b"app/x", b"")
    assert KeySet(b"", prefix=True).namespaced(b"\xff") == (b"\xff", b"\0")


def test_api_prefix_by_version() -> None:
    assert api_prefix("3.5.1") == "/v3"
    assert api_prefix("3.4.23") == "/v3"
    assert api_prefix("3.6.0-rc.1") == "/v3"
    assert api_prefix("3.3.27") == "/v3beta"
    with pytest.raises(UnsupportedServer, match="too old"):
        api_prefix("3.2.32")


FRAMES = [
    {"result": {"header": {"revision": "5"}, "created": True}},
    {"result": {"events": [{"kv": {"key": "YQ==", "value": "x" * 70000}}]}},
    {"result": {"events": [{"type": "DELETE", "kv": {"key": "YQ=="}}]}},
]


@given(st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=60))
def test_parser_survives_any_read_boundaries(cuts: list[int]) -> None:
    data = b"".join(json.dumps(f).encode() + b"\n" for f in FRAMES)
    parser = JsonStreamParser()
    got, pos = [], 0
    for cut in cuts:
        got += parser.feed(data[pos:pos + cut])
        pos += cut
    got += parser.feed(data[pos:])
    parser.close()
    assert got == FRAMES


def test_parser_edge_frames() -> None:
    parser = JsonStreamParser()
    assert parser.feed(b"\n") == []
    assert parser.feed(b'{"result":{}}{"result":{"a":1}}\n\n') == [{"result": {}},
                                                                   {"result": {"a": 1}}]
    # 3.4/3.5 end a stream with an error frame that has no newline.
    tail = b'{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader"}}'
    assert parser.feed(tail) == [json.loads(tail)]
    parser.close()
    utf8 = '{"result":{"m":"\u00e9\u4e2d"}}'.encode()
    split = JsonStreamParser()
    assert split.feed(utf8[:17]) == [] and split.feed(utf8[17:]) == [json.loads(utf8)]
    truncated = JsonStreamParser()
    truncated.feed(b'{"result":{"events":[')
    with pytest.raises(ProtocolError):
        truncated.close()


@pytest.mark.parametrize("status,message,expected", [
    (400, "etcdserver: mvcc: required revision has been compacted", Compacted),
    (400, "etcdserver: mvcc: required revision is a future revision", FutureRevision),
    (400, "etcdserver: too many operations in txn request", TooManyOps),
    (400, "etcdserver: request is too large", RequestTooLarge),
    (429, "grpc: received message larger than max (2000000 vs. 2097152)", RequestTooLarge),
    (400, "etcdserver: duplicate key given in txn request", DuplicateKey),
    (404, "etcdserver: requested lease not found", LeaseNotFound),
    (403, "etcdserver: permission denied", PermissionDenied),
    (400, "etcdserver: authentication failed, invalid user ID or password", AuthFailed),
    (401, "etcdserver: invalid auth token", InvalidAuthToken),
    (429, "etcdserver: mvcc: database space exceeded", NoSpace),
    (429, "etcdserver: too many requests", TooManyRequests),
    (503, "etcdserver: no leader", Unavailable),
    (503, "etcdserver: request timed out", Timeout),
    (500, "something new", EtcdError),
])
def test_classify_v1_and_v2_bodies(status: int, message: str, expected: type) -> None:
    v1 = json.dumps({"error": message, "message": message, "code": 3}).encode()
    v2 = json.dumps({"code": 3, "message": message, "details": []}).encode()
    for body in (v1, v2):
        error = classify(status, body)
        assert type(error) is expected and error.message == message and error.status == status


def test_classify_stream_frames_and_plain_text() -> None:
    frame = {"error": {"grpc_code": 14, "http_code": 503, "message": "etcdserver: no leader",
                       "http_status": "Service Unavailable"}}
    error = classify(0, frame)
    assert isinstance(error, Unavailable) and error.status == 503 and error.code == 14
    v2_frame = {"error": {"code": 9, "message": "etcdserver: mvcc: required revision has been "
                                                "compacted", "details": []}}
    assert isinstance(classify(0, v2_frame), Compacted)
    plain = classify(404, b"404 page not found\n")
    assert plain.message == "404 page not found" and plain.status == 404


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12)


@given(_JSON, st.sampled_from([(",", ":"), (", ", ": ")]), st.sampled_from(["", " ", "\n"]),
       st.booleans())
def test_answers_decode_as_json_loads_decodes_them(value: object, separators: tuple[str, str],
                                                    around: str, ascii_only: bool) -> None:
    body = (around + json.dumps(value, separators=separators, ensure_ascii=ascii_only)
            + around).encode()
    assert decode_json(body) == json.loads(body)


@pytest.mark.parametrize("body", [b"", b"{", b"{}x", b"{} {}", b"\xff{}", b"nul", b"{'a':1}"])
def test_what_is_not_one_json_value_is_refused_as_json_loads_refuses_it(body: bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(body)
    with pytest.raises(ValueError):
        decode_json(body)
    with pytest.raises(ProtocolError):
        decode_reply("kv/range", 200, body)


@given(st.binary(min_size=1, max_size=40), st.binary(max_size=200),
       st.lists(st.integers(min_value=0, max_value=2**63 - 1), min_size=4, max_size=4),
       st.sampled_from([b"", b"ns/"]))
def test_key_values_decode_to_what_their_constructor_builds(key: bytes, value: bytes,
                                                             numbers: list[int],
                                                             namespace: bytes) -> None:
    # from_json sets the slots itself (faster than the frozen __init__): the result must be
    # the same frozen, hashable, equal value, with the namespace stripped.
    version, created, modified, lease = numbers
    fields = {"key": b64(namespace + key), "value": b64(value), "version": str(version),
              "create_revision": str(created), "mod_revision": str(modified),
              "lease": str(lease)}
    # The gateway leaves out what holds its default (0, b"").
    sent = {name: text for name, text in fields.items() if text not in ("", "0")}
    decoded = KeyValue.from_json(sent, namespace)
    built = KeyValue(key, value, version, created, modified, lease)
    assert decoded == built
    assert repr(decoded) == repr(built)
    assert hash(decoded) == hash(built)
    with pytest.raises(AttributeError):
        decoded.key = b"other"  # type: ignore[misc]


@given(st.lists(st.binary(min_size=1, max_size=20), max_size=3),
       st.integers(min_value=0, max_value=2**40), st.booleans())
def test_ranges_decode_to_what_their_constructor_builds(keys: list[bytes], count: int,
                                                         more: bool) -> None:
    answer: dict[str, object] = {"header": {"revision": "7", "member_id": "3"}}
    if keys:
        answer["kvs"] = [{"key": b64(key), "value": b64(b"v"), "mod_revision": "5"}
                         for key in keys]
    if count:
        answer["count"] = str(count)
    if more:
        answer["more"] = True
    decoded = Range.from_json(answer)
    built = Range([KeyValue(key, b"v", mod_revision=5) for key in keys],
                  Header(member_id=3, revision=7), count, more)
    assert decoded == built
    assert repr(decoded) == repr(built)
    with pytest.raises(AttributeError):
        decoded.count = 0  # type: ignore[misc]


@given(st.binary(min_size=1, max_size=200), st.binary(max_size=8))
def test_a_plain_read_built_on_the_hot_path_is_the_read_the_constructor_builds(
        key: bytes, namespace: bytes) -> None:
    fast, built = OpGet.one(key), OpGet(key)
    assert fast.request(namespace) == built.request(namespace)
    assert fast.request_bytes(namespace) == built.request_bytes(namespace)
    assert fast.request_op(namespace) == built.request_op(namespace)
    assert (fast.wire_size, fast.size(), fast.serializable, fast.options) == (
        built.wire_size, built.size(), built.serializable, built.options)
    assert (fast.keyset(), fast.span()) == (built.keyset(), built.span())
    # The options a plain read shares are never those of a read with options.
    assert OpGet(key, limit=2).options == {"limit": 2}
    assert fast.options == {}


@given(st.binary(min_size=1, max_size=200), st.binary(max_size=300), st.binary(max_size=8))
def test_a_plain_put_built_on_the_hot_path_is_the_put_the_constructor_builds(
        key: bytes, value: bytes, namespace: bytes) -> None:
    fast, built = OpSet.plain_put(key, value), OpSet(key, value)
    assert fast.request(namespace) == built.request(namespace)
    assert fast.request_bytes(namespace) == built.request_bytes(namespace)
    assert fast.request_op(namespace) == built.request_op(namespace)
    assert [getattr(fast, name) for name in OpSet.__slots__] == [
        getattr(built, name) for name in OpSet.__slots__]


@pytest.mark.parametrize(("key", "value"), [("k", b"v"), (b"", b"v"), (b"k", "v"),
                                            (KeySet(b"k"), b"v"), (b"k", None)])
def test_a_plain_put_checks_its_arguments_as_the_constructor(key: object, value: object) -> None:
    with pytest.raises((TypeError, ValueError)) as built:
        OpSet(key, value)  # type: ignore[arg-type]
    with pytest.raises(built.type, match=str(built.value)):
        OpSet.plain_put(key, value)  # type: ignore[arg-type]


_KEYS = st.sampled_from([b"a", b"b", b"c", b"d", b"e", b"f"])
_PUTS = st.builds(OpSet.plain_put, _KEYS, st.binary(max_size=40))
_GETS = st.builds(OpGet.one, _KEYS)
_OPS_OF_A_TURN = st.one_of(st.lists(_PUTS, max_size=8), st.lists(_GETS, max_size=8),
                           st.lists(_PUTS | _GETS | st.builds(OpDel, _KEYS), max_size=8))


@settings(max_examples=1000)  # about 1 ms each; the limits' edges are narrow
@given(_OPS_OF_A_TURN, st.integers(-2, 2), st.integers(-30, 30))
def test_the_shortcut_for_a_common_batch_plans_what_the_rules_plan(
        ops: list, ops_slack: int, bytes_slack: int) -> None:
    """Gets only, or puts of distinct keys only, within the limits, are planned as one txn
    without looking at each op; any turn gets the plan the rules give it (a key put twice,
    a delete, reads beside writes, one op or a few bytes too many)."""
    max_ops = max(1, len(ops) + ops_slack)
    max_bytes = 16 + sum(op.wire_size + 4 for op in ops) + bytes_slack  # near the whole turn
    assert plan_batches(ops, max_ops, max_bytes) == plan_batches_by_rules(ops, max_ops, max_bytes)
