"""The README's "Linked routers" commands, run verbatim: two linked nodes, a write through one
read back through the other. Only the ports differ (free ones, swapped into the commands)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from txetcd.embedded import free_port, stop_group

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def blocks() -> list[tuple[str, str]]:
    """The section's fenced blocks: (kind, text)."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Linked routers"):]
    section = section[:section.index("\n## ", 5)]
    return re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)


def free_pair() -> int:
    """A port whose successor is free too (node 2 gets port + 1)."""
    while True:
        port = free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue


def start(runs: list[str], cwd: Path, env: dict[str, str]) -> list[subprocess.Popen[bytes]]:
    """The README's `etcd-wamp run` lines, each in its own process group (its terminal)."""
    nodes = []
    for number, command in enumerate(runs, 1):
        out = open(cwd / f"run{number}.out", "wb")  # noqa: SIM115 - the child's
        nodes.append(subprocess.Popen(["bash", "-c", command], cwd=cwd, env=env, stdout=out,
                                      stderr=subprocess.STDOUT, start_new_session=True))
        out.close()
        if number == 1:  # node 2 uses node 1's etcd
            time.sleep(2)
    return nodes


def wait_up(nodes: list[subprocess.Popen[bytes]], cwd: Path, timeout: float = 180) -> None:
    """Until both nodes said they are up, and each one's link to the other joined."""
    deadline = time.monotonic() + timeout
    logs = [cwd / f"run{n}.out" for n in (1, 2)]
    while not all("Ctrl-C stops everything" in p.read_text() for p in logs):
        assert all(node.poll() is None for node in nodes), [p.read_text() for p in logs]
        assert time.monotonic() < deadline, [p.read_text() for p in logs]
        time.sleep(0.5)
    for data in ("data1", "data2"):
        log = cwd / "linked" / data / "crossbar.log"
        while "rlink remote session ready" not in log.read_text(errors="replace"):
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)


def test_readme_linked_routers(tmp_path: Path) -> None:
    (_, commands), (_, client), (_, shown) = blocks()[:3]
    web, link, etcd = free_pair(), free_pair(), free_port()

    def ports(text: str) -> str:
        for old, new in (("8080", web), ("8081", web + 1), ("8090", link), ("2379", etcd)):
            text = text.replace(old, str(new))
        return text

    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    init, *runs = ports(commands).strip().splitlines()
    done = subprocess.run(["bash", "-c", init], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert '"linked": true' in (tmp_path / "linked" / "node2" / "tables.json").read_text()
    nodes = start(runs, tmp_path, env)
    try:
        wait_up(nodes, tmp_path)
        done = subprocess.run(["bash", "-c", ports(client)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        said = re.sub(r'"revision": \d+', '"revision": N', done.stdout + done.stderr)
        expected = re.sub(r'"revision": \d+', '"revision": N', shown)
        assert sorted(said.strip().splitlines()) == sorted(expected.strip().splitlines())
    finally:
        for node in nodes:
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGINT)  # Ctrl-C
        for node in nodes:
            try:
                node.wait(60)
            except subprocess.TimeoutExpired:
                stop_group(node)
