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

from .chaos import assert_clean
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
