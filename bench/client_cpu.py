"""Client CPU per batched op, steadier than ops/s on a shared machine (issue 17).

``ab OLD NEW``: ``kv_clients.py txetcd`` from two checkouts (a clean clone of the old commit,
and this one), alternating in one etcd, at 32 in flight in both harnesses; medians of ops/s
and of the client process's CPU µs/op. ``calls TREE``: Python function calls per op under
cProfile (deterministic; includes the harness), and the functions that make them.
``instructions OLD NEW``: instructions per op of each tree's client at 32 in flight, counted by
callgrind (steady where CPU seconds swing by a third between runs): this checkout's ``fixed``
harness runs each tree's ``txetcd`` for two op counts, and the difference in instructions over
the difference in ops leaves start-up out; the harness alone is counted too (``make bench``
judges the CPU target on this). ``layers``: so counted, each layer of a client (``LAYERS``),
and what it adds to the one below.

    .venv/bin/python bench/client_cpu.py ab /tmp/old-clone . [--rounds 3]
    .venv/bin/python bench/client_cpu.py instructions /tmp/old-clone . [--op put] [--ops 2000]
    .venv/bin/python bench/client_cpu.py layers [--op put] [--ops 500] [--inflight 1|32]
    .venv/bin/python bench/client_cpu.py calls . [--op put] [--ops 20000] [--inflight 32]
        [--client txetcd|twisted-floor] [--top 30]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HARNESS = "harness"  # count_instructions' name for the harness alone
CASES = [("put", "3", "loop"), ("get", "3", "loop"), ("put", "30000", "gather"),
         ("get", "30000", "gather")]


def ab(trees: dict[str, str], rounds: int) -> None:
    sys.path.insert(0, str(ROOT))
    from txetcd.embedded import EtcdProcess, find_etcd

    runs: dict[tuple[tuple[str, ...], str], list[tuple[float, float]]] = {}
    with EtcdProcess(find_etcd("3.5")) as etcd:
        for round_ in range(rounds):
            for op, amount, harness in CASES:
                for name in ("old", "new") if round_ % 2 == 0 else ("new", "old"):
                    tree = trees[name]
                    out = subprocess.run(
                        [sys.executable, f"{tree}/bench/kv_clients.py", "txetcd", etcd.url, op,
                         "32", amount, harness], capture_output=True, text=True, cwd=tree,
                        env={**os.environ, "PYTHONPATH": tree}, check=True)
                    got = json.loads(out.stdout.strip().splitlines()[-1])
                    runs.setdefault(((op, harness), name), []).append(
                        (got["ops_per_s"], got["cpu_us_per_op"]))
                    print(f"  round {round_ + 1}: {name} {op} x32 {harness}: "
                          f"{got['ops_per_s']:,.0f}/s {got['cpu_us_per_op']:.1f} µs/op", flush=True)
    print("\n| case | old: ops/s, CPU µs/op | new: ops/s, CPU µs/op |\n|---|---|---|")
    for op, _, harness in CASES:
        cells = []
        for name in ("old", "new"):
            values = runs[((op, harness), name)]
            cells.append(f"{statistics.median(v for v, _ in values):,.0f}/s, "
                         f"{statistics.median(c for _, c in values):.1f}")
        print(f"| {op} x32, {harness} | " + " | ".join(cells) + " |")


def instructions_per_op(client: str, url: str, tree: str, op: str, ops: int, inflight: int,
                        work: str) -> float:
    """Instructions per ``op`` of ``client`` (``kv_clients.py``'s, with ``tree`` first on the
    path) at ``inflight`` in the ``fixed`` harness, under callgrind: runs of ``ops`` and
    3 * ``ops`` ops, the difference over 2 * ``ops`` (start-up left out)."""
    counted = []
    for count in (ops, 3 * ops):
        out = Path(work) / f"{client}-{Path(tree).name}-{op}-{inflight}-{count}.out"
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                        f"--log-file={work}/valgrind.log", sys.executable,
                        str(ROOT / "bench/kv_clients.py"), client, url, op, str(inflight),
                        str(count), "fixed"],
                       check=True, capture_output=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": tree, "PYTHONHASHSEED": "0"})
        summary = re.search(r"^summary: (\d+)", out.read_text(), re.M)
        assert summary is not None, f"no summary in {out}"
        counted.append(int(summary.group(1)))
    return (counted[1] - counted[0]) / (2 * ops)


def count_instructions(trees: dict[str, str], op: str, ops: int, url: str,
                       work: str) -> dict[str, float]:
    """Instructions per ``op`` of each tree's ``txetcd`` at 32 in flight (this checkout's
    ``fixed`` harness, etcd at ``url``, whose keys exist), and under ``HARNESS`` those of the
    harness alone: the ``instant-twisted`` client, a Deferred per op answered a turn later,
    which any Twisted client pays too."""
    runs = {**{name: ("txetcd", url, tree) for name, tree in trees.items()},
            HARNESS: ("instant-twisted", "http://127.0.0.1:1", str(ROOT))}
    return {name: instructions_per_op(client, client_url, tree, op, ops, 32, work)
            for name, (client, client_url, tree) in runs.items()}


def fill_keys(url: str) -> None:
    """The keys the gets read (they exist, as in make bench)."""
    subprocess.run([sys.executable, str(ROOT / "bench/kv_clients.py"), "txetcd", url, "put",
                    "32", "1000", "fixed"], check=True, capture_output=True, cwd=ROOT)


def instructions(trees: dict[str, str], op: str, ops: int) -> None:
    sys.path.insert(0, str(ROOT))
    from txetcd.embedded import EtcdProcess, find_etcd

    with EtcdProcess(find_etcd("3.5")) as etcd, tempfile.TemporaryDirectory() as work:
        fill_keys(etcd.url)
        found = count_instructions(trees, op, ops, etcd.url, work)
    for name, value in found.items():
        print(f"  {name} ({trees.get(name, 'instant-twisted')}): {value:,.0f} instructions "
              f"per {op}", flush=True)
    own = {name: found[name] - found[HARNESS] for name in trees}
    print(f"| {op} x32 | " + " | ".join(f"{name}: {found[name]:,.0f}" for name in trees)
          + f" | new / old {found['new'] / found['old']:.2f}; less the harness's "
          f"{found[HARNESS]:,.0f}: {own['new'] / own['old']:.2f} |")


#: Each layer's client at 1 and at 32 in flight, leanest first (``floors.py``'s floors): at 32,
#: the harness alone (``instant-twisted``, no etcd), our batching rules on raw sockets, those
#: rules on our HTTP layer with ``json.loads``, the whole client. Counted in the ``fixed``
#: harness: the gather harness's own instructions grow faster than its op count (its collector
#: walks every pending op, and ``DeferredSemaphore`` pops the head of a list of them).
LAYERS = {1: ("twisted-floor", "txetcd-http", "txetcd"),
          32: ("instant-twisted", "raw-batching-floor", "txetcd-http-batching", "txetcd")}


def layers(op: str, ops: int, inflight: int) -> None:
    """Instructions per op of each layer in ``LAYERS``, and what each adds to the one before:
    where a client's CPU goes, steadier than any profile of a run."""
    sys.path.insert(0, str(ROOT))
    from txetcd.embedded import EtcdProcess, find_etcd

    with EtcdProcess(find_etcd("3.5")) as etcd, tempfile.TemporaryDirectory() as work:
        fill_keys(etcd.url)
        below = 0.0
        for client in LAYERS[inflight]:
            url = "http://127.0.0.1:1" if client == "instant-twisted" else etcd.url
            counted = instructions_per_op(client, url, str(ROOT), op, ops, inflight, work)
            print(f"| {op} x{inflight} | {client} | {counted:,.0f} instructions per op | "
                  f"+{counted - below:,.0f} |", flush=True)
            below = counted


