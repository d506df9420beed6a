"""Gets at many in flight with the batcher's eager flush bounded by ``EAGER_IN_FLIGHT`` (as
shipped) and unbounded (as before issue 17's session 12): gets/s, and etcd's and the client's
CPU per get. Rules alternate in one etcd, ``--rounds`` times.

    .venv/bin/python bench/batch_busy.py [--inflight 200] [--seconds 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from twisted.internet import defer, reactor, task

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import txetcd.batch  # noqa: E402
from tests.test_hostile_load import cpu_seconds  # noqa: E402
from txetcd import Client  # noqa: E402
from txetcd.embedded import EtcdProcess, find_etcd  # noqa: E402

KEYS = 1000
RULES = {"bounded": txetcd.batch.EAGER_IN_FLIGHT, "unbounded": sys.maxsize}


async def gets(client: Client, inflight: int, seconds: float) -> int:
    """Gets by ``inflight`` workers in closed loops for ``seconds``; how many were done."""
    done = 0
    end = time.monotonic() + seconds

    async def worker(n: int) -> None:
        nonlocal done
        i = n
        while time.monotonic() < end:
            await client.get(b"busy/%04d" % (i % KEYS))
            done += 1
            i += inflight

    await defer.gatherResults([defer.ensureDeferred(worker(n)) for n in range(inflight)])
    return done


async def main(args: argparse.Namespace) -> None:
    with EtcdProcess(find_etcd("3.5")) as etcd:
        assert etcd.proc is not None
        client = Client(reactor, url=etcd.url)
        await defer.gatherResults([client.set(b"busy/%04d" % i, b"v" * 100)
                                   for i in range(KEYS)])
        print("| rule | round | gets/s | etcd CPU µs/get | client CPU µs/get |\n"
              "|---|---|---|---|---|")
        for round_ in range(args.rounds):
            for rule, bound in RULES.items():
                txetcd.batch.EAGER_IN_FLIGHT = bound
                etcd_before, ours_before = cpu_seconds(etcd.proc.pid), time.process_time()
                began = time.monotonic()
                done = await gets(client, args.inflight, args.seconds)
                elapsed = time.monotonic() - began
                etcd_us = (cpu_seconds(etcd.proc.pid) - etcd_before) / done * 1e6
                ours_us = (time.process_time() - ours_before) / done * 1e6
                print(f"| {rule} | {round_ + 1} | {done / elapsed:,.0f} | {etcd_us:.1f} | "
                      f"{ours_us:.1f} |", flush=True)
        await client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inflight", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    task.react(lambda _: defer.ensureDeferred(main(arguments)))
