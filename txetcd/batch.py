"""Auto-batching: concurrent independent KV ops of one reactor turn go to etcd as one txn.

Each gateway request costs etcd (and us) far more than one more op inside a txn, so gets, puts
and deletes issued while nothing forces them apart are coalesced. The rules that keep this
invisible to callers:

- Ops issued in the same turn of the event loop are concurrent (none was acknowledged before
  another was issued), so running them in one atomic txn, in issue order, is a valid
  linearization. A txn with any non-serializable range is linearizable in etcd; serializable
  reads are batched only with other serializable reads (an all-serializable txn is served
  locally, like the op alone).
- A batch holds at most ``max_txn_ops`` ops and ``max_request_bytes`` bytes, and never two writes
  etcd would reject together (a key put twice, a put inside a deleted range); such a write waits
  for the ops before it to be answered, so conflicting writes apply in issue order.
- A turn's batch leaves as soon as it holds ``EAGER_FLUSH`` ops, so that etcd works on it while
  the rest of the turn runs; later ops of the turn that write the same keys wait for it.
- Ops with different timeouts never share a batch, so each call keeps its own deadline.
- A batch that etcd refuses with a definite error was not applied: it is split in halves and the
  halves are resent until each op fails or succeeds on its own. A batch whose outcome is unknown
  is never resent: its writes fail with ``outcome_unknown=True``; its reads are resent once.
- A lone op goes as its plain request; explicit transactions never pass through here.

Loop-free: futures and timers come from the client's driver (Deferreds on Twisted, Futures on
asyncio); which ops share a txn is decided by ``core.plan_batches``.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from .core import WriteSet, batch_request, batch_results, plan_batches
from .errors import EtcdError, Timeout, Unavailable
from .interface import Driver, EtcdTransport
from .op import Op, OpDel, OpGet, OpSet

__all__ = ["Batcher", "BATCHABLE", "EAGER_FLUSH"]

BATCHABLE = (OpGet, OpSet, OpDel)
# A turn's group is sent at once when it reaches this many ops: etcd then works on it while we
# still run the callers that queue the next batch (measured: +13% ops/s at 32 in flight; 8 is
# worse than 16, too little per request).
EAGER_FLUSH = 16


class _Call:
    """One caller's op waiting for its batch, with the future that delivers its result."""

    __slots__ = ("op", "result", "cancelled")

    def __init__(self, op: Op, driver: Driver) -> None:
        self.op = op
        self.cancelled = False
        self.result: Any = driver.future(self._cancel)

    def _cancel(self) -> None:
        # A call cancelled before its batch left is simply not sent; once sent, it cannot be
        # taken back, and the future's own cancellation is what the caller sees.
        self.cancelled = True


