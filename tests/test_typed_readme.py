"""The README's typed-table example prints exactly what the README shows, on the shipped node."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from txetcd.embedded import EtcdProcess

from .wamp import CrossbarNode

ROOT = Path(__file__).resolve().parent.parent


def typed_example() -> tuple[str, str]:
    section = (ROOT / "README.md").read_text().split("### Typed tables", 1)[1]
    found = re.search(r"```python\n(.*?)```\n\n```text\n(.*?)```", section, flags=re.S)
    assert found, "the typed-table example and its output are missing from the README"
    return found.group(1), found.group(2)


def test_readme_typed_example_prints_what_the_readme_shows(etcd35: EtcdProcess,
                                                           tmp_path: Path) -> None:
    code, expected = typed_example()
    script = tmp_path / "typed_example.py"
    script.write_text(code)
    node = CrossbarNode(tmp_path / "node", etcd35.url).start()
    try:
        env = {**os.environ, "ETCD_WAMP_URL": node.url, "PYTHONPATH": str(ROOT)}
        for _run in range(2):  # a second run finds the first one's history and still agrees
            done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                                  text=True, timeout=90, check=False)
            assert done.returncode == 0, done.stdout + done.stderr
            # autobahn logs its connection attempts to stdout too, with a timestamp.
            printed = "".join(line for line in done.stdout.splitlines(keepends=True)
                              if not re.match(r"\d{4}-\d\d-\d\dT", line))
            assert printed == expected, done.stdout + done.stderr
    finally:
        node.stop()
