"""The README's quick start, run verbatim as a newcomer would, prints what the README says.

Only the environment differs: free ports and a temporary data dir through the variables the
README documents (``ETCD_WAMP_PORT``, ``ETCD_WAMP_ETCD_PORT``, ``ETCD_WAMP_DATA_DIR``,
``ETCD_WAMP_URL``), so the test never touches 8080, 2379 or the repo's ``.data``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from txetcd.embedded import free_port, stop_group

ROOT = Path(__file__).resolve().parent.parent


def quick_start() -> list[tuple[str, str]]:
    """The section's (sh block, text block that follows it) pairs."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Quick start"):]
    section = section[:section.index("\n## ", 5)]
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)
    return [(code, shown) for (kind, code), (next_kind, shown) in zip(blocks, blocks[1:],
                                                                       strict=False)
            if kind == "sh" and next_kind == "text"]


def normalize(text: str, port: int, etcd_port: int, data: Path) -> str:
    text = text.replace("/home/you/etcd-wamp/.data", str(data))
    text = text.replace(":8080", f":{port}").replace(":2379", f":{etcd_port}")
    text = re.sub(r"etcd \d+\.\d+\.\d+ at", "etcd VERSION at", text)  # the fetched patch release
    return re.sub(r'"revision": \d+', '"revision": N', text)


def test_quick_start_prints_what_the_readme_says(tmp_path: Path) -> None:
    (run_block, run_output), (client_block, client_output) = quick_start()
    assert run_block.strip() == "make run"
    port, etcd_port, data = free_port(), free_port(), tmp_path / "data"
    env = {**os.environ, "ETCD_WAMP_PORT": str(port), "ETCD_WAMP_ETCD_PORT": str(etcd_port),
           "ETCD_WAMP_DATA_DIR": str(data), "ETCD_WAMP_URL": f"ws://127.0.0.1:{port}/ws"}
    log = tmp_path / "make-run.out"
    with open(log, "wb") as out:
        node = subprocess.Popen(["bash", "-c", run_block], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    expected = normalize(run_output, port, etcd_port, data).strip().splitlines()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and node.poll() is None:
            if expected[-1].split(";")[0] in log.read_text(errors="replace"):
                break
            time.sleep(0.2)
        shown = normalize(log.read_text(errors="replace"), port, etcd_port, data)
        assert shown.strip().splitlines()[-len(expected):] == expected, shown
        done = subprocess.run(["bash", "-c", client_block + "\n"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stdout
        assert normalize(done.stdout, port, etcd_port, data).strip() == \
            normalize(client_output, port, etcd_port, data).strip()
    finally:
        if node.poll() is None:
            os.killpg(node.pid, signal.SIGINT)  # Ctrl-C
            try:
                node.wait(60)
            except subprocess.TimeoutExpired:
                stop_group(node)
    assert "\nstopped\n" in log.read_text(errors="replace")  # then make reports the Ctrl-C
