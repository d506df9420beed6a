"""``make run``: a local etcd (unless endpoints are given) and the Crossbar node with the component.

The node's config is read from ``crossbar-config/.crossbar/config.json``; only the etcd
endpoints and the web port are filled in, into a copy under the data dir. Ctrl-C (or SIGTERM)
stops Crossbar first, then etcd, so the component never sees etcd vanish under it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from txetcd.embedded import EtcdProcess, NotOurEtcd, find_etcd, stop_group

from .localsocket import private_dir

ROOT = Path(__file__).resolve().parent.parent
CBDIR = ROOT / "crossbar-config" / ".crossbar"


def node_config(endpoints: list[str], web_port: int) -> dict[str, object]:
    config = json.loads((CBDIR / "config.json").read_text())
    for worker in config["workers"]:
        if worker["type"] == "router":
            worker["transports"][0]["endpoint"]["port"] = web_port
        for component in worker.get("components", []):
            if "etcd" in component.get("extra", {}):
                component["extra"]["etcd"]["endpoints"] = endpoints
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m component.node", description=__doc__)
    parser.add_argument("--data-dir", default=str(ROOT / ".data"))
    parser.add_argument("--etcd-port", type=int, default=2379)
    parser.add_argument("--web-port", type=int, default=8080)
    parser.add_argument("--etcd", default=os.environ.get("ETCD_ENDPOINTS"),
                        help="comma-separated etcd URLs; default: start a local etcd "
                             "(also $ETCD_ENDPOINTS)")
    args = parser.parse_args(argv)
    data = Path(args.data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)

    etcd: EtcdProcess | None = None
    if args.etcd:
        endpoints = [url.strip() for url in args.etcd.split(",") if url.strip()]
    else:
        (data / "etcd").mkdir(exist_ok=True)
        etcd = EtcdProcess(find_etcd(), client_port=args.etcd_port, data_dir=data / "etcd")
        try:
            etcd.start()
        except (NotOurEtcd, RuntimeError) as exc:
            # Never go on with whatever answers on that port: it is not the etcd we started.
            etcd.stop()
            print(f"etcd did not start: {exc}", file=sys.stderr)
            return 1
        endpoints = [etcd.url]
        print(f"etcd {etcd.version} at {etcd.url} (data in {etcd.data_dir})", flush=True)

    config_path = data / "crossbar-config.json"
    config_path.write_text(json.dumps(node_config(endpoints, args.web_port), indent=2))
    private_dir(CBDIR)  # the local socket's directory, before Crossbar listens in it
    crossbar = Path(sys.executable).with_name("crossbar")
    log_path = data / "crossbar.log"
    log = open(log_path, "wb")  # noqa: SIM115 - the child owns it; a fresh log per run
    node = subprocess.Popen([str(crossbar), "start", "--cbdir", str(CBDIR), "--config",
                             str(config_path), "--color", "false"], stdout=log, stderr=log,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)
    log.close()

    stopping: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _: stopping.append(signum))
    booted = False
    try:
        while not stopping and node.poll() is None:
            if not booted and "NODE_BOOT_COMPLETE" in log_path.read_text(errors="replace"):
                booted = True
                print(f"explorer  http://127.0.0.1:{args.web_port}/", flush=True)
                print(f"WAMP      ws://127.0.0.1:{args.web_port}/ws  realm realm1 "
                      "(ticket: reader/reader-secret, writer/writer-secret)", flush=True)
                print(f"log       {log_path}; Ctrl-C stops everything", flush=True)
            time.sleep(0.2)
    finally:
        stop_group(node, timeout=30)
        if etcd is not None:
            etcd.stop()
        print("stopped", flush=True)
    if not stopping:
        print(f"crossbar exited with {node.returncode}; see {log_path}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
