"""``make bench``: txetcd against its peers on one etcd 3.5.1, then the WAMP benchmarks.

Installs each peer in a venv of its own under ``bench/.venvs/`` (once), starts one etcd from
``txetcd.embedded``, runs every client alternately for several rounds (so that noise from other
load on the machine spreads over all of them) and prints a markdown table of medians and ratios.
Then runs ``bench/wamp_bench.py`` (Crossbar) and ``bench/watch_memory.py``.

    .venv/bin/python bench/run.py [--rounds 3] [--seconds 3] [--skip-wamp] [--skip-memory]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from tests.peers import PEERS, ensure_venv, venv_python  # noqa: E402
from txetcd.embedded import EtcdProcess, find_etcd  # noqa: E402

CLIENTS = ["txetcd", "txetcd-asyncio", "aetcd", "python-etcd3", "etcd3gw", "txaioetcd",
           "txetcd-unbatched"]
CASES = [("put", 32), ("get", 32), ("put", 1), ("get", 1)]


def ensure_venvs() -> None:
    for name in PEERS:
        ensure_venv(name)


def run_one(client: str, url: str, op: str, inflight: int, seconds: float) -> float:
    command = [str(venv_python(client)), str(BENCH / "kv_clients.py"), client, url, op,
               str(inflight), str(seconds)]
    try:
        out = subprocess.run(command, capture_output=True, text=True, check=True,
                             timeout=seconds + 60, cwd=ROOT)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        print(f"  {client} {op} x{inflight} failed: {exc}\n{getattr(exc, 'stderr', '')}",
              file=sys.stderr)
        return float("nan")
    return float(json.loads(out.stdout.strip().splitlines()[-1])["ops_per_s"])


def kv_bench(url: str, rounds: int, seconds: float, clients: list[str]) -> dict:
    rates: dict[tuple[str, str, int], list[float]] = {}
    # Fill the keys the gets read (the put runs rewrite the same keys).
    run_one("txetcd", url, "put", 32, 1.0)
    for round_ in range(rounds):
        for op, inflight in CASES:
            # Rotate the order every round so no client always runs right after a given one.
            shift = round_ % len(clients)
            for client in clients[shift:] + clients[:shift]:
                rate = run_one(client, url, op, inflight, seconds)
                rates.setdefault((client, op, inflight), []).append(rate)
                print(f"  round {round_ + 1}: {client:17} {op} x{inflight:<2} {rate:9.0f}/s",
                      flush=True)
    return {key: statistics.median(values) for key, values in rates.items()}


def kv_table(medians: dict, clients: list[str]) -> str:
    head = "| client | " + " | ".join(f"{op} x{n}" for op, n in CASES) + " |"
    lines = [head, "|" + "---|" * (len(CASES) + 1)]
    for client in clients:
        cells = [f"{medians[(client, op, n)]:,.0f}/s" for op, n in CASES]
        lines.append(f"| {client} | " + " | ".join(cells) + " |")
    ratios = [("txetcd", "aetcd"), ("txetcd-asyncio", "aetcd"), ("txetcd", "txaioetcd")]
    for ours, peer in ratios:
        if ours in clients and peer in clients:
            cells = [f"{medians[(ours, op, n)] / medians[(peer, op, n)]:.2f}x"
                     for op, n in CASES]
            lines.append(f"| {ours} / {peer} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> str:
    cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    with open("/proc/meminfo") as f:
        mem_gib = int(f.readline().split()[1]) / 1024 / 1024
    return (f"{cores} cores ({platform.processor() or platform.machine()}), {mem_gib:.0f} GiB, "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per run")
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--skip-wamp", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    clients = args.clients.split(",")
    ensure_venvs()
    print("machine:", machine(), flush=True)
    with EtcdProcess(find_etcd("3.5")) as etcd:
        print(f"etcd {etcd.version} at {etcd.url}", flush=True)
        medians = kv_bench(etcd.url, args.rounds, args.seconds, clients)
        print(f"\nKV ops/s, medians of {args.rounds} rounds of {args.seconds:g} s, 100-byte "
              f"values, etcd {etcd.version}:\n")
        print(kv_table(medians, clients), flush=True)
    if not args.skip_wamp:
        subprocess.run([sys.executable, str(BENCH / "wamp_bench.py")], check=False, cwd=ROOT)
    if not args.skip_memory:
        subprocess.run([sys.executable, str(BENCH / "watch_memory.py")], check=False, cwd=ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
