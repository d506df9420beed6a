"""No client can hurt the service by load: subscription churn, floods of big writes, a full
etcd, and masses of scans, through a real Crossbar node and real etcd."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from autobahn.wamp.exception import ApplicationError
from twisted.internet import defer, reactor
from twisted.internet.task import LoopingCall, deferLater

from txetcd import Client
from txetcd.embedded import EtcdProcess

from .wamp import CrossbarNode, connect

inline = pytest_twisted.ensureDeferred
SERIALIZERS = ("json", "cbor", "msgpack")


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


def component_pid(node: CrossbarNode) -> int:
    """The pid of the node's container worker, the process the component runs in."""
    assert node.proc is not None
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat, open(f"/proc/{entry}/cmdline") as cmd:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
                command = cmd.read()
        except OSError:
            continue
        if parent == node.proc.pid and "ContainerController" in command:
            return int(entry)
    raise AssertionError("the node has no container worker")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


async def session(node: CrossbarNode, authid: str = "writer", serializer: str = "cbor") -> Any:
    joined = await connect(node.url, authid, f"{authid}-secret", serializer)
    for _ in range(300):
        try:
            await joined.call("etcd.status")
            return joined
        except ApplicationError as exc:
            if exc.error != "wamp.error.no_such_procedure":
                raise
            await sleep(0.1)
    raise AssertionError("the component never registered etcd.status")


@inline
async def test_parallel_big_puts_keep_memory_bounded(node: CrossbarNode,
                                                     etcd_direct: Client) -> None:
    pid = component_pid(node)
    writers = [await session(node, serializer=s) for s in SERIALIZERS]
    before = rss_mb(pid)
    peak = [before]
    sampler = LoopingCall(lambda: peak.append(rss_mb(pid)))
    sampler.start(0.05)
    value = "v" * 1_000_000
    started = time.monotonic()
    calls = [writers[i % 3].call("etcd.settings.put", f"big{i}", value) for i in range(500)]
    outcomes = await defer.DeferredList(calls, consumeErrors=True)
    took = time.monotonic() - started
    await sleep(2)
    sampler.stop()
    after = rss_mb(pid)
    errors: dict[str, int] = {}
    for ok, result in outcomes:
        if not ok:
            name = getattr(result.value, "error", repr(result.value))
            errors[name] = errors.get(name, 0) + 1
    print(f"\nRSS before {before:.0f} MB, peak {max(peak):.0f} MB, after {after:.0f} MB; "
          f"{took:.1f} s; ok {sum(ok for ok, _ in outcomes)}; errors {errors}")
    for w in writers:
        w.leave()


def etcdctl(etcd: EtcdProcess, *args: str) -> str:
    """Debian's etcdctl (v3 API) against ``etcd``, as an operator would run it."""
    done = subprocess.run(["etcdctl", f"--endpoints={etcd.url}", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "ETCDCTL_API": "3"},
                          check=True)
    return done.stdout


@pytest.fixture
def small_etcd(etcd_binary: Any) -> Iterator[EtcdProcess]:
    """An etcd of its own whose storage quota a few big writes fill."""
    with EtcdProcess(etcd_binary, extra_args=[f"--quota-backend-bytes={QUOTA}"]) as server:
        yield server


QUOTA = 8 << 20


@inline
async def test_full_etcd_says_no_space_and_recovers(small_etcd: EtcdProcess,
                                                    tmp_path: Any) -> None:
    node = CrossbarNode(tmp_path, small_etcd.url)
    node.start()
    try:
        writers = [await session(node, serializer=s) for s in SERIALIZERS]
        value = "x" * 500_000
        refused: ApplicationError | None = None
        for i in range(200):  # one key rewritten: its history fills the quota
            try:
                await writers[i % 3].call("etcd.settings.put", "filler", value)
            except ApplicationError as exc:
                refused = exc
                break
        assert refused is not None, "the quota never filled"
        assert refused.error == "etcd.error.no_space", refused
        assert "alarm disarm" in refused.kwargs["message"]
        assert "NOSPACE" in etcdctl(small_etcd, "alarm", "list")
        for writer in writers:  # every serializer gets the typed error; reads still work
            with pytest.raises(ApplicationError) as caught:
                await writer.call("etcd.settings.put", "other", 1)
            assert caught.value.error == "etcd.error.no_space"
            assert await writer.call("etcd.settings.get", "filler") == value
        # What the message tells the operator to do.
        revision = int(json.loads(etcdctl(small_etcd, "endpoint", "status", "-w", "json"))[0]
                       ["Status"]["header"]["revision"])
        etcdctl(small_etcd, "compact", str(revision))
        etcdctl(small_etcd, "defrag")
        etcdctl(small_etcd, "alarm", "disarm")
        for writer in writers:
            assert await writer.call("etcd.settings.put", "other", 2) > revision
        for writer in writers:
            writer.leave()
    finally:
        node.stop()
