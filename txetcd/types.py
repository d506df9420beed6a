"""Immutable, typed results decoded from the gateway's JSON.

The gateway omits every field that holds its proto default and sends int64 as strings, so each
decoder fills defaults (0, False, b"", []) and converts to int; a missing field never becomes
None. Keys come back with the client's namespace stripped.

A batched txn's answer (``TxnAnswer``, ``decode_txn_answer``) is decoded by msgspec straight
into these types, in C: base64 and the int strings included, no dict per field, and the fields
no result keeps (each op's own header) skipped unread. Every other answer goes through
``json`` and the ``from_json`` decoders.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass, field, replace
from typing import Any, TypeGuard

import msgspec

__all__ = [
    "Header", "KeyValue", "Range", "Revision", "Deleted", "Status", "Member", "TxnResult",
    "Success", "KeySet", "b64", "b64_bytes", "unb64", "to_int", "strip_namespace", "prefix_end",
    "TxnAnswer", "OpAnswer", "decode_txn_answer",
]

Json = dict[str, Any]


# binascii directly: base64's wrappers re-check their arguments on every key and value.
def b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def b64_bytes(data: bytes) -> bytes:
    """``b64`` as bytes, for request bodies built as bytes."""
    return binascii.b2a_base64(data, newline=False)


def unb64(text: str | None) -> bytes:
    return binascii.a2b_base64(text) if text else b""


def is_int(value: object) -> TypeGuard[int]:
    """An int that is not a bool: ``True`` is an int to Python but never a count, revision,
    limit or id to us. The one check every layer uses for its int arguments."""
    return isinstance(value, int) and not isinstance(value, bool)


def to_int(value: Any) -> int:
    return int(value) if value is not None else 0


def strip_namespace(key: bytes, namespace: bytes) -> bytes:
    return key[len(namespace):] if namespace and key.startswith(namespace) else key


@dataclass(frozen=True, slots=True)
class Header:
    """Response header: which member answered, at which store revision and raft term."""

    cluster_id: int = 0
    member_id: int = 0
    revision: int = 0
    raft_term: int = 0

    @classmethod
    def from_json(cls, obj: Json | Header | None) -> Header:
        if isinstance(obj, Header):  # decoded once for all the ops of a batched txn
            return obj
        get = (obj or {}).get  # once per answer: to_int inlined
        return cls(int(get("cluster_id") or 0), int(get("member_id") or 0),
                   int(get("revision") or 0), int(get("raft_term") or 0))


@dataclass(frozen=True, slots=True)
class KeyValue:
    """A key with its value and MVCC metadata; ``lease`` is 0 when the key has none."""

    key: bytes
    value: bytes = b""
    version: int = 0
    create_revision: int = 0
    mod_revision: int = 0
    lease: int = 0

    @classmethod
    def from_json(cls, obj: Json, namespace: bytes = b"") -> KeyValue:
        # Once per key of every lone read, scan page and watch event (a batched read's kvs come
        # from decode_txn_answer): the helpers (unb64, to_int,
        # strip_namespace) inlined, and the fields filled in as parts (see _parts_of). The
        # fields etcd leaves out when zero (a lease, mostly) cost no int() call.
        get = obj.get
        key = get("key")
        key = _a2b(key) if key else b""
        if namespace and key.startswith(namespace):
            key = key[len(namespace):]
        value = get("value")
        kv = _KeyValueParts()
        kv.key = key
        kv.value = _a2b(value) if value else b""
        number = get("version")
        kv.version = int(number) if number else 0
        number = get("create_revision")
        kv.create_revision = int(number) if number else 0
        number = get("mod_revision")
        kv.mod_revision = int(number) if number else 0
        number = get("lease")
        kv.lease = int(number) if number else 0
        kv.__class__ = cls
        return kv


_a2b = binascii.a2b_base64


def _parts_of(cls: type) -> Any:
    """A plain class with the slots of the frozen slots dataclass ``cls``: its instance is
    filled by plain attribute stores, then becomes a ``cls`` by ``__class__`` assignment (the
    layouts are the same). Results decoded once per key are built so: the frozen ``__init__``
    calls ``object.__setattr__`` per field, 2.5x slower, and even the slots' own setters
    pack their arguments in a tuple per field, 25 % slower."""
    return type(f"_{cls.__name__}Parts", (), {"__slots__": cls.__slots__})  # type: ignore[attr-defined]


_KeyValueParts = _parts_of(KeyValue)


@dataclass(frozen=True, slots=True)
class Range:
    """Result of a range read: the matching kvs, the total ``count`` and whether ``more`` exist."""

    kvs: list[KeyValue]
    header: Header
    count: int = 0
    more: bool = False

    @classmethod
    def from_json(cls, obj: Json, namespace: bytes = b"") -> Range:
        return cls.from_txn(obj, Header.from_json(obj.get("header")), namespace)

    @classmethod
    def from_txn(cls, obj: Json, header: Header, namespace: bytes = b"") -> Range:
        """The range answered with ``header`` (a txn's, for each of its reads)."""
        kvs, count = obj.get("kvs"), obj.get("count")
        if not kvs:
            kvs = []
        elif len(kvs) == 1:  # a get of one key: no comprehension to call
            kvs = [KeyValue.from_json(kvs[0], namespace)]
        else:
            kvs = [KeyValue.from_json(kv, namespace) for kv in kvs]
        return cls.of(header, kvs, int(count) if count else 0, "more" in obj and bool(obj["more"]))

    @classmethod
    def of(cls, header: Header, kvs: list[KeyValue], count: int, more: bool) -> Range:
        """A ``Range`` built from its parts (as ``KeyValue.from_json``): once per batched get."""
        found = _RangeParts()
        found.kvs, found.header, found.count, found.more = kvs, header, count, more
        found.__class__ = cls
        return found

    def __len__(self) -> int:
        return len(self.kvs)

    def __iter__(self) -> Any:
        return iter(self.kvs)


_RangeParts = _parts_of(Range)


@dataclass(frozen=True, slots=True)
class Revision:
    """Result of a put: the new store revision in ``header`` and the previous kv if asked."""

    header: Header
    previous: KeyValue | None = None

    @property
    def revision(self) -> int:
        return self.header.revision

    @classmethod
    def from_json(cls, obj: Json, namespace: bytes = b"") -> Revision:
        prev = obj.get("prev_kv")
        return cls(Header.from_json(obj.get("header")),
                   KeyValue.from_json(prev, namespace) if prev else None)


@dataclass(frozen=True, slots=True)
class Deleted:
    """Result of a delete: how many keys went, and their previous kvs if asked."""

    deleted: int
    header: Header
    previous: list[KeyValue] = field(default_factory=list)

    @classmethod
    def from_json(cls, obj: Json, namespace: bytes = b"") -> Deleted:
        return cls(to_int(obj.get("deleted")), Header.from_json(obj.get("header")),
                   [KeyValue.from_json(kv, namespace) for kv in obj.get("prev_kvs", ())])


@dataclass(frozen=True, slots=True)
class TxnResult:
    """Result of a txn: which branch ran and one typed result per op of that branch."""

    succeeded: bool
    header: Header
    responses: list[Range | Revision | Deleted | TxnResult]

    @classmethod
    def from_json(cls, obj: Json, namespace: bytes = b"") -> TxnResult:
        return cls(bool(obj.get("succeeded", False)), Header.from_json(obj.get("header")),
                   [_op_response(r, namespace) for r in obj.get("responses", ())])


@dataclass(frozen=True, slots=True)
class Success:
    """A txn whose compares held (txaioetcd's return value of ``submit``)."""

    header: Header
    responses: list[Range | Revision | Deleted | TxnResult]


def _op_response(obj: Json, namespace: bytes) -> Range | Revision | Deleted | TxnResult:
    if "response_range" in obj:
        return Range.from_json(obj["response_range"], namespace)
    if "response_put" in obj:
        return Revision.from_json(obj["response_put"], namespace)
    if "response_delete_range" in obj:
        return Deleted.from_json(obj["response_delete_range"], namespace)
    if "response_txn" in obj:
        return TxnResult.from_json(obj["response_txn"], namespace)
    # An op whose response holds only defaults is serialised as an empty object.
    return Range([], Header())


# -- a batched txn's answer, decoded by msgspec ---------------------------------------------------

def _in_namespace(kvs: list[KeyValue], namespace: bytes) -> list[KeyValue]:
    """``kvs`` with the client's namespace stripped from their keys."""
    if not namespace:
        return kvs
    return [replace(kv, key=strip_namespace(kv.key, namespace)) for kv in kvs]


class _RangeAnswer(msgspec.Struct, gc=False):
    kvs: list[KeyValue] = []
    count: int = 0
    more: bool = False


class _PutAnswer(msgspec.Struct, gc=False):
    prev_kv: KeyValue | None = None


class _DeleteAnswer(msgspec.Struct, gc=False):
    deleted: int = 0
    prev_kvs: list[KeyValue] = []


class OpAnswer(msgspec.Struct, gc=False):
    """One op's entry in a txn's answer: the gateway sets the field of the op's kind (none, for
    an answer that holds only defaults). Each op's own header is left unread: a batched op's
    result carries the txn's."""

    response_range: _RangeAnswer | None = None
    response_put: _PutAnswer | None = None
    response_delete_range: _DeleteAnswer | None = None

    def as_range(self, header: Header, namespace: bytes) -> Range:
        found = self.response_range
        if found is None:
            return Range.of(header, [], 0, False)
        return Range.of(header, _in_namespace(found.kvs, namespace), found.count, found.more)

    def as_revision(self, header: Header, namespace: bytes) -> Revision:
        put = self.response_put
        if put is None or put.prev_kv is None:
            return Revision(header)
        return Revision(header, _in_namespace([put.prev_kv], namespace)[0])

    def as_deleted(self, header: Header, namespace: bytes) -> Deleted:
        gone = self.response_delete_range
        if gone is None:
            return Deleted(0, header)
        return Deleted(gone.deleted, header, _in_namespace(gone.prev_kvs, namespace))


class TxnAnswer(msgspec.Struct, gc=False):
    """A txn's answer, as the batcher reads it (``decode_txn_answer``)."""

    header: Header = Header()
    succeeded: bool = False
    responses: list[OpAnswer] = []


# Not strict: the gateway sends int64 fields as strings, which msgspec then reads as ints.
_decode_txn_answer = msgspec.json.Decoder(TxnAnswer, strict=False).decode


def decode_txn_answer(body: bytes) -> TxnAnswer:
    """A txn's answer, decoded in one C call; ``ValueError`` if it is not one."""
    try:
        return _decode_txn_answer(body)
    except msgspec.DecodeError as exc:
        raise ValueError(str(exc)) from None


@dataclass(frozen=True, slots=True)
class Status:
    """A member's status: server version, db size, leader and raft position."""

    version: str
    db_size: int
    leader: int
    header: Header
    raft_term: int
    raft_index: int
    raft_applied_index: int = 0
    db_size_in_use: int = 0
    is_learner: bool = False
    errors: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, obj: Json) -> Status:
        return cls(
            str(obj.get("version", "")), to_int(obj.get("dbSize")), to_int(obj.get("leader")),
            Header.from_json(obj.get("header")), to_int(obj.get("raftTerm")),
            to_int(obj.get("raftIndex")), to_int(obj.get("raftAppliedIndex")),
            to_int(obj.get("dbSizeInUse")), bool(obj.get("isLearner", False)),
            list(obj.get("errors", ())),
        )


