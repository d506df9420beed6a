"""txetcd's sans-IO core: limits, request bytes, reply decoding, retry policy, key ranges.

Plain code without an event loop, shared by the Twisted and the asyncio client: what a request
looks like on the wire, how an answer becomes a result or a typed error, when a failed request
may be sent again (and where), and which ops may share one txn. Request building and reply
decoding each live in exactly one function here, so that per-op CPU work has one place; a
batched txn's answer is the exception, decoded in C by ``types.decode_txn_answer``.
"""

from __future__ import annotations

import enum
import json
import json.scanner
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any
from urllib.parse import urlsplit

from .errors import (
    AuthFailed,
    EtcdError,
    InvalidAuthToken,
    ProtocolError,
    TooManyRequests,
    Unavailable,
    UnsupportedServer,
    classify,
)
from .op import Op, OpDel, OpGet, OpSet
from .types import Revision, TxnAnswer

__all__ = [
    "MAX_TXN_OPS", "MAX_REQUEST_BYTES", "MAX_PAGE_ROWS", "RetryPolicy", "Action", "RETRY",
    "encode", "decode_reply", "decode_json", "in_range", "request_head", "build_request",
    "api_prefix", "parse_version", "TLSConfig", "LEADER_READS", "REQUIRE_LEADER", "WriteSet",
    "plan_batches", "batch_request", "batch_results", "Pager", "Footprint", "overlaps",
]

Json = dict[str, Any]

MAX_TXN_OPS = 128  # etcd's --max-txn-ops default
MAX_REQUEST_BYTES = 1536 * 1024  # etcd's --max-request-bytes default (1.5 MiB)
MAX_PAGE_ROWS = 10_000  # the most keys a scan asks for at once

# Linearizable reads need a leader anyway. With this gRPC metadata a member without one refuses
# them at once ("no leader", before any processing) instead of holding them for its request
# timeout, so they move on to a member of the majority. Writes go without it: they wait out an
# election on their member rather than fail with an unknown outcome.
REQUIRE_LEADER = (b"Grpc-Metadata-hasleader", b"true")
LEADER_READS = frozenset({"kv/range", "lease/timetolive", "lease/leases"})

_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT

# etcd's answer to requests without a token once auth is on (e.g. enabled after we connected).
_NO_TOKEN = "user name is empty"


# -- the wire ---------------------------------------------------------------------------------

def encode(obj: Any) -> bytes:
    """A request body: compact JSON."""
    return json.dumps(obj, separators=(",", ":")).encode()


def decode_reply(path: str, code: int, body: bytes,
                 decode: Callable[[bytes], Any] | None = None) -> Any:
    """The answer of a unary request decoded (by ``decode``, else as JSON), or the typed error
    it carries (raised)."""
    if code != 200:
        raise classify(code, body)
    try:
        return (decode or decode_json)(body)
    except ValueError as exc:
        raise ProtocolError(f"etcd {path} answered what is not its JSON answer ({exc}): "
                            f"{body[:200]!r}") from None


# typeshed types the argument as the scanner itself; it is the decoder whose settings it takes.
_scan_json = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]


def decode_json(body: bytes) -> Any:
    """``json.loads(body)`` in one call of its C scanner for what etcd sends (compact UTF-8
    JSON): ``json.loads`` first runs Python code that detects the encoding and skips
    whitespace with regular expressions, for every answer. Anything else goes to it."""
    text = body.decode()
    try:
        value, end = _scan_json(text, 0)
    except StopIteration:
        return json.loads(text)  # leading whitespace, or not JSON: its error
    if end != len(text):
        return json.loads(text)  # trailing whitespace, or more than one value: its error
    return value


