"""Watch soak: kill -9 and restart etcd under a running watch while a writer keeps writing.

Every write puts a new key under one prefix, so after the run a single range read lists every
committed write with its revision, including writes whose outcome the writer never learned
(``Unavailable(outcome_unknown=True)`` or ``Timeout``). The watch's revisions must equal exactly
those, in order: any loss, duplicate or reordering fails. ``tests/test_watch.py`` runs the same
loop briefly, on both event loops; run this script for longer soaks::

    .venv/bin/python -m tests.watch_soak --cycles 200 --version 3.5
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, task

from txetcd import Client, KeySet, Unavailable, Watch, WatchEvent
from txetcd.embedded import EtcdProcess, find_etcd
from txetcd.interface import Driver

PREFIX = b"soak/"

# Short raft timers: a restarted single member elects itself in ~0.2 s instead of ~1.5 s.
FAST_ELECTION = ["--heartbeat-interval=20", "--election-timeout=200"]

Fault = Callable[[Watch], Awaitable[None]]


@dataclass
class SoakResult:
    """What the watch delivered against what etcd committed."""

    cycles: int
    committed: list[int]
    delivered: list[int]
    acknowledged: int
    unknown_outcomes: int
    reconnects: int
    lost: list[int] = field(default_factory=list)
    duplicated: list[int] = field(default_factory=list)
    out_of_order: int = 0
    wrong_key: list[int] = field(default_factory=list)  # events not carrying the committed key
    unacknowledged_committed: int = 0  # outcome-unknown writes that turned out to be committed
    acknowledged_missing: list[int] = field(default_factory=list)  # must never happen

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.out_of_order or self.wrong_key
                    or self.acknowledged_missing)

    def summary(self) -> str:
        return (f"cycles {self.cycles}, events checked {len(self.delivered)}, committed "
                f"{len(self.committed)}, lost {len(self.lost)}, duplicated "
                f"{len(self.duplicated)}, out of order {self.out_of_order}, wrong key "
                f"{len(self.wrong_key)}, acknowledged writes "
                f"{self.acknowledged} (missing {len(self.acknowledged_missing)}), unknown-outcome "
                f"writes {self.unknown_outcomes} (committed anyway "
                f"{self.unacknowledged_committed}), watch reconnects {self.reconnects}")


async def wait_for(driver: Driver, condition: Callable[[], bool], timeout: float,
                   what: str) -> None:
    """Poll ``condition`` until it holds; a stalled watch fails instead of hanging the run."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout} s")
        await driver.sleep(0.01)


def restart(etcd: EtcdProcess) -> Fault:
    """The single-server fault: kill -9, then start again on the same data (the loop waits for
    the restart: the watch notices the dead connection afterwards, as after a real outage)."""

    async def fault(watch: Watch) -> None:
        etcd.kill()
        etcd.start()

    return fault


async def soak(client: Any, cycles: int, fault: Fault,
               writes_per_cycle: int = 3) -> SoakResult:
    """Run ``cycles`` faults under a watch of ``PREFIX`` while writing, then compare histories.

    Before each fault the watch must have delivered ``writes_per_cycle`` new events, so every
    fault hits a live, caught-up watch.
    """
    driver: Driver = client.env.driver  # the Twisted or the asyncio client's loop
    events: list[WatchEvent] = []
    watch = client.watch(KeySet(PREFIX, prefix=True), events.append)
    await watch.when_started()
    acknowledged: dict[int, bytes] = {}
    unknown = 0
    writing = True

    async def writer() -> None:
        nonlocal unknown
        number = 0
        while writing:
            number += 1
            key = PREFIX + b"%08d" % number
            try:
                acknowledged[(await client.set(key, key)).revision] = key
            except Unavailable as exc:  # Timeout included
                unknown += exc.outcome_unknown
            await driver.sleep(0.002)

    def delivered(count: int) -> Callable[[], bool]:
        return lambda: len(events) >= count

    writes = driver.spawn(writer())
    try:
        for _ in range(cycles):
            await wait_for(driver, delivered(len(events) + writes_per_cycle), 30,
                           "events after resume")
            await fault(watch)
    finally:
        writing = False
        await writes
    # Every key was written once: the range lists each committed write at its revision.
    final = await client.get(KeySet(PREFIX, prefix=True))
    committed = sorted(kv.mod_revision for kv in final.kvs)
    # A watch that fell behind or skipped shows up as lost events below.
    with contextlib.suppress(TimeoutError):
        await wait_for(driver, lambda: not committed or len(events) >= len(committed)
                       or (bool(events) and events[-1].revision >= committed[-1]),
                       10, "catch-up to the last committed revision")
    watch.cancel()
    await watch.done
    return _compare(cycles, committed, events, acknowledged, unknown, watch.reconnects,
                    {kv.mod_revision: kv.key for kv in final.kvs})


def _compare(cycles: int, committed: list[int], events: list[WatchEvent],
             acknowledged: dict[int, bytes], unknown: int, reconnects: int,
             keys: dict[int, bytes]) -> SoakResult:
    delivered = [event.revision for event in events]
    counts = collections.Counter(delivered)
    result = SoakResult(cycles, committed, delivered, len(acknowledged), unknown, reconnects)
    result.lost = sorted(set(committed) - set(delivered))
    result.duplicated = sorted(rev for rev, n in counts.items() if n > 1)
    result.out_of_order = sum(1 for a, b in zip(delivered, delivered[1:], strict=False)
                              if b <= a)
    # An event must carry the key committed at its revision, not just the right number.
    result.wrong_key = [e.revision for e in events if keys.get(e.revision, e.key) != e.key]
    result.acknowledged_missing = sorted(set(acknowledged) - set(committed))
    result.unacknowledged_committed = len(set(committed) - set(acknowledged))
    return result


async def main(reactor: Any, argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=200, help="kill/restart cycles")
    parser.add_argument("--version", default="3.5", help="etcd version prefix, e.g. 3.4")
    parser.add_argument("--writes-per-cycle", type=int, default=3,
                        help="events the watch must see between two kills")
    args = parser.parse_args(argv)
    started = time.monotonic()
    with EtcdProcess(find_etcd(args.version), extra_args=list(FAST_ELECTION)) as etcd:
        client = Client(reactor, url=etcd.url, timeout=2.0)
        try:
            result = await soak(client, args.cycles, restart(etcd),
                                args.writes_per_cycle)
        finally:
            await client.close()
    print(f"etcd {etcd.version}: {result.summary()} in {time.monotonic() - started:.1f} s")
    if not result.ok:
        print(f"FAILED: lost {result.lost[:20]}, duplicated {result.duplicated[:20]}, wrong key "
              f"{result.wrong_key[:20]}, acknowledged but missing "
              f"{result.acknowledged_missing[:20]}")
        raise SystemExit(1)  # task.react exits with this code


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, sys.argv[1:])))
