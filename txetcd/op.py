"""Operations and compares, shared by single requests and transactions (as Go's ``clientv3.Op``).

An ``Op`` knows its gateway path, how to encode itself as a request (with a key namespace
applied) and how to decode its response. ``Client.get/set/delete`` send one op alone;
``Transaction`` sends many in one atomic request. All arguments are checked when the op is built,
so bad input raises ``TypeError``/``ValueError`` before anything is sent.
"""

from __future__ import annotations

import inspect
import json
from binascii import b2a_base64 as _b64  # types.b64_bytes without the call around it
from typing import Any, ClassVar

from .errors import LeaseNotGranted
from .types import (
    Deleted,
    Header,
    KeySet,
    OpAnswer,
    Range,
    Revision,
    TxnResult,
    b64,
    is_int,
)

__all__ = [
    "Op", "OpGet", "OpSet", "OpDel", "OpTxn", "Comp", "CompValue", "CompVersion", "CompCreated",
    "CompModified", "CompLease", "Transaction", "SORT_ORDERS", "SORT_TARGETS", "as_keyset",
    "int_arg",
]

Json = dict[str, Any]

_new = object.__new__
# The options of every plain read: one shared dict, never written (only __init__'s slow path
# fills options, each in a dict of its own).
_NO_OPTIONS: Json = {}

SORT_ORDERS = ("NONE", "ASCEND", "DESCEND")
SORT_TARGETS = ("KEY", "VERSION", "CREATE", "MOD", "VALUE")


def as_keyset(key: bytes | KeySet) -> KeySet:
    if isinstance(key, KeySet):
        return key
    if not isinstance(key, bytes):
        raise TypeError(f"key must be bytes or KeySet, not {type(key).__name__}")
    if not key:
        raise ValueError("key must not be empty")
    return KeySet(key)


def _keys(key: bytes | KeySet, range_end: bytes | None) -> KeySet:
    """The keys a read or delete is about: one key, a ``KeySet``, or ``[key, range_end)``."""
    if range_end is None:
        # A plain key (non-empty bytes) is the hot path of reads: checked here, once.
        return KeySet.single(key) if type(key) is bytes and key else as_keyset(key)
    return KeySet(key if isinstance(key, bytes) else as_keyset(key).key, range_end=range_end)


def int_arg(name: str, value: Any, minimum: int = 0) -> int:
    # bool is an int subclass; revision=True is a bug, not revision 1.
    if not is_int(value):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, not {value}")
    return value


