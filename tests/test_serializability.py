"""pmap transactions under concurrent clients are serializable: a recorded history replays.

Several clients (each with its own connections) run randomized read-modify-write transactions
over a few keys, through ``Database.run`` and ``begin(write=True)``, plus read-only snapshots.
Each committed write transaction records what it read and wrote and its commit revision.
Replayed one by one in commit-revision order from the empty table, every transaction must have
read exactly the replayed state before it, every snapshot must equal the replayed state at its
revision, and the final replayed state must equal what etcd holds.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from txetcd import Database
from txetcd.embedded import EtcdProcess
from txetcd.pmap import DbTransaction, MapStringCbor
from txetcd.pmap.errors import TransactionConflict

from .conftest import Loop

KEYS = ["a", "b", "c", "d", "e"]
CLIENTS = 4
TXNS_PER_CLIENT = 30
SCAN = "*scan*"  # the read "key" under which a whole-table scan is recorded


@dataclass
class Committed:
    revision: int
    reads: dict[str, Any]
    writes: dict[str, Any]  # None: deleted
    name: str


@dataclass
class History:
    committed: list[Committed] = field(default_factory=list)
    snapshots: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    conflicts: int = 0


async def read_modify_write(table: MapStringCbor, txn: DbTransaction, rng: random.Random,
                            name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read two or three keys (or scan the table), then write or delete some keys, partly
    derived from what was read and partly blind."""
    reads: dict[str, Any] = {}
    if rng.random() < 0.2:
        rows = [[k, v] async for k, v in table.select(txn)]
        reads[SCAN] = rows
        seen = {k: v for k, v in rows}
    else:
        seen = {}
        for key in rng.sample(KEYS, rng.randint(2, 3)):
            seen[key] = reads[key] = await table[txn, key]
    total = sum(v["n"] for v in seen.values() if v is not None)
    writes: dict[str, Any] = {}
    for key in rng.sample(KEYS, rng.randint(1, 2)):
        if rng.random() < 0.15:
            del table[txn, key]
            writes[key] = None
        else:
            writes[key] = {"n": total + 1, "by": name}
            table[txn, key] = writes[key]
    return reads, writes


async def worker(db: Database, table: MapStringCbor, number: int, history: History) -> None:
    rng = random.Random(1000 + number)
    for i in range(TXNS_PER_CLIENT):
        name = f"c{number}-{i}"
        if rng.random() < 0.15:
            async with db.begin() as snapshot:
                state = {k: v async for k, v in table.select(snapshot)}
            assert snapshot.revision is not None
            history.snapshots.append((snapshot.revision, state))
            continue
        if rng.random() < 0.5:
            # Database.run re-runs the function on conflict: only the last attempt counts.
            attempts: list[tuple[DbTransaction, dict[str, Any], dict[str, Any]]] = []

            async def attempt(txn: DbTransaction, name: str = name,
                              attempts: list[Any] = attempts) -> None:
                reads, writes = await read_modify_write(table, txn, rng, name)
                attempts.append((txn, reads, writes))

            await db.run(attempt, retries=1000)
            txn, reads, writes = attempts[-1]
            history.conflicts += len(attempts) - 1
        else:
            while True:
                txn = db.begin(write=True)
                reads, writes = await read_modify_write(table, txn, rng, name)
                try:
                    await txn.commit()
                    break
                except TransactionConflict:
                    history.conflicts += 1
        assert txn.committed_revision is not None
        history.committed.append(Committed(txn.committed_revision, reads, writes, name))


def apply(state: dict[str, Any], txn: Committed) -> dict[str, Any] | None:
    """The state after ``txn``, or None when ``txn`` did not read ``state``."""
    for key, value in txn.reads.items():
        expected = sorted([k, v] for k, v in state.items()) if key == SCAN else state.get(key)
        if value != expected:
            return None
    after = dict(state)
    for key, value in txn.writes.items():
        if value is None:
            after.pop(key, None)
        else:
            after[key] = value
    return after


def replay(history: History) -> dict[str, Any]:
    """Apply the committed transactions in commit order, checking each one's reads.

    A commit that changed nothing (it only deleted absent keys) creates no revision of its own:
    it shares the revision of the commit before it, so within one revision the order that
    replays is searched for.
    """
    by_revision: dict[int, list[Committed]] = {}
    for txn in history.committed:
        by_revision.setdefault(txn.revision, []).append(txn)
    snapshots = sorted(history.snapshots, key=lambda s: s[0])
    state: dict[str, Any] = {}
    for revision in sorted(by_revision):
        while snapshots and snapshots[0][0] < revision:
            at, seen = snapshots.pop(0)
            assert seen == state, f"snapshot at {at} is no state of the serial order"
        group = by_revision[revision]
        assert len(group) <= 5, f"{len(group)} commits at revision {revision}"
        for order in itertools.permutations(group):
            replayed: dict[str, Any] | None = state
            for txn in order:
                replayed = apply(replayed, txn) if replayed is not None else None
            if replayed is not None:
                state = replayed
                break
        else:
            names = [t.name for t in group]
            raise AssertionError(f"commits {names} at revision {revision} read no state of "
                                 f"the serial order: {[t.reads for t in group]} vs {state}")
    for at, seen in snapshots:
        assert seen == state, f"snapshot at {at} is no state of the serial order"
    return state


async def test_concurrent_read_modify_write_is_serializable(loop: Loop, kv: Any,
                                                            etcd: EtcdProcess) -> None:
    """On each event loop: the clients are that loop's (``txetcd.Client`` on Twisted,
    ``txetcd.asyncio.Client`` on asyncio), with the same guarantee."""
    clients = [loop.client(url=etcd.url) for _ in range(CLIENTS)]  # closed by the fixture
    history = History()
    table = MapStringCbor(1)
    await loop.gather(*[worker(Database(c, prefix=b"ser/"), table, n, history)
                        for n, c in enumerate(clients)])
    final = replay(history)
    async with Database(kv, prefix=b"ser/").begin() as txn:
        stored = {k: v async for k, v in table.select(txn)}
    assert stored == final
    assert len(history.committed) + len(history.snapshots) == CLIENTS * TXNS_PER_CLIENT
    # The clients really overlapped: some commits were refused and retried.
    assert history.conflicts > 0


def test_replay_rejects_a_lost_update() -> None:
    """The check itself: two increments that both read 0 are no serial order."""
    first = Committed(5, {"a": None}, {"a": {"n": 1, "by": "x"}}, "x")
    second = Committed(6, {"a": None}, {"a": {"n": 1, "by": "y"}}, "y")
    with pytest.raises(AssertionError, match="read no state"):
        replay(History(committed=[first, second]))
    assert replay(History(committed=[first, Committed(6, {"a": first.writes["a"]}, {}, "z")],
                          snapshots=[(5, {"a": first.writes["a"]})])) == first.writes
