"""``etcd-wamp run``: a local etcd (unless endpoints are given) and the Crossbar node with the
component.

The node's files (``.crossbar/config.json``, the explorer in ``web/``, ``tables.json``) come
from a node dir: ``crossbar-config/`` of the repo, shipped inside the package as
``component/node_files``, or one written by ``etcd-wamp init``. The config is rendered into
the data dir with the web port, the etcd endpoints, the node dir's ``tables.json`` and this
installation's Python path filled in, so nothing is written into the node dir and an installed
package runs from any directory. Ctrl-C (or SIGTERM) stops Crossbar first, then etcd, so the
component never sees etcd vanish under it. A start that fails prints why (the relevant lines
of etcd's or Crossbar's log) and exits non-zero.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from txetcd.embedded import (
    EtcdNotFound,
    EtcdProcess,
    NotOurEtcd,
    dies_with_parent,
    find_etcd,
    stop_group,
)

from .config import ConfigError, parse_settings
from .localsocket import point_to_socket, private_dir

__all__ = ["NODE_FILES", "PACKAGE_ROOT", "NodeOptions", "StartFailed", "node_config",
           "read_json_file", "relevant_lines", "run", "web_port"]

# The directory holding the component package: what the node's workers import it from, in a
# checkout (the repo) and in an installed wheel (site-packages) alike.
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
# The packaged node dir (a symlink to crossbar-config/ in the repo, copied into the wheel).
NODE_FILES = Path(__file__).resolve().parent / "node_files"
CROSSBAR_MAIN = "import sys, crossbar; sys.exit(crossbar.run())"
BOOTED = "NODE_BOOT_COMPLETE"
READY = "etcd component ready"
from .health import WAITING  # noqa: E402 - component.health.s line, until etcd answers

# Log lines that say why something did not start: Crossbar's text log, etcd's JSON log (3.5)
# and its text log (3.4, "C |" critical, "E |" error).
_CAUSE = re.compile(r"error|fail|fatal|panic|cannot|could not|refused|denied|in use|invalid|"
                    r"no such|not found|exception|traceback| [CE] \| ", re.IGNORECASE)
# Crossbar lines that match the pattern but say nothing about the failure.
_NOISE = re.compile(r"ApplicationError|Processing|restart-always", re.IGNORECASE)


class StartFailed(RuntimeError):
    """The node or its etcd did not start; the message says why, in the logs' own words."""


@dataclass(frozen=True)
class NodeOptions:
    port: int = 8080
    etcd_port: int = 2379
    data_dir: Path = Path("etcd-wamp-data")
    endpoints: tuple[str, ...] = ()  # empty: start a local etcd
    node_dir: Path = NODE_FILES
    host: str = "127.0.0.1"


