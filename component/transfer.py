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

Typed tables: a flatbuffers table with a schema travels as maps (``component.jsonlines``); its
rows are checked locally as CBOR-able values and the component checks them against the schema.
A row the component refuses for its schema (``invalid_value``) or because a unique index
already holds its value for another row (``conflict``) is refused with its line number; the
txn it was in writes nothing, and the rest of that batch is written without it. Into a table
with a unique index one txn is in flight at a time, so of two lines with the same unique value
the earlier one is written and the later one refused.
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
# Import puts carry no if_revision, so a conflict is a unique index holding the row's value
# (or a write that kept losing to others: reported too, with the component's message).
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


def _flatbuffers_root(entry: dict[str, Any]) -> str | None:
    """The root type of a flatbuffers table with a schema (its values are maps), else None."""
    described = entry.get("flatbuffers")
    return None if described is None else str(described["root_type"])


def _row_format(entry: dict[str, Any]) -> RowFormat:
    """The JSON Lines form of the rows of a table as ``<prefix>.status`` lists it."""
    return RowFormat(entry["key"], entry["value"], maps=_flatbuffers_root(entry) is not None)


async def export_table(session: Any, prefix: str, table: str, out: IO[str],
                       progress: bool | None = None) -> int:
    """Write the table's header and rows to ``out``; returns the number of rows."""
    entry, revision = await table_kinds(session, prefix, table)
    total = await session.call(f"{prefix}.{table}.count")
    rows_format = _row_format(entry)
    out.write(Header(table, entry["key"], entry["value"], revision, total,
                     _flatbuffers_root(entry)).dumps() + "\n")
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
            corrupt = next((row for row in rows if isinstance(row, dict)), None)
            if corrupt is not None:  # scan's marker of a row it cannot decode: no line for it
                raise TransferError(f"the row at key bytes {corrupt['corrupt_row']} (hex) is "
                                    f"corrupt: {corrupt['error']}; the export stops there "
                                    "(fix or delete that row)")
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
    importer = _Importer(session, prefix, table, entry, _Position(position), on_refused)
    skip = importer.mark.read() if resume else 0
    importer.last_line = skip
    try:
        for number, text in enumerate(lines, 1):
            if number <= skip:
                importer.report.skipped_lines += 1
                continue
            if importer.bar is None and importer.start(number, text, progress):
                continue
            if text.strip():
                await importer.add(number, text)
        await importer.flush()
        await importer.flush()  # the last batch settled, the position at the last line
    finally:
        importer.close()
    return importer.report


class _Importer:
    """One import's batches: rows gathered into etcd txns within the op and byte limits, up to
    ``IN_FLIGHT`` txns at once, settled in order so the position only ever names a line before
    which every batch is committed. A batch that writes a key of one in flight waits for them,
    so a later line always wins."""

    def __init__(self, session: Any, prefix: str, table: str, entry: dict[str, Any],
                 mark: _Position, on_refused: Callable[[int, str], None] | None) -> None:
        self.session, self.prefix, self.table, self.entry = session, prefix, table, entry
        self.mark, self.on_refused = mark, on_refused
        self.rows_format = _row_format(entry)
        # Maps of a flatbuffers schema are checked (and sized) as CBOR here, by schema there.
        self.keys = KeyWire(entry["key"])
        self.values = ValueWire("cbor" if self.rows_format.cbor else entry["value"])
        indexes = entry.get("indexes") or ()
        self.in_flight_max = 1 if any(index.get("unique") for index in indexes) else IN_FLIGHT
        # etcd's op limit counts index entries too: a row rewritten with new indexed values
        # deletes one entry and puts another per index.
        self.max_rows = MAX_OPS // (1 + 2 * len(indexes))
        self.report = ImportReport()
        self.bar: Progress | None = None
        self.batch: list[_Row] = []
        self.batch_keys: set[bytes] = set()
        self.batch_bytes = 0
        self.last_line = 0
        self.in_flight: list[tuple[defer.Deferred[int], set[bytes], int]] = []

    def start(self, number: int, text: str, progress: bool | None) -> bool:
        """Open the progress bar at the first line; True if that line was the header (which
        may give the total)."""
        header = _header(text) if number == 1 else None
        if header is not None:
            _check_header(header, self.table, self.entry)
            self.bar = Progress(f"import {self.table}", header.count, progress)
            return True
        self.bar = Progress(f"import {self.table}", None, progress)
        return False

    def refuse(self, line: int, why: str) -> None:
        self.report.refused.append((line, why))
        if self.on_refused is not None:
            self.on_refused(line, why)

    async def add(self, number: int, text: str) -> None:
        """One row line: refused if it does not convert, else into the batch (flushed first
        when the row would not fit or rewrites a key of it)."""
        try:
            key, value = self.rows_format.loads(text)
            etcd_key = self.keys.encode(key)
            size = len(etcd_key) + len(self.values.encode(value))
        except (RowError, ProcedureError) as exc:
            self.refuse(number, str(exc))
            self.last_line = number
            return
        if len(self.batch) == self.max_rows or etcd_key in self.batch_keys or \
                self.batch_bytes + size > MAX_BATCH_BYTES:
            await self.flush()
        self.batch.append(_Row(number, key, value))
        self.batch_keys.add(etcd_key)
        self.batch_bytes += size
        self.last_line = number

    async def settle_oldest(self) -> None:
        done, _, line = self.in_flight.pop(0)
        self.report.imported += await done
        self.mark.write(line)

    async def flush(self) -> None:
        """Send the batch; with no batch, settle everything and write the position."""
        if any(self.batch_keys & keys_in_flight for _, keys_in_flight, _ in self.in_flight):
            while self.in_flight:
                await self.settle_oldest()
        if self.batch:
            done = defer.ensureDeferred(_commit(self.session, self.prefix, self.table,
                                                self.batch, self.refuse))
            if self.bar is not None:
                done.addCallback(_advance, self.bar, len(self.batch))
            self.in_flight.append((done, self.batch_keys, self.last_line))
        while len(self.in_flight) >= self.in_flight_max or (self.in_flight and not self.batch):
            await self.settle_oldest()
        if not self.batch:
            self.mark.write(self.last_line)
        self.batch, self.batch_keys, self.batch_bytes = [], set(), 0

    def close(self) -> None:
        for done, _, _ in self.in_flight:  # after a failure: let the others end, quietly
            done.addErrback(lambda _: None)
        if self.bar is not None:
            self.bar.close()


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
    root = _flatbuffers_root(entry)
    if header.flatbuffers != root:
        def form(root_type: str | None) -> str:
            return "bytes" if root_type is None else f"maps of root type {root_type}"

        raise TransferError(f"the export of table {header.table!r} has flatbuffers values as "
                            f"{form(header.flatbuffers)}; {table!r} takes {form(root)}")


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
