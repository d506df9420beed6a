"""Tables of every map kind, written and read by txaioetcd 18.10.2 itself (issue #14).

Run in txaioetcd's own venv (``bench/.venvs/txaioetcd``, made by ``tests/peers.py``):
``python tests/txaioetcd_data.py write|read URL``. ``write`` stores ``TXAIOETCD_ROWS`` with
txaioetcd's pmap layer (its ``/v3alpha/`` paths rewritten to ``/v3/`` by
``tests.peers.txaioetcd_client``) and prints a JSON line; ``read`` reads ``TXETCD_ROWS``
(written by txetcd) back through txaioetcd and prints ``ok <table>`` per table.
``tests/test_txaioetcd_data.py`` imports the same definitions to read and write with txetcd.pmap.

Binary values: txaioetcd has no ``Map*Binary`` class (its README names some that never
existed), so its users stored bytes with the plain client under the table's keys; ``write``
does the same, and txetcd reads them with ``MapStringBinary``.
"""

from __future__ import annotations

import json
import struct
import sys
import uuid
from pathlib import Path
from typing import Any

U1 = uuid.UUID("11111111-2222-4333-8444-555555555555")
U2 = uuid.UUID("aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee")
U3 = uuid.UUID("00000000-0000-4000-8000-000000000001")
USERS_OID = "6f3d8a9e-2c1b-4f7a-9e5d-0a1b2c3d4e5f"  # a table attached by class (catalog)
ORDERS_OID = "0c9b8a7d-6e5f-4a3b-9c2d-1e0f9a8b7c6d"  # a table txetcd catalogs first
COMPRESS_ZLIB = 1


def identity(value: Any) -> Any:
    return value


def fb_build(obj: dict[str, Any], builder: Any) -> int:
    """A two-field FlatBuffers table {name: string, n: long}, built by hand (no schema)."""
    name = builder.CreateString(obj["name"])
    builder.StartObject(2)
    builder.PrependUOffsetTRelativeSlot(0, name, 0)
    builder.PrependInt64Slot(1, obj["n"], 0)
    return int(builder.EndObject())


def fb_cast(buf: bytes) -> dict[str, Any]:
    import flatbuffers

    table = flatbuffers.table.Table(bytearray(buf), flatbuffers.encode.Get(
        flatbuffers.packer.uoffset, bytearray(buf), 0))
    name_at, n_at = table.Offset(4), table.Offset(6)
    return {"name": table.String(name_at + table.Pos).decode() if name_at else "",
            "n": table.Get(flatbuffers.number_types.Int64Flags, n_at + table.Pos) if n_at else 0}


def _values(kind: str, i: int) -> Any:
    return {
        "String": f"text {i} ünïcode", "Oid": 2 ** 53 - i, "Uuid": [U2, U3][i % 2],
        "UuidSet": {[U2, U3][i % 2]},  # one element: txaioetcd's set decoder drops the others
        "Json": {"i": i, "list": [1, "two", None], "nested": {"ok": True}},
        "Cbor": {"i": i, "bytes": b"\x00\xff", "list": [1.5, "x"]},
        "Pickle": {"set": {i, i + 1}, "tuple": (i, "x"), "bytes": b"\x01"},
        "FlatBuffers": {"name": f"fb{i}", "n": -i - 1},
    }[kind]


def _keys(kind: str, base: int) -> list[Any]:
    keys: dict[str, list[Any]] = {
        "Uuid": [uuid.UUID(int=base + 1), uuid.UUID(int=base + 2)],
        "String": [f"key{base}", f"key{base}/longer", "ключ" + str(base)],
        "Oid": [base + 1, 2 ** 53 - base],
        "UuidString": [(U1, f"name{base}"), (U1, f"name{base}0"), (U2, "")],
        "UuidUuid": [(U1, uuid.UUID(int=base + 1)), (U2, uuid.UUID(int=base + 2))],
        "SlotUuid": [(7, uuid.UUID(int=base + 1)), (65535, U2)],
    }
    return keys[kind]


