"""Fixtures that start real etcd servers (Debian's maintained 3.5 fetched into .etcd/, and
Debian 12's 3.4.23).

No etcd is mocked: every client test runs against both versions, each started on free loopback
ports with a temporary data dir and stopped at the end (also when tests fail). Every server is
checked to be the member the fixture started (``EtcdProcess.verify_ours``) before a test may
write to it or wipe it.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator

import pytest
import pytest_twisted
from twisted.internet import reactor

from txetcd import Client, KeySet
from txetcd.embedded import EtcdProcess, binary_version, find_etcd

from .wamp import CrossbarNode

# The server versions every client test runs against; a missing binary fails the run loudly.
ETCD_VERSIONS = ["3.5", "3.4"]


def _binary_ids() -> list[str]:
    ids = []
    for version in ETCD_VERSIONS:
        try:
            ids.append("etcd-" + binary_version(find_etcd(version)))
        except Exception:  # noqa: BLE001 - reported by the fixture itself, with the hint
            ids.append(f"etcd-{version}-missing")
    return ids


ETCD_IDS = _binary_ids()


@pytest.fixture(scope="session", params=ETCD_VERSIONS, ids=ETCD_IDS)
def etcd_binary(request: pytest.FixtureRequest):
    return find_etcd(request.param)


@pytest.fixture(scope="session")
def etcd(etcd_binary) -> Iterator[EtcdProcess]:
    """One shared server per version for the whole session."""
    with EtcdProcess(etcd_binary) as server:
        yield server


@pytest.fixture
def fresh_etcd(etcd_binary) -> Iterator[EtcdProcess]:
    """A server of its own, for tests that kill, pause, compact or reconfigure it."""
    with EtcdProcess(etcd_binary) as server:
        yield server


@pytest.fixture(scope="module")
def etcd35() -> Iterator[EtcdProcess]:
    """An etcd 3.5 of the module's own for the WAMP tests, which test the component rather than
    the client's version support; short election timeouts make its restarts quick."""
    with EtcdProcess(find_etcd("3.5"), extra_args=["--heartbeat-interval=20",
                                                   "--election-timeout=200"]) as server:
        yield server


@pytest.fixture(scope="module")
def node(etcd35: EtcdProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrossbarNode]:
    """The repo's Crossbar node (router and the component in its container) on etcd35."""
    crossbar = CrossbarNode(tmp_path_factory.mktemp("node"), etcd35.url)
    crossbar.start()
    try:
        yield crossbar
    finally:
        crossbar.stop()


@pytest.fixture
def etcd_direct(etcd35: EtcdProcess) -> Iterator[Client]:
    """A client straight to etcd35 in the demo node's namespace, empty at the start."""
    client = Client(reactor, url=etcd35.url, namespace=b"app/")
    wipe(client)
    yield client
    pytest_twisted.blockon(client.close())


def wipe(client: Client) -> None:
    pytest_twisted.blockon(client.delete(KeySet.all()))


@pytest.fixture
def client(etcd: EtcdProcess) -> Iterator[Client]:
    """A client of the shared server, which starts every test empty."""
    c = Client(reactor, url=etcd.url)
    wipe(c)
    yield c
    pytest_twisted.blockon(c.close())


_passed_by_version: collections.Counter[str] = collections.Counter()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.passed:
        for etcd_id in ETCD_IDS:
            if f"[{etcd_id}" in report.nodeid or f"-{etcd_id}" in report.nodeid:
                _passed_by_version[etcd_id] += 1


def pytest_report_header() -> str:
    return "etcd servers under test: " + ", ".join(ETCD_IDS)


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    for etcd_id in ETCD_IDS:
        terminalreporter.write_line(
            f"tests passed against {etcd_id}: {_passed_by_version[etcd_id]}")


# -- PROVISIONAL (aio-recipes): the `loop` fixture of aio-design.md until aio-kv's lands -------

class _TwistedLoop:
    name = "twisted"

    def __init__(self) -> None:
        self.clients: list[Client] = []

    def client(self, **kwargs: object) -> Client:
        c = Client(reactor, **kwargs)  # type: ignore[arg-type]
        self.clients.append(c)
        return c

    async def sleep(self, seconds: float) -> None:
        from twisted.internet.task import deferLater
        await deferLater(reactor, seconds, lambda: None)

    async def gather(self, *awaitables: object) -> list[object]:
        from twisted.internet import defer
        return await defer.gatherResults(  # type: ignore[no-any-return]
            [defer.ensureDeferred(a) for a in awaitables], consumeErrors=True)  # type: ignore[arg-type]


@pytest.fixture(params=["twisted"])
def loop(request: pytest.FixtureRequest) -> Iterator[_TwistedLoop]:
    chosen = _TwistedLoop()
    yield chosen
    for c in chosen.clients:
        pytest_twisted.blockon(c.close())


@pytest.fixture
def kv(loop: _TwistedLoop, etcd: EtcdProcess) -> Client:
    c = loop.client(url=etcd.url)
    wipe(c)
    return c


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    import inspect

    from twisted.internet import defer
    if "loop" not in pyfuncitem.funcargs or not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    pytest_twisted.blockon(defer.ensureDeferred(pyfuncitem.obj(**args)))
    return True
