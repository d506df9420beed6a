"""The etcd a fixture or ``make run`` starts is the etcd it then talks to, or nothing is.

Tests delete whole prefixes: pointed at somebody else's etcd they would destroy data. These
tests put a foreign server on the port first and check that starting fails loudly.
"""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from txetcd.embedded import (
    BUGGY_VERSIONS,
    BuggyEtcdWarning,
    EtcdProcess,
    NotOurEtcd,
    binary_version,
    find_etcd,
    free_port,
)

from .test_etcdctl_interop import etcdctl
from .wamp import ROOT


@pytest.fixture
def foreign_etcd(etcd_binary: Path) -> Iterator[EtcdProcess]:
    """An etcd this test did not mean to use: somebody else's, already on its port."""
    with EtcdProcess(etcd_binary, name="somebody-else") as server:
        yield server


def test_a_foreign_etcd_on_the_port_fails_the_start(etcd_binary: Path,
                                                    foreign_etcd: EtcdProcess) -> None:
    ours = EtcdProcess(etcd_binary, client_port=foreign_etcd.client_port)
    try:
        with pytest.raises(NotOurEtcd, match="already in use"):
            ours.start()
    finally:
        ours.cleanup()
    # Nothing of ours was written there: the foreign member is untouched and still serving.
    assert foreign_etcd.status()["revision"] == 1


