"""N repo nodes linked by rlinks (``component.linked``), on loopback, for tests and the bench."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from component.linked import link_config, node_key
from tests.wamp import CrossbarNode, connect
from txetcd.embedded import free_port


class LinkedNodes:
    """``count`` CrossbarNodes of the repo's config, each linked to every other one."""

    def __init__(self, workdir: Path, etcd_url: str, count: int = 2, namespace: str = "app/",
                 with_component: bool = True, extra: dict[str, Any] | None = None,
                 forward_calls: bool = False) -> None:
        self.nodes = [CrossbarNode(workdir / f"node{i + 1}", etcd_url, namespace,
                                   with_component, {"linked": True, **(extra or {})})
                      for i in range(count)]
        self.rlink_ports = [free_port() for _ in self.nodes]
        keys = [node_key(node.cbdir) for node in self.nodes]
        for index, node in enumerate(self.nodes):
            path = node.cbdir / "config.json"
            config = link_config(json.loads(path.read_text()), index, self.rlink_ports, keys,
                                 forward_calls=forward_calls)
            path.write_text(json.dumps(config, indent=2))

    def __getitem__(self, index: int) -> CrossbarNode:
        return self.nodes[index]

    def __len__(self) -> int:
        return len(self.nodes)

    def start(self) -> LinkedNodes:
        """Start every node (in parallel: each takes seconds) and wait for the links."""
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda node: node.start(timeout=240), self.nodes))
        self.wait_linked()
        return self

    def wait_linked(self, timeout: float = 60.0) -> None:
        """Until every node logs its links as started (the remote legs joined)."""
        import time

        deadline = time.monotonic() + timeout
        for node in self.nodes:
            while node.log_text().count("rlink remote session ready") < len(self.nodes) - 1:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"links of {node.workdir} not up:\n"
                                       f"{node.log_text()[-3000:]}")
                time.sleep(0.2)

    def stop(self) -> None:
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda node: node.stop(), self.nodes))


async def backend(node: CrossbarNode, serializer: str = "cbor") -> Any:
    """A session on the node's local socket: role ``backend`` (etcd.* and the meta-API)."""
    return await connect("", transport={
        "type": "rawsocket", "url": "rs://local", "serializer": serializer, "max_retries": 0,
        "endpoint": {"type": "unix", "path": str(node.socket_path)}})