# (map class name, slot, key kind, value kind, options). The slots start at 100: txaioetcd
# allocates catalog slots from 1 without looking at slots used without the catalog.
TABLES: list[tuple[str, int, str, str, dict[str, Any]]] = []
_KINDS: list[tuple[str, str, str, dict[str, Any]]] = [(f"Map{key}{value}", key, value, {})
          for key in ("Uuid", "String", "Oid")
          for value in ("String", "Oid", "Uuid", "Json", "Cbor", "Pickle", "FlatBuffers")]
_KINDS += [("MapUuidUuidSet", "Uuid", "UuidSet", {}),
           ("MapUuidStringUuid", "UuidString", "Uuid", {}),
           ("MapUuidUuidCbor", "UuidUuid", "Cbor", {}),
           ("MapSlotUuidUuid", "SlotUuid", "Uuid", {}),
           ("MapUuidCbor", "Uuid", "Cbor", {"compress": COMPRESS_ZLIB})]
TABLES = [(name, 100 + i, key, value, options) for i, (name, key, value, options)
          in enumerate(_KINDS)]
BINARY_SLOT = 100 + len(TABLES)  # raw bytes under String keys, as txaioetcd programs stored
BINARY_ROWS = {"blob": b"\x00\x01\xfe\xff", "empty-ish": b"\x00", "text": "bytes ü".encode()}


def rows(base: int) -> dict[str, list[tuple[Any, Any]]]:
    """The records of every table: keys differ by ``base`` (txaioetcd 0, txetcd 1000)."""
    return {f"{name}@{slot}": [(key, _values(value, i))
                               for i, key in enumerate(_keys(key_kind, base))]
            for name, slot, key_kind, value, _options in TABLES}


TXAIOETCD_ROWS = rows(0)
TXETCD_ROWS = rows(1000)


def make_map(module: Any, name: str, slot: int, value: str, options: dict[str, Any]) -> Any:
    """The table as txaioetcd's program declares it; the same call works with txetcd."""
    kwargs = dict(options)
    if value in ("Json", "Cbor"):
        kwargs.update(marshal=identity, unmarshal=identity)  # txaioetcd requires them
    if value == "FlatBuffers":
        kwargs.update(build=fb_build, cast=fb_cast)
    return getattr(module, name)(slot, **kwargs)


# -- the txaioetcd side ---------------------------------------------------------------------

async def _txaioetcd(mode: str, url: str) -> None:
    import txaioetcd
    import zlmdb

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.peers import txaioetcd_client

    client = txaioetcd_client(url)
    db = txaioetcd.Database(client)

    @zlmdb.table(USERS_OID, marshal=identity, parse=identity)
    class Users(txaioetcd.MapUuidCbor):
        """Users, attached by class through the slot catalog."""

    @zlmdb.table(ORDERS_OID)
    class Orders(txaioetcd.MapOidString):
        """Orders: txetcd catalogs this table first."""

    if mode == "write":
        for name, slot, _key, value, options in TABLES:
            table = make_map(txaioetcd, name, slot, value, options)
            async with db.begin(write=True) as txn:
                for key, record in TXAIOETCD_ROWS[f"{name}@{slot}"]:
                    table[txn, key] = record
        for key, blob in BINARY_ROWS.items():
            await client.set(struct.pack(">H", BINARY_SLOT) + key.encode(), blob)
        users = await db.attach_table(Users)
        async with db.begin(write=True) as txn:
            users[txn, U1] = {"name": "alice"}
        print(json.dumps({"users_slot": users.slot, "zlmdb": zlmdb.__version__}))
        return
    for name, slot, _key, value, options in TABLES:
        table = make_map(txaioetcd, name, slot, value, options)
        async with db.begin() as txn:
            for key, record in TXETCD_ROWS[f"{name}@{slot}"]:
                found = await table[txn, key]
                assert found == record, (name, key, found, record)
        print(f"ok {name}@{slot}")
    orders = await db.attach_table(Orders)
    async with db.begin() as txn:
        print(f"orders slot {orders.slot}: {await orders[txn, 1]}")
    users = await db.attach_table(Users)
    async with db.begin() as txn:
        print(f"users slot {users.slot}: {await users[txn, U2]}")


if __name__ == "__main__":
    from twisted.internet import defer, task

    task.react(lambda reactor: defer.ensureDeferred(_txaioetcd(sys.argv[1], sys.argv[2])))
