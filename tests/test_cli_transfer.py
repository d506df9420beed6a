"""``etcd-wamp export``/``import`` on typed tables, killed mid-import, and exporting while
others write: the CLI as a subprocess against a real node, etcd read through its own API.

One node (namespace ``xfer/``) serves typed tables (a flatbuffers schema, a JSON Schema,
unique indexes), their empty twins to import into, and plain tables for the big runs.
"""

from __future__ import annotations

import base64
import json
import math
import os
import signal
import struct
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from component.transfer import EXPORT_PAGE, IN_FLIGHT, MAX_OPS
from procedures.wire import KeyWire, ValueWire
from txetcd.embedded import EtcdProcess

from .test_cli import CLI, READER, WRITER, gateway, put_rows
from .typed import session_as, typed_tables, write_node_config
from .wamp import CrossbarNode

NAMESPACE = b"xfer/"
SLOTS = {"gadgets": 3, "gadgets2": 23, "users": 1, "users2": 21, "bulk": 30, "big": 31,
         "broken": 32}


def tables(workdir: Path) -> list[dict[str, Any]]:
    typed = {t["name"]: t for t in typed_tables(workdir)}
    gadgets, users = typed["gadgets"], typed["users"]
    return [gadgets, users,
            {**gadgets, "name": "gadgets2", "slot": SLOTS["gadgets2"]},
            {**users, "name": "users2", "slot": SLOTS["users2"]},
            {"name": "fbraw", "slot": 24, "key": "string", "value": "flatbuffers"},
            {"name": "bulk", "slot": SLOTS["bulk"], "key": "string", "value": "json"},
            {"name": "big", "slot": SLOTS["big"], "key": "string", "value": "json"},
            {"name": "broken", "slot": SLOTS["broken"], "key": "string", "value": "json"}]


