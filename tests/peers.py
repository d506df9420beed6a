"""Other etcd clients in venvs of their own, for the benchmarks and for the tests that read
what txaioetcd itself wrote. Standard library only: ``bench/kv_clients.py`` imports it inside
a peer's venv.

The venvs live under the git-ignored ``bench/.venvs/`` (made on first use, remade when a peer's
requirements change); txetcd runs from the project's own .venv.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

VENVS = Path(__file__).resolve().parent.parent / "bench" / ".venvs"
# Each peer's venv and what goes in it.
PEERS = {
    "aetcd": ["aetcd"],
    "python-etcd3": ["etcd3", "protobuf<4"],  # etcd3 0.12's generated code predates protobuf 4
    "etcd3gw": ["etcd3gw"],
    "txaioetcd": ["txaioetcd==18.10.2"],
}


def venv_python(client: str) -> Path:
    """The python that runs ``client``: a peer's own venv; for txetcd and the benchmark's
    floors (``bench/kv_clients.py``'s own clients), the project's."""
    if client not in PEERS:
        return Path(sys.executable)
    return VENVS / client / "bin" / "python"


def ensure_venv(name: str) -> Path:
    """The python of peer ``name``'s venv, made (once) under ``VENVS``."""
    requirements = PEERS[name]
    stamp = VENVS / name / ".installed"
    if not (stamp.exists() and stamp.read_text() == repr(requirements)):
        print(f"installing {name} into {VENVS / name} ...", flush=True)
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(VENVS / name)], check=True)
        subprocess.run([str(venv_python(name)), "-m", "pip", "install", "-q", *requirements],
                       check=True)
        stamp.write_text(repr(requirements))
    return venv_python(name)


def txaioetcd_client(url: str) -> Any:
    """A txaioetcd 18.10.2 client (in its venv) that speaks etcd 3.4/3.5's gateway."""
    import txaioetcd
    from twisted.internet import reactor
    from txaioetcd import _client_commons, _client_tx

    # txaioetcd 18.10.2 speaks etcd 3.2's /v3alpha/ gateway, gone in etcd 3.5: rewrite its
    # endpoint constants in memory (the installed files stay as they are).
    for module in (_client_commons, _client_tx):
        for name, value in vars(module).items():
            if name.startswith("ENDPOINT_") and isinstance(value, str):
                setattr(module, name, value.replace("/v3alpha/", "/v3/"))
    return txaioetcd.Client(reactor, url)
