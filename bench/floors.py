"""Where an op's time goes (issue 17): each client's CPU per op beside etcd's CPU per op while it
serves that client (``/proc/<pid>/stat`` around the run), and beside a floor that no client
can beat through the same harness.

    .venv/bin/python bench/floors.py gather [--op put] [--rounds 3] [--ops 30000]
    .venv/bin/python bench/floors.py x1 [--op put] [--rounds 3] [--seconds 3]
    .venv/bin/python bench/floors.py pace [--op put] [--rounds 3] [--seconds 3]

``gather``: 32 in flight in the gather harness; the floors are ``kv_clients.py``'s instant
clients (no etcd), i.e. what the harness costs per op on its own, ``raw-batching-floor``, our
batching rules on raw sockets decoding nothing (the least a batching client can do),
``txetcd-http-batching``, those rules on our HTTP layer with no other client logic, and
``gateway-floor-txn``, ``gateway_floor.py`` sending txns of ``EAGER_FLUSH`` ops on
``EAGER_IN_FLIGHT`` sockets with no harness at all (what etcd does with two batches in
flight when each answer is turned around at once; its "after the set-up" columns are its
whole run). After the harness's set-up (every op's Deferreds or tasks made before any runs)
the table also gives each side's CPU seconds per second, the client's and etcd's: a side
below 1 waited for the other.
``x1``: one worker loop, one op in flight; the floor is ``gateway_floor.py`` (a blocking socket
repeating one request: the gateway's own round trip with no client work), and
``twisted-floor`` the least a Twisted client does per op in the same harness (the reactor, a
Deferred, the raw answer), ``txetcd-http`` that on txetcd's HTTP layer (``txetcd.http``).
``pace``: that floor with a busy gap of 0-400 µs before each request, as a client's own work per
op makes one: etcd's CPU per request grows with the gap (its threads park and are woken again).
``--pin`` puts etcd on the last CPU and the clients on CPU 0: the kernel otherwise wakes etcd on
the client's CPU (a loopback send is a "sync" wakeup), and they share one core.
Clients alternate within each round; medians are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.peers import venv_python  # noqa: E402
from tests.test_hostile_load import cpu_seconds  # noqa: E402
from txetcd.batch import EAGER_FLUSH, EAGER_IN_FLIGHT  # noqa: E402
from txetcd.embedded import EtcdProcess, find_etcd  # noqa: E402

WARMUP = 0.5  # kv_clients.WARMUP
KEYS = 1000  # kv_clients.KEYS
CLIENTS = {"gather": ["gateway-floor-txn", "instant-twisted", "raw-batching-floor",
                      "txetcd-http-batching", "txetcd",
                      "instant-asyncio", "txetcd-asyncio", "aetcd"],
           "x1": ["gateway-floor", "twisted-floor", "txetcd-http", "txetcd", "txetcd-asyncio",
                  "aetcd"],
           "pace": [f"gateway-floor+{pause}" for pause in (0, 100, 200, 400)]}


def command(name: str, url: str, args: argparse.Namespace) -> list[str]:
    bench = ROOT / "bench"
    if name == "gateway-floor-txn":
        return [sys.executable, str(bench / "gateway_floor.py"), url, args.op, str(args.seconds),
                "0", str(EAGER_FLUSH), str(EAGER_IN_FLIGHT)]
    if name.startswith("gateway-floor"):
        pause = name.partition("+")[2] or "0"
        return [sys.executable, str(bench / "gateway_floor.py"), url, args.op, str(args.seconds),
                pause]
    python = str(venv_python(name))
    if args.what == "gather":
        return [python, str(bench / "kv_clients.py"), name, url, args.op, "32", str(args.ops),
                "gather"]
    return [python, str(bench / "kv_clients.py"), name, url, args.op, "1", str(args.seconds)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=sorted(CLIENTS))
    parser.add_argument("--op", choices=("put", "get"), default="put")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ops", type=int, default=30_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--pin", action="store_true",
                        help="etcd on the last CPU, the clients on CPU 0")
    args = parser.parse_args()
    clients = CLIENTS[args.what]
    # Per run: ops/s, client CPU µs/op, etcd CPU µs/op, and after the set-up (gather): ops/s,
    # the client's and etcd's CPU seconds per second.
    runs: dict[str, list[tuple[float, ...]]] = {name: [] for name in clients}
    with EtcdProcess(find_etcd("3.5")) as etcd:
        assert etcd.proc is not None
        last = max(os.sched_getaffinity(0))
        if args.pin:  # every thread etcd has now; those it starts later inherit it
            for thread in os.listdir(f"/proc/{etcd.proc.pid}/task"):
                os.sched_setaffinity(int(thread), {last})
        # Gets read the keys the puts write (as in ``make bench``, where puts run first): a get
        # of a missing key has a far smaller answer.
        subprocess.run([sys.executable, str(ROOT / "bench" / "kv_clients.py"), "txetcd",
                        etcd.url, "put", "32", str(KEYS), "gather"], capture_output=True,
                       check=True)
        for round_ in range(args.rounds):
            for name in clients if round_ % 2 == 0 else clients[::-1]:
                before = cpu_seconds(etcd.proc.pid)
                out = subprocess.run(command(name, etcd.url, args), capture_output=True,
                                     text=True, check=True, preexec_fn=(
                                         (lambda: os.sched_setaffinity(0, {0})) if args.pin
                                         else None))
                got = json.loads(out.stdout.strip().splitlines()[-1])
                # kv_clients' worker loops run a warm-up (WARMUP s) before they count.
                span = args.seconds + (0 if name.startswith("gateway-floor") else WARMUP)
                timed = args.what != "gather" or name == "gateway-floor-txn"
                done = got["ops_per_s"] * span if timed else args.ops
                etcd_us = (cpu_seconds(etcd.proc.pid) - before) / max(done, 1) * 1e6
                if name == "gateway-floor-txn":  # no harness, no set-up: the whole run
                    got["after_setup_ops_per_s"] = got["ops_per_s"]
                    got["after_setup_busy"] = got["cpu_us_per_op"] * got["ops_per_s"] / 1e6
                after = got.get("after_setup_ops_per_s", float("nan"))
                # etcd works once the set-up is over (at most 32 ops reach it before).
                runs[name].append((got["ops_per_s"], got["cpu_us_per_op"], etcd_us, after,
                                   got.get("after_setup_busy", float("nan")),
                                   etcd_us * after / 1e6))
    inflight = 32 if args.what == "gather" else 1
    pinned = ", pinned" if args.pin else ""
    gather = args.what == "gather"
    print(f"| {args.op} x{inflight}, {args.what}{pinned} | ops/s | client CPU µs/op "
          "| etcd CPU µs/op |" + (" after the set-up: ops/s | client busy | etcd busy |"
                                  if gather else ""))
    print("|---|---|---|---|" + ("---|---|---|" if gather else ""))
    for name, values in runs.items():
        rate, client, server, after, busy, etcd_busy = (statistics.median(v[i] for v in values)
                                                        for i in range(6))
        alone = name.startswith("instant")
        line = f"| {name} | {rate:,.0f} | {client:.1f} | {'-' if alone else f'{server:.0f}'} |"
        if gather:
            line += f" {after:,.0f} | {busy:.2f} | {'-' if alone else f'{etcd_busy:.2f}'} |"
        print(line)


if __name__ == "__main__":
    main()