class _FakeHealth(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = b'{"health":"true"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_anything_answering_health_on_the_port_fails_the_start(etcd_binary: Path) -> None:
    server = http.server.HTTPServer(("127.0.0.1", free_port()), _FakeHealth)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ours = EtcdProcess(etcd_binary, client_port=server.server_address[1])
    try:
        with pytest.raises(NotOurEtcd):
            ours.start()
    finally:
        ours.cleanup()
        server.shutdown()


def test_a_member_answering_for_another_is_detected(etcd_binary: Path,
                                                   foreign_etcd: EtcdProcess) -> None:
    """The race the port check cannot close: ours runs, yet another process answers."""
    with EtcdProcess(etcd_binary) as ours:
        ours.verify_ours()  # the real member passes
        ours.client_port = foreign_etcd.client_port  # as if another server took over its URL
        with pytest.raises(NotOurEtcd, match="another process"):
            ours.verify_ours()


def test_the_default_etcd_35_is_a_maintained_release() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", BuggyEtcdWarning)
        version = binary_version(find_etcd("3.5"))
    assert version not in BUGGY_VERSIONS
    assert tuple(int(x) for x in version.split(".")) >= (3, 5, 5)  # etcd-io/etcd#14110 fixed


def test_the_buggy_fallback_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ETCD_WAMP_ETCD_DIR", str(tmp_path))  # no fetched builds
    with pytest.warns(BuggyEtcdWarning, match="data inconsistency"):
        binary = find_etcd("3.5")
    assert binary_version(binary) in BUGGY_VERSIONS


def test_make_run_refuses_a_busy_etcd_port(tmp_path: Path, foreign_etcd: EtcdProcess) -> None:
    run = subprocess.run([sys.executable, "-m", "component.cli", "run", "--data-dir", str(tmp_path),
                          "--web-port", str(free_port()), "--etcd-port",
                          str(foreign_etcd.client_port)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "already in use" in run.stderr
    assert "explorer" not in run.stdout  # the node was never started on the foreign etcd


def test_free_ports_are_outside_the_range_outgoing_connections_take() -> None:
    # A port the kernel may hand to an outgoing connection as its source port can be gone
    # again before etcd binds it (seen: "bind: address already in use" in a parallel run).
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = {free_port() for _ in range(50)}
    assert all(port < low for port in ports) and len(ports) > 40
    for port in list(ports)[:5]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # free indeed


def test_free_ports_never_repeat_and_keep_to_the_range_given() -> None:
    """A member asks for its client and then its peer port before binding either; once they
    came out equal and etcd failed with "address already in use" (a CI run)."""
    low = free_port() // 1000 * 1000 + 1000  # a range this test's process has not drawn from
    script = ("from txetcd.embedded import free_port\n"
              "print(' '.join(str(free_port()) for _ in range(60)))")
    drawn = subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True, text=True,
                           capture_output=True, timeout=60,
                           env={**os.environ, "TXETCD_PORT_RANGE": f"{low}-{low + 200}"})
    ports = [int(port) for port in drawn.stdout.split()]
    assert len(ports) == 60 == len(set(ports))  # never twice
    assert all(low <= port < low + 200 for port in ports)  # only from the range given


def test_pause_returns_once_etcd_has_stopped(fresh_etcd: EtcdProcess) -> None:
    """A test that pauses etcd and then sends a request expects it unanswered: every thread
    must be stopped by then (one still running answered a read in a loaded CI run)."""
    try:
        fresh_etcd.pause()
        assert fresh_etcd.stopped()
        with pytest.raises(OSError):  # no answer (urllib's timeout is an OSError)
            urllib.request.urlopen(f"{fresh_etcd.url}/version", timeout=0.5)
    finally:
        fresh_etcd.resume()
    assert not fresh_etcd.stopped()
    assert b"etcdserver" in urllib.request.urlopen(f"{fresh_etcd.url}/version", timeout=5).read()


def test_a_member_started_again_on_its_data_is_ours(etcd_binary: Path, tmp_path: Path) -> None:
    """``make run`` a second time: a new EtcdProcess on an earlier one's data dir draws new
    ports, yet etcd keeps the peer URL the member advertised when its data was made. The
    restart must be recognised as that member, with its data, and nothing else."""
    data = tmp_path / "etcd"
    with EtcdProcess(etcd_binary, data_dir=data) as first:
        etcdctl(first, "put", "kept", "across restarts")
        advertised = first.peer_url
    again = EtcdProcess(etcd_binary, data_dir=data)
    assert again.peer_port == first.peer_port  # the port it advertised, free again
    with again:
        assert etcdctl(again, "get", "kept", "--print-value-only").strip() == "across restarts"

    # Another process took that peer port meanwhile: a lone member needs no peers, so it
    # listens elsewhere and is still recognised by the URL it advertised.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", first.peer_port))
        squatter.listen()
        moved = EtcdProcess(etcd_binary, data_dir=data)
        assert moved.peer_port != first.peer_port
        with moved:
            assert etcdctl(moved, "get", "kept", "--print-value-only").strip() == (
                "across restarts")

    # Data made before the URL was recorded: ours by its name, as our child serves it.
    (data / "advertised-peer-url").unlink()
    with EtcdProcess(etcd_binary, data_dir=data) as older:
        assert etcdctl(older, "get", "kept", "--print-value-only").strip() == "across restarts"
    assert (data / "advertised-peer-url").read_text().strip() == advertised


def test_a_foreign_member_answering_for_a_restart_is_refused(etcd_binary: Path, tmp_path: Path,
                                                             foreign_etcd: EtcdProcess) -> None:
    """After a restart on its data, a member of the same name answering on our URL (another
    process, another peer URL) is still refused."""
    data = tmp_path / "etcd"
    with EtcdProcess(etcd_binary, data_dir=data, name="somebody-else"):
        pass  # a member of our name (the foreign one's) made this data
    ours = EtcdProcess(etcd_binary, data_dir=data, name="somebody-else")
    try:
        ours.start()
        ours.client_port = foreign_etcd.client_port  # as if the foreign one took over our URL
        with pytest.raises(NotOurEtcd, match="another process|not somebody-else at"):
            ours.verify_ours()
    finally:
        ours.cleanup()


# A process that starts an etcd on a temporary data dir and prints where, then waits: killed by
# a signal, it never runs its cleanup; told to go (its stdin closed), it does.
MAKER = """
import sys
from txetcd.embedded import EtcdProcess, find_etcd
with EtcdProcess(find_etcd("3.5")) as etcd:
    print(etcd.data_dir, etcd.url, etcd.proc.pid, flush=True)
    sys.stdin.read()
"""


def test_a_killed_process_s_data_dir_goes_with_the_next_etcd_started() -> None:
    """A process killed with its etcd running leaves the etcd's temporary data dir behind (and
    under /dev/shm it holds 64 MB and more of RAM); the next ``EtcdProcess`` to make one removes
    it, and its log, but not the dir of a process still running, whose etcd still serves, nor
    one a process of another pid namespace made (a container sharing /dev/shm)."""
    def start_maker() -> tuple[subprocess.Popen[str], Path, str, int]:
        maker = subprocess.Popen([sys.executable, "-c", MAKER], cwd=ROOT, text=True,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert maker.stdout is not None
        data_dir, url, etcd_pid = maker.stdout.readline().split()
        return maker, Path(data_dir), url, int(etcd_pid)

    killed, killed_dir, _, killed_etcd = start_maker()
    living, living_dir, living_url, _ = start_maker()
    elsewhere = Path(tempfile.mkdtemp(prefix="txetcd-", dir=killed_dir.parent))
    (elsewhere / "maker").write_text("pid:[1] 1 1")  # its pid 1, not ours: not ours to judge
    try:
        killed.kill()
        killed.wait(10)
        deadline = time.monotonic() + 20  # etcd dies with its parent (PR_SET_PDEATHSIG)
        while Path(f"/proc/{killed_etcd}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        with EtcdProcess(find_etcd("3.5")) as etcd:
            assert not killed_dir.exists()
            assert not killed_dir.with_name(killed_dir.name + ".log").exists()
            assert living_dir.is_dir() and etcd.data_dir is not None and etcd.data_dir.is_dir()
            assert elsewhere.is_dir()
            with urllib.request.urlopen(f"{living_url}/version", timeout=10) as answer:
                assert b"etcdserver" in answer.read()
    finally:
        living.communicate("", timeout=30)  # its own cleanup
        if killed.poll() is None:
            killed.kill()
        shutil.rmtree(elsewhere)
    assert not living_dir.exists()
