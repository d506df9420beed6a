"""What the gather harness costs per op on its own, and how much of it is garbage collection.

The gather harness (``kv_clients.py``, issue 17) creates every op at once behind a semaphore of
32: with 30,000 ops that is a heap of pending Deferreds (or asyncio tasks) that Python's full
collections walk while it grows. Here the harness drives a client that answers from memory
(``instant-twisted``, ``instant-asyncio``), in a process of its own per run, for each op count;
each line gives the CPU per op, the collector's part of it by generation (``kv_clients.Count``),
the number of collections, and the CPU per op of the same run with the collector disabled.

    .venv/bin/python bench/harness_gc.py [--ops 3000 30000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent

ONE_RUN = """
import gc, json, sys
sys.path.insert(0, sys.argv[1])
import kv_clients

client, ops, collector = sys.argv[2], int(sys.argv[3]), sys.argv[4]
if collector == "off":
    gc.disable()
measured = kv_clients.measure(client, "http://127.0.0.1:1", "put", 32, ops, "gather")
print(json.dumps({"cpu": measured.cpu_us_per_op(),
                  "gc": [seconds / ops * 1e6 for seconds in measured.gc_seconds],
                  "collections": measured.collections}))
"""


def one_run(client: str, ops: int, collector: str) -> dict:
    out = subprocess.run([sys.executable, "-c", ONE_RUN, str(BENCH), client, str(ops),
                          collector], capture_output=True, text=True, check=True, timeout=600)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, nargs="+", default=[3000, 30000])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print("| harness | ops | CPU µs/op | of it GC, by generation 0/1/2 | collections 0/1/2 | "
          "CPU µs/op, GC off |\n|---|---|---|---|---|---|")
    for round_ in range(args.rounds):
        for ops in args.ops:
            for client in ("instant-twisted", "instant-asyncio"):
                on, off = one_run(client, ops, "on"), one_run(client, ops, "off")
                gc_text = " / ".join(f"{us:.1f}" for us in on["gc"])
                counts = " / ".join(str(n) for n in on["collections"])
                print(f"| {client} (round {round_ + 1}) | {ops:,} | {on['cpu']:.1f} | "
                      f"{sum(on['gc']):.1f} ({gc_text}) | {counts} | {off['cpu']:.1f} |",
                      flush=True)


if __name__ == "__main__":
    main()
