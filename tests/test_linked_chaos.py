"""Chaos across two linked routers, short: every fault kind once per etcd version.

``tests/chaos_linked.py`` has the harness (``tests/chaos.py``'s workload and checks on
``etcd-wamp init --nodes 2``'s layout, two instances per node); this runs four faults (kill -9
of node 2's router with its instances, a stop/start of node 2, kill -9 of the etcd leader and
of a publishing instance), fixed seed. Nothing acknowledged may be lost; node 1's subscribers,
connected throughout, must receive every committed change of each table exactly once, in
order; node 2's gapless runs between their (re)subscriptions, nothing repeated within one.
"""

from __future__ import annotations

from pathlib import Path

import pytest_twisted
from twisted.internet import reactor

from .chaos import Chaos, Subscriber, assert_clean
from .chaos_linked import LINKED_FAULTS, run_linked_chaos

inline = pytest_twisted.ensureDeferred

FAULTS = len(LINKED_FAULTS)
SEED = 3


@inline
async def test_linked_faults_lose_repeat_and_reorder_nothing(etcd_binary: Path,
                                                            tmp_path: Path) -> None:
    report = await run_linked_chaos(reactor, FAULTS, SEED, etcd_binary, tmp_path, settle=0.8)
    print(report.summary())
    assert dict(report.faults) == {kind: 1 for kind in LINKED_FAULTS}, report.summary()
    assert_clean(report)
    # Both nodes' subscribers were checked, node 1's for completeness.
    assert {label.split("/")[0] for label in report.committed} == {"n1s0", "n1s1", "n2s0",
                                                                   "n2s1"}


def test_events_resent_after_a_router_kill_are_counted_apart_repeats_still_fail() -> None:
    """After a resubscription that followed a kill -9 of its router, a subscriber may get the
    events it had before again (once each): counted as resent. A second copy within that
    subscription, or any copy in a subscription that followed no router kill, is a repeat."""
    history = [(5, "k1"), (6, "k2"), (7, "k3")]

    def run(events: list[tuple[int, str]], lossy: bool) -> Chaos:
        chaos = Chaos(reactor, Path("."), Path("etcd"), seed=0)
        subscriber = Subscriber("n2s0", ["settings"], events={"settings": events},
                                arrival={"settings": [float(i) for i in range(len(events))]},
                                epochs={"settings": [0, 2]},
                                after_router_loss={"settings": {2} if lossy else set()},
                                publishers={"settings": [7] * len(events)})
        chaos.check_sequence(subscriber, "settings", history, complete=False)
        return chaos

    resent = run([(5, "k1"), (6, "k2"), (6, "k2"), (7, "k3")], lossy=True).report
    assert resent.resent_after_router_loss == {"n2s0/settings": 1} and resent.ok
    assert not any(resent.gaps.values())
    twice = run([(5, "k1"), (6, "k2"), (6, "k2"), (6, "k2"), (7, "k3")], lossy=True).report
    assert twice.repeated_raw == {"n2s0/settings": 1} and not twice.ok
    plain = run([(5, "k1"), (6, "k2"), (6, "k2"), (7, "k3")], lossy=False).report
    assert plain.repeated_raw == {"n2s0/settings": 1} and not plain.ok
