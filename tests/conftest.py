"""Fixtures that start real etcd servers (Debian's maintained 3.5 fetched into .etcd/, and
Debian 12's 3.4.23).

No etcd is mocked: every client test runs against both versions, each started on free loopback
ports with a temporary data dir and stopped at the end (also when tests fail). Every server is
checked to be the member the fixture started (``EtcdProcess.verify_ours``) before a test may
write to it or wipe it.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import os
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, threads
from twisted.internet.task import deferLater

from txetcd import Client, KeySet
from txetcd.asyncio import Client as AsyncioClient
from txetcd.embedded import EtcdProcess, binary_version, find_etcd, port_slice

from .wamp import CrossbarNode

# Each xdist worker (and every process it starts) takes ports from a range of its own: two
# workers picking the same free port before either binds it, or one taking the port of the
# other's stopped etcd before that restarts, would fail with "address already in use".
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ["TXETCD_PORT_RANGE"] = port_slice(
        int(os.environ["PYTEST_XDIST_WORKER"].removeprefix("gw")),
        int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))

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


def etcd_of(nodeid: str) -> str | None:
    """The etcd id a test ran against, from its parameters: an id of ``ETCD_IDS``
    (``etcd-3.5.30``) or a bare version of ``ETCD_VERSIONS`` (``3.5``, as a module's own
    fixture may name it), alone or among other parameters (``twisted-etcd-3.4.23``)."""
    if not nodeid.endswith("]") or "[" not in nodeid:
        return None
    params = nodeid[nodeid.rindex("[") + 1:-1]
    parts = params.split("-")
    for version, etcd_id in zip(ETCD_VERSIONS, ETCD_IDS, strict=True):
        if etcd_id in params or version in parts:
            return etcd_id
    return None


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.passed:
        etcd_id = etcd_of(report.nodeid)
        if etcd_id is not None:
            _passed_by_version[etcd_id] += 1


def pytest_report_header() -> str:
    return "etcd servers under test: " + ", ".join(ETCD_IDS)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for etcd_id in ETCD_IDS:
        terminalreporter.write_line(
            f"tests passed against {etcd_id}: {_passed_by_version[etcd_id]}")


# -- one test body, two event loops ----------------------------------------------------------
# A test written as ``async def test_x(loop, kv, ...)`` runs once per loop (ids ``twisted`` and
# ``asyncio``): on Twisted as pytest-twisted runs ``@inline`` tests (the reactor in its
# greenlet), on asyncio in a fresh event loop of its own, run to completion from the test (the
# reactor simply does not run meanwhile). Bodies use only ``loop``'s helpers and the client's
# awaitables, so they stay loop-neutral. See /work/wt/aio-design.md.

LOOPS = ["twisted", "asyncio"]


class Loop:
    """What a loop-neutral test needs from its event loop; clients made here close at the end."""

    name: str
    CancelledError: type[BaseException]

    def __init__(self) -> None:
        self.clients: list[Any] = []

    # Each loop's own: sleep, wait for all (first failure fails), a deadline, a thread, and a
    # start-now handle that can be cancelled.
    async def sleep(self, seconds: float) -> None:
        raise NotImplementedError

    async def gather(self, *awaitables: Awaitable[Any]) -> list[Any]:
        raise NotImplementedError

    async def wait_for(self, awaitable: Awaitable[Any], seconds: float) -> Any:
        raise NotImplementedError

    async def run_in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        raise NotImplementedError

    def spawn(self, awaitable: Awaitable[Any]) -> Any:
        raise NotImplementedError

    def client(self, **kwargs: Any) -> Any:
        client = self._make(**kwargs)
        self.clients.append(client)
        return client

    def _make(self, **kwargs: Any) -> Any:
        raise NotImplementedError

    def run(self, awaitable: Awaitable[Any]) -> Any:
        """Run ``awaitable`` to completion on this loop, from synchronous code."""
        raise NotImplementedError

    def close(self) -> None:
        for client in self.clients:
            self.run(client.close())

    async def settle(self, *awaitables: Awaitable[Any]) -> list[tuple[bool, Any]]:
        """Wait for all: ``(True, result)`` or ``(False, exception)`` each, in order."""
        outcomes = []
        for awaitable in awaitables:  # all run already: awaiting in order waits for all
            try:
                outcomes.append((True, await awaitable))
            except Exception as exc:  # noqa: BLE001 - reported to the test
                outcomes.append((False, exc))
        return outcomes


async def _coroutine(awaitable: Awaitable[Any]) -> Any:
    """Any awaitable as the coroutine ``ensureDeferred`` takes."""
    return await awaitable


class _TwistedLoop(Loop):
    name = "twisted"
    CancelledError = defer.CancelledError

    def _make(self, **kwargs: Any) -> Client:
        return Client(reactor, **kwargs)

    def run(self, awaitable: Awaitable[Any]) -> Any:
        return pytest_twisted.blockon(defer.ensureDeferred(_coroutine(awaitable)))

    async def sleep(self, seconds: float) -> None:
        await deferLater(reactor, seconds, lambda: None)

    async def gather(self, *awaitables: Awaitable[Any]) -> list[Any]:
        results: list[Any] = await defer.gatherResults(
            [defer.ensureDeferred(_coroutine(a)) for a in awaitables], consumeErrors=True)
        return results

    async def run_in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await threads.deferToThread(fn, *args)

    async def wait_for(self, awaitable: Awaitable[Any], seconds: float) -> Any:
        return await defer.ensureDeferred(_coroutine(awaitable)).addTimeout(seconds, reactor)

    def spawn(self, awaitable: Awaitable[Any]) -> Any:
        """Start it now; the result can be cancelled (a Deferred)."""
        return defer.ensureDeferred(_coroutine(awaitable))


class _AsyncioLoop(Loop):
    name = "asyncio"
    CancelledError = asyncio.CancelledError

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()

    def _make(self, **kwargs: Any) -> AsyncioClient:
        return AsyncioClient(loop=self.loop, **kwargs)

    def run(self, awaitable: Awaitable[Any]) -> Any:
        return self.loop.run_until_complete(awaitable)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def gather(self, *awaitables: Awaitable[Any]) -> list[Any]:
        return list(await asyncio.gather(*awaitables))

    async def run_in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def wait_for(self, awaitable: Awaitable[Any], seconds: float) -> Any:
        return await asyncio.wait_for(awaitable, seconds)

    def spawn(self, awaitable: Awaitable[Any]) -> Any:
        """Start it now; the result can be cancelled (a Task)."""
        return asyncio.ensure_future(awaitable, loop=self.loop)

    def close(self) -> None:
        try:
            super().close()
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()


@pytest.fixture(params=LOOPS)
def loop(request: pytest.FixtureRequest) -> Iterator[Loop]:
    """The event loop a loop-neutral test runs on (``twisted`` or ``asyncio``)."""
    chosen: Loop = _TwistedLoop() if request.param == "twisted" else _AsyncioLoop()
    try:
        yield chosen
    finally:
        chosen.close()


@pytest.fixture
def kv(loop: Loop, etcd: EtcdProcess) -> Any:
    """A client of the shared server on the test's loop, which starts every test empty."""
    client = loop.client(url=etcd.url)
    loop.run(client.delete(KeySet.all()))
    return client


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run ``async def`` tests that take ``loop`` on that loop."""
    chosen = pyfuncitem.funcargs.get("loop")
    if not isinstance(chosen, Loop) or not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    chosen.run(pyfuncitem.obj(**args))
    return True
