"""Typed tables without a router: config checks, an indexed table against a model, and the
index CLI, on both etcd versions (the client is involved)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_twisted
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from component.config import ConfigError, parse_settings
from component.tables import open_tables
from procedures.errors import ProcedureError
from procedures.indexes import IndexMaintenance
from procedures.table import Table
from txetcd import Client, Database, KeySet
from txetcd.embedded import EtcdProcess

from .blocking import run_blocking, wait
from .typed import GADGET_FBS, USER_SCHEMA

inline = pytest_twisted.ensureDeferred
ROOT = Path(__file__).resolve().parent.parent


def config(tables: list[dict[str, Any]], url: str = "http://127.0.0.1:1") -> dict[str, Any]:
    return {"prefix": "etcd", "etcd": {"endpoints": [url], "namespace": "typed/"},
            "tables": tables}


def users_table(**extra: Any) -> dict[str, Any]:
    return {"name": "users", "slot": 1, "key": "uuid", "value": "json", "schema": USER_SCHEMA,
            "indexes": [{"name": "by_email", "field": "email", "unique": True},
                        {"name": "by_city", "field": "/address/city"}], **extra}


# -- config ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("table", "field", "words"), [
    ({"schema": {"type": "objekt"}}, "tables[0].schema", ["'users'", "does not compile"]),
    ({"schema": {"minLength": "3"}}, "tables[0].schema", ["'users'", "/minLength"]),
    ({"value": "string", "schema": {}}, "tables[0].schema", ["json or cbor"]),
    ({"indexes": [{"name": "Bad", "field": "x"}]}, "tables[0].indexes[0].name", ["lowercase"]),
    ({"indexes": [{"name": "scan", "field": "x"}]}, "tables[0].indexes[0].name", ["procedure"]),
    ({"indexes": [{"name": "a", "field": ""}]}, "tables[0].indexes[0].field", ["pointer"]),
    ({"indexes": [{"name": "a", "field": "x", "slot": 1}]}, "tables[0].indexes[0].slot",
     ["already table 'users'"]),
    ({"indexes": [{"name": "a", "field": "x", "key": "float"}]}, "tables[0].indexes[0].key",
     ["not one of"]),
    ({"value": "binary", "indexes": [{"name": "a", "field": "x"}]}, "tables[0].indexes",
     ["need json or cbor"]),
    ({"flatbuffers": {"schema": "x.fbs", "root_type": "T"}}, "tables[0].flatbuffers",
     ["json values"]),
])
def test_config_refuses_bad_typing_naming_the_table(table: dict[str, Any], field: str,
                                                    words: list[str]) -> None:
    raw = {"name": "users", "slot": 1, "key": "uuid", "value": "json", **table}
    with pytest.raises(ConfigError) as caught:
        parse_settings(config([raw]))
    assert caught.value.field == field
    for word in words:
        assert word in str(caught.value)


def test_config_refuses_bad_flatbuffers_schemas(tmp_path: Path) -> None:
    (tmp_path / "ok.fbs").write_text(GADGET_FBS)
    (tmp_path / "broken.fbs").write_text("table { oops")
    (tmp_path / "union.fbs").write_text("table A { x: int; } union U { A } "
                                        "table T { u: U; } root_type T;")

    def flatbuffers(schema: str, root: str) -> dict[str, Any]:
        return {"prefix": "etcd", "cbdir": str(tmp_path), "tables": [
            {"name": "gadgets", "slot": 3, "key": "string", "value": "flatbuffers",
             "flatbuffers": {"schema": schema, "root_type": root}}]}

    parsed = parse_settings(flatbuffers("ok.fbs", "Gadget"))  # relative to cbdir
    assert parsed.tables[0].flatbuffers is not None
    assert parsed.tables[0].flatbuffers.root_type == "Gadget"
    for schema, root, words in [("broken.fbs", "T", "flatc failed"),
                                ("missing.fbs", "T", "missing.fbs"),
                                ("ok.fbs", "Size", "not a table"),
                                ("ok.fbs", "Nope", "not a table"),
                                ("union.fbs", "T", "unions")]:
        with pytest.raises(ConfigError) as caught:
            parse_settings(flatbuffers(schema, root))
        assert "'gadgets'" in str(caught.value) and words in str(caught.value), caught.value
    # A shipped .bfbs needs no flatc.
    subprocess.run(["flatc", "-b", "--schema", "-o", str(tmp_path), str(tmp_path / "ok.fbs")],
                   check=True)
    assert parse_settings(flatbuffers("ok.bfbs", "shop.Gadget")).tables[0].flatbuffers


def test_index_slots_default_from_names_and_never_collide() -> None:
    first = parse_settings(config([users_table()])).tables[0]
    again = parse_settings(config([{"name": "other", "slot": 9, "key": "string",
                                     "value": "json"}, users_table()])).tables[1]
    assert [i.slot for i in first.indexes] == [i.slot for i in again.indexes]
    assert all(0x8000 <= i.slot < 0xFFFF for i in first.indexes)
    taken = first.indexes[0].slot
    with pytest.raises(ConfigError, match="already table 'clash'"):
        parse_settings(config([users_table(), {"name": "clash", "slot": taken, "key": "string",
                                               "value": "json"}]))


# -- an indexed table against a model --------------------------------------------------------

KEYS = st.sampled_from([str(uuid.UUID(int=i)) for i in range(1, 6)])
EMAILS = st.sampled_from(["a@x", "b@x", "c@x"])
CITIES = st.sampled_from([None, "london", "paris"])


def rows_after_moves(rows: dict[str, dict[str, Any]], moves: list[tuple[str, str]]
                     ) -> tuple[dict[str, dict[str, Any]], bool]:
    """The rows after a txn putting each ``(key, email)`` in order, and whether one of its
    emails was taken by another row when its op ran (then nothing may be written)."""
    after = dict(rows)
    taken = False
    for key, email in moves:
        holder = next((k for k, v in after.items() if v["email"] == email), None)
        taken = taken or holder not in (None, key)
        after[key] = {"name": "t", "email": email}
    return after, taken


class IndexedModel(RuleBasedStateMachine):
    """Puts, deletes and txns of an indexed table checked against a dict (``model_machine``
    binds the table)."""

    table: Table

    def __init__(self) -> None:
        super().__init__()
        wait(self.table.client.delete(KeySet.all()))
        self.rows: dict[str, dict[str, Any]] = {}
        self.by_email = self.table.indexes["by_email"]
        self.by_city = self.table.indexes["by_city"]

    def holder(self, email: str) -> str | None:
        return next((k for k, v in self.rows.items() if v["email"] == email), None)

    @rule(key=KEYS, email=EMAILS, city=CITIES)
    def put(self, key: str, email: str, city: str | None) -> None:
        value: dict[str, Any] = {"name": "n", "email": email}
        if city is not None:
            value["address"] = {"city": city}
        holder = self.holder(email)
        try:
            wait(self.table.put(key, value))
        except ProcedureError as exc:
            assert exc.kind == "conflict" and holder not in (None, key), exc.message
            return
        assert holder in (None, key)
        self.rows[key] = value

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        assert wait(self.table.delete(key)) is (key in self.rows)
        self.rows.pop(key, None)

    @rule(moves=st.lists(st.tuples(KEYS, EMAILS), min_size=1, max_size=3,
                         unique_by=lambda m: m[0]))
    def txn(self, moves: list[tuple[str, str]]) -> None:
        # The ops of a txn apply in order, as in a pmap transaction: a unique value must be
        # free (or the op's own row's) when its op runs, else nothing is written.
        after, taken = rows_after_moves(self.rows, moves)

        from procedures.txn import run_txn

        try:
            wait(run_txn(self.table.client, {"users": self.table}, [
                {"table": "users", "op": "put", "key": k, "value": {"name": "t", "email": e}}
                for k, e in moves]))
        except ProcedureError as exc:
            assert exc.kind == "conflict" and taken, exc.message
            return
        assert not taken
        self.rows = after

    @invariant()
    def lookups_match_the_model(self) -> None:
        for email in ("a@x", "b@x", "c@x"):
            key = self.holder(email)
            expected = None if key is None else [key, self.rows[key]]
            assert wait(self.by_email.get(email)) == expected
        cities = sorted((v.get("address", {}).get("city"), k) for k, v in self.rows.items()
                        if "address" in v)
        got = wait(self.by_city.scan())
        assert [(c, k) for c, k, _ in got] == cities
        assert {k: v for k, v in wait(self.table.scan())} == self.rows
        for index in (self.by_email, self.by_city):
            assert wait(IndexMaintenance(index).check())[2] == []


def model_machine(table: Table) -> type[RuleBasedStateMachine]:
    return type("IndexedModel", (IndexedModel,), {"table": table})


@inline
async def test_indexed_table_matches_an_in_memory_model(client: Client,
                                                       etcd: EtcdProcess) -> None:
    scoped = Client(reactor, url=etcd.url, namespace=b"model/")
    try:
        table = open_tables(parse_settings(config([users_table()])), scoped)["users"]
        machine = model_machine(table)
        await run_blocking(lambda: run_state_machine_as_test(machine, settings=settings(
            max_examples=12, stateful_step_count=10, deadline=None,
            suppress_health_check=list(HealthCheck))))
    finally:
        await scoped.close()


# -- pmap programs and the index CLI ---------------------------------------------------------

async def indexes_inline(raw: dict[str, Any], capsys: Any, command: str, **options: Any) -> Any:
    """The CLI's work in this process (quicker than a subprocess): status and stdout."""
    from component import indexes

    status = await indexes.run(command, parse_settings(raw), reactor, options.get("table"),
                               options.get("index"), options.get("page", 500),
                               options.get("max_pages"))
    return SimpleNamespace(returncode=status, stdout=capsys.readouterr().out)


