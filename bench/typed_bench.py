"""What typed tables cost over WAMP, against a real node and etcd (issue 15).

- put: ``put`` of the same JSON rows into a plain table, a table with a JSON Schema, and a table
  with the schema and two indexes (one unique), 100 calls in flight; calls/s.
- lookup: ``<index>.get`` by a unique email, 100 in flight; calls/s.
- cursor: paging 10,000 rows with ``scan(page=True, after=...)``, 1,000 per page; rows/s.
- history: ``history(key, limit=10)`` of a row with 20 versions; calls/s, one at a time.

    .venv/bin/python bench/typed_bench.py [--rows 2000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.typed import USER_SCHEMA, session_as, typed_node, write_node_config  # noqa: E402
from txetcd.embedded import EtcdProcess, find_etcd  # noqa: E402


async def rate(calls: list[Any], in_flight: int = 100) -> float:
    """Calls/s of ``calls`` (zero-argument callables returning Deferreds), ``in_flight`` at once."""
    start = time.perf_counter()
    pending = iter(calls)

    async def worker() -> None:
        for call in pending:
            await call()

    await defer.gatherResults([defer.ensureDeferred(worker()) for _ in range(in_flight)])
    return len(calls) / (time.perf_counter() - start)


async def main(args: argparse.Namespace) -> None:
    with EtcdProcess(find_etcd("3.5")) as etcd, \
            tempfile.TemporaryDirectory(prefix="typed-bench-") as workdir:
        node = typed_node(Path(workdir), etcd.url)
        tables = node.extra["tables"]
        tables.append({"name": "checked", "slot": 30, "key": "uuid", "value": "json",
                       "schema": USER_SCHEMA})
        tables.append({"name": "loose", "slot": 31, "key": "uuid", "value": "json"})
        write_node_config(node)
        node.start()
        try:
            session = await session_as(node.url, "cbor")
            print("| typed-table benchmark | result |\n|---|---|", flush=True)
            rows = [(str(uuid.uuid4()), {"name": f"user {i}", "email": f"u{i}@example.com",
                                         "address": {"city": f"city {i % 10}"}})
                    for i in range(args.rows)]
            for table in ("loose", "checked", "users"):
                got = await rate([lambda k=k, v=v, t=table: session.call(f"etcd.{t}.put", k, v)
                                  for k, v in rows])
                print(f"| put, {table} table ({args.rows} rows) | {got:,.0f} calls/s |",
                      flush=True)
            got = await rate([lambda v=v: session.call("etcd.users.by_email.get", v["email"])
                              for _, v in rows])
            print(f"| users.by_email.get | {got:,.0f} calls/s |", flush=True)
            start, seen, after = time.perf_counter(), 0, None
            while True:
                page = await session.call("etcd.users.scan", limit=1000, after=after, page=True)
                seen += len(page["rows"])
                if page["last"]:
                    break
                after = page["next_after"]
            print(f"| paging {seen} rows with after=, 1,000 a page | "
                  f"{seen / (time.perf_counter() - start):,.0f} rows/s |", flush=True)
            key, value = rows[0]
            for n in range(20):
                await session.call("etcd.users.put", key, {**value, "name": f"v{n}"})
            got = await rate([lambda: session.call("etcd.users.history", key, limit=10)] * 50,
                             in_flight=1)
            print(f"| history(limit=10) of a 20-version row | {got:,.0f} calls/s |", flush=True)
            session.leave()
        finally:
            node.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2000)
    task.react(lambda _: defer.ensureDeferred(main(parser.parse_args())))
