"""The README's examples run as written against a real etcd (and a real node where needed)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from txetcd.embedded import EtcdProcess

from .wamp import CrossbarNode

ROOT = Path(__file__).resolve().parent.parent


def readme_examples() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("index", range(len(readme_examples())))
def test_readme_example_runs(index: int, etcd: EtcdProcess, tmp_path: Path) -> None:
    example = readme_examples()[index]
    script = tmp_path / f"example_{index}.py"
    script.write_text(example)
    env = {**os.environ, "ETCD_URL": etcd.url, "PYTHONPATH": str(ROOT)}
    node = None
    if "ETCD_WAMP_URL" in example:
        node = CrossbarNode(tmp_path / "node", etcd.url).start()
        env["ETCD_WAMP_URL"] = node.url
    try:
        done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                              text=True, timeout=90)
    finally:
        if node is not None:
            node.stop()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stdout.strip(), "an example prints its results"
    if "changes seen:" in done.stdout:
        check_changes_seen(done.stdout)


def check_changes_seen(stdout: str) -> None:
    """The WAMP example subscribes, then writes at once on a table nobody else follows: its own
    changes are published to it, in order, starting with its first write; it waits for the
    delete's event before it prints."""
    written = int(re.search(r"theme written at revision (\d+)", stdout).group(1))  # type: ignore[union-attr]
    seen = ast.literal_eval(stdout.split("changes seen:", 1)[1].strip().splitlines()[0])
    assert seen, "the example's subscriber saw none of its own writes"
    assert seen[0] == {"type": "put", "key": "theme", "value": {"dark": True},
                       "revision": written}, seen
    assert [c["type"] for c in seen] == ["put", "put", "delete"], seen
