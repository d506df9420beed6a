"""``etcd-wamp status``: the etcd cluster and which component instance publishes which table.

Read from etcd directly, so it works while the router is down: the member list, each member's
status (version, leader, revision, db size), and the publisher elections of the component
(``<namespace>\\xff\\xffwamp/<prefix>/publisher/<table>``, see ``component.publisher``), whose
candidates proclaim ``host:pid``. The leader of an election is its oldest candidate.
"""

from __future__ import annotations

from typing import Any

from txetcd import Client, KeySet

from .config import EtcdSettings
from .publisher import election_name

__all__ = ["connect", "cluster_status", "publishers", "format_status"]


def connect(reactor: Any, etcd: EtcdSettings, endpoints: list[str] | None = None,
            timeout: float = 5.0) -> Client:
    """A client for the component's etcd (its namespace), or for some of its members."""
    return Client(reactor, endpoints=endpoints or etcd.endpoints, namespace=etcd.namespace,
                  user=etcd.user, password=etcd.password, ca=etcd.ca, timeout=timeout)


async def cluster_status(reactor: Any, etcd: EtcdSettings,
                         timeout: float = 5.0) -> dict[str, Any]:
    """Every member with its status, or the error it answered with."""
    members = []
    client = connect(reactor, etcd, timeout=timeout)
    try:
        listed = await client.member_list()
    finally:
        await client.close()
    for member in listed:
        entry: dict[str, Any] = {"name": member.name, "id": f"{member.id:x}",
                                 "client_urls": member.client_urls, "learner": member.is_learner}
        probe = connect(reactor, etcd, member.client_urls[:1], timeout)
        try:
            state = await probe.status()
            entry.update(version=state.version, revision=state.header.revision,
                         db_size=state.db_size, leader=state.leader == member.id,
                         raft_index=state.raft_index)
            leader_id = state.leader
        except Exception as exc:  # noqa: BLE001 - a member down is what status is for
            entry.update(error=str(exc) or type(exc).__name__)
            leader_id = None
        finally:
            await probe.close()
        entry["leader_id"] = f"{leader_id:x}" if leader_id else None
        members.append(entry)
    leader = next((m["name"] for m in members if m.get("leader")), None)
    return {"members": members, "leader": leader,
            "revision": max((m.get("revision", 0) for m in members), default=0)}


async def publishers(etcd: Client, prefix: str, tables: list[str] | None = None,
                     timeout: float = 5.0) -> dict[str, dict[str, Any]]:
    """Per table: the publishing instance (``host:pid``, None if nobody subscribes) and the
    standby candidates. ``etcd`` must be in the component's namespace."""
    base = election_name(prefix, "")
    found: dict[str, list[Any]] = {name: [] for name in tables or []}
    async for kv in etcd.scan(KeySet(base, prefix=True), timeout=timeout):
        table = kv.key[len(base):].split(b"/", 1)[0].decode(errors="replace")
        found.setdefault(table, []).append(kv)
    result = {}
    for table, candidates in sorted(found.items()):
        candidates.sort(key=lambda kv: kv.create_revision)
        names = [kv.value.decode(errors="replace") for kv in candidates]
        result[table] = {"publisher": names[0] if names else None, "standby": names[1:],
                         "since_revision": candidates[0].create_revision if candidates else None}
    return result


def _size(count: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if count < 1024:
            return f"{count:.0f} {unit}"
        count /= 1024  # type: ignore[assignment]
    return f"{count:.1f} GiB"


def format_status(cluster: dict[str, Any], tables: dict[str, dict[str, Any]],
                  namespace: str, prefix: str) -> str:
    """The report a person reads."""
    lines = [f"etcd: {len(cluster['members'])} members, leader "
             f"{cluster['leader'] or 'none'}, revision {cluster['revision']}"]
    for m in cluster["members"]:
        url = ",".join(m["client_urls"])
        if "error" in m:
            lines.append(f"  {m['name']:<12} {m['id']:<16} {url}  DOWN: {m['error']}")
            continue
        role = "leader" if m["leader"] else ("learner" if m["learner"] else "follower")
        lines.append(f"  {m['name']:<12} {m['id']:<16} {url}  etcd {m['version']}  {role}  "
                     f"revision {m['revision']}  db {_size(m['db_size'])}")
    lines.append(f"publishers (namespace {namespace!r}, prefix {prefix!r}):")
    if not tables:
        lines.append("  none (no table has subscribers)")
    for name, entry in tables.items():
        if entry["publisher"] is None:
            lines.append(f"  {name:<16} none (nobody subscribes)")
            continue
        standby = f", standby {', '.join(entry['standby'])}" if entry["standby"] else ""
        lines.append(f"  {name:<16} {entry['publisher']} (since revision "
                     f"{entry['since_revision']}){standby}")
    return "\n".join(lines)
