"""The publisher's position costs etcd at most 5 % of a table's writes, at any event rate
(issue 17), and its events stay exactly once: a real Crossbar node, a standalone component,
real etcd. The position key's ``version`` counts the position writes."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from component.publisher import position_key
from txetcd import Client
from txetcd.embedded import EtcdProcess

from .test_component_events import Deployment, eventually, inline, sleep

SHARE = 0.05  # position writes per table write, at most


async def position_writes(client: Client) -> int:
    found = await client.get(position_key("etcd", "settings"))
    return found.kvs[0].version if found.kvs else 0


async def written_position(setup: Deployment) -> int:
    """Wait until the elected publisher has stored where it starts; its write count then."""
    await eventually(setup.leader, timeout=30)
    return await eventually(lambda: defer.ensureDeferred(position_writes(setup.client)),
                            timeout=30)


@inline
async def test_position_writes_stay_under_five_percent_at_low_and_high_rates(
        etcd35: EtcdProcess, etcd_direct: Client, tmp_path: Any) -> None:
    setup = Deployment(etcd35, etcd_direct, tmp_path, 1)
    try:
        await setup.subscribe()
        start = await written_position(setup)
        # A low rate: each event is acknowledged long before the next change, so a position
        # stored "every 0.1 s while events flow" would be one etcd write per change.
        for i in range(60):
            await setup.write(i)
            await sleep(0.12)
        await setup.delivered(60)
        await sleep(0.5)  # a position write due now would land here
        low = await position_writes(setup.client) - start
        assert low <= 60 * SHARE, f"{low} position writes for 60 changes at ~8/s"
        # A burst: 400 changes at once (batched into few revisions by the client).
        before = await position_writes(setup.client)
        burst = await defer.gatherResults([setup.client.set(b"\x00\x02burst%03d" % i, b"\xa0")
                                           for i in range(400)])
        setup.committed += [r.revision for r in burst]
        await setup.delivered(460)
        await sleep(0.5)
        high = await position_writes(setup.client) - before
        assert high <= 400 * SHARE, f"{high} position writes for a burst of 400 changes"
        # Exactly once and in etcd's order all along.
        revisions = [e["revision"] for e in setup.seen.events]
        assert revisions == sorted(setup.committed)
        assert len(revisions) == 460
    finally:
        setup.stop()
