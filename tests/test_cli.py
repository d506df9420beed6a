"""``etcd-wamp`` driven as an operator does: subprocesses, real nodes, real etcd.

Two nodes from ``etcd-wamp init`` dirs share one etcd: ``src`` (namespace ``src/``) and
``dst`` (namespace ``dst/``, empty), each with a table of every key kind. Rows go into
``src`` straight through etcd's API, come out with ``etcd-wamp export``, go into ``dst`` with
``etcd-wamp import``, and the stored bytes of both namespaces are compared.
"""

from __future__ import annotations

import base64
import json
import os
import pty
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest

from component.localsocket import socket_path
from procedures.wire import KeyWire, ValueWire
from txetcd.embedded import EtcdProcess, free_port, stop_group

from .certs import TestPKI, make_pki
from .wamp import CrossbarNode

CLI = Path(sys.executable).with_name("etcd-wamp")
WRITER = ["--authid", "writer", "--ticket", "writer-secret"]
READER = ["--authid", "reader", "--ticket", "reader-secret"]

# (table, key kind, value kind, rows): 50,000 rows over every key kind and value kind.
TABLES = [("t_string", "string", "json", 8000), ("t_binary", "binary", "binary", 8000),
          ("t_oid", "oid", "cbor", 8000), ("t_uuid", "uuid", "uuid", 8000),
          ("t_timestamp", "timestamp", "oid", 8000), ("t_text", "string", "string", 5000),
          ("t_flat", "binary", "flatbuffers", 5000)]


def cli(*args: str, timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=timeout,
                          **kwargs)


class RunningNode:
    """``etcd-wamp run`` in the background, until ``stop()``."""

    def __init__(self, workdir: Path, *args: str, cwd: Path | None = None,
                 executable: Path = CLI, scheme: str = "ws") -> None:
        self.port = free_port()
        self.scheme = scheme
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.out = workdir / "run.out"
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen([str(executable), "run", "--port", str(self.port),
                                          "--data-dir", str(workdir / "data"), *args],
                                         stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                         start_new_session=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/ws"

    def wait(self, timeout: float = 120) -> RunningNode:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "explorer  http" in self.text():
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"etcd-wamp run did not start:\n{self.text()}")

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def stop(self) -> str:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)  # Ctrl-C, as an operator stops it
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                stop_group(self.proc)
        return self.text()


def init_node(path: Path, namespace: str) -> Path:
    done = cli("init", str(path))
    assert done.returncode == 0, done.stderr
    assert "etcd-wamp run --node" in done.stdout
    config = json.loads((path / "tables.json").read_text())
    assert any(k.startswith("//") for k in config), "the sample explains itself in // fields"
    config["etcd"]["namespace"] = namespace
    config["tables"] = [{"// kinds": f"{key} keys, {value} values", "name": name,
                         "slot": slot, "key": key, "value": value}
                        for slot, (name, key, value, _) in enumerate(TABLES, 1)]
    (path / "tables.json").write_text(json.dumps(config, indent=2))
    return path


# -- etcd's own API, to write and read the rows independently of the component -------------

