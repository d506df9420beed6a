"""Chaos across linked routers: N Crossbar nodes joined by rlinks, instances on each, faults.

The harness of ``tests.chaos`` (its workload, checks and report) on the deployment of
``etcd-wamp init --nodes N`` (``tests/linked.py`` builds it on free ports): a 3-member etcd
cluster, N linked router-only nodes, ``INSTANCES`` standalone component instances attached to
each node (``"linked": true``: one publisher per table and router), two subscribers on each
node, direct etcd writers and a WAMP writer on the last node. Faults, in a seeded order:

* ``kill_etcd_leader``, as in ``tests.chaos``;
* ``kill_publisher``: kill -9 the instance elected for a table on a random node (a new one is
  started on that node); failover is timed on that node's elections and subscribers;
* ``kill_router``: kill -9 a node's router and every instance attached to it, then start
  them again (the links to it reconnect on their own);
* ``restart_node``: stop a node (SIGTERM: its links go down) and start it again; its instances
  reconnect by themselves.

Node faults hit nodes 2..N only: node 1's subscribers stay connected throughout and must get
every committed change of each table exactly once, in order; the subscribers of the other
nodes, which resubscribe after their node came back, must get gapless runs between their
(re)subscriptions, nothing repeated within one, in order. After a ``kill_router`` (the router
dies with its publisher, which may not have stored its last position yet, and with the
retained events that would tell a successor), a subscriber that resubscribes may receive
again events it had before: counted apart (``resent_after_router_loss``), as the README says::

    .venv/bin/python -m tests.chaos_linked --nodes 2 --faults 60 --seed 1
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer, task, threads

from component.linked import node_name
from tests.chaos import (
    NAMESPACE,
    Chaos,
    Report,
    Subscriber,
    arguments,
    conclude,
    sleep,
    table_specs,
)
from tests.linked import LinkedNodes
from tests.wamp import CrossbarNode
from txetcd.embedded import find_etcd

__all__ = ["LINKED_FAULTS", "LinkedChaos", "run_linked_chaos"]

LINKED_FAULTS = ("kill_etcd_leader", "kill_publisher", "kill_router", "restart_node")
INSTANCES = 2  # per node
NODE_START_TIMEOUT = 240.0  # a node restart takes long on a loaded machine


class LinkedChaos(Chaos):
    """``Chaos`` on linked nodes: ``node_of`` says where each instance and subscriber is."""

    def __init__(self, reactor: Any, workdir: Path, binary: Path, seed: int, nodes: int = 2,
                 kinds: tuple[str, ...] = LINKED_FAULTS) -> None:
        super().__init__(reactor, workdir, binary, seed, subscribers=0, kinds=kinds)
        self.count = nodes
        self.linked: LinkedNodes | None = None
        self.subscribers = [Subscriber(f"n{n + 1}s{i}", list(table_specs()))
                            for n in range(nodes) for i in range(2)]
        self.subscriber_node = {s.name: int(s.name[1:].split("s")[0]) - 1
                                for s in self.subscribers}
        self.instance_node: dict[int, int] = {}  # pid -> node index

    def routers(self) -> list[str | None]:
        return [node_name(i) for i in range(self.count)]

    def watcher(self, router: str | None) -> Subscriber:
        index = self.routers().index(router)
        return next(s for s in self.subscribers if self.subscriber_node[s.name] == index)

    def start_instance(self, index: int) -> None:
        assert self.linked is not None
        proc = self.linked[index].start_component()
        self.instances.append(proc)
        self.instance_node[proc.pid] = index

    async def start_routers(self, endpoints: list[str]) -> None:
        linked = LinkedNodes(self.workdir, endpoints[0], self.count,
                             namespace=NAMESPACE.decode(), with_component=False)
        for node in linked.nodes:
            node.extra["etcd"]["endpoints"] = endpoints
        self.linked = await threads.deferToThread(linked.start)
        self.node = self.linked[self.count - 1]  # the WAMP writer's (``Chaos.ready_session``)
        for index in range(self.count):
            for _ in range(INSTANCES):
                self.start_instance(index)

    def url_of(self, subscriber: Subscriber) -> str:
        assert self.linked is not None
        return self.linked[self.subscriber_node[subscriber.name]].url

    async def stop_routers(self) -> None:
        if self.linked is not None:
            await threads.deferToThread(self.linked.stop)

    # -- faults --------------------------------------------------------------------------------

    def replace_instance(self, victim: Any) -> None:
        """A killed publisher's successor starts on the same node."""
        self.start_instance(self.instance_node.pop(victim.pid))

    def faulty_node(self) -> int:
        return self.rng.randrange(1, self.count)  # never node 1: its subscribers stay

    async def node_back(self, index: int) -> None:
        """Start a stopped node again and resubscribe its subscribers."""
        assert self.linked is not None
        node: CrossbarNode = self.linked[index]
        await threads.deferToThread(node.start, NODE_START_TIMEOUT)
        for subscriber in self.subscribers:
            if self.subscriber_node[subscriber.name] == index:
                subscriber.leave()
                await subscriber.subscribe(self.reactor, node.url)

    async def kill_router(self) -> None:
        """kill -9 a node's router and the instances attached to it, then start them again."""
        assert self.linked is not None
        index = self.faulty_node()
        node = self.linked[index]
        victims = [p for p in self.instances if self.instance_node.get(p.pid) == index]
        for proc in [node.proc, *victims]:
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        node.proc = None
        for subscriber in self.subscribers:
            if self.subscriber_node[subscriber.name] == index:
                # The router took with it the record of what they received (its retained
                # events) and the publisher what it had not stored yet: both may come again.
                subscriber.router_lost()
        for proc in victims:
            self.instances.remove(proc)
            self.instance_node.pop(proc.pid, None)
        await sleep(self.reactor, self.rng.uniform(0.2, 1.5))
        await self.node_back(index)
        for _ in victims:
            self.start_instance(index)

    async def restart_node(self) -> None:
        """Stop a node (its links go down with it) and start it again."""
        assert self.linked is not None
        index = self.faulty_node()
        await threads.deferToThread(self.linked[index].stop)
        await sleep(self.reactor, self.rng.uniform(0.2, 1.5))
        await self.node_back(index)

    def complete(self, subscriber: Subscriber) -> bool:
        """Node 1's subscribers are connected throughout: they must get everything."""
        return self.subscriber_node[subscriber.name] == 0


async def run_linked_chaos(reactor: Any, faults: int, seed: int, binary: Path,
                           workdir: Path | None = None, settle: float = 1.0, nodes: int = 2,
                           kinds: tuple[str, ...] = LINKED_FAULTS) -> Report:
    """One run on ``nodes`` linked nodes; a temporary directory unless ``workdir`` is given."""
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="chaos-")))
        return await LinkedChaos(reactor, workdir, binary, seed, nodes, kinds).run(faults,
                                                                                    settle)


async def main(reactor: Any, argv: list[str]) -> None:
    args = arguments(argv, __doc__, LINKED_FAULTS, nodes=True)
    started = time.monotonic()
    report = await run_linked_chaos(reactor, args.faults, args.seed, find_etcd(args.version),
                                    args.workdir, args.settle, args.nodes, tuple(args.kinds))
    conclude(args, report, started)


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, sys.argv[1:])))
