"""The node's local unix socket lives in a directory only the node's user can enter.

Whoever connects to the node's unix socket gets the role its transport grants (``backend`` on
the demo node, anonymously), and Twisted creates the socket itself world-writable (0666). So
the socket goes into ``<cbdir>/private/`` with mode 0700: other users cannot reach the path
at all. Whoever starts the node calls ``private_dir(cbdir)`` first. Crossbar does not create
the directory, so a node started without it fails to listen rather than listening in the open.

A unix socket's address holds at most 107 bytes, and Crossbar reports a longer one only as
"Cannot listen". A node dir deep enough for that (a long data dir) gets its socket in a
private directory of its user's under the temp dir instead (``socket_path``), and whoever
writes the node's config points its unix endpoints there (``point_to_socket``).
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["SOCKET", "point_to_socket", "private_dir", "socket_path"]

# Relative to the node's cbdir, as the node config's unix endpoints name it.
SOCKET = Path("private") / "router.sock"
MAX_SOCKET_PATH = 107  # sun_path is 108 bytes, NUL included


def socket_path(cbdir: str | os.PathLike[str]) -> Path:
    """Where the node's socket goes: ``<cbdir>/private/router.sock``, or, when that is too long
    for a socket address, ``<tmp>/etcd-wamp-<uid>-<hash of cbdir>/router.sock``."""
    node = Path(cbdir).resolve()
    preferred = node / SOCKET
    if len(os.fsencode(preferred)) <= MAX_SOCKET_PATH:
        return preferred
    digest = hashlib.sha256(os.fsencode(node)).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"etcd-wamp-{os.geteuid()}-{digest}" / SOCKET.name


def point_to_socket(config: dict[str, Any], cbdir: str | os.PathLike[str]) -> dict[str, Any]:
    """Make the config's unix endpoints that name ``SOCKET`` name ``socket_path(cbdir)``."""
    target = socket_path(cbdir)
    if target == Path(cbdir).resolve() / SOCKET:
        return config  # the config's relative path already resolves there
    for worker in config.get("workers", []):
        places = [*worker.get("transports", []),
                  *(c.get("transport", {}) for c in worker.get("components", []))]
        for place in places:
            endpoint = place.get("endpoint", {})
            if endpoint.get("type") == "unix" and Path(endpoint.get("path", "")) == SOCKET:
                endpoint["path"] = str(target)
    return config


def private_dir(cbdir: str | os.PathLike[str]) -> Path:
    """Create (or tighten) the directory of ``socket_path(cbdir)`` to mode 0700; refuse one
    that another user owns or that is not a directory."""
    path = socket_path(cbdir).parent
    path.mkdir(mode=0o700, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise PermissionError(f"{path} is not a directory: refusing to put the node's socket "
                              "there")
    if info.st_uid != os.geteuid():
        raise PermissionError(f"{path} belongs to uid {info.st_uid}, not to this user "
                              f"({os.geteuid()}): its socket would not be private")
    path.chmod(0o700)
    return path