def request_head(method: bytes, target: bytes, host: bytes,
                 headers: list[tuple[bytes, bytes]]) -> bytes:
    """The request line and headers up to ``Content-Length: `` (built once per kind of request;
    ``build_request`` completes it)."""
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: " + host]
    lines += [name + b": " + value for name, value in headers]
    if any(b"\r" in line or b"\n" in line for line in lines):  # e.g. a forged token
        raise ValueError(f"line break in an HTTP request head: {lines!r}")
    return b"\r\n".join(lines) + b"\r\nContent-Length: "


def build_request(head: bytes, body: bytes) -> bytes:
    """A complete request from a ``request_head`` and a body."""
    return b"%b%d\r\n\r\n%b" % (head, len(body), body)


def get_request(url: str) -> tuple[str, bytes]:
    """The endpoint (``scheme://host:port``) and the complete request of a ``GET`` of ``url``
    (``/version``, ``/metrics``): both drivers send it on the keep-alive pool of the unary
    calls."""
    parts = urlsplit(url)
    head = request_head(b"GET", (parts.path or "/").encode(), parts.netloc.encode(), [])
    return f"{parts.scheme}://{parts.netloc}", build_request(head, b"")


def parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("-")[0].split(".")[:3] if part.isdigit())


def api_prefix(version: str, endpoint: str = "the server") -> str:
    """The gateway's path prefix for a server version; older than 3.3 is refused."""
    parsed = parse_version(version)
    if parsed < (3, 3):
        raise UnsupportedServer(f"etcd {version} at {endpoint} is too old: txetcd needs etcd "
                                ">= 3.3 (the v3 JSON gateway)")
    return "/v3" if parsed >= (3, 4) else "/v3beta"


def version_of(endpoint: str, code: int, body: bytes) -> str:
    """The ``etcdserver`` version from a ``GET /version`` answer."""
    try:
        return str(json.loads(body)["etcdserver"])
    except (ValueError, KeyError, TypeError):
        raise UnsupportedServer(f"{endpoint} is not an etcd server (GET /version: "
                                f"{code} {body[:100]!r})") from None


@dataclass(frozen=True)
class TLSConfig:
    """Files for https endpoints: the CA that signed the servers, and an optional client cert."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None


def quiet(sock: Any) -> bool:
    """Whether an idle keep-alive connection's socket can carry a request: nothing to read.

    A server that closed it (e.g. it restarted) may have done so while the loop was busy: its
    EOF is then still unread, and a request written into it would fail with an unknown outcome.
    One non-blocking peek (a cheap syscall, the only I/O here) finds EOF, a reset, or bytes
    nobody asked for."""
    try:
        sock.recv(1, _PEEK)
    except BlockingIOError:
        return True
    except OSError:
        pass
    return False


# -- keys -------------------------------------------------------------------------------------

def in_range(key: bytes, start: bytes, end: bytes) -> bool:
    """Whether ``key`` is in etcd's range ``[start, end)``: an empty ``end`` is the single key
    ``start``, ``end == b"\\0"`` every key from ``start`` on."""
    if not end:
        return key == start
    return start <= key and (end == b"\0" or key < end)


# -- retries ----------------------------------------------------------------------------------

class Action(enum.Enum):
    RAISE = "raise"
    RETRY = "retry"  # after a backoff, on the same endpoint
    NEXT_ENDPOINT = "next endpoint"  # after a backoff, on the next endpoint
    NEW_TOKEN = "new token"  # at once, after authenticating again


RETRY = Action.RETRY


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed request goes again: the one place for retry and failover limits.

    A request is resent only when that cannot apply it twice: before any byte was sent, any
    request may go (elsewhere too); after, only idempotent ones; a definite refusal that says
    it was not applied (bad token, too many requests) is resent as is.
    """

    #: Connection failures and "unavailable" answers: tries per endpoint (x endpoints).
    attempts_per_endpoint: int = 3
    #: Rejected tokens (expired, auth enabled since we connected): authenticate again this often.
    auth_attempts: int = 3
    #: "etcdserver: too many requests": back off and resend this often.
    busy_attempts: int = 5
    backoff_base: float = 0.05
    backoff_max: float = 2.0

    def after_connection_error(self, attempts: int, endpoints: int, *, never_sent: bool,
                               idempotent: bool) -> Action:
        """A connection failed (the endpoint is skipped either way)."""
        if (never_sent or idempotent) and attempts < self.attempts_per_endpoint * endpoints:
            return Action.NEXT_ENDPOINT
        return Action.RAISE

    def after_error(self, error: EtcdError, attempts: int, endpoints: int, *, idempotent: bool,
                    token_rejected: bool) -> Action:
        """etcd answered with ``error``; ``token_rejected`` when it asks for a (new) token."""
        if token_rejected and attempts < self.auth_attempts:
            return Action.NEW_TOKEN
        if isinstance(error, TooManyRequests) and attempts < self.busy_attempts:
            return Action.RETRY
        if isinstance(error, Unavailable):
            if idempotent and attempts < self.attempts_per_endpoint * endpoints:
                return Action.NEXT_ENDPOINT
            error.outcome_unknown = not idempotent
        return Action.RAISE

    def backoff(self, attempt: int) -> float:
        """Seconds before retry ``attempt``: exponential with jitter, so that many clients do not
        retry in lockstep."""
        return (min(self.backoff_base * 2 ** min(attempt, 6), self.backoff_max)
                * (0.5 + random.random() / 2))


