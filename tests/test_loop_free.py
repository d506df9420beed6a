"""The loop-free core stays loop-free: only the drivers import an event loop (aio-design.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TXETCD = Path(__file__).resolve().parent.parent / "txetcd"
LOOP_FREE = ["core", "interface", "op", "types", "errors", "stream", "transport", "batch", "kv",
             # aio-recipes: the services and recipes run on either loop through the driver.
             "lease_core", "watch_core", "acquirable", "lease", "watch", "concurrency",
             "services"]
LOOPS = ("twisted", "asyncio", "treq", "zope", "OpenSSL", "httptools", "txaio")


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            roots.add("." + node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("name", LOOP_FREE)
def test_no_event_loop_in_the_core(name: str) -> None:
    roots = imported_roots(TXETCD / f"{name}.py")
    assert not roots & set(LOOPS), f"txetcd.{name} imports an event loop: {roots & set(LOOPS)}"
    drivers = {".twisted_driver", ".asyncio_driver", ".http", ".aio_http", ".client", ".asyncio"}
    assert not roots & drivers, f"txetcd.{name} imports a driver: {roots & drivers}"
