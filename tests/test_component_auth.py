"""The standalone component logging in to a real node: cryptosign over wss, ticket over ws,
refused logins ending the process, and the node's local socket closed to other users."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
import pytest_twisted
from autobahn.wamp.exception import ApplicationError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater

from component.login import KeyFileError, load_key, make_key
from txetcd import Client, KeySet, prefix_end
from txetcd.embedded import EtcdProcess, find_etcd, free_port, stop_group
from txetcd.types import b64

from .certs import TestPKI, make_pki
from .test_auth_tls import APP_PREFIX, ROOT_PASSWORD, enable_auth
from .test_auth_tls import ROOT as ETCD_ROOT
from .wamp import ROOT, CrossbarNode, connect

inline = pytest_twisted.ensureDeferred
SETTINGS = struct.pack(">H", 2)  # the demo "settings" table: string keys, cbor values


def public_dir() -> Path:
    """A work dir other users may enter (pytest's tmp dirs are 0700, which would hide the
    node's socket from them whatever the node does)."""
    path = Path(tempfile.mkdtemp(prefix="etcd-wamp-auth-"))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


class RemoteNode:
    """A router without its container component: a backend key authorized on its websocket
    (ws and wss) and on a second unix socket, and a backend ticket in its environment."""

    def __init__(self, workdir: Path, etcd: EtcdProcess, pki: TestPKI) -> None:
        self.key = workdir / "backend.key"
        self.public_key = make_key(self.key)  # generated per run: no key is committed
        self.ticket = secrets.token_urlsafe(16)
        self.node = CrossbarNode(workdir / "node", etcd.url, with_component=False)
        self.tls_port = free_port()
        config_file = self.node.cbdir / "config.json"
        config = json.loads(config_file.read_text())
        router = config["workers"][0]
        web = router["transports"][0]
        web["paths"]["ws"]["auth"]["cryptosign"]["principals"]["backend"][
            "authorized_keys"] = [self.public_key]
        router["transports"].append({
            "type": "web", "id": "web_tls",
            "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": self.tls_port,
                         "tls": {"key": str(pki.server_key),
                                 "certificate": str(pki.server_cert)}},
            "paths": {"ws": web["paths"]["ws"]}})
        # A second local socket that wants the key too (the demo's own is anonymous).
        router["transports"].append({
            "type": "rawsocket", "id": "backend_signed", "serializers": ["cbor"],
            "endpoint": {"type": "unix", "path": "private/signed.sock"},
            "auth": {"cryptosign": web["paths"]["ws"]["auth"]["cryptosign"]}})
        config_file.write_text(json.dumps(config, indent=2))
        self.ws = self.node.url
        self.wss = f"wss://127.0.0.1:{self.tls_port}/ws"
        self.unix = f"unix:{self.node.cbdir / 'private' / 'signed.sock'}"


@pytest.fixture(scope="module")
def remote(etcd35: EtcdProcess, pki: TestPKI) -> Iterator[RemoteNode]:
    workdir = public_dir()
    remote = RemoteNode(workdir, etcd35, pki)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ETCD_WAMP_BACKEND_TICKET", remote.ticket)
        remote.node.start()
    try:
        yield remote
    finally:
        remote.node.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def serving(node: CrossbarNode, component: subprocess.Popen[bytes], log: Path) -> Any:
    """A writer session once the component has registered its procedures (whatever etcd then
    answers is the test's business)."""
    session = await connect(node.url, "writer", "writer-secret")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert component.poll() is None, f"component exited:\n{log.read_text()[-3000:]}"
        try:
            await session.call("etcd.settings.count")
            return session
        except ApplicationError as exc:
            if exc.error != "wamp.error.no_such_procedure":
                return session
        await sleep(0.1)
    raise AssertionError(f"component never registered:\n{log.read_text()[-3000:]}")


