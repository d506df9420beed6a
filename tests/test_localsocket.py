"""The node's unix socket: private to the node's user, and short enough to listen on.

A socket address holds 107 bytes; a node dir deep in a long data dir (a test's tmp_path under
pytest-xdist, an operator's long --data-dir) used to make Crossbar fail with a bare
"Cannot listen".
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import pytest_twisted

from component.localsocket import MAX_SOCKET_PATH, SOCKET, private_dir, socket_path
from txetcd.embedded import EtcdProcess

from .wamp import CrossbarNode, connect


def test_a_short_node_dir_keeps_its_socket_inside(tmp_path: Path) -> None:
    assert socket_path(tmp_path) == tmp_path.resolve() / SOCKET


def test_a_deep_node_dir_gets_a_short_private_socket(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    path = socket_path(deep)
    assert len(os.fsencode(path)) <= MAX_SOCKET_PATH
    assert socket_path(deep) == path  # the same node dir, the same place, every start
    assert socket_path(tmp_path / ("d" * 60) / ("f" * 60)) != path
    made = private_dir(deep)
    assert made == path.parent
    assert stat.S_IMODE(made.stat().st_mode) == 0o700 and made.stat().st_uid == os.geteuid()
    made.rmdir()


def test_a_socket_dir_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    deep = tmp_path / ("g" * 60) / ("h" * 60)
    squatted = socket_path(deep).parent
    squatted.mkdir(mode=0o777)
    os.chown(squatted, 65534, 65534)  # nobody got there first (the suite runs as root, as CI)
    try:
        with pytest.raises(PermissionError, match="belongs to uid 65534"):
            private_dir(deep)
    finally:
        squatted.rmdir()


@pytest_twisted.ensureDeferred
async def test_a_node_in_a_deep_dir_listens_and_its_component_joins(etcd35: EtcdProcess,
                                                                    tmp_path: Path) -> None:
    node = CrossbarNode(tmp_path / ("n" * 60) / ("o" * 40), etcd35.url, namespace="deep/")
    assert len(os.fsencode(node.cbdir.resolve() / SOCKET)) > MAX_SOCKET_PATH
    node.start()  # "etcd component ready": the container component joined over the socket
    try:
        session = await connect(node.url, "reader", "reader-secret")
        assert (await session.call("etcd.status"))["prefix"] == "etcd"
        session.leave()
        assert node.socket_path.exists()
    finally:
        node.stop()
