"""``etcd-wamp export`` and ``import``: a table to and from JSON Lines, over WAMP.

Both go through the component's procedures like any client (so roles and validation apply).

Export reads one snapshot: it takes the store revision from ``<prefix>.status`` and pages
through ``<prefix>.<table>.scan(from_key=..., revision=R)`` with progressive results, so rows
written meanwhile are not mixed in. If etcd compacts R away mid-export, the export fails
rather than return a mix.

Import writes in ``<prefix>.txn`` batches within etcd's limits (``MAX_OPS`` ops, about
``MAX_BATCH_BYTES`` of keys and values, each key once), ``IN_FLIGHT`` at a time. Rows the
table cannot encode are checked with the component's own codecs before sending, and rows the
component refuses are found by splitting the batch; both are reported with their line numbers
and skipped. After each committed batch (and all before it) the number of the last line it
covered goes to a position file, so ``--resume`` continues after it (a batch applied twice
writes the same values again).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallOptions
from twisted.internet import defer

from procedures.errors import ProcedureError
from procedures.wire import KeyWire, ValueWire

from .jsonlines import Header, RowError, RowFormat

__all__ = ["MAX_OPS", "MAX_BATCH_BYTES", "EXPORT_PAGE", "TransferError", "Progress",
           "ImportReport", "table_kinds", "export_table", "import_table"]

MAX_OPS = 128  # etcd's default --max-txn-ops
MAX_BATCH_BYTES = 1 << 20  # keys + values per txn; etcd takes 1.5 MiB requests, JSON adds some
EXPORT_PAGE = 10_000  # rows per scan call (the component allows up to 100,000)
IN_FLIGHT = 4  # import txns sent and not yet answered
# What the component refuses for a row itself. Import puts carry no if_revision, so a
# conflict can only be a unique index value another row (or an earlier line) holds.
_REFUSED = ("invalid_key", "invalid_value", "invalid_argument", "too_large", "conflict")


class TransferError(RuntimeError):
    """The export or import cannot go on; the message says why."""


class Progress:
    """A progress bar on stderr when it is a terminal (rich), nothing in pipes."""

    def __init__(self, what: str, total: int | None, enabled: bool | None = None) -> None:
        self.bar: Any = None
        if enabled is None:
            enabled = sys.stderr.isatty()
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            self.bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TimeRemainingColumn(), console=Console(stderr=True),
                           transient=True)  # gone when done: the summary line stays
            self.task = self.bar.add_task(what, total=total or None)
            self.bar.start()

    def advance(self, rows: int) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, rows)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


async def table_kinds(session: Any, prefix: str, table: str) -> tuple[dict[str, Any], int]:
    """The table's entry in ``<prefix>.status`` and the store revision."""
    status = await session.call(f"{prefix}.status")
    for entry in status["tables"]:
        if entry["name"] == table:
            return entry, int(status["etcd"]["revision"])
    names = ", ".join(t["name"] for t in status["tables"])
    raise TransferError(f"{prefix} serves no table {table!r} (it serves {names})")


async def export_table(session: Any, prefix: str, table: str, out: IO[str],
                       progress: bool | None = None) -> int:
    """Write the table's header and rows to ``out``; returns the number of rows."""
    entry, revision = await table_kinds(session, prefix, table)
    total = await session.call(f"{prefix}.{table}.count")
    rows_format = RowFormat(entry["key"], entry["value"])
    out.write(Header(table, entry["key"], entry["value"], revision, total).dumps() + "\n")
    bar = Progress(f"export {table}", total, progress)
    written = 0
    last: Any = None
    try:
        while True:
            chunks: list[list[Any]] = []
            limit = EXPORT_PAGE if last is None else EXPORT_PAGE + 1  # from_key is inclusive
            await session.call(f"{prefix}.{table}.scan", from_key=last, limit=limit,
                               revision=revision, options=CallOptions(on_progress=chunks.append))
            rows = [row for chunk in chunks for row in chunk]
            received = len(rows)
            if last is not None and rows and rows[0][0] == last:
                rows = rows[1:]
            out.write("".join(rows_format.dumps(key, value) + "\n" for key, value in rows))
            written += len(rows)
            bar.advance(len(rows))
            if received < limit:
                return written
            last = rows[-1][0]
    finally:
        bar.close()


@dataclass
class ImportReport:
    imported: int = 0
    skipped_lines: int = 0  # before the resume position
    refused: list[tuple[int, str]] = field(default_factory=list)  # (line number, why)


@dataclass
class _Row:
    line: int
    key: Any
    value: Any