async def logged(log: Path, line: str, component: subprocess.Popen[bytes],
                 timeout: float = 30.0) -> None:
    """Wait until the component's log holds ``line``. Its "ready" line comes once its events
    have started, which can be after it serves calls (a loaded CI run read the log too soon)."""
    deadline = time.monotonic() + timeout
    while line not in log.read_text():
        assert component.poll() is None, f"component exited:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"never logged {line!r}:\n{log.read_text()[-3000:]}"
        await sleep(0.1)


async def put_and_get(node: CrossbarNode, etcd_direct: Client, key: str) -> None:
    """Callers on each serializer write and read a row through the component."""
    for serializer in ("json", "cbor", "msgpack"):
        session = await connect(node.url, "writer", "writer-secret", serializer=serializer)
        row = f"{key}-{serializer}"
        revision = await session.call("etcd.settings.put", row, {"via": serializer})
        assert await session.call("etcd.settings.get", row) == {"via": serializer}
        stored = await etcd_direct.get(SETTINGS + row.encode())
        assert stored.kvs[0].mod_revision == revision
        session.leave()


@pytest.mark.parametrize("login", ["cryptosign over wss", "ticket over ws",
                                   "cryptosign over unix"])
@inline
async def test_remote_component_logs_in_and_serves_calls(
        login: str, remote: RemoteNode, pki: TestPKI, etcd_direct: Client,
        tmp_path: Path) -> None:
    log = tmp_path / "component.log"
    args: tuple[str, ...]
    if login == "cryptosign over wss":  # the key file named on the command line, the CA in env
        args = ("--router", remote.wss, "--key", str(remote.key))
        env = {"ETCD_WAMP_CA": str(pki.ca)}
    elif login == "ticket over ws":
        args = ("--router", remote.ws, "--authid", "backend")
        env = {"ETCD_WAMP_BACKEND_TICKET": remote.ticket}
    else:  # the key file named in the environment
        args = ("--router", remote.unix)
        env = {"ETCD_WAMP_BACKEND_KEY": str(remote.key)}
    component = remote.node.start_component(*args, env=env, log_path=log)
    try:
        (await serving(remote.node, component, log)).leave()
        await put_and_get(remote.node, etcd_direct, login.split()[0])
        method = login.split()[0]
        await logged(log, f"joined as backend, role backend, by {method}", component)
    finally:
        stop_group(component)


@pytest.mark.parametrize("how", ["--etcd", "$ETCD_ENDPOINTS"])
@inline
async def test_component_etcd_endpoints_from_the_command_line(
        how: str, remote: RemoteNode, etcd35: EtcdProcess, etcd_direct: Client,
        tmp_path: Path) -> None:
    """The README's own-host command names crossbar-config/tables.json, whose endpoint is
    2379; beside `etcd-wamp run --etcd-port N` the component must be pointed at that etcd
    without editing the file (a component on another etcd splits the table in two)."""
    config = tmp_path / "tables.json"
    config.write_text(json.dumps({**remote.node.extra, "etcd": {
        **remote.node.extra["etcd"], "endpoints": ["http://127.0.0.1:9"]}}))  # nobody there
    args = ["--router", remote.unix, "--key", str(remote.key), "--config", str(config)]
    env = {}
    if how == "--etcd":
        args += ["--etcd", etcd35.url]
    else:
        env["ETCD_ENDPOINTS"] = etcd35.url
    log = tmp_path / "component.log"
    component = remote.node.start_component(*args, env=env, log_path=log)
    try:
        (await serving(remote.node, component, log)).leave()
        await put_and_get(remote.node, etcd_direct, how.strip("-$").lower())
    finally:
        stop_group(component)