@pytest.fixture(scope="module")
def xnode(etcd35: EtcdProcess, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[CrossbarNode]:
    workdir = tmp_path_factory.mktemp("xfer")
    node = CrossbarNode(workdir, etcd35.url, namespace=NAMESPACE.decode())
    node.extra["tables"] = tables(workdir)
    write_node_config(node)
    node.start()
    try:
        yield node
    finally:
        node.stop()


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


async def wamp(node: CrossbarNode, calls: list[tuple[str, tuple[Any, ...]]]) -> list[Any]:
    """Each ``(uri, args)`` called in turn by a writer on CBOR; their results."""
    session = await session_as(node.url, "cbor")
    try:
        return [await session.call(uri, *args) for uri, args in calls]
    finally:
        session.leave()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def table_range(url: str, table: str, revision: int = 0) -> tuple[dict[bytes, dict[str, Any]],
                                                                  int]:
    """The table's stored rows (key bytes -> etcd kv) at ``revision`` (0: now), and the
    store revision of the answer; through etcd's gateway, not the component."""
    prefix = NAMESPACE + struct.pack(">H", SLOTS[table])
    end = prefix[:-1] + bytes([prefix[-1] + 1])
    reply = gateway(url, "kv/range", {"key": b64(prefix), "range_end": b64(end),
                                      "revision": revision})
    return ({base64.b64decode(kv["key"])[len(prefix):]: kv for kv in reply.get("kvs", [])},
            int(reply["header"]["revision"]))


def json_rows(url: str, table: str, revision: int = 0) -> dict[str, Any]:
    """A string-keyed JSON table's rows as ``{key: value}``, read from etcd."""
    kvs, _ = table_range(url, table, revision)
    return {key.decode(): json.loads(base64.b64decode(kv.get("value", "")))
            for key, kv in kvs.items()}


def lines_of(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    header, *rows = (json.loads(line) for line in path.read_text().splitlines())
    return header, rows


def gadget(i: int) -> dict[str, Any]:
    value: dict[str, Any] = {"name": f"gadget {i} é", "price": i * 100, "rating": 0.5 * (i % 7),
                             "tags": [f"t{i % 3}", "日本"], "size": {"w": 1.5, "h": float(i)},
                             "parts": [{"sku": f"p{i}", "count": i % 5}], "active": i % 2 == 0}
    if i % 3:
        value["email"] = f"g{i}@example.com"
    if i % 4 == 0:
        value["blob"] = bytes([i % 256, 0, 255])
    return value


def user(i: int) -> dict[str, Any]:
    value: dict[str, Any] = {"name": f"u{i}", "email": f"u{i}@example.com"}
    if i < 100:
        value["age"] = i
    if i % 2:
        value["address"] = {"city": f"c{i % 5}"}
    return value


@pytest_twisted.ensureDeferred
async def test_typed_tables_round_trip_and_refuse_clashes_by_line(
        xnode: CrossbarNode, tmp_path: Path) -> None:
    url = ["--router", xnode.url]
    gadget_keys = [f"g{i:04d}" for i in range(300)]
    user_keys = [str(uuid.UUID(int=i + 1)) for i in range(200)]
    await wamp(xnode, [*(("etcd.txn", ([{"table": "gadgets", "op": "put", "key": k,
                                   "value": gadget(int(k[1:]))} for k in gadget_keys[s:s + 40]],))
                   for s in range(0, 300, 40)),
                 *(("etcd.txn", ([{"table": "users", "op": "put", "key": k, "value": user(i)}
                                  for i, k in enumerate(user_keys) if s <= i < s + 40],))
                   for s in range(0, 200, 40))])

    for table, count in (("gadgets", 300), ("users", 200)):
        dump = tmp_path / f"{table}.jsonl"
        out = cli("export", table, "-o", str(dump), *url, *READER)
        assert out.returncode == 0, out.stderr
        into = cli("import", f"{table}2", str(dump), *url, *WRITER)
        assert into.returncode == 0, into.stderr
        assert into.stderr.strip() == f"imported {count} rows into {table}2; 0 refused"
        header, rows = lines_of(dump)
        assert header["count"] == count and len(rows) == count
        source, copy = await wamp(xnode, [(f"etcd.{table}.scan", ()),
                                          (f"etcd.{table}2.scan", ())])
        assert len(source) == count and copy == source  # every row, value for value
    header, rows = lines_of(tmp_path / "gadgets.jsonl")
    assert header["value_kind"] == "flatbuffers" and header["flatbuffers"] == "shop.Gadget"
    # Maps as JSON; a [ubyte] field is bytes, so those rows travel as CBOR.
    plain = {row["key"]: row["value"] for row in rows if "value" in row}
    assert plain["g0001"]["parts"] == [{"sku": "p1", "count": 1}]
    assert plain["g0001"]["email"] == "g1@example.com"
    assert {row["key"] for row in rows if "cbor" in row} == {k for k in gadget_keys
                                                             if int(k[1:]) % 4 == 0}
    # The copies' unique indexes find the imported rows.
    found = await wamp(xnode, [("etcd.gadgets2.by_email.get", ("g8@example.com",)),
                         ("etcd.users2.by_email.get", ("u7@example.com",))])
    assert found[0][0] == "g0008" and found[0][1]["blob"] == bytes([8, 0, 255])
    assert found[1] == [user_keys[7], {"name": "u7", "email": "u7@example.com", "age": 7,
                                       "address": {"city": "c2"}}]

    # Refused rows: their line numbers, their reasons, and nothing of them written.
    new = [str(uuid.UUID(int=10_000 + i)) for i in range(5)]
    clash = tmp_path / "clash.jsonl"
    clash.write_text("\n".join(json.dumps(row) for row in [
        {"key": new[0], "value": {"name": "ok", "email": "new0@example.com"}},  # line 1
        {"key": new[1], "value": {"name": "taken", "email": "u3@example.com"}},  # line 2
        {"key": new[2], "value": {"name": "bad", "email": "b@x", "age": -1}},  # line 3
        {"key": new[3], "value": {"name": "first", "email": "twice@example.com"}},  # line 4
        {"key": new[4], "value": {"name": "second", "email": "twice@example.com"}},  # line 5
    ]) + "\n")
    done = cli("import", "users2", str(clash), *url, *WRITER)
    assert done.returncode == 1, done.stderr
    assert "line 2: refused: etcd.error.conflict: users2: unique index by_email already " \
           "holds 'u3@example.com'" in done.stderr
    assert "line 3: refused: etcd.error.invalid_value" in done.stderr
    assert "at /age" in done.stderr
    assert "line 5: refused: etcd.error.conflict" in done.stderr
    assert "imported 2 rows into users2; 3 refused" in done.stderr
    after = await wamp(xnode, [("etcd.users2.get", (k,)) for k in new] + [
        ("etcd.users2.by_email.get", ("u3@example.com",)),
        ("etcd.users2.by_email.get", ("twice@example.com",)),
        ("etcd.users2.count", ())])
    assert [row is not None for row in after[:5]] == [True, False, False, True, False]
    assert after[5][0] == user_keys[3]  # the index entry still names its row
    assert after[6][0] == new[3]  # the earlier line won
    assert after[7] == 202

    # Maps are never imported as bytes, nor bytes as maps: the file is refused as a whole.
    wrong = cli("import", "fbraw", str(tmp_path / "gadgets.jsonl"), *url, *WRITER)
    assert wrong.returncode == 1
    assert "flatbuffers values as maps of root type shop.Gadget; 'fbraw' takes bytes" \
        in wrong.stderr
    assert await wamp(xnode, [("etcd.fbraw.count", ())]) == [0]


def test_import_killed_mid_way_resumes_to_exactly_the_files_rows(
        xnode: CrossbarNode, etcd35: EtcdProcess, tmp_path: Path) -> None:
    total = 20_000
    data = tmp_path / "bulk.jsonl"
    rows = {f"k{i:06d}": {"n": i, "text": "x" * (i % 50)} for i in range(total)}
    data.write_text("".join(json.dumps({"key": k, "value": v}) + "\n" for k, v in rows.items()))
    position = Path(f"{data}.position")
    _, start_revision = table_range(etcd35.url, "bulk")

    proc = subprocess.Popen([str(CLI), "import", "bulk", str(data), "--router", xnode.url,
                             *WRITER], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    done_at = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if position.exists():
            done_at = json.loads(position.read_text())["line"]
            if done_at >= total // 5:
                break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)  # no chance to clean up, as a crash or kill -9
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the import ended before it was killed"
    killed_at = json.loads(position.read_text())["line"]
    stored, _ = table_range(etcd35.url, "bulk")
    assert total // 5 <= killed_at < total and killed_at <= len(stored) < total

    again = cli("import", "bulk", str(data), "--resume", "--router", xnode.url, *WRITER)
    assert again.returncode == 0, again.stderr
    assert f"(resumed after line {killed_at}); 0 refused" in again.stderr
    assert json_rows(etcd35.url, "bulk") == rows  # every row, none missing, none extra
    stored, end_revision = table_range(etcd35.url, "bulk")
    # Rows written twice are only those of batches after the recorded position (at most
    # IN_FLIGHT of them were in flight when killed), with the same value both times.
    twice = [key for key, kv in stored.items() if int(kv["version"]) > 1]
    assert all(int(kv["version"]) <= 2 for kv in stored.values())
    assert len(twice) <= IN_FLIGHT * MAX_OPS
    assert all(key.decode() > f"k{killed_at - 1:06d}" for key in twice)
    # One revision per txn: the batches of the file plus at most IN_FLIGHT again.
    assert end_revision - start_revision <= math.ceil(total / MAX_OPS) + IN_FLIGHT


def test_export_is_the_table_at_its_revision_while_others_write(
        xnode: CrossbarNode, etcd35: EtcdProcess, tmp_path: Path) -> None:
    total = 4 * EXPORT_PAGE
    slot = NAMESPACE + struct.pack(">H", SLOTS["big"])
    keys, values = KeyWire("string"), ValueWire("json")

    def row(key: str, value: Any) -> tuple[bytes, bytes]:
        return slot + keys.encode(key), values.encode(value)

    put_rows(etcd35.url, [row(f"k{i:06d}", {"n": i}) for i in range(total)])
    dump = tmp_path / "big.jsonl"
    proc = subprocess.Popen([str(CLI), "export", "big", "-o", str(dump), "--router",
                             xnode.url, *READER], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (dump.exists() and dump.stat().st_size) and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.002)
    # While it runs: change, delete and add rows all over the table, the last page included,
    # each round one etcd txn; note how far the export had written when each committed.
    written_then = []
    def put(key: str, value: Any) -> dict[str, Any]:
        etcd_key, data = row(key, value)
        return {"requestPut": {"key": b64(etcd_key), "value": b64(data)}}

    for round_ in range(50):
        if proc.poll() is not None:
            break
        changed = [f"k{i:06d}" for i in range(round_ * 7, total, 997)]
        gateway(etcd35.url, "kv/txn", {"success": [
            *(put(key, {"n": -1, "round": round_}) for key in changed[::2]),
            *({"requestDeleteRange": {"key": b64(slot + keys.encode(key))}}
              for key in changed[1::2]),
            put(f"z{round_:03d}", {"added": round_})]})
        with open(dump, "rb") as partial:
            written_then.append(partial.read().count(b"\n"))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    # A write committed before the export could have read the last page (the file, which
    # lags the process by its buffer, was a page and more short of the end).
    assert written_then and min(written_then) < total - EXPORT_PAGE - 500, written_then
    header, exported = lines_of(dump)
    at_revision = json_rows(etcd35.url, "big", header["revision"])
    assert {line["key"]: line["value"] for line in exported} == at_revision
    assert [line["key"] for line in exported] == sorted(at_revision)  # each once, in order
    assert len(at_revision) == total  # the writes came after the export's revision
    assert json_rows(etcd35.url, "big") != at_revision  # and they did happen
    assert os.path.getsize(dump) > 0 and not out


def test_an_export_stops_at_a_corrupt_row_instead_of_writing_a_wrong_line(
        xnode: CrossbarNode, etcd35: EtcdProcess, tmp_path: Path) -> None:
    slot = NAMESPACE + struct.pack(">H", SLOTS["broken"])
    put_rows(etcd35.url, [(slot + b"a", b'{"ok": 1}'), (slot + b"b", b"{not json")])
    dump = tmp_path / "broken.jsonl"
    out = cli("export", "broken", "-o", str(dump), "--router", xnode.url, *READER)
    assert out.returncode == 1
    assert "the row at key bytes 62 (hex) is corrupt" in out.stderr, out.stderr
    assert "corrupt_row" not in dump.read_text()


def test_the_readmes_flatbuffers_lines_are_rows_of_the_gadget_schema(tmp_path: Path) -> None:
    from component.jsonlines import Header, RowFormat
    from component.typed_config import compile_fbs
    from procedures.flatbuf import FlatBuffersSchema

    from .typed import GADGET_FBS

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split('```text\n{"format": "etcd-wamp-export/1", "table": "gadgets"')[1]
    header_rest, *rows = block.split("```")[0].splitlines()
    header = Header.parse(json.loads('{"format": "etcd-wamp-export/1", "table": "gadgets"'
                                     + header_rest))
    assert header is not None and header.flatbuffers == "shop.Gadget"
    (tmp_path / "gadget.fbs").write_text(GADGET_FBS)
    schema = FlatBuffersSchema(compile_fbs(tmp_path / "gadget.fbs"), "Gadget")
    lines = RowFormat(header.key_kind, header.value_kind, maps=True)
    for text in rows:
        key, value = lines.loads(text)
        decoded = schema.decode(schema.encode(value))
        assert {name: decoded[name] for name in value} == value  # every field as given
        assert lines.dumps(key, value) == text
