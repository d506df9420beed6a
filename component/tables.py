"""Configured tables opened over an etcd client: for the component, its CLIs and pmap programs.

``open_table(settings, client)`` gives the ``procedures.table.Table`` of one configured table,
with its value schema compiled once and its indexes attached. Its ``map`` is the same table as a
``txetcd.pmap`` map: a pmap program writing through it keeps the schema and the index entries
exactly as WAMP writes do (one layout)::

    users = open_table(settings.tables[0], client).map
    async with Database(client).begin(write=True) as txn:
        await users.put(txn, uuid.uuid4(), {"name": "ada", "email": "ada@example.com"})
"""

from __future__ import annotations

from procedures.schema import value_codec
from procedures.table import Table
from txetcd import Client

from .config import Settings, TableSettings

__all__ = ["open_table", "open_tables", "connect"]


def open_table(settings: TableSettings, client: Client) -> Table:
    fbs = settings.flatbuffers
    codec = value_codec(settings.value, settings.schema,
                        None if fbs is None else (fbs.bfbs, fbs.root_type))
    return Table(settings.name, settings.slot, settings.key, settings.value, client, codec,
                 settings.indexes)


def open_tables(settings: Settings, client: Client) -> dict[str, Table]:
    return {t.name: open_table(t, client) for t in settings.tables}


def connect(settings: Settings, reactor: object, timeout: float = 10.0) -> Client:
    """A client of the configured etcd (endpoints, namespace, credentials)."""
    etcd = settings.etcd
    return Client(reactor, endpoints=etcd.endpoints, namespace=etcd.namespace, user=etcd.user,
                  password=etcd.password, ca=etcd.ca, timeout=timeout)