def _enum_arg(name: str, value: str | None, allowed: tuple[str, ...]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value.upper() not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    return value.upper()


def _key_fields(keys: KeySet, namespace: bytes) -> Json:
    key, range_end = keys.namespaced(namespace)
    obj = {"key": b64(key)}
    if range_end:
        obj["range_end"] = b64(range_end)
    return obj


def _proto_bytes(*fields: bytes) -> int:
    # tag + length varint + payload, the way protobuf sizes a bytes field
    total = 0
    for field in fields:
        if field:
            size = len(field)
            total += size + 2 + (size > 127) + (size > 16383)
    return total


class Op:
    """One KV operation: a read (``OpGet``), write (``OpSet``/``OpDel``) or nested ``OpTxn``."""

    # Gets, puts and deletes are made per call, so they keep their fields in slots (no dict to
    # make and for the garbage collector to track).
    __slots__ = ()

    path: ClassVar[str]
    request_name: ClassVar[str]
    is_write: ClassVar[bool] = True
    #: A read a member may answer from its own state (not linearizable); only gets can be.
    serializable: bool = False
    #: ``size()`` of a get, put or delete, computed when it is built: the size check and the
    #: batcher read it for every op, without a call.
    wire_size: int

    def request(self, namespace: bytes = b"") -> Json:
        raise NotImplementedError

    def request_bytes(self, namespace: bytes = b"") -> bytes:
        """``request`` encoded as the JSON body of the op's own gateway request."""
        return json.dumps(self.request(namespace), separators=(",", ":")).encode()

    def request_op(self, namespace: bytes = b"") -> bytes:
        """The op as one JSON ``RequestOp`` of a txn (``{"request_put": {...}}``), as bytes:
        a batch's body is these joined, with no dict per op and no ``json.dumps`` of them."""
        return b'{"%s":%s}' % (self.request_name.encode(), self.request_bytes(namespace))

    def result(self, obj: Json, namespace: bytes = b"") -> Any:
        raise NotImplementedError

    def txn_result(self, answer: OpAnswer, header: Header, namespace: bytes = b"") -> Any:
        """The result from its entry in a batched txn's answer, whose ``header`` is the txn's
        (gets, puts and deletes are batched)."""
        raise NotImplementedError(f"{type(self).__name__} is not batched")

    def size(self) -> int:
        """An estimate of the op's protobuf size, for the request-size check."""
        return self.wire_size

    def keyset(self) -> KeySet | None:
        return None

    def span(self) -> tuple[bytes, bytes]:
        """``(key, range_end)`` of the keys the op touches (namespace not applied)."""
        raise NotImplementedError


class OpGet(Op):
    """A range read with every option of etcd's ``RangeRequest``."""

    __slots__ = ("keys", "options", "serializable", "wire_size")

    path = "kv/range"
    request_name = "request_range"
    is_write = False

    def __init__(self, key: bytes | KeySet, range_end: bytes | None = None, *,
                 count_only: bool | None = None, keys_only: bool | None = None,
                 limit: int | None = None, revision: int | None = None,
                 serializable: bool | None = None, sort_order: str | None = None,
                 sort_target: str | None = None, min_mod_revision: int | None = None,
                 max_mod_revision: int | None = None, min_create_revision: int | None = None,
                 max_create_revision: int | None = None) -> None:
        if (range_end is count_only is keys_only is limit is revision is serializable
                is sort_order is sort_target is min_mod_revision is max_mod_revision
                is min_create_revision is max_create_revision is None
                and type(key) is bytes and key):
            self._of_key(key)  # a plain read of one key: nothing more to check
            return
        self.options: Json = {}
        self.serializable = bool(serializable)
        self.keys = _keys(key, range_end)
        for name, flag in (("count_only", count_only), ("keys_only", keys_only),
                           ("serializable", serializable)):
            if flag is not None:
                if not isinstance(flag, bool):
                    raise TypeError(f"{name} must be bool, not {type(flag).__name__}")
                if flag:
                    self.options[name] = True
        for name, number in (("limit", limit), ("revision", revision),
                             ("min_mod_revision", min_mod_revision),
                             ("max_mod_revision", max_mod_revision),
                             ("min_create_revision", min_create_revision),
                             ("max_create_revision", max_create_revision)):
            if number is not None and int_arg(name, number):
                self.options[name] = number
        order = _enum_arg("sort_order", sort_order, SORT_ORDERS)
        target = _enum_arg("sort_target", sort_target, SORT_TARGETS)
        if order and order != "NONE":
            self.options["sort_order"] = order
        if target and target != "KEY":
            self.options["sort_target"] = target
        self.wire_size = (_proto_bytes(self.keys.key, self.keys.range_end)
                          + 8 * len(self.options))

    @classmethod
    def one(cls, key: bytes | KeySet) -> OpGet:
        """A plain read of ``key``: the hot path of ``Client.get``, without the dozen options
        to pass (60 % of the op's cost); a key that is not non-empty bytes goes through
        ``__init__``'s checks."""
        if type(key) is bytes and key:
            op = _new(cls)
            op._of_key(key)
            return op
        return cls(key)

    def _of_key(self, key: bytes) -> None:
        self.keys = KeySet.single(key)
        self.options = _NO_OPTIONS
        self.serializable = False
        size = len(key)  # _proto_bytes, unrolled
        self.wire_size = size + 2 + (size > 127) + (size > 16383)

    def request(self, namespace: bytes = b"") -> Json:
        return {**_key_fields(self.keys, namespace), **self.options}

    def request_bytes(self, namespace: bytes = b"") -> bytes:
        if self.options or self.keys.range_end:
            return super().request_bytes(namespace)
        return b'{"key":"%s"}' % _b64(namespace + self.keys.key, newline=False)

    def request_op(self, namespace: bytes = b"") -> bytes:
        if self.options or self.keys.range_end:
            return super().request_op(namespace)
        return b'{"request_range":{"key":"%s"}}' % _b64(namespace + self.keys.key, newline=False)

    def result(self, obj: Json, namespace: bytes = b"") -> Range:
        return Range.from_json(obj, namespace)

    def txn_result(self, answer: OpAnswer, header: Header, namespace: bytes = b"") -> Range:
        return answer.as_range(header, namespace)

    def keyset(self) -> KeySet:
        return self.keys

    def span(self) -> tuple[bytes, bytes]:
        return self.keys.key, self.keys.range_end


class OpSet(Op):
    """A put; ``lease`` attaches the key to a lease, ``return_previous`` returns the old kv."""

    __slots__ = ("key", "value", "lease_object", "lease", "prev_kv", "ignore_value",
                 "ignore_lease", "plain", "wire_size")

    path = "kv/put"
    request_name = "request_put"

    def __init__(self, key: bytes, value: bytes, lease: Any = None,
                 return_previous: bool | None = None, *, prev_kv: bool | None = None,
                 ignore_value: bool = False, ignore_lease: bool = False) -> None:
        if (type(key) is bytes and key and type(value) is bytes and lease is None
                and not (return_previous or prev_kv or ignore_value or ignore_lease)):
            self._of_bytes(key, value)  # the common put: nothing else to check
            return
        if isinstance(key, KeySet) or not isinstance(key, bytes):
            raise TypeError(f"key must be bytes, not {type(key).__name__}")
        if not key:
            raise ValueError("key must not be empty")
        if not isinstance(value, bytes):
            raise TypeError(f"value must be bytes, not {type(value).__name__}")
        if ignore_value and value:
            raise ValueError("ignore_value=True keeps the stored value; pass value=b''")
        self.lease_object = lease if hasattr(lease, "id_for_write") else None
        # A Lease says itself whether a write may use it: granted, not revoked, not lost.
        lease_id = lease.id_for_write() if self.lease_object is not None else lease
        if self.lease_object is None and inspect.isawaitable(lease):  # not awaited/yielded
            raise LeaseNotGranted("pass the granted lease, not the Deferred of client.lease(): "
                                  "`lease = await client.lease(ttl)` (or `yield` it) first")
        self.key, self.value = key, value
        self.wire_size = self._wire_size(len(key), len(value))
        self.lease = int_arg("lease", lease_id) if lease_id is not None else 0
        self.prev_kv = bool(return_previous or prev_kv)
        self.ignore_value, self.ignore_lease = bool(ignore_value), bool(ignore_lease)
        self.plain = not (self.lease or self.prev_kv or self.ignore_value or self.ignore_lease)
        if self.ignore_lease and self.lease:
            raise ValueError("ignore_lease=True keeps the stored lease; do not pass one")

    @classmethod
    def plain_put(cls, key: bytes, value: bytes) -> OpSet:
        """A put with no lease and no flags: the hot path of ``Client.set``, without the
        keyword arguments to pass (40 % of the op's cost); other keys and values go through
        ``__init__``'s checks."""
        if type(key) is bytes and key and type(value) is bytes:
            op = _new(cls)
            op._of_bytes(key, value)
            return op
        return cls(key, value)

    def _of_bytes(self, key: bytes, value: bytes) -> None:
        self.key, self.value, self.lease_object, self.lease = key, value, None, 0
        self.prev_kv = self.ignore_value = self.ignore_lease = False
        self.plain = True
        self.wire_size = self._wire_size(len(key), len(value))

    def request(self, namespace: bytes = b"") -> Json:
        obj: Json = {"key": b64(namespace + self.key)}
        if self.value:
            obj["value"] = b64(self.value)
        if self.lease:
            obj["lease"] = self.lease
        for name in ("prev_kv", "ignore_value", "ignore_lease"):
            if getattr(self, name):
                obj[name] = True
        return obj

    def request_bytes(self, namespace: bytes = b"") -> bytes:
        if not self.plain:
            return super().request_bytes(namespace)
        # The common put, written directly: base64 needs no JSON escaping.
        return b'{"key":"%s","value":"%s"}' % (_b64(namespace + self.key, newline=False),
                                                _b64(self.value, newline=False))

    def request_op(self, namespace: bytes = b"") -> bytes:
        if not self.plain:
            return super().request_op(namespace)
        return b'{"request_put":{"key":"%s","value":"%s"}}' % (
            _b64(namespace + self.key, newline=False), _b64(self.value, newline=False))

    def result(self, obj: Json, namespace: bytes = b"") -> Revision:
        return Revision.from_json(obj, namespace)

    def txn_result(self, answer: OpAnswer, header: Header, namespace: bytes = b"") -> Revision:
        return answer.as_revision(header, namespace) if self.prev_kv else Revision(header)

    @staticmethod
    def _wire_size(key: int, value: int) -> int:
        # _proto_bytes of the key and the value, unrolled (once per put), and the other fields
        return (key + 2 + (key > 127) + (key > 16383)
                + (value and value + 2 + (value > 127) + (value > 16383)) + 12)

    def keyset(self) -> KeySet:
        return KeySet(self.key)

    def span(self) -> tuple[bytes, bytes]:
        return self.key, b""


class OpDel(Op):
    """A delete of one key, a range or a prefix (``KeySet``)."""

    __slots__ = ("keys", "prev_kv", "wire_size")

    path = "kv/deleterange"
    request_name = "request_delete_range"

    def __init__(self, key: bytes | KeySet, return_previous: bool | None = None, *,
                 range_end: bytes | None = None, prev_kv: bool | None = None) -> None:
        self.keys = _keys(key, range_end)
        self.prev_kv = bool(return_previous or prev_kv)
        self.wire_size = _proto_bytes(self.keys.key, self.keys.range_end) + 4

    def request(self, namespace: bytes = b"") -> Json:
        obj = _key_fields(self.keys, namespace)
        if self.prev_kv:
            obj["prev_kv"] = True
        return obj

    def result(self, obj: Json, namespace: bytes = b"") -> Deleted:
        return Deleted.from_json(obj, namespace)

    def txn_result(self, answer: OpAnswer, header: Header, namespace: bytes = b"") -> Deleted:
        return answer.as_deleted(header, namespace)

    def keyset(self) -> KeySet:
        return self.keys

    def span(self) -> tuple[bytes, bytes]:
        return self.keys.key, self.keys.range_end


_OPERATORS = {"==": "EQUAL", "!=": "NOT_EQUAL", ">": "GREATER", "<": "LESS"}


class Comp:
    """A compare of one key (or every key of a ``KeySet`` range) against an operand."""

    target: ClassVar[str]
    field: ClassVar[str]

    def __init__(self, key: bytes | KeySet, compare: str, operand: Any) -> None:
        self.keys = as_keyset(key)
        if compare not in _OPERATORS:
            raise ValueError(f"compare must be one of {', '.join(_OPERATORS)}, not {compare!r}")
        self.key = self.keys.key
        self.compare = compare
        self.operand = self._check(operand)

    def _check(self, operand: Any) -> Any:
        # etcd compares int64s: ``version > -1`` (any key, present or not) is valid.
        return int_arg(self.field, getattr(operand, "lease_id", operand), minimum=-(2 ** 63))

    def request(self, namespace: bytes = b"") -> Json:
        obj = _key_fields(self.keys, namespace)
        obj["result"] = _OPERATORS[self.compare]
        obj["target"] = self.target
        obj[self.field] = b64(self.operand) if self.field == "value" else self.operand
        return obj

    def size(self) -> int:
        value = self.operand if isinstance(self.operand, bytes) else b""
        return _proto_bytes(self.keys.key, self.keys.range_end, value) + 8

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.keys!r}, {self.compare!r}, {self.operand!r})"