@inline
async def test_refused_logins_end_the_process(remote: RemoteNode, pki: TestPKI,
                                              tmp_path: Path) -> None:
    other_key = tmp_path / "other.key"
    other_public = make_key(other_key)
    wrong_ticket = tmp_path / "ticket"
    wrong_ticket.write_text("not-" + remote.ticket + "\n")
    not_a_key = tmp_path / "not.key"
    not_a_key.write_text("hello\n")
    attempts = {  # name: (args, exit status, words the message must contain)
        "wrong key": (("--router", remote.wss, "--key", str(other_key), "--ca", str(pki.ca)),
                      1, ["refused the login (cryptosign key " + other_public,
                          "no principal found"]),
        "wrong ticket": (("--router", remote.ws, "--authid", "backend", "--ticket-file",
                          str(wrong_ticket)), 1, ["refused the login (ticket as backend)",
                                                  "wrong ticket"]),
        "no credentials": (("--router", remote.ws), 1,
                           ["none of the offered authentication methods"]),
        "untrusted router certificate": (
            ("--router", remote.wss, "--key", str(remote.key), "--ca", str(pki.other_ca)),
            1, ["failed the TLS handshake", "certificate verify failed"]),
        "not a key": (("--router", remote.wss, "--key", str(not_a_key)), 2,
                      ["not an unencrypted Ed25519 private key"]),
    }
    started = time.monotonic()
    runs = {name: (remote.node.start_component(*args, log_path=tmp_path / f"{i}.log"),
                   tmp_path / f"{i}.log")
            for i, (name, (args, _, _)) in enumerate(attempts.items())}
    try:
        for name, (proc, log) in runs.items():
            while proc.poll() is None and time.monotonic() - started < 60:
                await sleep(0.1)
            text = log.read_text()
            status, words = attempts[name][1:]
            assert proc.returncode == status, f"{name}: {proc.returncode}\n{text[-3000:]}"
            last_line = text.strip().splitlines()[-1]
            assert last_line.startswith(("error: ", "config: ")), (name, last_line)
            for word in words:
                assert word in last_line, (name, word, last_line)
    finally:
        for proc, _ in runs.values():
            stop_group(proc)
    # None of them got as far as registering anything.
    session = await connect(remote.ws, "reader", "reader-secret")
    with pytest.raises(ApplicationError, match="no_such_procedure"):
        await session.call("etcd.status")
    session.leave()


