"""txaioetcd's own examples run against txetcd with only their imports changed (issue #14).

The fixtures in ``tests/upstream_examples/`` are crossbario/txaio-etcd's ``examples/*.py`` and
``examples/etcdb/*.py`` as released in the txaioetcd 18.10.2 sdist (MIT licence, header in each
file), with ``txaioetcd`` -> ``txetcd`` in their import lines and nothing else changed;
``postgres.py`` is left out (it never worked upstream: ``ClientPg`` is a stub).

Each example runs as its own process (``python example.py``), exactly as a user runs it, against
a fresh etcd server that this test starts (3.5 and 3.4): every example calls ``Client(reactor)``
without a URL, and ``Client`` (txaioetcd's and ours) then reads ``$ETCD_URL``, which the test sets
to that server's URL on a free loopback port. So no example talks to an etcd the test did not
start, and no example file needs changing for it.

The five client examples are written in the ``inlineCallbacks`` style; each also runs in the
async/await style, converted here mechanically (``@inlineCallbacks def`` -> ``async def``,
``yield`` -> ``await``). The etcdb examples are async/await already (``async with`` has no
``inlineCallbacks`` form). Their printed output is checked line by line.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from txetcd.embedded import EtcdProcess, find_etcd

from .conftest import ETCD_IDS, ETCD_VERSIONS

EXAMPLES = Path(__file__).parent / "upstream_examples"
CLIENT_EXAMPLES = ["connect", "crud", "lease", "transaction", "watch"]
ETCDB_EXAMPLES = ["tut1", "tut2", "basic", "index", "tut3"]
_LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\dT\S+ ")
_NOISE = ("Starting factory", "Stopping factory", "Main loop terminated")
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def to_async(source: str) -> str:
    """The async/await form of an inlineCallbacks example (``react`` takes coroutines)."""
    source = re.sub(r"@inlineCallbacks\n(\s*)def ", r"\1async def ", source)
    return re.sub(r"\byield\b", "await", source)


def output_lines(stdout: str) -> list[str]:
    """What the example printed: txaio's log prefix and Twisted's factory chatter dropped."""
    lines = [_LOG_PREFIX.sub("", line) for line in stdout.splitlines()]
    return [line for line in lines if line.strip() and not line.startswith(_NOISE)]


def run_example(binary: Path, script: Path, *,
                runs: int = 1) -> list[subprocess.CompletedProcess[str]]:
    """Run ``script`` ``runs`` times against one fresh etcd of our own."""
    with EtcdProcess(binary) as server:
        env = {**os.environ, "ETCD_URL": server.url, "PYTHONUNBUFFERED": "1"}
        return [subprocess.run([sys.executable, script.name], cwd=script.parent, env=env,
                               capture_output=True, text=True, timeout=150)
                for _ in range(runs)]


def match(lines: list[str], expected: list[str]) -> None:
    """Every printed line matches the expected pattern at its position, and no line is extra."""
    for number, (line, pattern) in enumerate(zip(lines, expected, strict=False), 1):
        assert re.fullmatch(pattern, line), f"line {number}: {line!r} !~ {pattern!r}"
    printed = "\n".join(lines)
    assert len(lines) == len(expected), f"{len(lines)} lines, {len(expected)} expected:\n{printed}"


def kv(key: str, value: str = r".*") -> str:
    return rf"KeyValue\(key=b'{key}', value={value}, version=\d+, .*\)"


def lease_line() -> str:
    return r"<Lease [0-9a-f]+ ttl=5 granted>"


def check_connect(lines: list[str], version: str) -> None:
    match(lines, [rf"Status\(version='{re.escape(version)}\.\d+', .*\)"])


def check_crud(lines: list[str], version: str) -> None:
    match(lines, [
        r"previous: " + kv("foo"), kv("mykey1"), kv("mykey1"), r"key b'mykey13' not found!",
        r"KV pairs for range:", *[kv(f"mykey{i}") for i in range(1, 5)],
        r"KV pairs for prefix:", *[kv(f"mykey{i}") for i in range(10)],
        r"deleted 1 key-value pairs", r"deleted 0 key-value pairs", r"deleted 5 key-value pairs",
        r"deleted 4 key-value pairs:", *[kv(f"mykey{i}") for i in (1, 7, 8, 9)]])


def check_transaction(lines: list[str], version: str) -> None:
    revision = r"Revision\(header=Header\(.*\), previous=None\)"

    def value_of(key: str, value: str) -> str:
        return rf"b'{key}': Range\(kvs=\[{kv(key, value)}\], .*\)"

    match(lines, [
        r"transaction SUCCESS:", revision, revision,
        value_of("test1", r"b'val2'"), value_of("test2", r"b'success'"),
        r"transaction FAILED:", revision, r"Range\(kvs=\[" + kv("test1", r"b'val2'") + r"\].*\)",
        value_of("test1", r"b'val2'"), value_of("test2", r"b'failure'"),
        revision, kv("mykey1"),
        # version == kv.version: every compare holds (CompVersion(k, '>', -1) among them)
        r"transaction SUCCESS:", revision, revision, kv("mykey2", r"b'success'"), kv("mykey3"),
        r"transaction FAILED:", revision, revision, kv("mykey2", r"b'failure'"), kv("mykey3")])


def check_lease(lines: list[str], version: str) -> None:
    header = r"Header\(.*revision=\d+.*\)"
    created = [r"creating lease with 5s TTL", lease_line()]
    # Example 4 polls once a second until etcd deletes the key with the expired lease.
    polls = sum(1 for line in lines if re.fullmatch(kv("foo", r"b'bar'"), line))
    assert 4 <= polls <= 6, lines
    match(lines, [
        rf"Status\(version='{re.escape(version)}\.\d+', .*\)",
        r"EXAMPLE 1", *created,
        *[p for ttl in (4, 3, 2, 1) for p in (rf"lease TTL = {ttl}", r"sleeping for 1s \.\.")],
        r"lease expired \(expected\)",
        r"EXAMPLE 2", *created, r"refreshing lease every 4s, 5 times \.\.", *[header] * 5,
        r"sleeping for 6s \.\.", r"refreshing lease", r"leave expired \(expected\)",
        r"EXAMPLE 3", *created, r"sleeping for 2s \.\.", r"revoking lease", header,
        r"refreshing lease", r"leave expired \(expected\)",
        r"EXAMPLE 4", *created, *[kv("foo", r"b'bar'"), r"sleeping for 1s \.\."] * polls,
        rf"key has been deleted together with expired lease \({polls}s\)",
        r"EXAMPLE 5", *created, r"\[\]", r"\[b'foo'\]", r"\[\]"])


def check_watch(lines: list[str], version: str) -> None:
    match(lines, [rf"Status\(version='{re.escape(version)}\.\d+', .*\)",
                  r"watching for 1s \.\.", r"watching for 3s \.\.",
                  r"on_change: .*key=b'mykey10', value=b'Test'.*"])


STATS = r"etcd stats \{'posts': \{'http://127\.0\.0\.1:\d+/v3/.*': \d+.*\}\}"


def check_tut1(lines: list[str], version: str) -> None:
    match(lines, [r"connected to etcd: revision \d+"])


def check_tut2(lines: list[str], version: str) -> None:
    assert re.fullmatch(r"connected to etcd: revision \d+", lines[0]), lines
    assert re.fullmatch(rf"new user object stored: name=user1, oid={UUID}", lines[1]), lines
    oid = lines[1].rsplit("=", 1)[1]
    assert lines[2] == f"user object loaded: name=user1, oid={oid}:"
    printed = "\n".join(lines[3:-2])  # the user's pformat'ed marshal()
    assert f"'oid': '{oid.replace('-', '')}'" in printed and "'name': 'user1'" in printed
    assert lines[-2] == f"user object deleted: oid={oid}"
    assert re.fullmatch(STATS, lines[-1]), lines[-1]


def _stored(lines: list[str]) -> list[str]:
    found = [re.fullmatch(rf"new user object stored: name=user\d, oid=({UUID})", line)
             for line in lines]
    return [m.group(1) for m in found if m]


def check_basic(lines: list[str], version: str) -> None:
    oids = _stored(lines)
    deleted = [line.rsplit("=", 1)[1] for line in lines
               if line.startswith("user object deleted for oid=")]
    assert len(oids) == 10 and len(deleted) == 5 and set(deleted) <= set(oids), lines
    loaded = [rf"user object loaded: name=user{i}, oid={oid}" if oid not in deleted
              else f"no user object for oid={oid}" for i, oid in enumerate(oids)]
    match(lines, [r"connected to etcd: revision \d+",
                  *[rf"new user object stored: name=user{i}, oid={oid}"
                    for i, oid in enumerate(oids)],
                  *[f"user object deleted for oid={oid}" for oid in deleted], *loaded, STATS])


def check_index(lines: list[str], version: str) -> None:
    oids = _stored(lines)
    deleted = [line.rsplit("=", 1)[1] for line in lines
               if line.startswith("user object deleted for oid=")]
    assert len(oids) == 10 and len(deleted) == 5 and set(deleted) <= set(oids), lines
    match(lines, [r"connected to etcd: revision \d+",
                  *[rf"new user object stored: name=user{i}, oid={oid}"
                    for i, oid in enumerate(oids)],
                  r"index lookups successful",
                  *[f"user object deleted for oid={oid}" for oid in deleted],
                  *[f"database structure for user oid={oid} verified successfully"
                    for oid in oids], STATS])


def check_tut3(lines: list[str], version: str) -> None:
    match(lines, [r"connected to etcd at revision \d+", r"no users yet in database =\(",
                  *[r"missing data record!"] * 5, r"user objects deleted: oids=\[\]",
                  rf"new user objects stored: oids=\[(UUID\('{UUID}'\)(, )?){{9}}\]", STATS])


CHECKS: dict[str, Callable[[list[str], str], None]] = {
    "connect": check_connect, "crud": check_crud, "lease": check_lease,
    "transaction": check_transaction, "watch": check_watch, "tut1": check_tut1,
    "tut2": check_tut2, "basic": check_basic, "index": check_index, "tut3": check_tut3}


Runs = dict[str, list[subprocess.CompletedProcess[str]]]


@pytest.fixture(scope="module")
def example_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Runs]:
    """Every example's runs on every etcd version, by version and label.

    Most examples sleep (lease.py for ~40 s), so all of them run side by side, each on a server
    of its own, the long ones first.
    """
    tmp = tmp_path_factory.mktemp("examples")
    scripts: list[tuple[str, Path, int]] = []
    for name in CLIENT_EXAMPLES:
        scripts.append((f"{name} (inlineCallbacks)", EXAMPLES / f"{name}.py", 1))
        converted = tmp / f"{name}_async.py"
        converted.write_text(to_async((EXAMPLES / f"{name}.py").read_text()))
        scripts.append((f"{name} (async/await)", converted, 1))
    # tut3 runs twice on one server: the second run meets the deliberate break (see below).
    scripts += [(name, EXAMPLES / "etcdb" / f"{name}.py", 2 if name == "tut3" else 1)
                for name in ETCDB_EXAMPLES]
    jobs = sorted(((version, *script) for version in ETCD_VERSIONS for script in scripts),
                  key=lambda job: not job[1].startswith("lease"))
    with ThreadPoolExecutor(max_workers=8) as pool:
        done = pool.map(lambda job: run_example(find_etcd(job[0]), job[2], runs=job[3]), jobs)
        results: dict[str, Runs] = {version: {} for version in ETCD_VERSIONS}
        for (version, label, _, _), runs in zip(jobs, done, strict=True):
            results[version][label] = runs
    return results


@pytest.mark.parametrize("version", ETCD_VERSIONS, ids=ETCD_IDS)
def test_upstream_examples_run_with_only_the_import_changed(
        version: str, example_runs: dict[str, Runs]) -> None:
    server_version = version  # the Status line must name the server the example talked to
    results = example_runs[version]
    assert len(results) == 2 * len(CLIENT_EXAMPLES) + len(ETCDB_EXAMPLES)
    for label, runs in results.items():
        first = runs[0]
        assert first.returncode == 0, f"{label} failed:\n{first.stdout}\n{first.stderr}"
        CHECKS[label.split(" ")[0]](output_lines(first.stdout), server_version)
    # txaioetcd never enforced unique indexes: a second tut3 run stored users under names the
    # index already maps to other users. txetcd refuses that loudly, and writes nothing.
    again = results["tut3"][1]
    assert again.returncode != 0
    assert "UniqueViolation" in again.stdout + again.stderr
    assert "index" in again.stdout + again.stderr
