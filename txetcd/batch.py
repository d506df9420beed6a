"""Auto-batching: a client's concurrent gets, puts and deletes go to etcd as shared txns.

Each gateway request costs etcd (and us) far more than one more op inside a txn, so gets, puts
and deletes issued while others are in flight are coalesced. The rules that keep this
invisible to callers:

- An op issued while none of the client's batched requests is in flight goes at once, as its
  plain request (nothing to wait for, nothing to batch it with). Ops issued while requests are
  in flight queue up and leave together at the end of the loop turn (or earlier, see below).
- Queued ops are concurrent (none was acknowledged before another was issued), so running them
  in one atomic txn, in issue order, is a valid linearization; an op issued after another's
  result was delivered goes in a later request, so it sees that result (linearizable reads).
  A txn with any non-serializable range is linearizable in etcd; serializable reads are batched
  only with other serializable reads (an all-serializable txn is served locally, like the op
  alone).
- One caller's ops apply in the order issued: an op that touches keys a request sent earlier in
  the same turn touches (a write after any access, a read after a write) waits for that request
  to be answered. A batch never holds two writes etcd would reject together (a key put twice, a
  put inside a deleted range); such a write waits for the ops before it to be answered.
- A read that touches none of its batch's writes leaves in a read-only txn beside it: a write
  can hang for its whole deadline (a member forwarding it to a leader that just died loses
  it) where a read is refused and goes to the next member; such reads commute with those
  writes, so the split is invisible.
- A batch holds at most ``max_txn_ops`` ops and ``max_request_bytes`` bytes. While fewer than
  ``EAGER_IN_FLIGHT`` requests are in flight it leaves as soon as it holds ``EAGER_FLUSH`` ops,
  so that etcd works on it while the rest of the turn runs; with etcd busy already, it waits
  for the turn's end (or until it is full), so that many callers make few, large txns.
- Ops with different timeouts never share a batch, so each call keeps its own deadline.
- Every op gets its own result or error: a batch that etcd refuses with a definite error was not
  applied, so it is split in halves and the halves are resent until each op fails or succeeds
  on its own. A batch whose outcome is unknown (no answer, or a 200 that is no txn's answer)
  is never resent: its writes fail with that error (``outcome_unknown=True``, or
  ``ProtocolError``); its reads are resent once. Explicit transactions never pass here.
- A call cancelled while queued is not sent; once sent it cannot be taken back.

Loop-free: futures and timers come from the client's driver (Deferreds on Twisted, Futures on
asyncio); which ops share a txn is decided by ``core.plan_batches``. Per op, the batcher keeps
only the op and the caller's future (no object of its own).
"""

from __future__ import annotations

from collections.abc import Awaitable
from functools import partial
from operator import attrgetter
from typing import Any

from .core import Footprint, batch_request, batch_results, plan_batches
from .errors import EtcdError, ProtocolError, Timeout, Unavailable
from .interface import Driver, EtcdTransport
from .op import Op, OpDel, OpGet, OpSet
from .types import decode_txn_answer

__all__ = ["Batcher", "BATCHABLE", "EAGER_FLUSH", "EAGER_IN_FLIGHT"]

BATCHABLE = (OpGet, OpSet, OpDel)
# A turn's group is sent at once when it reaches this many ops: etcd then works on it while we
# still run the callers that queue the next batch. At 32 in flight, 16 keeps two requests in
# flight, so the client and etcd work at the same time where there is a core for each: with the
# 2-core machine otherwise idle, 16 gave 15-61 % more ops/s than 32 in both harnesses at 0-27 %
# more CPU per op (issue 17, `bench/client_cpu.py ab`, 3 alternating rounds); with other
# processes on both cores 32 was ahead, as it was in an earlier, loaded measurement. 16 had
# beaten "end of turn only" by 13 % in issue 7; 8 is too little per request.
EAGER_FLUSH = 16
# ... but only while fewer requests than this are in flight: with two, etcd has work, and more
# requests of 16 only split what the turn would send together. At 200 gets in flight (a
# component serving many callers), the larger batches cost etcd 20-22 against 29-30 µs per get
# and gave 1.15-1.25x the gets/s (``bench/batch_busy.py``, issue 17); at 32 in flight two
# batches of 16 are what keeps both busy, as before.
EAGER_IN_FLIGHT = 2

_IS_WRITE = attrgetter("is_write")

_Group = tuple[float | None, bool]  # (timeout, serializable): ops that may share a txn