def indexes_cli(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "component.indexes", *args, "--config",
                           str(path)], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          check=False)


@inline
async def test_pmap_writes_keep_indexes_and_the_cli_builds_and_checks(
        client: Client, etcd: EtcdProcess, tmp_path: Path, capsys: Any) -> None:
    raw = config([users_table()], etcd.url)
    scoped = Client(reactor, url=etcd.url, namespace=b"typed/")
    try:
        # Rows written before the table had indexes.
        plain = {**users_table(), "indexes": []}
        before = open_tables(parse_settings(config([plain], etcd.url)), scoped)["users"]
        keys = [str(uuid.UUID(int=i)) for i in range(1, 31)]
        for i, key in enumerate(keys):
            await before.put(key, {"name": f"u{i}", "email": f"u{i}@x",
                                   "address": {"city": ["a", "b", "c"][i % 3]}})
        path = tmp_path / "tables.json"
        path.write_text(json.dumps(raw))
        check = await deferToThread(indexes_cli, path, "check")
        assert check.returncode == 1
        assert "users.by_email: 30 rows, 0 entries, 30 disagreements" in check.stdout
        assert check.stdout.count("missing: key") == 60
        # A build interrupted after two pages of 7 rows resumes where it stopped.
        partial = await indexes_inline(raw, capsys, "build", page=7, max_pages=2,
                                       index="by_email")
        assert partial.returncode == 3 and "stopped after 2 pages" in partial.stdout
        check = await indexes_inline(raw, capsys, "check", index="by_email")
        assert "30 rows, 14 entries, 16 disagreements" in check.stdout
        built = await deferToThread(indexes_cli, path, "build", "--page", "7")
        assert built.returncode == 0, built.stdout + built.stderr
        assert "users.by_email: built in" in built.stdout and "(resumed)" in built.stdout
        check = await indexes_inline(raw, capsys, "check")
        assert check.returncode == 0, check.stdout
        assert "users.by_city: 30 rows, 30 entries, 0 disagreements" in check.stdout

        # A pmap program writing through the same map keeps schema and indexes.
        table = open_tables(parse_settings(raw), scoped)["users"]
        db = Database(scoped)
        async with db.begin(write=True) as txn:
            await table.map.put(txn, uuid.UUID(keys[0]), {"name": "p", "email": "pmap@x"})
        assert (await table.indexes["by_email"].get("pmap@x"))[0] == keys[0]
        assert await table.indexes["by_email"].get("u0@x") is None
        with pytest.raises(ValueError, match="at /email"):
            async with db.begin(write=True) as txn:
                await table.map.put(txn, uuid.UUID(keys[1]), {"name": "p", "email": 5})
        from txetcd.pmap import UniqueViolation

        with pytest.raises(UniqueViolation):
            async with db.begin(write=True) as txn:
                await table.map.put(txn, uuid.UUID(keys[1]), {"name": "p", "email": "pmap@x"})
        # Two rows sharing a unique value: build refuses, naming both; check lists it.
        await before.put(keys[2], {"name": "dup", "email": "u3@x"})
        check = await indexes_inline(raw, capsys, "check", index="by_email")
        assert check.returncode == 1 and "duplicate: key" in check.stdout
        built = await deferToThread(indexes_cli, path, "build", "--index", "by_email")
        assert built.returncode == 1 and "both hold 'u3@x'" in built.stderr, built.stderr
    finally:
        await scoped.close()


@inline
async def test_history_on_both_etcd_versions(client: Client, etcd: EtcdProcess) -> None:
    scoped = Client(reactor, url=etcd.url, namespace=b"hist/")
    try:
        table = open_tables(parse_settings(config([users_table()])), scoped)["users"]
        key = str(uuid.uuid4())
        first = await table.put(key, {"name": "a", "email": "h@x"})
        assert await table.delete(key) is True
        versions = (await table.history(key))["versions"]
        assert [v["type"] for v in versions] == ["delete", "put"]
        assert versions[1]["revision"] == first
        never = await table.history(str(uuid.uuid4()))
        assert never == {"versions": [], "compacted": False, "compact_revision": None,
                         "partial": False}
        # A live row's versions are read back until the compaction point, which is reported.
        revs = [await table.put(key, {"name": f"v{n}", "email": "h@x"}) for n in range(5)]
        await scoped.compact(revs[2], physical=True)
        got = await table.history(key)
        assert [v["revision"] for v in got["versions"]] == revs[:1:-1]
        assert got["compacted"] is True and got["compact_revision"] == revs[2]
        assert (await table.history(key, limit=3))["compacted"] is False
    finally:
        await scoped.close()

