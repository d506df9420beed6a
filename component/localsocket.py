"""The node's local unix socket lives in a directory only the node's user can enter.

Whoever connects to the node's unix socket gets the role its transport grants (``backend`` on
the demo node, anonymously), and Twisted creates the socket itself world-writable (0666). So
the socket goes into ``<cbdir>/private/`` with mode 0700: other users cannot reach the path
at all. Whoever starts the node calls ``private_dir(cbdir)`` first. Crossbar does not create
the directory, so a node started without it fails to listen rather than listening in the open.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["SOCKET", "private_dir"]

# Relative to the node's cbdir, as the node config's unix endpoints name it.
SOCKET = Path("private") / "router.sock"


def private_dir(cbdir: str | os.PathLike[str]) -> Path:
    """Create (or tighten) ``<cbdir>/private`` to mode 0700; refuse one another user owns."""
    path = Path(cbdir) / SOCKET.parent
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
