"""A real Crossbar node for tests, run from the repo's crossbar-config/, and WAMP clients."""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from autobahn.twisted.component import Component
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater

from component.localsocket import point_to_socket, private_dir, socket_path
from txetcd.embedded import free_port, stop_group

ROOT = Path(__file__).resolve().parent.parent
CROSSBAR = Path(sys.executable).with_name("crossbar")


class CrossbarNode:
    """The repo's node config with its web port and etcd endpoint swapped for the test's."""

    def __init__(self, workdir: Path, etcd_url: str, namespace: str = "app/",
                 with_component: bool = True, extra: dict[str, Any] | None = None) -> None:
        self.workdir = workdir
        shutil.copytree(ROOT / "crossbar-config", workdir, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("key.*", "*.pid", "*.sock", "*.log",
                                                      "private"))
        self.cbdir = workdir / ".crossbar"
        private_dir(self.cbdir)
        self.port = free_port()
        config = json.loads((self.cbdir / "config.json").read_text())
        router, container = config["workers"]
        for worker in (router, container):
            worker["options"]["pythonpath"] = [str(ROOT)]
        router["transports"][0]["endpoint"]["port"] = self.port
        extra_settings, extra = extra, container["components"][0]["extra"]
        extra["etcd"]["endpoints"] = [etcd_url]
        extra["etcd"]["namespace"] = namespace
        extra.update(extra_settings or {})
        self.extra = extra
        if not with_component:
            # The router alone; the test runs the component standalone (python -m component).
            config["workers"] = [router]
        point_to_socket(config, self.cbdir)
        (self.cbdir / "config.json").write_text(json.dumps(config, indent=2))
        self.with_component = with_component
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return socket_path(self.cbdir)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self, timeout: float = 180.0, ready: bool = True) -> CrossbarNode:
        """Start the node; return once the component is ready (or, unless ``ready``, joined)."""
        seen = len(self.log_text())  # a restart appends to the log of the earlier boot
        log = open(self.workdir / "node.log", "ab")  # noqa: SIM115 - the child owns it
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        # TEST_CROSSBAR_LOGLEVEL=trace logs every WAMP message, for debugging a failing test.
        level = os.environ.get("TEST_CROSSBAR_LOGLEVEL", "info")
        self.proc = subprocess.Popen([str(CROSSBAR), "start", "--cbdir", str(self.cbdir),
                                      "--color", "false", "--loglevel", level],
                                     stdout=log, stderr=log, env=env, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            log_text = self.log_text()[seen:]
            # The container component joins a moment after the node reports its boot.
            if "NODE_BOOT_COMPLETE" in log_text and (not self.with_component or (
                    "etcd component ready" if ready else "etcd component waiting") in log_text):
                return self
            time.sleep(0.2)
        raise RuntimeError(f"crossbar did not start:\n{self.log_text()[-4000:]}")

    @contextlib.contextmanager
    def running(self) -> Iterator[CrossbarNode]:
        """The node started, stopped when the block ends (a fixture's whole body)."""
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def start_component(self, *args: str, env: dict[str, str] | None = None,
                        log_path: Path | None = None) -> subprocess.Popen[bytes]:
        """The component standalone with the node's table config on the node's unix socket,
        or as ``args`` say (``--router``, ``--config``, ``--key``, ...), with ``env`` added."""
        config = self.workdir / "tables.json"
        config.write_text(json.dumps(self.extra))
        log_path = log_path or self.workdir / "component.log"
        log = open(log_path, "ab")  # noqa: SIM115 - the child owns it
        defaults = [] if "--router" in args else ["--router", f"unix:{self.socket_path}"]
        defaults += [] if "--config" in args else ["--config", str(config)]
        proc = subprocess.Popen([sys.executable, "-m", "component", *defaults, *args],
                                stdout=log, stderr=log, cwd=ROOT, start_new_session=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
        log.close()
        return proc

    def log_text(self) -> str:
        path = self.workdir / "node.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def worker_pids(self) -> dict[str, int]:
        """The pids of the node's workers by kind: ``router`` and ``container`` (the process
        the component runs in)."""
        assert self.proc is not None
        markers = {"RouterController": "router", "ContainerController": "container"}
        found: dict[str, int] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as stat, open(f"/proc/{entry}/cmdline") as cmd:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
                    command = cmd.read()
            except OSError:
                continue
            if parent == self.proc.pid:
                found.update((kind, int(entry)) for marker, kind in markers.items()
                             if marker in command)
        return found

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)
        self.proc = None


async def connect(url: str, authid: str | None = None, ticket: str | None = None,
                  serializer: str = "cbor", transport: dict[str, Any] | None = None) -> Any:
    """A joined WAMP session (ticket auth when authid is given) speaking ``serializer``
    (cbor, msgpack or json), or over ``transport`` (an autobahn transport config);
    ``session.leave()`` ends it."""
    joined: defer.Deferred[Any] = defer.Deferred()
    auth = {"ticket": {"authid": authid, "ticket": ticket}} if authid else None
    comp = Component(transports=[transport or {"url": url, "serializers": [serializer],
                                               "max_retries": 0}],
                     realm="realm1", authentication=auth)

    @comp.on_join
    def _joined(session: Any, details: Any) -> None:
        if not joined.called:
            joined.callback(session)

    def _failed(failure: Any) -> None:
        if not joined.called:
            joined.errback(failure)

    comp.start(reactor).addErrback(_failed)
    return await joined


async def until_registered(session: Any) -> Any:
    """``session`` once the component answers: right after boot it may still be joining."""
    from autobahn.wamp.exception import ApplicationError
    from twisted.internet.task import deferLater

    for _ in range(100):
        try:
            await session.call("etcd.status")
            return session
        except ApplicationError as exc:
            if exc.error != "wamp.error.no_such_procedure":
                raise
            await deferLater(reactor, 0.1, lambda: None)
    raise AssertionError("component never registered etcd.status")


async def eventually(check: Any, timeout: float = 10.0, step: float = 0.05) -> Any:
    """Poll ``check()`` (awaited when it returns an awaitable) until it gives something truthy,
    and return that: a bounded wait, not a timing test. The time counted is the polls' sleeps,
    so a loaded machine that oversleeps gets more, not less."""
    waited = 0.0
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if waited >= timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await deferLater(reactor, step, lambda: None)
        waited += step

