"""Tables written by txaioetcd 18.10.2 itself are read and written by txetcd.pmap (issue #14).

txaioetcd runs in its own venv (``bench/.venvs/txaioetcd``, made on first use by ``tests/peers.py``
and cached there; git-ignored), from ``tests/txaioetcd_data.py``, against an etcd this test
starts. It writes every map kind (String, OID, UUID, UUID-set, JSON, CBOR, Pickle, FlatBuffers
values, zlib-compressed CBOR, raw binary; UUID, String, OID keys and the compound keys
(UUID, String), (UUID, UUID), (slot, UUID)) and a table attached by class through the slot
catalog. txetcd.pmap reads all of it back, writes its own records, and txaioetcd reads those.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor

import txetcd
from txetcd import Client, Database
from txetcd.embedded import EtcdProcess, find_etcd
from txetcd.pmap import MapStringBinary, SlotConflict, table

from . import txaioetcd_data as data
from .conftest import ETCD_IDS, ETCD_VERSIONS
from .peers import ensure_venv

SCRIPT = Path(data.__file__)


@pytest.fixture(scope="module")
def txaioetcd_python() -> Path:
    return ensure_venv("txaioetcd")


@pytest.fixture(params=ETCD_VERSIONS, ids=ETCD_IDS)
def server(request: pytest.FixtureRequest) -> Iterator[EtcdProcess]:
    with EtcdProcess(find_etcd(request.param)) as etcd:
        yield etcd


def txaioetcd(python: Path, mode: str, url: str) -> list[str]:
    done = subprocess.run([str(python), str(SCRIPT), mode, url], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, f"txaioetcd {mode} failed:\n{done.stdout}\n{done.stderr}"
    return [line for line in done.stdout.splitlines() if line.strip()]


@table(data.USERS_OID, marshal=data.identity, parse=data.identity)
class Users(txetcd.MapUuidCbor):
    """Users, attached by class (the same oid as txaioetcd's)."""


@table(data.ORDERS_OID)
class Orders(txetcd.MapOidString):
    """Orders: txetcd catalogs this table first; txaioetcd finds it by oid."""


@pytest_twisted.ensureDeferred
async def test_txaioetcd_tables_read_and_written_by_txetcd(txaioetcd_python: Path,
                                                          server: EtcdProcess) -> None:
    written = json.loads(txaioetcd(txaioetcd_python, "write", server.url)[-1])
    client = Client(reactor, url=server.url)
    db = Database(client)
    try:
        # Every record txaioetcd wrote reads back as the value it wrote, also by range scan.
        for name, slot, _key, value, options in data.TABLES:
            m = data.make_map(txetcd, name, slot, value, options)
            expected = data.TXAIOETCD_ROWS[f"{name}@{slot}"]
            async with db.begin() as txn:
                for key, record in expected:
                    assert await m[txn, key] == record, (name, key)
                keys = await m.select(txn, return_keys=True, return_values=False)
            assert sorted(keys) == sorted(k for k, _ in expected), name
        binary = MapStringBinary(data.BINARY_SLOT)
        async with db.begin() as txn:
            for key, blob in data.BINARY_ROWS.items():
                assert await binary[txn, key] == blob

        # The catalog entry txaioetcd wrote (oid, name, creator, slot; no codec names) is
        # recognised by class, and a map instance may attach to that slot too.
        users = await db.attach_table(Users)
        assert users.slot == written["users_slot"]
        assert (await db.attach_table(txetcd.MapUuidCbor(users.slot))).slot == users.slot
        with pytest.raises(SlotConflict):  # a named table that is not the one in the slot
            await db.attach_table(txetcd.MapUuidCbor(users.slot), name="other")
        orders = await db.attach_table(Orders)
        assert orders.slot not in (users.slot, data.BINARY_SLOT)
        async with db.begin(write=True) as txn:
            assert await users[txn, data.U1] == {"name": "alice"}
            users[txn, data.U2] = {"name": "bob"}
            orders[txn, 1] = "first order"

        # txetcd writes its own records into every table; txaioetcd reads them.
        for name, slot, _key, value, options in data.TABLES:
            m = data.make_map(txetcd, name, slot, value, options)
            async with db.begin(write=True) as txn:
                for key, record in data.TXETCD_ROWS[f"{name}@{slot}"]:
                    m[txn, key] = record
    finally:
        await client.close()
    lines = txaioetcd(txaioetcd_python, "read", server.url)
    assert lines == [f"ok {name}@{slot}" for name, slot, *_ in data.TABLES] + [
        f"orders slot {orders.slot}: first order",
        f"users slot {users.slot}: {{'name': 'bob'}}"]