def gateway(url: str, path: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(f"{url}/v3/{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def put_rows(url: str, rows: list[tuple[bytes, bytes]]) -> None:
    for start in range(0, len(rows), 128):
        gateway(url, "kv/txn", {"success": [
            {"requestPut": {"key": b64(k), "value": b64(v)}} for k, v in rows[start:start + 128]]})


def read_namespace(url: str, namespace: bytes) -> dict[bytes, bytes]:
    end = namespace[:-1] + bytes([namespace[-1] + 1])
    reply = gateway(url, "kv/range", {"key": b64(namespace), "range_end": b64(end)})
    return {base64.b64decode(kv["key"])[len(namespace):]: base64.b64decode(kv.get("value", ""))
            for kv in reply.get("kvs", [])}


def _binary(i: int, rng: random.Random) -> bytes:
    return i.to_bytes(4, "big") + bytes(rng.randrange(256) for _ in range(rng.randrange(12)))


# A WAMP-form key or value of each kind, varied and distinct per ``i``.
_SAMPLES: dict[str, Callable[[int, random.Random], Any]] = {
    "string": lambda i, rng: f"k{i:06d}-" + rng.choice(["", "é", "日本", " space", "a/b", "\n"]),
    "binary": _binary,
    "flatbuffers": _binary,
    "oid": lambda i, rng: rng.choice([i, i * 7919 + 2**40, 2**63 - 1 - i]),
    "uuid": lambda i, rng: str(uuid.UUID(int=rng.getrandbits(96) << 32 | i)),
    "timestamp": lambda i, rng: 1_700_000_000_000_000_000 + i * 1_000_003,
    "json": lambda i, rng: rng.choice([{"n": i, "tags": ["a", "é"], "ok": True}, [i, 1.5, None],
                                       f"s{i}", i]),
    # No int map keys: WAMP refuses what a json caller could not receive (#12's policy).
    "cbor": lambda i, rng: rng.choice([{"n": i, "raw": bytes([i % 256, 0])},
                                       {"k": "str key", "f": 0.25}, {"plain": [i, "json"]},
                                       b"\x00bytes"]),
}


def sample(kind: str, i: int, rng: random.Random) -> Any:
    """A WAMP-form key or value of ``kind``, varied and distinct per ``i``."""
    if kind not in _SAMPLES:
        raise AssertionError(kind)
    return _SAMPLES[kind](i, rng)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def nodes(etcd35: EtcdProcess, pki: TestPKI, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[RunningNode, RunningNode]]:
    """``src`` and ``dst``, started at once (each an `etcd-wamp init` dir) on etcd35; ``dst``
    serves TLS with a certificate of the test CA (clients give ``--ca``)."""
    base = tmp_path_factory.mktemp("cli")
    src = RunningNode(base / "src", "--etcd", etcd35.url, "--node",
                      str(init_node(base / "src-node", "src/")))
    dst_node = init_node(base / "dst-node", "dst/")
    config = json.loads((dst_node / ".crossbar" / "config.json").read_text())
    config["workers"][0]["transports"][0]["endpoint"]["tls"] = {
        "key": str(pki.server_key), "certificate": str(pki.server_cert)}
    (dst_node / ".crossbar" / "config.json").write_text(json.dumps(config, indent=2))
    dst = RunningNode(base / "dst", "--etcd", etcd35.url, "--node", str(dst_node),
                      scheme="wss")
    try:
        yield src.wait(), dst.wait()
    finally:
        src_out, dst_out = src.stop(), dst.stop()
        assert src_out.rstrip().endswith("stopped"), src_out
        assert dst_out.rstrip().endswith("stopped"), dst_out


def test_export_import_round_trips_50000_rows_of_every_kind(
        nodes: tuple[RunningNode, RunningNode], etcd35: EtcdProcess, pki: TestPKI,
        tmp_path: Path) -> None:
    src, dst = nodes
    rng = random.Random(13)
    for slot, (_, key_kind, value_kind, count) in enumerate(TABLES, 1):
        keys, values = KeyWire(key_kind), ValueWire(value_kind)
        put_rows(etcd35.url, [(b"src/" + struct.pack(">H", slot) + keys.encode(
            sample(key_kind, i, rng)), values.encode(sample(value_kind, i, rng)))
            for i in range(count)])
    assert read_namespace(etcd35.url, b"dst/") == {}
    timings = {}
    for name, _, _, count in TABLES:
        dump = tmp_path / f"{name}.jsonl"
        started = time.monotonic()
        out = cli("export", name, "-o", str(dump), "--router", src.url, *READER)
        assert out.returncode == 0, out.stderr
        assert out.stderr.strip() == f"exported {count} rows of {name}"  # no bar in a pipe
        exported = time.monotonic()
        into = cli("import", name, str(dump), "--router", dst.url, "--ca", str(pki.ca),
                   *WRITER)
        assert into.returncode == 0, into.stderr
        assert into.stderr.strip() == f"imported {count} rows into {name}; 0 refused"
        timings[name] = (exported - started, time.monotonic() - exported)
        lines = dump.read_text().splitlines()
        assert json.loads(lines[0])["count"] == count and len(lines) == count + 1
    print("export/import seconds per table:", timings)
    source, copy = read_namespace(etcd35.url, b"src/"), read_namespace(etcd35.url, b"dst/")
    assert len(source) == sum(t[3] for t in TABLES) == 50_000
    assert copy == source  # every key and value byte for byte
    cbor_lines = (tmp_path / "t_oid.jsonl").read_text()
    assert '"cbor": ' in cbor_lines and '"value": {"plain"' in cbor_lines


def test_export_shows_a_bar_only_on_a_terminal(
        nodes: tuple[RunningNode, RunningNode], etcd35: EtcdProcess) -> None:
    src, _ = nodes
    # stderr on a terminal: a progress bar; stdout stays the data.
    leader, follower = pty.openpty()
    proc = subprocess.Popen([str(CLI), "export", "t_text", "--router", src.url, *READER],
                            stdout=subprocess.PIPE, stderr=follower, text=True)
    os.close(follower)
    stdout, _ = proc.communicate(timeout=120)
    terminal = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        terminal += chunk
    os.close(leader)
    assert proc.returncode == 0
    assert b"export t_text" in terminal and b"5000/5000" in terminal, terminal[-500:]
    rows = stdout.splitlines()[1:]
    assert len(rows) == 5000 and all(json.loads(row)["key"].startswith("k") for row in rows)


def test_import_refuses_rows_with_their_line_numbers_and_resumes(
        nodes: tuple[RunningNode, RunningNode], pki: TestPKI, tmp_path: Path) -> None:
    _, dst = nodes
    tls = ["--ca", str(pki.ca)]
    data = tmp_path / "uuids.jsonl"
    good = [str(uuid.UUID(int=i + 1)) for i in range(300)]
    lines = [json.dumps({"key": k, "value": k}) for k in good]
    lines[10] = json.dumps({"key": "not-a-uuid", "value": good[0]})  # line 11
    lines[200] = '{"key": '  # line 201: not JSON
    data.write_text("\n".join(lines) + "\n")
    done = cli("import", "t_uuid", str(data), "--router", dst.url, *tls, *WRITER)
    assert done.returncode == 1
    assert "line 11: refused: key 'not-a-uuid' is not a valid uuid key" in done.stderr
    assert "line 201: refused: not JSON" in done.stderr
    assert "imported 298 rows into t_uuid; 2 refused" in done.stderr
    assert json.loads(Path(f"{data}.position").read_text()) == {"line": 300}
    # A position part-way (as an interrupted import leaves it): --resume continues after it.
    Path(f"{data}.position").write_text(json.dumps({"line": 250}))
    again = cli("import", "t_uuid", str(data), "--resume", "--router", dst.url, *tls, *WRITER)
    assert again.returncode == 0, again.stderr
    assert "imported 50 rows into t_uuid (resumed after line 250); 0 refused" in again.stderr
    # An export of another kind is refused as a whole, before anything is written.
    other = tmp_path / "strings.jsonl"
    other.write_text('{"format": "etcd-wamp-export/1", "table": "t_text", "key_kind": '
                     '"string", "value_kind": "string", "revision": 1, "count": 1}\n'
                     '{"key": "a", "value": "b"}\n')
    wrong = cli("import", "t_uuid", str(other), "--router", dst.url, *tls, *WRITER)
    assert wrong.returncode == 1
    assert "string keys and string values; 't_uuid' has uuid keys" in wrong.stderr
    # Without the CA the router's certificate is not trusted: nothing is written.
    untrusted = cli("import", "t_uuid", str(data), "--router", dst.url, *WRITER)
    assert untrusted.returncode == 1 and "certificate verify failed" in untrusted.stderr, \
        untrusted.stderr


def test_import_refuses_rows_a_unique_index_refuses_and_imports_the_rest(
        node: CrossbarNode, etcd_direct: Any, tmp_path: Path) -> None:
    """The demo's people table has a unique by_email index: a row whose email another row
    holds (in the table, or earlier in the file) is refused with its line number like any
    other bad row, not the end of the import."""
    taken = {"key": str(uuid.uuid4()), "value": {"name": "Ada", "email": "ada@example.com"}}
    first = tmp_path / "first.jsonl"
    first.write_text(json.dumps(taken) + "\n")
    assert cli("import", "people", str(first), "--router", node.url, *WRITER).returncode == 0
    rows = [{"key": str(uuid.uuid4()), "value": {"name": "Bob", "email": "ada@example.com"}},
            {"key": str(uuid.uuid4()), "value": {"name": "Cy", "email": "cy@example.com"}},
            {"key": str(uuid.uuid4()), "value": {"name": "Cy 2", "email": "cy@example.com"}},
            {"key": str(uuid.uuid4()), "value": {"name": "Dee", "email": "dee@example.com"}}]
    data = tmp_path / "people.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    done = cli("import", "people", str(data), "--router", node.url, *WRITER)
    assert done.returncode == 1, done.stderr
    assert "line 1: refused: etcd.error.conflict: people: unique index by_email already " \
           "holds 'ada@example.com'" in done.stderr, done.stderr
    assert "line 3: refused: etcd.error.conflict" in done.stderr, done.stderr
    assert "imported 2 rows into people; 2 refused" in done.stderr, done.stderr
    exported = cli("export", "people", "--router", node.url, *READER)
    names = sorted(json.loads(line)["value"]["name"] for line in exported.stdout.splitlines()[1:])
    assert names == ["Ada", "Cy", "Dee"]


def test_status_names_members_leader_and_publishers(
        nodes: tuple[RunningNode, RunningNode], etcd35: EtcdProcess, tmp_path: Path) -> None:
    src, _ = nodes
    config = src.workdir.parent / "src-node" / "tables.json"
    # A subscriber makes one instance campaign and publish t_text's events.
    listener = subprocess.Popen([sys.executable, "-c", SUBSCRIBER, src.url],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout is not None
        for line in listener.stdout:  # autobahn logs to stdout first
            if line.strip() == "subscribed":
                break
        deadline = time.monotonic() + 30
        while True:
            done = cli("status", "--config", str(config), "--etcd", etcd35.url, "--json")
            assert done.returncode == 0, done.stderr
            report = json.loads(done.stdout)
            if report["tables"]["t_text"]["publisher"] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        text = cli("status", "--config", str(config), "--etcd", etcd35.url)
    finally:
        listener.terminate()
        listener.wait(10)
    member = report["etcd"]["members"][0]
    assert report["etcd"]["leader"] == member["name"] and member["leader"] is True
    assert member["version"] == etcd35.version
    assert 0 < member["revision"] <= etcd35.status()["revision"]
    assert member["db_size"] > 0
    assert report["namespace"] == "src/" and report["prefix"] == "etcd"
    publisher = report["tables"]["t_text"]["publisher"]
    assert publisher and publisher.startswith(socket.gethostname() + ":")
    assert report["tables"]["t_oid"]["publisher"] is None  # nobody subscribes to it
    assert f"etcd: 1 members, leader {member['name']}" in text.stdout
    assert f"t_text           {publisher} (since revision" in text.stdout
    assert "t_oid            none (nobody subscribes)" in text.stdout


SUBSCRIBER = """
import sys
from autobahn.twisted.component import Component
from twisted.internet import task
node = Component(transports=[{"url": sys.argv[1], "serializers": ["cbor"], "max_retries": 0}],
                 realm="realm1",
                 authentication={"ticket": {"authid": "reader", "ticket": "reader-secret"}})

@node.on_join
async def joined(session, details):
    await session.subscribe(lambda **event: None, "etcd.t_text.on_change")
    print("subscribed", flush=True)

task.react(node.start)  # not autobahn's run(): it turns print into log events
"""


# -- start failures ---------------------------------------------------------------------------

def test_run_on_a_busy_web_port_says_so_and_exits_non_zero(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = cli("run", "--port", str(port), "--etcd-port", str(free_port()), "--data-dir",
                   str(tmp_path), timeout=60)
    assert done.returncode == 1
    assert f"web port {port} on 127.0.0.1 is already in use by another process (choose " \
           "another with --port)" in done.stderr


def test_run_without_crossbar_names_the_extra_to_install(tmp_path: Path) -> None:
    """`pip install .` (no [run] extra) has no Crossbar: `etcd-wamp run` says which extra to
    install before it starts anything, not a ModuleNotFoundError from Crossbar's log."""
    hidden = ("import sys; sys.modules['crossbar'] = None; from component.cli import main; "
              "sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", hidden, "run", "--port", str(free_port()),
                           "--etcd-port", str(free_port()), "--data-dir", str(tmp_path / "d")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "pip install 'etcd-wamp[run]'" in done.stderr
    assert not (tmp_path / "d").exists()  # no etcd was started, nothing written


def test_run_on_a_busy_etcd_port_says_so_and_exits_non_zero(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = cli("run", "--port", str(free_port()), "--etcd-port", str(port), "--data-dir",
                   str(tmp_path), timeout=60)
    assert done.returncode == 1
    assert f"etcd client port {port} on 127.0.0.1 is already in use" in done.stderr


def test_an_etcd_that_fails_to_start_prints_its_log_lines(tmp_path: Path) -> None:
    (tmp_path / "etcd").mkdir()
    (tmp_path / "etcd" / "member-data").write_text("not a directory")
    done = cli("run", "--port", str(free_port()), "--etcd-port", str(free_port()), "--data-dir",
               str(tmp_path), timeout=90)
    assert done.returncode == 1
    assert "did not start" in done.stderr and "from its log" in done.stderr
    assert "not a directory" in done.stderr, done.stderr


def test_a_crossbar_that_exits_prints_its_log_lines(etcd35: EtcdProcess, tmp_path: Path) -> None:
    node_dir = tmp_path / "node"
    assert cli("init", str(node_dir)).returncode == 0
    config = json.loads((node_dir / ".crossbar" / "config.json").read_text())
    config["workers"][0]["realms"][0]["roles"][0]["permissions"][0]["match"] = "sometimes"
    (node_dir / ".crossbar" / "config.json").write_text(json.dumps(config))
    done = cli("run", "--port", str(free_port()), "--etcd", etcd35.url, "--node", str(node_dir),
               "--data-dir", str(tmp_path / "data"), timeout=120)
    assert done.returncode == 1
    assert "crossbar exited with" in done.stderr and "from its log" in done.stderr
    assert "sometimes" in done.stderr, done.stderr  # crossbar's own words about the bad field


def test_init_refuses_to_overwrite_and_the_sample_tables_match_the_demo(tmp_path: Path) -> None:
    assert cli("init", str(tmp_path)).returncode == 0
    again = cli("init", str(tmp_path))
    assert again.returncode == 2 and "--force" in again.stderr
    root = Path(__file__).resolve().parent.parent / "crossbar-config"
    sample = json.loads((root / "tables.json").read_text())
    demo = json.loads((root / ".crossbar" / "config.json").read_text())
    extra = demo["workers"][1]["components"][0]["extra"]
    strip = [{k: v for k, v in t.items() if not k.startswith("//")} for t in sample["tables"]]
    assert strip == extra["tables"] and sample["etcd"]["namespace"] == extra["etcd"]["namespace"]
    # The standalone component accepts the commented sample (it fails later, at connecting).
    checked = cli("component", "--config", str(tmp_path / "tables.json"), "--router",
                  "ftp://nowhere")
    assert checked.returncode == 2 and checked.stderr.startswith("error: --router"), \
        checked.stderr


def test_cbor_values_that_json_cannot_say_travel_as_base64() -> None:
    from component.jsonlines import RowFormat

    rows = RowFormat("binary", "cbor")
    for value in ({1: "x"}, {"b": b"\x00\xff"}, [float("inf")], {"ok": [1, "two", None]}):
        line = rows.dumps(b"\x00k", value)
        assert rows.loads(line) == (b"\x00k", value)
        assert ('"cbor"' in line) == (value != {"ok": [1, "two", None]})
    assert cbor2.loads(base64.b64decode(json.loads(rows.dumps(b"", {1: 2}))["cbor"])) == {1: 2}


# -- the wheel ----------------------------------------------------------------------------------

def test_wheel_install_runs_from_any_directory(tmp_path: Path) -> None:
    """A non-editable install of a copy of the repo, which is deleted before the node runs,
    into a fresh venv; the dependencies come from the test venv through a .pth file (no
    download). ``etcd-wamp run`` from an unrelated directory answers WAMP calls."""
    root = Path(__file__).resolve().parent.parent
    copy = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard"], cwd=root, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source = root / name
        if source.is_file() or source.is_symlink():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            if source.is_symlink():
                os.symlink(os.readlink(source), copy / name)
            else:
                (copy / name).write_bytes(source.read_bytes())
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    deps = subprocess.run([sys.executable, "-c", "import site; print(site.getsitepackages()[0])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # Appended after the venv's own site-packages; the test venv's editable hook (a .pth in
    # there) is not processed, so `component` can only come from the wheel.
    Path(site, "test-deps.pth").write_text(deps + "\n")
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                                "--no-deps", "--no-build-isolation", "--no-index", "-q",
                                str(copy)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    shutil.rmtree(copy)
    where = subprocess.run([str(python), "-c", "import component, txetcd; "
                            "print(component.__file__, txetcd.__file__)"], capture_output=True,
                           text=True, check=True, cwd=tmp_path).stdout
    assert where.count(site) == 2, where
    assert Path(site, "txetcd", "py.typed").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    etcd_wamp = venv / "bin" / "etcd-wamp"
    node = RunningNode(elsewhere / "run", "--etcd-port", str(free_port()), cwd=elsewhere,
                       executable=etcd_wamp)
    try:
        node.wait()
        assert f"explorer  http://127.0.0.1:{node.port}/" in node.text()
        env = {**os.environ, "ETCD_WAMP_URL": node.url}
        put = subprocess.run([str(etcd_wamp), "import", "settings", *WRITER], env=env,
                             input='{"key": "theme", "value": {"dark": true}}\n', text=True,
                             capture_output=True, timeout=60, cwd=elsewhere)
        assert put.returncode == 0, put.stderr
        got = subprocess.run([str(etcd_wamp), "export", "settings", *READER], env=env, text=True,
                             capture_output=True, timeout=60, cwd=elsewhere)
        assert got.stdout.splitlines()[1:] == ['{"key": "theme", "value": {"dark": true}}']
        page = urllib.request.urlopen(f"http://127.0.0.1:{node.port}/", timeout=10).read()
        assert b"autobahn" in page  # the explorer, from the package data
        config = (elsewhere / "run" / "data" / "node" / "config.json").read_text()
        assert str(root) not in config and site in config
    finally:
        assert node.stop().rstrip().endswith("stopped")


def test_a_bad_tables_json_fails_the_start_naming_the_field(tmp_path: Path) -> None:
    node_dir = tmp_path / "node"
    assert cli("init", str(node_dir)).returncode == 0
    config = json.loads((node_dir / "tables.json").read_text())
    config["tables"][1]["value"] = "pickle"
    (node_dir / "tables.json").write_text(json.dumps(config))
    done = cli("run", "--port", str(free_port()), "--etcd", "http://127.0.0.1:9",
               "--node", str(node_dir), "--data-dir", str(tmp_path / "data"), timeout=60)
    assert done.returncode == 1
    assert f"{node_dir}/tables.json: config field tables[1].value: pickle tables are never " \
           "exposed" in done.stderr, done.stderr


def test_component_subcommand_serves_beside_the_nodes_own(
        nodes: tuple[RunningNode, RunningNode], etcd35: EtcdProcess, tmp_path: Path) -> None:
    """``etcd-wamp component`` (python -m component's main) joins the node's local socket as
    a second instance with the same tables."""
    src, _ = nodes
    config = json.loads((src.workdir.parent / "src-node" / "tables.json").read_text())
    config["etcd"]["endpoints"] = [etcd35.url]
    tables = tmp_path / "tables.json"
    tables.write_text(json.dumps(config))
    log = tmp_path / "component.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(CLI), "component", "--router",
                                 f"unix:{socket_path(src.workdir / 'data' / 'node')}",
                                 "--config", str(tables)], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while "etcd component ready" not in log.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert f"{len(TABLES)} tables under etcd" in log.read_text()
    finally:
        stop_group(proc)
