"""txetcd next to etcd's own ``etcdctl`` (Debian's 3.4), on etcd 3.4 and 3.5 (issue #14).

Each thing one side writes or holds, the other sees: keys, binary values, leases, locks,
elections and watches, both ways. etcdctl runs as a subprocess against the fixture's server.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from inspect import isawaitable
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.task import deferLater

from txetcd import Client, Election, KeySet, Lock
from txetcd.embedded import EtcdProcess

inline = pytest_twisted.ensureDeferred
ETCDCTL = "/usr/bin/etcdctl"
# Only the endpoint we pass: no ETCDCTL_* setting of the calling shell may redirect etcdctl.
ENV = {**{k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL")},
       "ETCDCTL_API": "3"}


def etcdctl(etcd: EtcdProcess, *args: str | bytes) -> str:
    done = subprocess.run([ETCDCTL, f"--endpoints={etcd.url}", *args], capture_output=True,
                          timeout=30, env=ENV)
    assert done.returncode == 0, done.stderr
    return done.stdout.decode("utf-8", "replace")


def background(etcd: EtcdProcess, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([ETCDCTL, f"--endpoints={etcd.url}", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=ENV)


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def until(check: Any, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.1)):
        result = check()
        if await result if isawaitable(result) else result:
            return
        await sleep(0.1)
    raise AssertionError("condition did not hold in time")


def get_json(etcd: EtcdProcess, key: str) -> list[dict[str, Any]]:
    return json.loads(etcdctl(etcd, "get", key, "-w", "json")).get("kvs", [])


@inline
async def test_keys_and_binary_values_both_ways(etcd: EtcdProcess, client: Client) -> None:
    blob = bytes(range(256))
    await client.set(b"bin", blob)
    (kv,) = get_json(etcd, "bin")
    assert base64.b64decode(kv["value"]) == blob
    high = "wert ü €".encode() + bytes([0x01, 0xFE, 0xFF])  # no NUL: an argv cannot hold one
    etcdctl(etcd, "put", "from-etcdctl", high)
    assert (await client.get(b"from-etcdctl")).kvs[0].value == high
    etcdctl(etcd, "del", "bin")
    assert (await client.get(b"bin")).kvs == []


@inline
async def test_what_etcdctl_wrote_reads_back_in_one_batch_with_its_metadata(
        etcd: EtcdProcess, client: Client) -> None:
    # Gets issued in one turn share a txn, whose answer is decoded apart from a lone get's:
    # each kv must match etcdctl's own view of it, field for field, lease and all.
    granted = etcdctl(etcd, "lease", "grant", "60").split()[1]
    # b/big: the gateway sends an answer over 4 kB chunked.
    values = {"b/bin": "wert ü €".encode() + bytes([0x01, 0xFE, 0xFF]), "b/empty": b"",
              "b/leased": b"on a lease", "b/twice": b"first", "b/big": b"x" * 100_000}
    for key, value in values.items():
        etcdctl(etcd, "put", key, value, *(["--lease=" + granted] if key == "b/leased" else []))
    etcdctl(etcd, "put", "b/twice", "second")
    values["b/twice"] = b"second"
    before = sum(client.stats()["posts"].values())
    keys = [*values, "b/missing"]
    answers = await gatherResults([client.get(key.encode()) for key in keys])
    posts = client.stats()["posts"]
    assert sum(posts.values()) - before == 2  # the first at once, the others in one txn
    assert any(url.endswith("/kv/txn") for url in posts)
    for key, answer in zip(keys, answers, strict=True):
        theirs = get_json(etcd, key)
        assert [kv.key for kv in answer.kvs] == [base64.b64decode(kv["key"]) for kv in theirs]
        assert answer.count == len(theirs)
        for ours, kv in zip(answer.kvs, theirs, strict=True):
            assert ours.value == values[key]
            assert (ours.version, ours.create_revision, ours.mod_revision, ours.lease) == (
                kv["version"], kv["create_revision"], kv["mod_revision"], kv.get("lease", 0))
    assert answers[keys.index("b/leased")].kvs[0].lease == int(granted, 16)
    assert answers[keys.index("b/twice")].kvs[0].version == 2
    etcdctl(etcd, "lease", "revoke", granted)


@inline
async def test_leases_both_ways(etcd: EtcdProcess, client: Client) -> None:
    granted = etcdctl(etcd, "lease", "grant", "30").split()[1]  # "lease <hex> granted ..."
    await client.set(b"on-their-lease", b"v", lease=int(granted, 16))
    assert "on-their-lease" in etcdctl(etcd, "lease", "timetolive", granted, "--keys")
    async with client.lease(30) as lease:
        etcdctl(etcd, "put", "on-our-lease", "v", f"--lease={lease.lease_id:x}")
        assert await lease.keys() == [b"on-our-lease"]
        assert f"{lease.lease_id:x}" in etcdctl(etcd, "lease", "list")
    assert (await client.get(b"on-our-lease")).kvs == []  # revoked on exit
    etcdctl(etcd, "lease", "revoke", granted)
    assert (await client.get(b"on-their-lease")).kvs == []


@inline
async def test_locks_both_ways(etcd: EtcdProcess, client: Client) -> None:
    lock = await Lock(client, b"L", ttl=10)
    waiting = background(etcd, "lock", "L", "echo", "got it")
    await sleep(1.0)
    assert waiting.poll() is None  # etcdctl waits while we hold the lock
    await lock.release()
    await until(lambda: waiting.poll() is not None)
    assert waiting.communicate()[0].decode().strip().endswith("got it")
    holder = background(etcd, "lock", "M")  # holds until killed
    try:
        async def held() -> bool:
            return (await client.get(KeySet(b"M/", prefix=True), count_only=True)).count == 1
        await until(held)
        ours = Lock(client, b"M", ttl=10).acquire()
        await sleep(0.5)
        assert not ours.called
    finally:
        holder.terminate()
        holder.wait(10)
    mine = await ours  # etcdctl unlocks when it is terminated
    await mine.release()


@inline
async def test_elections_both_ways(etcd: EtcdProcess, client: Client) -> None:
    leader = background(etcd, "elect", "E", "from-etcdctl")
    try:
        election = Election(client, b"E")

        async def they_lead() -> bool:
            try:
                return (await election.leader()).value == b"from-etcdctl"
            except Exception:  # noqa: BLE001 - nobody leads yet
                return False
        await until(they_lead)
    finally:
        leader.terminate()
        leader.wait(10)
    async with Election(client, b"F").campaign(b"from-txetcd", ttl=10):
        listener = background(etcd, "elect", "-l", "F")  # prints the leader, then observes
        await sleep(1.5)
        listener.terminate()
        assert "from-txetcd" in listener.communicate(timeout=10)[0].decode().split()


@inline
async def test_watches_both_ways(etcd: EtcdProcess, client: Client) -> None:
    theirs = background(etcd, "watch", "w", "--prefix")
    await sleep(1.0)  # etcdctl's watch is established
    await client.set(b"w/1", b"ours")
    events: list[Any] = []
    watch = client.watch(KeySet(b"w/", prefix=True), events.append)
    await watch.when_started()
    etcdctl(etcd, "put", "w/2", "theirs")
    await until(lambda: len(events) >= 1)
    assert (events[0].key, events[0].value) == (b"w/2", b"theirs")
    watch.cancel()
    theirs.terminate()
    out = theirs.communicate(timeout=10)[0].decode()
    assert out.split()[:3] == ["PUT", "w/1", "ours"] and "theirs" in out
