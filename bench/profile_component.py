"""Where the WAMP component spends its time: the component runs standalone under pyinstrument
while the benchmarks of ``wamp_bench.py`` drive it; the profile goes to ``--output``.

    .venv/bin/python bench/profile_component.py [--what get|events|scan] [--output FILE]
        [--profiler pyinstrument|cprofile]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor, task

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import wamp_bench  # noqa: E402

from tests.wamp import CrossbarNode, connect  # noqa: E402
from txetcd import Client  # noqa: E402
from txetcd.embedded import EtcdProcess, find_etcd  # noqa: E402


async def main(args: argparse.Namespace) -> None:
    with EtcdProcess(find_etcd("3.5")) as etcd, \
            tempfile.TemporaryDirectory(prefix="wamp-profile-") as workdir:
        node = CrossbarNode(Path(workdir), etcd.url, with_component=False).start()
        config = Path(workdir) / "tables.json"
        config.write_text(json.dumps(node.extra))
        profiler = (["-m", "pyinstrument", "-o", args.output] if args.profiler == "pyinstrument"
                    else ["-m", "cProfile", "-o", args.output])
        component = subprocess.Popen(
            [sys.executable, *profiler, "-m", "component",
             "--router", f"unix:{node.socket_path}", "--config", str(config)], cwd=ROOT)
        client = Client(reactor, url=etcd.url, namespace=wamp_bench.NAMESPACE)
        try:
            await task.deferLater(reactor, 5.0, lambda: None)  # the component joins
            session: Any = await connect(node.url, "writer", "writer-secret")
            pids = {"component": component.pid}
            callee = await wamp_bench.echo_callee(node.socket_path)
            if args.what == "get":
                await wamp_bench.get_vs_echo(session, client, 1, args.seconds, pids)
            elif args.what == "events":
                await wamp_bench.events(session, client, etcd.url, args.seconds)
            else:
                await wamp_bench.scan(session, client, 1, pids, node.socket_path)
            session.leave()
            callee.leave()
        finally:
            await wamp_bench.stop_standalone(component, 30)
            await client.close()
            node.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--what", choices=["get", "events", "scan"], default="events")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--output", default="/tmp/component-profile.txt")
    parser.add_argument("--profiler", choices=["pyinstrument", "cprofile"],
                        default="pyinstrument",
                        help="cprofile writes pstats data (exact call counts) to --output")
    task.react(lambda _: defer.ensureDeferred(main(parser.parse_args())))