class Batcher:
    """Sends a client's batchable ops: at once when none of its requests is in flight, else
    as few txns per loop turn as the rules above allow."""

    def __init__(self, transport: EtcdTransport, namespace: bytes, max_txn_ops: int,
                 max_request_bytes: int) -> None:
        self.transport = transport
        self.driver: Driver = transport.driver
        self.namespace = namespace
        self.max_txn_ops, self.max_request_bytes = max_txn_ops, max_request_bytes
        # Per group: the queued ops and their callers' futures, in issue order.
        self._queue: dict[_Group, tuple[list[Op], list[Any]]] = {}
        self._flush_scheduled = False
        # What this turn already sent: its ops, and awaitables that fire once its requests are
        # answered (an op touching the same keys waits for all of them: rare). The keys are
        # gathered (``_footprint``) only when a second request of the turn needs them.
        self._turn: list[Awaitable[Any]] = []
        self._turn_ops: list[list[Op]] = []
        self._touched: Footprint | None = None
        self.in_flight = 0  # batched requests on their way
        self.requests = 0  # requests sent for batched ops, for tests and monitoring
        self.sent_at_once = 0  # ops that went at once, alone, for tests and monitoring

    def submit(self, op: Op, timeout: float | None) -> Any:
        """Send ``op`` (at once, or with the ops of this turn); the future fires with its own
        result."""
        future = self.driver.new_future()
        if not self.in_flight and not self._queue:
            # Nothing in flight: nothing to wait for and nothing to batch it with.
            self.sent_at_once += 1
            self._new_turn()
            self._turn.append(self._send([op], [future], timeout))
            self._turn_ops.append([op])
            return future
        group = (timeout, op.serializable)
        queued = self._queue.get(group)
        if queued is None:
            queued = self._queue[group] = ([], [])
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self.driver.call_soon(self._flush)
        ops, futures = queued
        ops.append(op)
        futures.append(future)
        if (len(ops) >= EAGER_FLUSH and self.in_flight < EAGER_IN_FLIGHT
                or len(ops) >= self.max_txn_ops):
            del self._queue[group]
            self._flush_group(timeout, ops, futures)
        return future

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._flush_queue()
        self._new_turn()  # the next turn's ops were issued after all of these

    def _new_turn(self) -> None:
        if self._turn:
            self._turn, self._turn_ops, self._touched = [], [], None

    def _footprint(self) -> Footprint:
        """The keys this turn's requests touch."""
        touched = self._touched
        if touched is None:
            touched = self._touched = Footprint()
        for ops in self._turn_ops:
            touched.add(ops)
        self._turn_ops = []
        return touched

    def _flush_queue(self) -> None:
        queue, self._queue = self._queue, {}
        for (timeout, _), (ops, futures) in queue.items():
            self._flush_group(timeout, ops, futures)

    def _flush_group(self, timeout: float | None, ops: list[Op], futures: list[Any]) -> None:
        settled = self.driver.settled
        if any(map(settled, futures)):  # cancelled while queued: not sent
            kept = [i for i, f in enumerate(futures) if not settled(f)]
            ops, futures = [ops[i] for i in kept], [futures[i] for i in kept]
            if not ops:
                return
        # An op that touches what a request of this turn touches (an eager flush, another
        # timeout's group, an op sent at once) waits for it: one caller's ops apply in order.
        earlier = self._turn if self._turn and self._footprint().touched_by(ops) else []
        if len(ops) == 1 and not earlier:  # a lone op: nothing to plan
            done = self._send(ops, futures, timeout)
        else:
            done = self._send_planned(ops, futures, timeout, list(earlier))
        self._turn.append(done)
        self._turn_ops.append(ops)

    def _send_planned(self, ops: list[Op], futures: list[Any], timeout: float | None,
                      earlier: list[Awaitable[Any]]) -> Awaitable[Any]:
        plan = plan_batches(ops, self.max_txn_ops, self.max_request_bytes)
        if len(plan) == 1 and len(plan[0]) == 1 and not earlier:  # the common case
            return self._send(ops, futures, timeout)
        waves = [[([ops[i] for i in batch], [futures[i] for i in batch]) for batch in wave]
                 for wave in plan]
        if len(waves) == 1 and not earlier:
            return self.driver.gather([self._send(*batch, timeout) for batch in waves[0]])
        return self.driver.spawn(self._send_waves(waves, timeout, earlier))

    async def _send_waves(self, waves: list[list[tuple[list[Op], list[Any]]]],
                          timeout: float | None, earlier: list[Awaitable[Any]]) -> None:
        # Counted as in flight while they wait: an op issued meanwhile queues behind them
        # instead of going at once, ahead of ops issued before it.
        self.in_flight += 1
        try:
            if earlier:
                await self.driver.gather(earlier)
            for wave in waves:
                await self.driver.gather([self._send(*batch, timeout) for batch in wave])
        finally:
            self._answered()

    def _send(self, ops: list[Op], futures: list[Any], timeout: float | None) -> Awaitable[None]:
        """Send one batch; the awaitable fires (never fails) once each op is answered."""
        self.requests += 1
        self.in_flight += 1
        if len(ops) == 1:
            return self._send_one(ops[0], futures[0], timeout)
        return self._send_txn(ops, futures, timeout)

    def _answered(self) -> None:
        """A request is answered: once none is in flight, what queued behind it goes now."""
        self.in_flight -= 1
        if not self.in_flight and self._queue:
            self._new_turn()  # all answered: nothing left to wait for
            self._flush_queue()

    def _send_one(self, op: Op, future: Any, timeout: float | None) -> Awaitable[None]:
        """A lone op as its own request, on callbacks (no coroutine: the x1 hot path)."""
        driver, namespace = self.driver, self.namespace
        answered = driver.new_future()

        def reply(obj: Any) -> None:
            try:
                result = op.result(obj, namespace)
            except Exception as exc:  # noqa: BLE001 - a bad answer belongs to the caller
                error(exc)
                return
            # Counted as answered before its caller runs on: an op the caller issues next,
            # with nothing else in flight, goes at once.
            self._answered()
            driver.resolve(future, result)
            driver.resolve(answered, None)

        def error(exc: BaseException) -> None:
            self._answered()
            driver.fail(future, exc)
            driver.resolve(answered, None)

        try:
            data = op.request_bytes(namespace)
        except Exception as exc:  # noqa: BLE001 - e.g. a value that cannot be encoded
            error(exc)
            return answered
        self.transport.request(op.path, data, idempotent=not op.is_write, timeout=timeout,
                               leader_read=not op.is_write and not op.serializable,
                               on_reply=reply, on_error=error)
        return answered

    def _send_txn(self, ops: list[Op], futures: list[Any], timeout: float | None
                  ) -> Awaitable[None]:
        """A batch of ops as one txn, on callbacks as ``_send_one`` (no coroutine per batch)."""
        answered = self.driver.new_future()
        failed = partial(self._txn_failed, ops, futures, timeout, answered)
        try:
            body = batch_request(ops, self.namespace)
        except Exception as exc:  # noqa: BLE001 - e.g. a value that cannot be encoded
            failed(exc)
            return answered
        writes = any(map(_IS_WRITE, ops))
        # A read-only batch is a leader read like a lone range (refused at once without one).
        answer = partial(self._txn_answered, ops, futures, timeout, answered)
        self.transport.request("kv/txn", body, idempotent=not writes, timeout=timeout,
                               leader_read=not writes, on_reply=answer, on_error=failed,
                               decode=decode_txn_answer)
        return answered

    def _txn_answered(self, ops: list[Op], futures: list[Any], timeout: float | None,
                      answered: Any, reply: Any) -> None:
        driver = self.driver
        try:
            results, failed = batch_results(ops, reply, self.namespace)
        except Exception as exc:  # noqa: BLE001 - etcd's 200 that is no txn's answer
            self._txn_failed(ops, futures, timeout, answered,
                             ProtocolError(f"etcd answered a batched txn with {reply!r:.200}: "
                                           f"{exc}"))
            return
        try:
            if failed:
                for index in failed:
                    driver.fail(futures[index], results[index])
                    futures[index] = None
            driver.resolve_all(futures, results)
        finally:
            driver.resolve(answered, None)
            # Counted as answered only once the callers ran on: the ops they issue next are
            # batched, not the first of them sent alone. On Twisted they just ran.
            if driver.resumes_at_once:
                self._answered()
            else:
                driver.call_soon(self._answered)

    def _txn_failed(self, ops: list[Op], futures: list[Any], timeout: float | None,
                    answered: Any, exc: BaseException) -> None:
        driver = self.driver
        self._answered()
        if isinstance(exc, EtcdError):
            settle = partial(driver.resolve, answered)  # whether the retries worked or not
            driver.when_done(driver.spawn(self._failed(ops, futures, timeout, exc)), settle,
                             settle)
            return
        self._fail_all(futures, exc)  # e.g. cancelled: nothing more to try
        driver.resolve(answered, None)

    def _fail_all(self, futures: list[Any], exc: BaseException) -> None:
        for future in futures:
            self.driver.fail(future, exc)

    async def _failed(self, ops: list[Op], futures: list[Any], timeout: float | None,
                      exc: EtcdError) -> None:
        if isinstance(exc, ProtocolError) or isinstance(exc, Unavailable) and exc.outcome_unknown:
            # It may have been applied (a 200 we cannot read was): resending a write could apply
            # it twice.
            self._fail_all([f for op, f in zip(ops, futures, strict=True) if op.is_write], exc)
            reads = [i for i, op in enumerate(ops) if not op.is_write]
            if reads and not isinstance(exc, Timeout):
                await self._send([ops[i] for i in reads], [futures[i] for i in reads], timeout)
            elif reads:  # the deadline passed: theirs too, but a read changed nothing
                self._fail_all([futures[i] for i in reads],
                               Timeout(exc.message, outcome_unknown=False))
            return
        if isinstance(exc, Unavailable):
            # Not applied, and the transport already tried every endpoint it safely could.
            self._fail_all(futures, exc)
            return
        # A definite refusal (an unknown lease, no permission, too large...): nothing was
        # applied, so halves are resent until the op at fault fails on its own.
        middle = len(ops) // 2
        await self.driver.gather([self._send(ops[:middle], futures[:middle], timeout),
                                  self._send(ops[middle:], futures[middle:], timeout)])