def test_make_key_writes_a_private_key_and_prints_its_public_key(tmp_path: Path) -> None:
    key = tmp_path / "backend.key"
    made = subprocess.run([sys.executable, "-m", "component", "--make-key", str(key)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    public = made.stdout.strip()
    assert len(public) == 64 and int(public, 16) >= 0
    assert key.stat().st_mode & 0o777 == 0o600
    assert key.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert load_key(key).public_key().public_bytes_raw().hex() == public
    again = subprocess.run([sys.executable, "-m", "component", "--make-key", str(key)],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr
    assert load_key(key).public_key().public_bytes_raw().hex() == public


# -- the node's local socket -----------------------------------------------------------------

# Run as another user: can it list the node's cbdir, open the socket, and join over it? Only
# the standard library (WAMP-JSON over RawSocket by hand), run by the system's python3: the
# checkout and its venv may sit where that user cannot even look (CI clones under 0700 dirs).
LOCAL_CLIENT = r"""
import json, os, socket, struct, sys
path = sys.argv[1]
print("uid", os.getuid(), "sees", sorted(os.listdir(os.path.dirname(os.path.dirname(path)))))
probe = socket.socket(socket.AF_UNIX)
try:
    probe.connect(path)
except OSError as exc:
    print("connect refused:", os.strerror(exc.errno))
    sys.exit(3)
probe.settimeout(20)
probe.sendall(bytes([0x7F, 0xF1, 0, 0]))  # RawSocket handshake: 16 MiB messages, JSON
def read(n):
    data = b""
    while len(data) < n:
        chunk = probe.recv(n - len(data))
        if not chunk:
            sys.exit("the router closed the connection")
        data += chunk
    return data
assert read(4)[0] == 0x7F, "not a RawSocket router"
hello = json.dumps([1, "realm1", {"roles": {"caller": {}}}]).encode()
probe.sendall(struct.pack(">I", len(hello)) + hello)  # frame type 0: a WAMP message
size = struct.unpack(">I", read(4))[0] & 0xFFFFFF
welcome = json.loads(read(size))
print("joined as", welcome[2]["authrole"] if welcome[0] == 2 else welcome)
"""

SYSTEM_PYTHON = "/usr/bin/python3"


def as_user(user: str | None, *argv: str) -> subprocess.CompletedProcess[str]:
    """``argv`` run as ``user`` (None: as ourselves, the node's user), without our groups."""
    switch = [] if user is None else [
        shutil.which("setpriv") or "setpriv", f"--reuid={user}", "--regid=nogroup",
        "--clear-groups"]
    return subprocess.run([*switch, *argv], capture_output=True, text=True, timeout=60,
                          cwd="/")  # the checkout may be closed to other users


@inline
async def test_other_users_cannot_join_the_local_socket(etcd35: EtcdProcess) -> None:
    assert os.geteuid() == 0, "this test switches to the user nobody: run the suite as root"
    # The test's own precondition: nobody can run the system's python.
    runs = as_user("nobody", SYSTEM_PYTHON, "-c", "import json, socket")
    assert runs.returncode == 0, f"nobody cannot run {SYSTEM_PYTHON}: {runs.stderr}"
    workdir = public_dir()
    node = CrossbarNode(workdir, etcd35.url)  # with its container component, on the socket
    try:
        node.start()  # returns once the container component has joined over the socket
        session = await connect(node.url, "reader", "reader-secret")
        assert (await session.call("etcd.status"))["prefix"] == "etcd"
        session.leave()
        private = node.socket_path.parent
        assert private.stat().st_mode & 0o777 == 0o700 and node.socket_path.is_socket()
        client = workdir / "client.py"
        client.write_text(LOCAL_CLIENT)

        refused = as_user("nobody", SYSTEM_PYTHON, str(client), str(node.socket_path))
        assert refused.returncode == 3, refused.stdout + refused.stderr
        assert "'config.json'" in refused.stdout and "'private'" in refused.stdout  # in cbdir
        assert "connect refused: Permission denied" in refused.stdout

        # The node's own user joins, as the backend role the transport grants.
        own = as_user(None, SYSTEM_PYTHON, str(client), str(node.socket_path))
        assert "joined as backend" in own.stdout, own.stdout + own.stderr
        # Only the directory stands between nobody and the backend role: opened, nobody joins.
        private.chmod(0o755)
        try:
            opened = as_user("nobody", SYSTEM_PYTHON, str(client), str(node.socket_path))
        finally:
            private.chmod(0o700)
        assert "joined as backend" in opened.stdout, opened.stdout + opened.stderr
    finally:
        node.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# -- etcd auth errors reach callers as forbidden -----------------------------------------------

VIEWER, VIEWER_PASSWORD = "viewer", "viewer-secret"  # may read the namespace, not write it


@pytest.fixture(scope="module")
def auth_etcd() -> Iterator[EtcdProcess]:
    """etcd with auth on: root, alice (read-write on app/) and viewer (read-only on app/)."""
    with EtcdProcess(find_etcd("3.5")) as server:
        admin = Client(reactor, url=server.url)

        async def setup() -> None:
            steps: list[tuple[str, dict[str, Any]]] = [
                ("auth/role/add", {"name": "viewer"}),
                ("auth/role/grant", {"name": "viewer", "perm": {
                    "permType": "READ", "key": b64(APP_PREFIX),
                    "range_end": b64(prefix_end(APP_PREFIX))}}),
                ("auth/user/add", {"name": VIEWER, "password": VIEWER_PASSWORD}),
                ("auth/user/grant", {"user": VIEWER, "role": "viewer"}),
            ]
            for path, body in steps:
                await admin.transport.call(path, body, idempotent=False)
            await enable_auth(admin)

        try:
            pytest_twisted.blockon(defer.ensureDeferred(setup()))
        finally:
            pytest_twisted.blockon(admin.close())
        yield server


@inline
async def test_etcd_permission_denied_is_forbidden(remote: RemoteNode, auth_etcd: EtcdProcess,
                                                   tmp_path: Path) -> None:
    root = Client(reactor, url=auth_etcd.url, user=ETCD_ROOT, password=ROOT_PASSWORD,
                  namespace=APP_PREFIX)
    await root.set(SETTINGS + b"theme", cbor2.dumps("dark"))
    log = tmp_path / "component.log"
    config = tmp_path / "tables.json"
    config.write_text(json.dumps({**remote.node.extra, "etcd": {
        "endpoints": [auth_etcd.url], "namespace": APP_PREFIX.decode(), "user": VIEWER,
        "password": VIEWER_PASSWORD}}))
    component = remote.node.start_component("--config", str(config), log_path=log)
    try:
        session = await serving(remote.node, component, log)
        assert await session.call("etcd.settings.get", "theme") == "dark"  # reading is allowed
        writes: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
                  ("etcd.settings.put", ("theme", "light"), {}),
                  ("etcd.settings.delete", ("theme",), {}),
                  ("etcd.txn", ([{"table": "settings", "op": "put", "key": "a", "value": 1}],),
                   {})]
        for uri, args, kwargs in writes:
            with pytest.raises(ApplicationError) as refused:
                await session.call(uri, *args, **kwargs)
            assert refused.value.error == "etcd.error.forbidden", (uri, refused.value)
            assert "permission denied" in refused.value.kwargs["message"]
        session.leave()
    finally:
        stop_group(component)
    # Credentials etcd does not accept at all: every call is forbidden, saying why.
    config.write_text(json.dumps({**remote.node.extra, "etcd": {
        "endpoints": [auth_etcd.url], "namespace": APP_PREFIX.decode(), "user": VIEWER,
        "password": "not-" + VIEWER_PASSWORD}}))
    component = remote.node.start_component("--config", str(config), log_path=log)
    try:
        session = await serving(remote.node, component, log)
        with pytest.raises(ApplicationError) as refused:
            await session.call("etcd.settings.get", "theme")
        assert refused.value.error == "etcd.error.forbidden"
        assert "refused the component's etcd credentials" in refused.value.kwargs["message"]
        session.leave()
    finally:
        stop_group(component)
        found = await root.get(KeySet.all())
        await root.close()
    assert [(kv.key, cbor2.loads(kv.value)) for kv in found.kvs] == [
        (SETTINGS + b"theme", "dark")]  # nothing written


def test_key_files_in_the_formats_operators_have(remote: RemoteNode, tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes_raw().hex()
    seed = key.private_bytes_raw()
    files = {
        "openssh": key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.OpenSSH,
                                     serialization.NoEncryption()),
        "pkcs8": key.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()),
        "crossbar": b"a comment\n\npublic-key-ed25519: " + public.encode() +
                    b"\nprivate-key-ed25519: " + seed.hex().encode() + b"\n",
        "hex": seed.hex().encode() + b"\n",
        "raw": seed,
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        assert load_key(tmp_path / name).public_key().public_bytes_raw().hex() == public, name
    # The node's own key, as Crossbar wrote it.
    assert len(load_key(remote.node.cbdir / "key.priv").private_bytes_raw()) == 32
    (tmp_path / "locked").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")))
    (tmp_path / "ec").write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    for name, words in (("locked", "not an unencrypted Ed25519 private key"),
                        ("ec", "not an Ed25519 key"), ("missing", "cannot read key file")):
        with pytest.raises(KeyFileError, match=words):
            load_key(tmp_path / name)