class _Position:
    """The last line covered by a committed batch, in a file (``--resume``)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def read(self) -> int:
        if self.path is None or not self.path.exists():
            return 0
        return int(json.loads(self.path.read_text())["line"])

    def write(self, line: int) -> None:
        if self.path is None:
            return
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps({"line": line}) + "\n")
        os.replace(temporary, self.path)  # never a half-written position


async def import_table(session: Any, prefix: str, table: str, lines: Iterable[str],
                       position: Path | None = None, resume: bool = False,
                       progress: bool | None = None,
                       on_refused: Callable[[int, str], None] | None = None) -> ImportReport:
    """Put every row of ``lines`` (JSON Lines, see ``component.jsonlines``) into the table."""
    entry, _ = await table_kinds(session, prefix, table)
    rows_format = RowFormat(entry["key"], entry["value"])
    keys, values = KeyWire(entry["key"]), ValueWire(entry["value"])
    mark = _Position(position)
    skip = mark.read() if resume else 0
    report = ImportReport()
    bar: Progress | None = None
    batch: list[_Row] = []
    batch_keys: set[bytes] = set()
    batch_bytes = 0
    last_line = skip

    def refuse(line: int, why: str) -> None:
        report.refused.append((line, why))
        if on_refused is not None:
            on_refused(line, why)

    # Up to IN_FLIGHT txns at once, settled in order: the position only ever names a line
    # before which every batch is committed. A batch that writes a key of one in flight waits
    # for them, so a later line always wins.
    in_flight: list[tuple[defer.Deferred[int], set[bytes], int]] = []

    async def settle_oldest() -> None:
        done, _, line = in_flight.pop(0)
        report.imported += await done
        mark.write(line)

    async def flush() -> None:
        nonlocal batch, batch_keys, batch_bytes
        if any(batch_keys & keys_in_flight for _, keys_in_flight, _ in in_flight):
            while in_flight:
                await settle_oldest()
        if batch:
            done = defer.ensureDeferred(_commit(session, prefix, table, batch, refuse))
            if bar is not None:
                done.addCallback(_advance, bar, len(batch))
            in_flight.append((done, batch_keys, last_line))
        while len(in_flight) >= IN_FLIGHT or (in_flight and not batch):
            await settle_oldest()
        if not batch:
            mark.write(last_line)
        batch, batch_keys, batch_bytes = [], set(), 0

    try:
        for number, text in enumerate(lines, 1):
            if number <= skip:
                report.skipped_lines += 1
                continue
            if bar is None:  # after the header line, which may give the total
                header = _header(text) if number == 1 else None
                if header is not None:
                    _check_header(header, table, entry)
                    bar = Progress(f"import {table}", header.count, progress)
                    continue
                bar = Progress(f"import {table}", None, progress)
            if not text.strip():
                continue
            try:
                key, value = rows_format.loads(text)
                etcd_key = keys.encode(key)
                size = len(etcd_key) + len(values.encode(value))
            except (RowError, ProcedureError) as exc:
                refuse(number, str(exc))
                last_line = number
                continue
            if len(batch) == MAX_OPS or etcd_key in batch_keys or \
                    batch_bytes + size > MAX_BATCH_BYTES:
                await flush()
            batch.append(_Row(number, key, value))
            batch_keys.add(etcd_key)
            batch_bytes += size
            last_line = number
        await flush()
        await flush()  # the last batch settled, the position at the last line
    finally:
        for done, _, _ in in_flight:  # after a failure: let the others end, quietly
            done.addErrback(lambda _: None)
        if bar is not None:
            bar.close()
    return report


def _advance(written: int, bar: Progress, rows: int) -> int:
    bar.advance(rows)
    return written


def _header(text: str) -> Header | None:
    try:
        return Header.parse(json.loads(text))
    except (json.JSONDecodeError, RowError):
        return None


def _check_header(header: Header, table: str, entry: dict[str, Any]) -> None:
    if (header.key_kind, header.value_kind) != (entry["key"], entry["value"]):
        raise TransferError(f"the export is of table {header.table!r} with {header.key_kind} "
                            f"keys and {header.value_kind} values; {table!r} has "
                            f"{entry['key']} keys and {entry['value']} values")


async def _commit(session: Any, prefix: str, table: str, batch: list[_Row],
                  refuse: Callable[[int, str], None]) -> int:
    """Write a batch in one txn; if the component refuses it, halve it until the refused
    rows are found (reported and skipped) and the others are written. Returns how many
    rows were written."""
    ops = [{"table": table, "op": "put", "key": row.key, "value": row.value} for row in batch]
    try:
        await session.call(f"{prefix}.txn", ops)
        return len(batch)
    except ApplicationError as exc:
        if exc.error.rsplit(".", 1)[-1] not in _REFUSED:
            raise TransferError(f"{exc.error}: {exc.kwargs.get('message', exc.args)} (after "
                                f"line {batch[0].line - 1}; --resume continues)") from None
        if len(batch) == 1:
            refuse(batch[0].line, f"{exc.error}: {exc.kwargs.get('message', '')}")
            return 0
        half = len(batch) // 2
        return (await _commit(session, prefix, table, batch[:half], refuse)
                + await _commit(session, prefix, table, batch[half:], refuse))