def read_json_file(path: Path) -> Any:
    """A JSON file, or ``StartFailed`` naming the file and the line of a syntax error."""
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise StartFailed(f"cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise StartFailed(f"{path}: invalid JSON: {exc}") from None


def node_config(options: NodeOptions, endpoints: list[str]) -> dict[str, Any]:
    """The node dir's config with the port, web dir, endpoints, tables and pythonpath set."""
    config = read_json_file(options.node_dir / ".crossbar" / "config.json")
    tables_path = options.node_dir / "tables.json"
    tables = read_json_file(tables_path) if tables_path.exists() else None
    for worker in config.get("workers", []):
        worker.setdefault("options", {})["pythonpath"] = [str(PACKAGE_ROOT)]
        for transport in worker.get("transports", []):
            if transport.get("type") == "web":
                transport["endpoint"]["port"] = options.port
                transport["endpoint"]["interface"] = options.host
                static = transport.get("paths", {}).get("/", {})
                if static.get("type") == "static":
                    static["directory"] = str((options.node_dir / "web").resolve())
        for component in worker.get("components", []):
            if worker["type"] != "container" or "etcd" not in component.get("extra", {}):
                continue
            if tables is not None:
                component["extra"] = tables  # the node dir's tables.json is the component's
            component["extra"].setdefault("etcd", {})["endpoints"] = endpoints
            try:  # a bad table config fails here, naming the field, not in a restart loop
                parse_settings(component["extra"])
            except ConfigError as exc:
                source = tables_path if tables is not None else options.node_dir / ".crossbar"
                raise StartFailed(f"{source}: {exc}") from None
    return config


def web_port(node_dir: Path) -> int:
    """The port of the node dir's web transport (8080 if it names none)."""
    config = read_json_file(node_dir / ".crossbar" / "config.json")
    for worker in config.get("workers", []):
        for transport in worker.get("transports", []):
            if transport.get("type") == "web":
                return int(transport.get("endpoint", {}).get("port", 8080))
    return 8080


def copy_node_key(source: Path, cbdir: Path) -> None:
    """The node dir's key, which linked nodes authorize (else Crossbar makes a new one)."""
    for name in ("key.priv", "key.pub"):
        if (source / name).exists():
            (cbdir / name).unlink(missing_ok=True)
            shutil.copy2(source / name, cbdir / name)


def is_tls(config: dict[str, Any]) -> bool:
    """Whether the node's web transport serves TLS (https://, wss://)."""
    return any("tls" in transport.get("endpoint", {}) for worker in config.get("workers", [])
               for transport in worker.get("transports", []) if transport.get("type") == "web")


def has_component(config: dict[str, Any]) -> bool:
    """Whether the node runs the component in a container (then "ready" waits for it)."""
    return any(worker.get("type") == "container" for worker in config.get("workers", []))


def relevant_lines(log: str, limit: int = 12) -> list[str]:
    """The lines of a log that say why a start failed (else its tail), at most ``limit``."""
    lines = [line.rstrip() for line in log.splitlines() if line.strip()]
    causes = [line for line in lines if _CAUSE.search(line) and not _NOISE.search(line)]
    return (causes or lines)[-limit:]


def _port_in_use(host: str, port: int) -> bool:
    # SO_REUSEADDR as Twisted and etcd bind, so a port in TIME_WAIT does not count as busy.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _check_port(host: str, port: int, what: str, flag: str) -> None:
    if _port_in_use(host, port):
        raise StartFailed(f"{what} port {port} on {host} is already in use by another process "
                          f"(choose another with {flag})")


def start_etcd(options: NodeOptions) -> EtcdProcess:
    """A local etcd with its data under the data dir, or ``StartFailed`` with its log lines."""
    _check_port(options.host, options.etcd_port, "etcd client", "--etcd-port")
    data = options.data_dir / "etcd"
    data.mkdir(parents=True, exist_ok=True)
    try:
        etcd = EtcdProcess(find_etcd(), client_port=options.etcd_port, data_dir=data)
    except EtcdNotFound as exc:
        raise StartFailed(str(exc)) from None
    try:
        etcd.start()
    except NotOurEtcd as exc:
        # Never go on with whatever answers on that port: it is not the etcd we started.
        etcd.stop()
        raise StartFailed(str(exc)) from None
    except RuntimeError:
        etcd.stop()
        log = etcd.log_path.read_text(errors="replace") if etcd.log_path.exists() else ""
        raise StartFailed(f"etcd {etcd.version} did not start on {etcd.url}; from its log "
                          f"{etcd.log_path}:\n" + "\n".join(relevant_lines(log))) from None
    return etcd


def _log_text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _say_why_waiting(log: str, said: int | None, out: Any) -> int:
    """Print the component's new "waiting for etcd at ...: cause" lines (after the first
    ``said``; none once ready, ``said`` None): why the node is not ready yet. Returns how many
    there are."""
    waiting = [line for line in log.splitlines() if WAITING in line]
    for line in waiting[said:] if said is not None else ():
        print(line[line.index(WAITING) + len("etcd component "):], file=out, flush=True)
    return len(waiting)


def run(options: NodeOptions, out: Any = None) -> int:
    """Run the node until Ctrl-C/SIGTERM (0) or until Crossbar exits (``StartFailed``)."""
    out = out or sys.stdout
    if importlib.util.find_spec("crossbar") is None:  # `pip install etcd-wamp` without [run]
        raise StartFailed("Crossbar is not installed here: the node needs the run extra "
                          "(pip install 'etcd-wamp[run]', or pip install '.[run]' in the repo)")
    data = options.data_dir.resolve()
    data.mkdir(parents=True, exist_ok=True)
    _check_port(options.host, options.port, "web", "--port")
    cbdir = data / "node"
    cbdir.mkdir(exist_ok=True)
    private_dir(cbdir)  # the local socket's directory, before Crossbar listens in it
    copy_node_key(options.node_dir / ".crossbar", cbdir)
    etcd: EtcdProcess | None = None
    if options.endpoints:
        endpoints = list(options.endpoints)
    else:
        etcd = start_etcd(NodeOptions(**{**options.__dict__, "data_dir": data}))
        endpoints = [etcd.url]
        print(f"etcd {etcd.version} at {etcd.url} (data in {etcd.data_dir})", file=out,
              flush=True)
    stopping: list[int] = []
    node: subprocess.Popen[bytes] | None = None
    log_path = data / "crossbar.log"
    try:
        config_path = cbdir / "config.json"
        config = point_to_socket(node_config(options, endpoints), cbdir)
        config_path.write_text(json.dumps(config, indent=2))
        log = open(log_path, "wb")  # noqa: SIM115 - the child owns it; a fresh log per run
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(PACKAGE_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        # Crossbar run by this interpreter (not a `crossbar` script found somewhere), so its
        # workers import the component from the same installation as this command.
        # Stopped (cleanly: SIGTERM) if this process is killed, as its etcd is: an orphaned
        # node would hold the web port, and the next `make run` could not start.
        node = subprocess.Popen([sys.executable, "-c", CROSSBAR_MAIN, "start", "--cbdir",
                                 str(cbdir), "--config", str(config_path), "--color", "false"],
                                stdout=log, stderr=log, env=env, start_new_session=True,
                                preexec_fn=dies_with_parent(signal.SIGTERM))
        log.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, _: stopping.append(signum))
        announced, waited = False, 0
        while not stopping and node.poll() is None:
            text = _log_text(log_path)
            waited = _say_why_waiting(text, waited if not announced else None, out)
            if not announced and BOOTED in text and (READY in text or not has_component(config)):
                announced = True
                secure = "s" if is_tls(config) else ""
                print(f"explorer  http{secure}://{options.host}:{options.port}/", file=out,
                      flush=True)
                print(f"WAMP      ws{secure}://{options.host}:{options.port}/ws  realm realm1 "
                      "(tickets: reader/reader-secret, writer/writer-secret)", file=out,
                      flush=True)
                print(f"log       {log_path}; Ctrl-C stops everything", file=out, flush=True)
            time.sleep(0.2)
    finally:
        if node is not None:
            stop_group(node, timeout=30)
        if etcd is not None:
            etcd.stop()
        print("stopped", file=out, flush=True)
    if not stopping:
        raise StartFailed(f"crossbar exited with {node.returncode}; from its log {log_path}:\n"
                          + "\n".join(relevant_lines(_log_text(log_path))))
    return 0
