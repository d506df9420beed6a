"""``make run``'s launcher brings up etcd, Crossbar and the component, and Ctrl-C stops all."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest_twisted

from txetcd.embedded import free_port

from .wamp import ROOT, connect


def wait_for_line(proc: subprocess.Popen[str], word: str, timeout: float = 90) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line:
            lines.append(line)
            if word in line:
                return lines
        elif proc.poll() is not None:
            break
        else:
            time.sleep(0.1)
    raise AssertionError(f"no {word!r} from the launcher: {''.join(lines)}")


@pytest_twisted.ensureDeferred
async def test_make_run_launcher(tmp_path: Path) -> None:
    web_port, etcd_port = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-u", "-m", "component.cli", "run", "--data-dir",
                             str(tmp_path), "--web-port", str(web_port), "--etcd-port",
                             str(etcd_port)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        lines = wait_for_line(proc, "explorer")
        assert any(f"127.0.0.1:{etcd_port}" in line for line in lines)
        session = await connect(f"ws://127.0.0.1:{web_port}/ws", "reader", "reader-secret")
        for _ in range(100):  # the container component joins a moment after the node boots
            try:
                status = await session.call("etcd.status")
                break
            except Exception:  # noqa: BLE001
                from twisted.internet import reactor
                from twisted.internet.task import deferLater

                await deferLater(reactor, 0.2, lambda: None)
        assert [t["name"] for t in status["tables"]] == ["users", "settings", "people"]
        assert status["etcd"]["version"].startswith("3.")
        session.leave()
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        proc.wait(60)
    assert proc.returncode == 0
    for port in (web_port, etcd_port):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"


def launch(data_dir: Path, web_port: int, etcd_port: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-u", "-m", "component.cli", "run", "--data-dir",
                             str(data_dir), "--web-port", str(web_port), "--etcd-port",
                             str(etcd_port)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


async def call_when_served(url: str, procedure: str, *args: object) -> object:
    """Call as the writer once the container component has registered ``procedure``."""
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    session = await connect(url, "writer", "writer-secret")
    try:
        for _ in range(150):
            try:
                return await session.call(procedure, *args)
            except Exception:  # noqa: BLE001 - not registered yet
                await deferLater(reactor, 0.2, lambda: None)
        raise AssertionError(f"{procedure} was never served")
    finally:
        session.leave()


async def write_then_stop(data_dir: Path, web_port: int, etcd_port: int, row: tuple[str, str],
                          stop: Callable[[subprocess.Popen[str]], object]
                          ) -> subprocess.Popen[str]:
    """A ``make run`` that puts ``row`` into the settings table through WAMP, then is stopped
    by ``stop``; returns it once it has exited."""
    proc = launch(data_dir, web_port, etcd_port)
    try:
        wait_for_line(proc, "explorer")
        await call_when_served(f"ws://127.0.0.1:{web_port}/ws", "etcd.settings.put", *row)
    finally:
        stop(proc)
        proc.wait(60)
    return proc


@pytest_twisted.ensureDeferred
async def test_make_run_again_on_its_data_serves_it(tmp_path: Path) -> None:
    """Stop ``make run`` and start it again: the same etcd data, on the same ports, served
    again; and SIGTERM (a service manager's stop) ends it as cleanly as Ctrl-C."""
    web_port, etcd_port = free_port(), free_port()
    url = f"ws://127.0.0.1:{web_port}/ws"
    first = await write_then_stop(tmp_path, web_port, etcd_port, ("theme", "dark"),
                                  lambda proc: os.killpg(proc.pid, signal.SIGINT))
    assert first.returncode == 0

    again = launch(tmp_path, web_port, etcd_port)
    try:
        lines = wait_for_line(again, "explorer")
        assert any(f"127.0.0.1:{etcd_port}" in line for line in lines), lines
        assert await call_when_served(url, "etcd.settings.get", "theme") == "dark"
    finally:
        os.killpg(again.pid, signal.SIGTERM)
        again.wait(60)
    assert again.returncode == 0
    assert still_open((web_port, etcd_port)) == []


def still_open(ports: tuple[int, ...]) -> list[int]:
    """The ports of ``ports`` accepting connections right now."""
    found = []
    for port in ports:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                found.append(port)
    return found


def wait_closed(ports: tuple[int, ...], timeout: float = 60) -> list[int]:
    """The ports of ``ports`` still accepting connections after ``timeout`` s (bounded)."""
    deadline = time.monotonic() + timeout
    while (found := still_open(ports)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


@pytest_twisted.ensureDeferred
async def test_make_run_killed_leaves_nothing_behind(tmp_path: Path) -> None:
    """``kill -9`` of ``make run`` (the OOM killer, a hard stop) takes its etcd and its
    Crossbar node down with it, so that the next ``make run`` on the same ports starts."""
    web_port, etcd_port = free_port(), free_port()
    url = f"ws://127.0.0.1:{web_port}/ws"
    # kill -9 of the launcher alone, not of its process group
    await write_then_stop(tmp_path, web_port, etcd_port, ("survives", "a crash"),
                          subprocess.Popen.kill)
    assert wait_closed((web_port, etcd_port)) == []

    again = launch(tmp_path, web_port, etcd_port)
    try:
        wait_for_line(again, "explorer")
        assert await call_when_served(url, "etcd.settings.get", "survives") == "a crash"
    finally:
        os.killpg(again.pid, signal.SIGINT)
        again.wait(60)
    assert again.returncode == 0