def asks_for_token(error: EtcdError, has_user: bool) -> bool:
    """Whether ``error`` asks for a (new) token: expired, or auth enabled since we looked."""
    if isinstance(error, InvalidAuthToken):
        return True
    return has_user and isinstance(error, AuthFailed) and _NO_TOKEN in error.message


# -- batching ---------------------------------------------------------------------------------

_TXN_OVERHEAD = 16  # bytes of txn framing around the ops, for the request-size estimate
_OP_OVERHEAD = 4  # the RequestOp wrapper around each op


class WriteSet:
    """The keys a batch writes, to keep out a second write etcd would reject as a duplicate."""

    __slots__ = ("puts", "deletes")

    def __init__(self) -> None:
        self.puts: set[bytes] = set()
        self.deletes: list[tuple[bytes, bytes]] = []

    def conflicts(self, op: Op) -> bool:
        if isinstance(op, OpSet):
            return op.key in self.puts or bool(self.deletes) and any(
                in_range(op.key, *d) for d in self.deletes)
        if isinstance(op, OpDel):
            start, end = op.keys.key, op.keys.range_end
            return any(in_range(key, start, end) for key in self.puts)
        return False

    def add(self, op: Op) -> None:
        if isinstance(op, OpSet):
            self.puts.add(op.key)
        elif isinstance(op, OpDel):
            self.deletes.append((op.keys.key, op.keys.range_end))

    def claim(self, op: Op) -> bool:
        """``conflicts`` then ``add`` unless it conflicts, in one call (per op of a batch)."""
        if type(op) is OpSet and not self.deletes:  # the common case: puts only
            key, puts = op.key, self.puts
            if key in puts:
                return True
            puts.add(key)
            return False
        if self.conflicts(op):
            return True
        self.add(op)
        return False


def overlaps(start: bytes, end: bytes, other_start: bytes, other_end: bytes) -> bool:
    """Whether two of etcd's ranges share a key (an empty end: the single key ``start``;
    ``b"\\0"``: every key from ``start`` on)."""
    high = None if end == b"\0" else end or start + b"\0"
    other_high = None if other_end == b"\0" else other_end or other_start + b"\0"
    return ((other_high is None or start < other_high)
            and (high is None or other_start < high))


