"""Chaos, short: three component instances on a 3-member etcd cluster under every fault kind.

``tests/chaos.py`` has the harness and the exact checks; this runs five faults (each kind at
least once, fixed seed) per etcd version. Nothing acknowledged may be lost, the first
subscriber must receive every committed change of each table exactly once, in order, and the
others gapless runs between their (re)subscriptions, nothing repeated.
"""

from __future__ import annotations

from pathlib import Path

import pytest_twisted
from twisted.internet import reactor

from .chaos import Chaos, Subscriber, assert_clean, run_chaos

inline = pytest_twisted.ensureDeferred

FAULTS = 5
SEED = 8


@inline
async def test_faults_lose_and_reorder_nothing(etcd_binary: Path, tmp_path: Path) -> None:
    report = await run_chaos(reactor, FAULTS, SEED, etcd_binary, tmp_path, settle=0.8)
    print(report.summary())
    assert sum(report.faults.values()) == FAULTS and len(report.faults) == 4
    assert_clean(report)


def check(events: list[tuple[int, str]], expected: list[tuple[int, str]]) -> Chaos:
    """Run the chaos sequence check on one subscriber's events (no cluster: nothing started)."""
    chaos = Chaos(reactor, Path("."), Path("etcd"), seed=0)
    chaos.report.fault_times = [(0.5, "kill_etcd_leader")]
    subscriber = Subscriber("s0", ["settings"], events={"settings": events},
                            arrival={"settings": [float(i) for i in range(len(events))]},
                            epochs={"settings": [0]},
                            publishers={"settings": [7] * len(events)})
    chaos.check_sequence(subscriber, "settings", expected, complete=True)
    return chaos


def test_events_of_one_revision_are_in_order_in_etcd_order() -> None:
    """A revision holding several keys (a txn, or puts the client batched into one) comes in
    the txn's op order, not sorted by key: what the chaos run of seed 8 once called disorder."""
    history = [(5, "k07"), (5, "k00"), (6, "k03")]
    report = check(list(history), history).report
    assert report.ok, report.summary()
    assert not any(report.out_of_order.values())


def test_out_of_order_events_are_named() -> None:
    """An event after a later one is counted and described: change, arrival, publisher session
    and the fault before it, next to the event it followed."""
    history = [(5, "k07"), (5, "k00"), (6, "k03")]
    report = check([(5, "k00"), (5, "k07"), (6, "k03")], history).report
    assert report.out_of_order == {"s0/settings": 1} and not report.ok
    assert report.disorder_details == [
        "s0/settings (5, 'k07') at 1.00 from session 7 (after kill_etcd_leader at 0.50) after "
        "(5, 'k00') at 0.00 from session 7 (before any fault)"]
    report = check([(6, "k03"), (5, "k07"), (5, "k00")], history).report
    assert report.out_of_order == {"s0/settings": 1}
