"""What ``<prefix>.status`` reports about the store: etcd's members, leader, revision, db size
and quota, and which component instance publishes each table's events.

Read-only and best effort beyond etcd's own status: a quota that cannot be read from etcd's
``/metrics`` or a publisher election nobody runs is reported as ``None``, never as an error.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.internet import defer

from txetcd import Client, Election, KeyNotFound

from .publisher import election_name

__all__ = ["store_status"]

_QUOTA = re.compile(rb"^etcd_server_quota_backend_bytes\s+(\S+)", re.MULTILINE)
METRICS_TIMEOUT = 2.0


async def store_status(etcd: Client, prefix: str, node: str | None,
                       tables: list[dict[str, Any]]) -> dict[str, Any]:
    """The status document: ``prefix``, ``etcd`` (version, revision, db size, quota, leader,
    members) and ``tables``, each with the ``publisher`` proclaimed in its election (this
    router's, ``node``, where routers are linked)."""
    state = await etcd.status()
    members = await etcd.member_list()
    # The optional parts at once: one election read per table, and the metrics.
    quota_asked = defer.ensureDeferred(_quota_bytes(etcd))
    publishers = await defer.gatherResults(
        [defer.ensureDeferred(_publisher(etcd, prefix, t["name"], node)) for t in tables])
    listed = [{**t, "publisher": p} for t, p in zip(tables, publishers, strict=True)]
    quota = await quota_asked
    return {"prefix": prefix,
            "etcd": {"version": state.version, "revision": state.header.revision,
                     "db_size": state.db_size, "db_size_in_use": state.db_size_in_use,
                     "quota_bytes": quota, "leader": str(state.leader),
                     "member": str(state.header.member_id),
                     # Member IDs are uint64: strings, so that JSON clients keep every digit.
                     "members": [{"id": str(m.id), "name": m.name, "client_urls": m.client_urls,
                                  "is_learner": m.is_learner} for m in members]},
            "tables": listed}


async def _publisher(etcd: Client, prefix: str, table: str, node: str | None) -> str | None:
    """The instance (``host:pid``) leading the table's publisher election, if anyone does
    (nobody does while nobody subscribes to the table's events)."""
    try:
        leader = await Election(etcd, election_name(prefix, table, node)).leader()
    except KeyNotFound:
        return None
    return leader.value.decode(errors="replace")


async def _quota_bytes(etcd: Client) -> int | None:
    """etcd's backend quota (``--quota-backend-bytes``), which only its metrics expose."""
    # A plain GET, on the client's keep-alive pool like its /version reads.
    asked = etcd.driver.get(etcd.transport.endpoint + "/metrics")
    asked.addTimeout(METRICS_TIMEOUT, etcd.reactor)
    try:
        code, body = await asked
    except Exception:  # noqa: BLE001 - the quota is optional: a timeout, a refused connection
        return None
    if code != 200:
        return None
    found = _QUOTA.search(body)
    return int(float(found.group(1))) if found else None
