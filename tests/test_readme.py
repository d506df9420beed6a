"""The README's examples run as written against a real etcd."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from txetcd.embedded import EtcdProcess

ROOT = Path(__file__).resolve().parent.parent


def readme_examples() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("index", range(len(readme_examples())))
def test_readme_example_runs(index: int, etcd: EtcdProcess, tmp_path: Path) -> None:
    script = tmp_path / f"example_{index}.py"
    script.write_text(readme_examples()[index])
    env = {**os.environ, "ETCD_URL": etcd.url, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