class Footprint:
    """The keys that requests already sent read and write, so that a later op touching them
    (a write after any access, a read after a write) waits for them: one caller's ops then
    apply in the order issued even when they leave in different requests. Single keys are
    looked up in sets, so checking a batch costs one lookup per op."""

    __slots__ = ("written", "written_ranges", "read", "read_ranges")

    def __init__(self) -> None:
        self.written: set[bytes] = set()
        self.written_ranges: list[tuple[bytes, bytes]] = []
        self.read: set[bytes] = set()
        self.read_ranges: list[tuple[bytes, bytes]] = []

    def add(self, ops: list[Op]) -> None:
        for op in ops:
            start, end = op.span()
            if op.is_write:
                (self.written_ranges.append((start, end)) if end else self.written.add(start))
            else:
                (self.read_ranges.append((start, end)) if end else self.read.add(start))

    def touched_by(self, ops: list[Op]) -> bool:
        """Whether any of ``ops`` must wait for the requests of this footprint."""
        for op in ops:
            start, end = op.span()
            if _touches(start, end, self.written, self.written_ranges) or op.is_write and (
                    _touches(start, end, self.read, self.read_ranges)):
                return True
        return False


def _touches(start: bytes, end: bytes, keys: set[bytes],
             ranges: list[tuple[bytes, bytes]]) -> bool:
    """Whether the range ``[start, end)`` holds one of ``keys`` or meets one of ``ranges``."""
    if end:
        if any(in_range(key, start, end) for key in keys):
            return True
    elif start in keys:
        return True
    return bool(ranges) and any(overlaps(start, end, *other) for other in ranges)


def plan_batches(ops: list[Op], max_ops: int, max_bytes: int) -> list[list[list[int]]]:
    """Cut ``ops`` (in issue order) into waves of batches etcd accepts as one txn each; the
    result holds indexes into ``ops``.

    A write that etcd would refuse beside an earlier one (the same key put twice, a put inside
    a deleted range) starts a new wave, sent once the previous wave is answered, so conflicting
    writes apply in issue order; the batches of one wave (split only by the op and size limits)
    touch disjoint keys and may go concurrently. Reads never conflict inside a txn (it runs its
    ops in order), so they are not looked at there; but a read that touches none of its batch's
    writes leaves that batch for a read-only one of the same wave (``_reads_apart``).
    """
    if _one_txn(ops, max_ops, max_bytes):
        return [[list(range(len(ops)))]]
    return plan_batches_by_rules(ops, max_ops, max_bytes)


def plan_batches_by_rules(ops: list[Op], max_ops: int, max_bytes: int) -> list[list[list[int]]]:
    """``plan_batches`` without its shortcut for the common batch: each op looked at in turn
    (what the shortcut must agree with)."""
    waves: list[list[list[int]]] = []
    wave: list[list[int]] = []
    batch: list[int] = []
    writes = WriteSet()
    size = _TXN_OVERHEAD
    for index, op in enumerate(ops):
        op_size = op.wire_size + _OP_OVERHEAD
        conflict = op.is_write and writes.claim(op)
        if batch and (conflict or len(batch) >= max_ops or size + op_size > max_bytes):
            wave.append(batch)
            batch, size = [], _TXN_OVERHEAD
        if conflict:
            waves.append(wave)
            wave, writes = [], WriteSet()
            writes.add(op)
        batch.append(index)
        size += op_size
    if batch:
        wave.append(batch)
    if wave:
        waves.append(wave)
    return [_reads_apart(ops, wave) for wave in waves]


def _one_txn(ops: list[Op], max_ops: int, max_bytes: int) -> bool:
    """Whether ``ops`` are the common batch the rules leave whole: gets only, or puts of
    distinct keys only, within both limits. Answered with a few C-level passes, where the
    rules would look at each op in Python (a turn's batch at 32 in flight is one of these)."""
    if len(ops) > max_ops or (_TXN_OVERHEAD + _OP_OVERHEAD * len(ops)
                              + sum(map(_WIRE_SIZE, ops)) > max_bytes):
        return False
    kinds = set(map(type, ops))
    if kinds == {OpGet}:  # reads never conflict, and there is no write to keep them from
        return True
    return kinds == {OpSet} and len(set(map(_KEY, ops))) == len(ops)