class Batcher:
    """Queues a client's batchable ops and sends each loop turn's ops as few txns."""

    def __init__(self, transport: EtcdTransport, namespace: bytes, max_txn_ops: int,
                 max_request_bytes: int) -> None:
        self.transport = transport
        self.driver = transport.driver
        self.namespace = namespace
        self.max_txn_ops, self.max_request_bytes = max_txn_ops, max_request_bytes
        self._queue: dict[tuple[float | None, bool], list[_Call]] = {}
        self._flush_scheduled = False
        # What this turn already sent: its writes, and an awaitable that fires once answered.
        self._turn: list[tuple[WriteSet, Awaitable[Any]]] = []
        self.requests = 0  # requests sent for batched ops, for tests and monitoring

    def submit(self, op: Op, timeout: float | None) -> Any:
        """Queue ``op`` for this turn's batch; the future fires with its own result."""
        call = _Call(op, self.driver)
        serializable = isinstance(op, OpGet) and bool(op.options.get("serializable"))
        group = (timeout, serializable)
        calls = self._queue.setdefault(group, [])
        calls.append(call)
        if len(calls) >= EAGER_FLUSH:
            del self._queue[group]
            self._flush_group(timeout, calls)
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self.driver.call_soon(self._flush)
        return call.result

    def _flush(self) -> None:
        self._flush_scheduled = False
        queue, self._queue = self._queue, {}
        for (timeout, _), calls in queue.items():
            self._flush_group(timeout, calls)
        self._turn = []  # the next turn's ops were issued after all of these

    def _flush_group(self, timeout: float | None, calls: list[_Call]) -> None:
        calls = [c for c in calls if not c.cancelled]
        if not calls:
            return
        # A write that conflicts with one sent earlier in this turn (an eager flush, another
        # timeout's group) waits for it, so that conflicting writes still apply in issue order.
        earlier = [done for writes, done in self._turn
                   if any(writes.conflicts(c.op) for c in calls)]
        if len(calls) == 1 and not earlier:  # a lone op (one in flight): nothing to plan
            done = self._send(calls, timeout)
        else:
            done = self._send_planned(calls, timeout, earlier)
        writes = WriteSet()
        for call in calls:
            writes.add(call.op)
        self._turn.append((writes, done))

    def _send_planned(self, calls: list[_Call], timeout: float | None,
                      earlier: list[Awaitable[Any]]) -> Awaitable[Any]:
        plan = plan_batches([c.op for c in calls], self.max_txn_ops, self.max_request_bytes)
        waves = [[[calls[i] for i in batch] for batch in wave] for wave in plan]
        if len(waves) == 1 and not earlier:
            return self.driver.gather([self._send(batch, timeout) for batch in waves[0]])
        return self.driver.spawn(self._send_waves(waves, timeout, earlier))

    async def _send_waves(self, waves: list[list[list[_Call]]], timeout: float | None,
                          earlier: list[Awaitable[Any]]) -> None:
        if earlier:
            await self.driver.gather(earlier)
        for wave in waves:
            await self.driver.gather([self._send(batch, timeout) for batch in wave])

    def _send(self, batch: list[_Call], timeout: float | None) -> Awaitable[None]:
        """Send one batch; the awaitable fires (never fails) once each call is answered."""
        self.requests += 1
        if len(batch) == 1:
            return self.driver.spawn(self._send_one(batch[0], timeout))
        return self.driver.spawn(self._send_txn(batch, timeout))

    async def _send_one(self, call: _Call, timeout: float | None) -> None:
        op, driver = call.op, self.driver
        try:
            reply = await self.transport.call(op.path, op.request(self.namespace),
                                              idempotent=not op.is_write, timeout=timeout)
            driver.resolve(call.result, op.result(reply, self.namespace))
        except BaseException as exc:  # noqa: BLE001 - every failure belongs to the caller
            driver.fail(call.result, exc)

    async def _send_txn(self, batch: list[_Call], timeout: float | None) -> None:
        ops = [call.op for call in batch]
        writes = any(op.is_write for op in ops)
        try:
            # A read-only batch is a leader read like a lone range (refused at once without one).
            reply = await self.transport.call("kv/txn", batch_request(ops, self.namespace),
                                              idempotent=not writes, timeout=timeout,
                                              leader_read=not writes)
        except EtcdError as exc:
            await self._failed(batch, timeout, exc)
            return
        except BaseException as exc:  # noqa: BLE001 - e.g. cancelled: nothing more to try
            self._fail_all(batch, exc)
            return
        resolve, fail = self.driver.resolve, self.driver.fail
        for call, result in zip(batch, batch_results(ops, reply, self.namespace), strict=True):
            if isinstance(result, Exception):
                fail(call.result, result)
            else:
                resolve(call.result, result)

    def _fail_all(self, calls: list[_Call], exc: BaseException) -> None:
        for call in calls:
            self.driver.fail(call.result, exc)

    async def _failed(self, batch: list[_Call], timeout: float | None, exc: EtcdError) -> None:
        if isinstance(exc, Unavailable) and exc.outcome_unknown:
            # It may have been applied: resending a write could apply it twice.
            self._fail_all([call for call in batch if call.op.is_write], exc)
            reads = [call for call in batch if not call.op.is_write]
            if reads and not isinstance(exc, Timeout):
                await self._send(reads, timeout)
            else:
                self._fail_all(reads, type(exc)(exc.message, outcome_unknown=False))
            return
        if isinstance(exc, Unavailable):
            # Not applied, and the transport already tried every endpoint it safely could.
            self._fail_all(batch, exc)
            return
        # A definite refusal (an unknown lease, no permission, too large...): nothing was
        # applied, so halves are resent until the op at fault fails on its own.
        middle = len(batch) // 2
        await self.driver.gather([self._send(batch[:middle], timeout),
                                  self._send(batch[middle:], timeout)])
