"""Where the WAMP component spends its time: the component runs standalone under pyinstrument
while the benchmarks of ``wamp_bench.py`` drive it; the profile goes to ``--output``.

    .venv/bin/python bench/profile_component.py [--what get|events|scan] [--output FILE]
        [--profiler pyinstrument|cprofile]
    .venv/bin/python bench/profile_component.py --split FILE   # a cProfile file, by origin

``--split`` (also printed after a ``cprofile`` run) sums the profile's own times by whose code
ran: ours (txetcd, component, procedures), autobahn and txaio, Twisted, the rest of Python, and
the socket calls; a C function's time goes to the code that called it. A ``cprofile`` run
profiles from when the component serves on (SIGUSR1); the epoll wait, and in a whole-run
profile the start-up (imports, compiling), are left out.
"""

from __future__ import annotations

import argparse
import json
import pstats
import signal
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

# The component under cProfile from SIGUSR1 on (sent once it serves), so that the profile holds
# what the benchmark drives and not the start-up; written to argv[1] when the component ends.
PROFILED_FROM_SIGNAL = """
import cProfile, runpy, signal, sys
profiler = cProfile.Profile()
signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())
output, sys.argv = sys.argv[1], ["component", *sys.argv[2:]]
try:
    runpy.run_module("component", run_name="__main__", alter_sys=True)
finally:
    profiler.disable()
    profiler.dump_stats(output)
"""


async def main(args: argparse.Namespace) -> None:
    with EtcdProcess(find_etcd("3.5")) as etcd, \
            tempfile.TemporaryDirectory(prefix="wamp-profile-") as workdir:
        node = CrossbarNode(Path(workdir), etcd.url, with_component=False).start()
        config = Path(workdir) / "tables.json"
        config.write_text(json.dumps(node.extra))
        profiler = (["-m", "pyinstrument", "-o", args.output] if args.profiler == "pyinstrument"
                    else ["-c", PROFILED_FROM_SIGNAL, args.output])
        component = subprocess.Popen(
            [sys.executable, *profiler, *([] if profiler[0] == "-c" else ["-m", "component"]),
             "--router", f"unix:{node.socket_path}", "--config", str(config)], cwd=ROOT)
        client = Client(reactor, url=etcd.url, namespace=wamp_bench.NAMESPACE)
        try:
            await task.deferLater(reactor, 5.0, lambda: None)  # the component joins
            component.send_signal(signal.SIGUSR1)  # cProfile: from here on
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
    if args.profiler == "cprofile":
        print(split(args.output))


ORIGINS = {"ours": tuple(str(ROOT / part) + "/" for part in ("txetcd", "component",
                                                               "procedures")),
           "autobahn and txaio": ("/autobahn/", "/txaio/"), "Twisted": ("/twisted/",)}
SOCKET_CALLS = ("'send'", "'recv'", "'sendmsg'", "'recvmsg'", "'sendall'")
START_UP = ("<frozen importlib", "builtins.compile", "marshal.loads", "_imp.", "io.open_code",
            "posix.stat", "builtins.__build_class__", "/re/_", "builtins.exec")
Func = tuple[str, int, str]


def origin(func: Func) -> str:
    """Whose code ``func`` is (a C function's origin is its caller's: see ``split``)."""
    filename, _, name = func
    if "epoll" in name:
        return "the epoll wait"
    if any(mark in filename or mark in name for mark in START_UP):
        return "start-up"
    if filename == "~":
        return "socket calls" if any(call in name for call in SOCKET_CALLS) else "C"
    for who, marks in ORIGINS.items():
        if any(mark in filename for mark in marks):
            return who
    return "the rest of Python"


def split(path: str) -> str:
    """A cProfile file's own times by origin, as a table; each C function's own time is shared
    among the origins of its callers, by what each call site spent in it."""
    stats: dict[Func, Any] = pstats.Stats(path).stats  # type: ignore[attr-defined]
    seconds: dict[str, float] = {}
    for func, (_, _, own, _, callers) in stats.items():
        who = origin(func)
        if who == "C" and callers:
            spent = sum(edge[2] for edge in callers.values()) or 1.0
            for caller, edge in callers.items():
                by = origin(caller)
                by = by if by not in ("C", "start-up") else "the rest of Python"
                seconds[by] = seconds.get(by, 0.0) + own * edge[2] / spent
            continue
        who = "the rest of Python" if who == "C" else who
        seconds[who] = seconds.get(who, 0.0) + own
    counted = {who: s for who, s in seconds.items() if who not in ("the epoll wait", "start-up")}
    total = sum(counted.values()) or 1.0
    lines = ["| whose code | own time (s, under cProfile) | share |", "|---|---|---|"]
    lines += [f"| {who} | {s:.3f} | {s / total:.0%} |"
              for who, s in sorted(counted.items(), key=lambda item: -item[1])]
    left_out = ", ".join(f"{who} {seconds.get(who, 0.0):.3f} s"
                         for who in ("the epoll wait", "start-up"))
    return "\n".join(lines) + f"\n\nLeft out: {left_out}."


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--what", choices=["get", "events", "scan"], default="events")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--output", default="/tmp/component-profile.txt")
    parser.add_argument("--profiler", choices=["pyinstrument", "cprofile"],
                        default="pyinstrument",
                        help="cprofile writes pstats data (exact call counts) to --output")
    parser.add_argument("--split", metavar="FILE", help="only print FILE's times by origin")
    arguments = parser.parse_args()
    if arguments.split:
        print(split(arguments.split))
    else:
        task.react(lambda _: defer.ensureDeferred(main(arguments)))