class CompValue(Comp):
    target, field = "VALUE", "value"

    def _check(self, operand: Any) -> bytes:
        if not isinstance(operand, bytes):
            raise TypeError(f"value must be bytes, not {type(operand).__name__}")
        return operand


class CompVersion(Comp):
    target, field = "VERSION", "version"


class CompCreated(Comp):
    target, field = "CREATE", "create_revision"


class CompModified(Comp):
    target, field = "MOD", "mod_revision"


class CompLease(Comp):
    target, field = "LEASE", "lease"


class Transaction:
    """An atomic txn: if every compare holds run ``success``, else ``failure``."""

    def __init__(self, compare: list[Comp] | None = None, success: list[Op] | None = None,
                 failure: list[Op] | None = None) -> None:
        self.compare = list(compare or [])
        self.success = list(success or [])
        self.failure = list(failure or [])
        for comp in self.compare:
            if not isinstance(comp, Comp):
                raise TypeError(f"compare entries must be Comp, not {type(comp).__name__}")
        for op in self.success + self.failure:
            if not isinstance(op, Op):
                raise TypeError(f"txn ops must be Op, not {type(op).__name__}")

    def request(self, namespace: bytes = b"") -> Json:
        def ops(branch: list[Op]) -> list[Json]:
            return [{op.request_name: op.request(namespace)} for op in branch]

        obj: Json = {}
        if self.compare:
            obj["compare"] = [c.request(namespace) for c in self.compare]
        if self.success:
            obj["success"] = ops(self.success)
        if self.failure:
            obj["failure"] = ops(self.failure)
        return obj

    def size(self) -> int:
        return (sum(c.size() for c in self.compare)
                + sum(op.size() for op in self.success + self.failure) + 8)

    def check_leases(self) -> None:
        """Re-check every lease a put of this txn uses: it may be gone since the put was made."""
        for op in self.success + self.failure:
            if isinstance(op, OpTxn):
                op.txn.check_leases()
            elif isinstance(op, OpSet) and op.lease_object is not None:
                op.lease_object.id_for_write()

    def max_branch(self) -> int:
        """The largest number of ops in one list, the way etcd counts against --max-txn-ops."""
        nested = [op.txn.max_branch() for op in self.success + self.failure
                  if isinstance(op, OpTxn)]
        return max([len(self.compare), len(self.success), len(self.failure), *nested])

    @property
    def is_write(self) -> bool:
        return any(op.is_write for op in self.success + self.failure)


class OpTxn(Op):
    """A nested transaction inside a txn branch (etcd >= 3.3)."""

    path = "kv/txn"
    request_name = "request_txn"

    def __init__(self, txn: Transaction | None = None, *, compare: list[Comp] | None = None,
                 success: list[Op] | None = None, failure: list[Op] | None = None) -> None:
        self.txn = txn if txn is not None else Transaction(compare, success, failure)
        if not isinstance(self.txn, Transaction):
            raise TypeError(f"txn must be a Transaction, not {type(self.txn).__name__}")

    @property
    def is_write(self) -> bool:  # type: ignore[override]
        return self.txn.is_write

    def request(self, namespace: bytes = b"") -> Json:
        return self.txn.request(namespace)

    def result(self, obj: Json, namespace: bytes = b"") -> TxnResult:
        return TxnResult.from_json(obj, namespace)

    def size(self) -> int:
        return self.txn.size()


_int_arg = int_arg  # the old private name, until watch moves over
