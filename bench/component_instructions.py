"""Instructions the component spends per WAMP get, counted by callgrind: a steady figure for
comparing two trees on a shared, noisy machine, where calls/s and CPU seconds swing by 30 %.

The component of each TREE runs standalone (``python -m component``) under
``valgrind --tool=callgrind`` on a router of its own; once it serves, the counters are zeroed,
``--gets`` gets of one row go through the router (200 in flight, as ``wamp_bench.py`` does),
and the counters are dumped. Everything the process did meanwhile counts: autobahn, Twisted,
our procedures, txetcd. Trees alternate, ``--rounds`` times each.

    .venv/bin/python bench/component_instructions.py [TREE ...] [--gets 3000] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cbor2
from twisted.internet import defer, reactor, task

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import wamp_bench  # noqa: E402

from tests.wamp import CrossbarNode, connect  # noqa: E402
from txetcd import Client  # noqa: E402
from txetcd.embedded import EtcdProcess, find_etcd  # noqa: E402

INFLIGHT = 200
START_LIMIT = 300.0  # seconds for the component to serve under valgrind


async def serving(session: Any) -> None:
    deadline = time.monotonic() + START_LIMIT
    while True:
        try:
            await session.call("etcd.settings.get", "k007")
            return
        except Exception:  # noqa: BLE001 - not registered yet
            if time.monotonic() > deadline:
                raise
            await task.deferLater(reactor, 1.0, lambda: None)


async def gets(session: Any, count: int) -> None:
    left = count

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            assert await session.call("etcd.settings.get", "k007") == {"v": "x" * 90}

    await defer.gatherResults([defer.ensureDeferred(worker()) for _ in range(INFLIGHT)])


async def measure(tree: Path, count: int) -> float:
    """Instructions per get of ``tree``'s component."""
    with EtcdProcess(find_etcd("3.5")) as etcd, \
            tempfile.TemporaryDirectory(prefix="wamp-callgrind-") as workdir:
        node = CrossbarNode(Path(workdir), etcd.url, with_component=False).start()
        config = Path(workdir) / "tables.json"
        config.write_text(json.dumps(node.extra))
        dump = Path(workdir) / "callgrind.out"
        component = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={dump}",
             f"--log-file={workdir}/valgrind.log", sys.executable, "-m", "component",
             "--router", f"unix:{node.socket_path}", "--config", str(config)],
            cwd=tree, env={"PYTHONHASHSEED": "0", "PATH": "/usr/bin:/bin"})
        client = Client(reactor, url=etcd.url, namespace=wamp_bench.NAMESPACE)
        try:
            await client.set(wamp_bench.row_key("k007"), cbor2.dumps({"v": "x" * 90}))
            session = await connect(node.url, "writer", "writer-secret")
            await serving(session)
            subprocess.run(["callgrind_control", "-z", str(component.pid)], check=True,
                           capture_output=True)
            await gets(session, count)
            subprocess.run(["callgrind_control", "-d", str(component.pid)], check=True,
                           capture_output=True)
            session.leave()
            totals = [int(m.group(1)) for path in Path(workdir).glob("callgrind.out.*")
                      for m in [re.search(r"^summary: (\d+)", path.read_text(), re.M)] if m]
            return sum(totals) / count
        finally:
            await wamp_bench.stop_standalone(component, 120)
            await client.close()
            node.stop()


async def main(args: argparse.Namespace) -> None:
    trees = [Path(t).resolve() for t in args.trees] or [ROOT]
    found: dict[Path, list[float]] = {tree: [] for tree in trees}
    for _ in range(args.rounds):
        for tree in trees:
            found[tree].append(await measure(tree, args.gets))
            print(f"{tree}: {found[tree][-1]:,.0f} instructions per get", flush=True)
    for tree, runs in found.items():
        print(f"| {tree} | {min(runs):,.0f} - {max(runs):,.0f} instructions per WAMP get "
              f"({args.gets} gets, {len(runs)} runs) |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trees", nargs="*", help="checkouts to compare (default: this one)")
    parser.add_argument("--gets", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=1)
    task.react(lambda _: defer.ensureDeferred(main(parser.parse_args())))