@dataclass(frozen=True, slots=True)
class Member:
    """A cluster member as listed by ``member_list``."""

    id: int
    name: str
    peer_urls: list[str]
    client_urls: list[str]
    is_learner: bool = False

    @classmethod
    def from_json(cls, obj: Json) -> Member:
        return cls(to_int(obj.get("ID")), str(obj.get("name", "")), list(obj.get("peerURLs", ())),
                   list(obj.get("clientURLs", ())), bool(obj.get("isLearner", False)))


def prefix_end(prefix: bytes) -> bytes:
    """The range end covering every key that starts with ``prefix`` (Go's ``getPrefix``).

    Trailing 0xFF bytes cannot be incremented, so they are dropped first; a prefix that is empty
    or all 0xFF has no upper bound, which etcd spells ``b"\\0"``.
    """
    end = bytearray(prefix.rstrip(b"\xff"))
    if not end:
        return b"\0"
    end[-1] += 1
    return bytes(end)


class KeySet:
    """A single key, a key range ``[key, range_end)`` or every key with a prefix.

    ``KeySet(b"\\0", range_end=b"\\0")`` is every key; ``range_end=b"\\0"`` alone means "every
    key >= key".
    """

    __slots__ = ("key", "range_end", "prefix", "type")

    _SINGLE, _RANGE, _PREFIX = "single", "range", "prefix"

    def __init__(self, key: bytes, range_end: bytes | None = None,
                 prefix: bool | None = None) -> None:
        _require_bytes("key", key)
        if range_end is not None:
            _require_bytes("range_end", range_end)
        if prefix is not None and not isinstance(prefix, bool):
            raise TypeError(f"prefix must be bool, not {type(prefix).__name__}")
        if prefix and range_end:
            raise ValueError("a KeySet takes either range_end or prefix=True, not both")
        self.key = key
        self.prefix = bool(prefix)
        self.range_end = prefix_end(key) if prefix else (range_end or b"")
        self.type = self._PREFIX if prefix else self._RANGE if range_end else self._SINGLE

    @classmethod
    def all(cls) -> KeySet:
        return cls(b"\0", range_end=b"\0")

    @classmethod
    def single(cls, key: bytes) -> KeySet:
        """The single ``key``, which the caller checked is non-empty bytes (the reads' hot
        path: no argument checks again)."""
        keys = cls.__new__(cls)
        keys.key, keys.range_end, keys.prefix, keys.type = key, b"", False, cls._SINGLE
        return keys

    def namespaced(self, namespace: bytes) -> tuple[bytes, bytes]:
        """``(key, range_end)`` with ``namespace`` applied, keeping the range inside it."""
        if not namespace:
            # etcd rejects an empty key; b"\0" is the first key there is.
            return self.key or b"\0", self.range_end
        key = namespace + self.key
        if self.range_end == b"\0":
            # "to the end of the keyspace" becomes "to the end of the namespace".
            return key, prefix_end(namespace)
        return key, (namespace + self.range_end if self.range_end else b"")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KeySet) and (self.key, self.range_end) == (
            other.key, other.range_end)

    def __hash__(self) -> int:
        return hash((self.key, self.range_end))

    def __repr__(self) -> str:
        return f"KeySet(key={self.key!r}, range_end={self.range_end!r}, type={self.type})"


def _require_bytes(name: str, value: object) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes, not {type(value).__name__}")


_strip = strip_namespace  # the old private name, until lease/watch/concurrency move over
