"""``python -m component.indexes build|check --config tables.json``: index upkeep for operators.

``build`` indexes the rows a table had before its index was declared, page by page, each page
one transaction that also records how far it got (under the component's reserved slot), so an
interrupted build resumes there; then it drops entries that match no row. It is safe while the
component serves writes. ``check`` reads rows and entries at one revision and lists every
entry that is missing, stale (matches no row) or duplicated; exit status 1 when there is any.
``main(argv)`` is the entry point a CLI can hook in.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import cbor2
from twisted.internet import defer

from procedures.errors import ProcedureError
from procedures.indexes import IndexMaintenance, TableIndex
from txetcd import EtcdError
from txetcd.pmap.layout import slot_prefix

from .config import RESERVED_SLOT, ConfigError, parse_settings
from .tables import connect, open_tables

__all__ = ["main", "marker_key"]

def marker_key(table: str, index: str) -> bytes:
    """Where a build records its progress: outside every table, beside the publishers' keys."""
    return slot_prefix(RESERVED_SLOT) + f"index-build/{table}.{index}".encode()


def _marker_value(phase: str, after: bytes) -> bytes:
    return cbor2.dumps({"phase": phase, "after": after})


async def build(index: TableIndex, page: int, max_pages: int | None) -> tuple[str, bool]:
    """Run (or resume) the build of ``index``; returns a report line and whether it finished."""
    upkeep = IndexMaintenance(index)
    client = index.table.client
    marker = marker_key(index.table.name, index.name)
    found = await client.get(marker)
    state: dict[str, Any] = cbor2.loads(found.kvs[0].value) if found.kvs else {
        "phase": "rows", "after": None}
    resumed = " (resumed)" if found.kvs else ""
    phase: str = state["phase"]
    after: bytes | None = state["after"]
    pages = 0
    while True:
        if max_pages is not None and pages >= max_pages:
            return f"{index.table.name}.{index.name}: stopped after {pages} pages{resumed}; " \
                   "run build again to resume", False
        last = await upkeep.build_page(phase, after, page, marker, _marker_value)
        pages += 1
        if last is not None:
            after = last
            continue
        if phase == "rows":
            phase, after = "entries", None
            continue
        await client.delete(marker)
        return f"{index.table.name}.{index.name}: built in {pages} pages{resumed}", True


async def run(command: str, settings: Any, reactor: Any, table_name: str | None,
              index_name: str | None, page: int, max_pages: int | None) -> int:
    client = connect(settings, reactor)
    try:
        tables = open_tables(settings, client)
        chosen = [index for name, table in tables.items() if table_name in (None, name)
                  for index in table.indexes.values() if index_name in (None, index.name)]
        if not chosen:
            print("no index matches", file=sys.stderr)
            return 2
        status = 0
        for index in chosen:
            label = f"{index.table.name}.{index.name}"
            if command == "build":
                line, finished = await build(index, page, max_pages)
                print(line)
                status = max(status, 0 if finished else 3)
                continue
            rows, entries, problems = await IndexMaintenance(index).check()
            print(f"{label}: {rows} rows, {entries} entries, {len(problems)} disagreements")
            for problem in problems:
                print(f"{label}: {problem}")
            status = max(status, 1 if problems else 0)
        return status
    except (ProcedureError, EtcdError) as exc:
        print(f"error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 1
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m component.indexes", description=(
        "Build the secondary indexes declared in a table config over existing rows, or check "
        "that index entries agree with the rows."))
    parser.add_argument("command", choices=("build", "check"))
    parser.add_argument("--config", required=True, help="tables.json: prefix, etcd, tables")
    parser.add_argument("--table", default=None, help="only this table's indexes")
    parser.add_argument("--index", default=None, help="only indexes of this name")
    parser.add_argument("--page", type=int, default=500, help="rows per transaction (build)")
    parser.add_argument("--max-pages", type=int, default=None,
                        help="stop after this many pages (a later build resumes)")
    args = parser.parse_args(argv)
    try:
        with open(args.config) as f:
            settings = parse_settings(json.load(f))
    except (OSError, ValueError) as exc:  # ConfigError is a ValueError
        kind = "config" if isinstance(exc, (ConfigError, json.JSONDecodeError)) else "error"
        print(f"{kind}: {exc}", file=sys.stderr)
        return 2
    if not 1 <= args.page <= 1000:
        print("error: --page must be 1..1000", file=sys.stderr)
        return 2
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor
    status: list[Any] = []
    done = defer.ensureDeferred(run(args.command, settings, reactor, args.table, args.index,
                                    args.page, args.max_pages))
    done.addBoth(status.append).addBoth(lambda _: reactor.stop())
    reactor.run()
    if status and isinstance(status[0], int):
        return status[0]
    if status:
        status[0].printTraceback(file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