_WIRE_SIZE, _KEY = attrgetter("wire_size"), attrgetter("key")


def _reads_apart(ops: list[Op], wave: list[list[int]]) -> list[list[int]]:
    """``wave`` with the reads that touch none of their batch's writes in batches of their own.

    A txn with a write can hang for the whole deadline where a read would not: a member that
    has not yet noticed its leader died forwards the proposal to it, and it is lost, while a
    read is answered "leader changed" and goes to the next member. Apart, such reads are no
    hostages of the writes; they commute with them, so the order of the two txns is invisible.
    A read of a key its batch writes stays (one caller's read after its write sees it).
    """
    split: list[list[int]] = []
    for batch in wave:
        writes = [ops[i] for i in batch if ops[i].is_write]
        apart: list[int] = []
        if 0 < len(writes) < len(batch):
            written = Footprint()
            written.add(writes)
            apart = [i for i in batch
                     if not ops[i].is_write and not written.touched_by([ops[i]])]
        if apart:
            kept = set(apart)
            split += [[i for i in batch if i not in kept], apart]
        else:
            split.append(batch)
    return split


def batch_request(ops: list[Op], namespace: bytes) -> bytes:
    """The txn body that runs ``ops`` in order, unconditionally, encoded: each op writes its
    own ``RequestOp`` (no dict per op, no ``json.dumps`` of them)."""
    return b'{"success":[%s]}' % b",".join([op.request_op(namespace) for op in ops])


def batch_results(ops: list[Op], answer: TxnAnswer, namespace: bytes
                  ) -> tuple[list[Any], list[int]]:
    """Each op's result out of a batch txn's answer (``decode_txn_answer``'s), and the indexes
    of the ops that failed (their entry is the exception; usually none, so callers test the
    list once)."""
    header = answer.header
    # What every put that asks for no previous kv gets: one immutable object for them all.
    revision = Revision(header)
    results: list[Any] = []
    for op, response in zip(ops, answer.responses, strict=False):
        if type(op) is OpSet and not op.prev_kv:  # OpSet.txn_result, without the call
            results.append(revision)
        elif type(op) is OpGet:  # OpGet.txn_result, without the call
            results.append(response.as_range(header, namespace))
        else:
            results.append(op.txn_result(response, header, namespace))
    failed: list[int] = []
    for _ in ops[len(results):]:
        failed.append(len(results))
        results.append(EtcdError("etcd answered a batched txn with too few responses"))
    return results, failed


# -- scans ------------------------------------------------------------------------------------

@dataclass
class Pager:
    """Where the next page of a key-ordered scan starts and how many keys it asks for.

    ``[start, end)`` shrinks from the front (or, with ``reverse``, from the back) as pages
    come in; ``remaining`` counts down a caller's ``limit``; with ``page_bytes`` the pages after
    the first hold about that many bytes of keys and values (1 to ``MAX_PAGE_ROWS`` keys).
    """

    start: bytes
    end: bytes
    page_size: int
    reverse: bool = False
    remaining: int | None = None
    page_bytes: int | None = None

    def want(self, rows: int) -> int:
        return rows if self.remaining is None else min(rows, self.remaining)

    def advance(self, kvs: list[Any], more: bool) -> int:
        """Move past a page of ``kvs``; the keys to ask for next, 0 when the scan is done."""
        if self.remaining is not None:
            self.remaining -= len(kvs)
        if not (more and kvs) or (self.remaining is not None and self.remaining <= 0):
            return 0
        if self.reverse:
            self.end = kvs[-1].key  # range_end is exclusive: ends before it
        else:
            self.start = kvs[-1].key + b"\0"
        rows = self.page_size
        if self.page_bytes is not None:
            row = sum(len(kv.key) + len(kv.value) for kv in kvs) // len(kvs)
            rows = min(max(1, self.page_bytes // max(row, 1)), MAX_PAGE_ROWS)
        return self.want(rows)
