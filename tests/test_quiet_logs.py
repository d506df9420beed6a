"""The Twisted client does not log a line per connection: Twisted's HTTP pool, which carries
watches, lease keepalives and ``GET /version``, logs "Starting factory" and "Stopping factory"
for each one, and a watch retrying while etcd was down filled an application's log with them."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher

from txetcd import Client, KeySet
from txetcd.embedded import EtcdProcess, free_port

from .wamp import eventually


@pytest_twisted.ensureDeferred
async def test_connections_for_watches_and_versions_log_nothing(etcd: EtcdProcess) -> None:
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        text = str(event.get("log_format") or event.get("message") or "")
        if "factory" in text.lower():
            lines.append(text)

    observer: Any = observe  # a plain callable is an observer (zope's interface aside)
    globalLogPublisher.addObserver(observer)
    client = Client(reactor, url=etcd.url)
    down = Client(reactor, url=f"http://127.0.0.1:{free_port()}", timeout=1.0)
    try:
        await client.version()
        seen: list[Any] = []
        for i in range(3):  # a connection each time: the previous one was cancelled
            written = await client.set(b"quiet/a", b"%d" % i)
            # From the write's revision: the watch replays it, however late its stream opens.
            watch = client.watch(KeySet(b"quiet/", prefix=True), seen.append,
                                 start_revision=written.revision)
            await eventually(lambda count=i + 1: len(seen) >= count, timeout=10)
            watch.cancel()
        # Nobody answers: the watch keeps trying to connect.
        retrying = down.watch(KeySet(b"quiet/", prefix=True), seen.append)
        await deferLater(reactor, 2.0, lambda: None)
        retrying.cancel()
        assert lines == []
    finally:
        globalLogPublisher.removeObserver(observer)
        await defer.gatherResults([client.close(), down.close()])
