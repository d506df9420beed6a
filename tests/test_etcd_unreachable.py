"""A component whose etcd does not answer says so, refuses calls at once as unavailable, and
becomes ready (and serves) once etcd answers: driven from the outside, through a real node on
an etcd that is stopped at first, and through ``etcd-wamp run``."""

from __future__ import annotations

import functools
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest_twisted
from autobahn.wamp.exception import ApplicationError

from txetcd.embedded import EtcdProcess, find_etcd, free_port, stop_group

from . import wamp
from .test_cli import CLI, RunningNode
from .wamp import CrossbarNode, connect, until_registered

# Etcd going away and coming back takes a while here.
eventually = functools.partial(wamp.eventually, timeout=30.0, step=0.2)

inline = pytest_twisted.ensureDeferred
SERIALIZERS = ("json", "cbor", "msgpack")
QUICK = 3.0  # seconds: a refusal must not wait for the etcd client's timeout (10 s)




async def refused_quickly(session: Any, procedure: str, *args: Any) -> str:
    """The call is refused as unavailable within ``QUICK`` seconds; its message."""
    started = time.monotonic()
    try:
        await session.call(procedure, *args)
    except ApplicationError as exc:
        assert exc.error == "etcd.error.unavailable", exc
        assert time.monotonic() - started < QUICK, f"{procedure} took {time.monotonic() - started}"
        return str(exc.args[0] if exc.args else exc)
    raise AssertionError(f"{procedure} succeeded with etcd down")


async def start_and_wait_for_answer(etcd: EtcdProcess, node: CrossbarNode) -> None:
    """Start ``etcd`` again and wait until the component logs that it answers again."""
    answers = re.compile(rf"etcd at {re.escape(etcd.url)} answers: cluster [0-9a-f]+, "
                         r"etcd [0-9.]+ again")
    before = len(answers.findall(node.log_text()))
    etcd.start()
    await eventually(lambda: len(answers.findall(node.log_text())) > before)


@inline
async def test_a_node_waits_for_etcd_refuses_calls_then_serves(tmp_path: Path) -> None:
    etcd = EtcdProcess(find_etcd("3.5"), data_dir=tmp_path / "etcd")
    node = CrossbarNode(tmp_path / "node", etcd.url)
    node.start(timeout=180, ready=False)  # a loaded machine boots a node slowly
    sessions: list[Any] = []
    try:
        # The log says what it waits for, naming the endpoint and the cause; not "ready".
        await eventually(lambda: re.search(
            rf"etcd component waiting for etcd at {re.escape(etcd.url)}: .*[Rr]efused",
            node.log_text()))
        assert "etcd component ready" not in node.log_text()
        for serializer in SERIALIZERS:
            client = await until_registered(await connect(node.url, "writer", "writer-secret",
                                                          serializer))
            sessions.append(client)
            status = await client.call("etcd.status")
            assert status["health"]["state"] == "waiting", status
            assert status["health"]["endpoints"] == [etcd.url]
            assert "efused" in status["health"]["cause"]
            message = await refused_quickly(client, "etcd.settings.get", "k")
            assert etcd.url in message, message
            await refused_quickly(client, "etcd.settings.put", f"early-{serializer}", 1)
            await refused_quickly(client, "etcd.txn", [])

        etcd.start()
        await eventually(lambda: "etcd component ready" in node.log_text())
        assert re.search(rf"etcd at {re.escape(etcd.url)} answers: cluster [0-9a-f]+, etcd 3\.5",
                         node.log_text())
        for serializer, client in zip(SERIALIZERS, sessions, strict=True):
            revision = await client.call("etcd.settings.put", f"late-{serializer}", 2)
            assert await client.call("etcd.settings.get", f"late-{serializer}") == 2
            assert await client.call("etcd.settings.get", f"early-{serializer}") is None
            status = await client.call("etcd.status")
            assert status["health"]["state"] == "ready"
            assert status["etcd"]["revision"] >= revision

        # etcd goes away while serving: refused at once again, and served when it is back.
        # The log lines are counted, and the one that says etcd answers is matched whole: the
        # warning says "... until it answers again" too, which a CI run took for the answer
        # (its calls then came before the next probe, and were refused).
        unreachable = node.log_text().count("is unreachable")
        etcd.stop()
        await eventually(lambda: node.log_text().count("is unreachable") > unreachable)
        for client in sessions:
            await refused_quickly(client, "etcd.settings.get", "late-json")
            assert (await client.call("etcd.status"))["health"]["state"] == "unreachable"
        await start_and_wait_for_answer(etcd, node)
        for client in sessions:
            assert await client.call("etcd.settings.get", "late-json") == 2

        # An instance configured for another cluster waits, and says why.
        config = tmp_path / "other-cluster.json"
        config.write_text(json.dumps({**node.extra, "etcd": {**node.extra["etcd"],
                                                             "cluster_id": "abc123"}}))
        log = tmp_path / "other.log"
        other = node.start_component("--config", str(config), log_path=log)
        try:
            await eventually(lambda: log.exists() and "not the expected abc123" in log.read_text())
            assert "etcd component ready" not in log.read_text()
        finally:
            stop_group(other)
    finally:
        for client in sessions:
            client.leave()
        node.stop()
        etcd.stop()


def test_run_says_it_waits_for_an_unreachable_etcd(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    run = RunningNode(tmp_path, "--etcd", closed)
    try:
        deadline = time.monotonic() + 120
        while f"waiting for etcd at {closed}" not in run.text():
            assert time.monotonic() < deadline and run.proc.poll() is None, run.text()
            time.sleep(0.2)
        time.sleep(1.0)
        assert "explorer  http" not in run.text(), "announced ready with etcd unreachable"
    finally:
        text = run.stop()
    assert re.search(rf"waiting for etcd at {re.escape(closed)}: .*[Rr]efused", text), text




def test_status_cli_says_etcd_is_unreachable() -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run([str(CLI), "status", "--etcd", closed], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert re.match(rf"etcd: unreachable at {re.escape(closed)}: .*[Rr]efused", done.stdout)
    done = subprocess.run([str(CLI), "status", "--json", "--etcd", closed], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    state = json.loads(done.stdout)["etcd"]
    assert state["state"] == "unreachable" and state["endpoints"] == [closed], state