def calls(tree: str, op: str, ops: int, inflight: int, client_name: str, top: int) -> None:
    sys.path[:0] = [tree, str(ROOT / "bench")]  # the tree's txetcd in this checkout's harness
    import kv_clients

    from txetcd.embedded import EtcdProcess, find_etcd

    with EtcdProcess(find_etcd("3.5")) as etcd:
        client = kv_clients.TWISTED_CLIENTS[client_name](etcd.url)
        profile = cProfile.Profile()
        profile.enable()
        kv_clients.run_twisted(kv_clients.twisted_op(op), client, inflight, ops, "gather")
        profile.disable()
    stats = pstats.Stats(profile)
    print(f"{client_name} {op} x{inflight}: {stats.total_calls / ops:.1f} Python calls per op "
          "(with the gather harness)")
    rows = sorted(((n / ops, f"{Path(f).name}:{line}({name})")
                   for (f, line, name), (_, n, *_) in stats.stats.items()),  # type: ignore[attr-defined]
                  reverse=True)
    for per_op, where in rows[:top]:
        print(f"  {per_op:6.2f}  {where}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    a = sub.add_parser("ab")
    a.add_argument("old")
    a.add_argument("new")
    a.add_argument("--rounds", type=int, default=3)
    i = sub.add_parser("instructions")
    i.add_argument("old")
    i.add_argument("new")
    i.add_argument("--op", choices=("put", "get"), default="put")
    i.add_argument("--ops", type=int, default=2000, help="the smaller of the two op counts")
    layer = sub.add_parser("layers")
    layer.add_argument("--op", choices=("put", "get"), default="put")
    layer.add_argument("--ops", type=int, default=500, help="the smaller of the two op counts")
    layer.add_argument("--inflight", type=int, choices=sorted(LAYERS), default=1)
    c = sub.add_parser("calls")
    c.add_argument("tree")
    c.add_argument("--op", choices=("put", "get"), default="put")
    c.add_argument("--ops", type=int, default=20_000)
    c.add_argument("--inflight", type=int, default=32)
    c.add_argument("--client", default="txetcd", help="txetcd, twisted-floor (x1 only), ...")
    c.add_argument("--top", type=int, default=30, help="how many functions to list")
    args = parser.parse_args()
    if args.what == "layers":
        layers(args.op, args.ops, args.inflight)
    elif args.what in ("ab", "instructions"):
        trees = {"old": str(Path(args.old).resolve()), "new": str(Path(args.new).resolve())}
        if args.what == "ab":
            ab(trees, args.rounds)
        else:
            instructions(trees, args.op, args.ops)
    else:
        calls(str(Path(args.tree).resolve()), args.op, args.ops, args.inflight, args.client,
              args.top)


if __name__ == "__main__":
    main()
