"""``etcd-wamp``: run the node, the standalone component, and operate on tables.

Subcommands: ``run`` (a local etcd and the Crossbar node), ``component`` (the component alone,
against any router), ``init`` (a node dir to edit), ``export``/``import`` (a table as JSON
Lines, over WAMP), ``status`` (the etcd cluster and the event publishers). Options that an
operator sets per host also come from environment variables (named in ``--help``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .config import split_endpoints

__all__ = ["main"]

DEFAULT_ROUTER = "ws://127.0.0.1:8080/ws"


def _env(name: str, default: str | None) -> str | None:
    return os.environ.get(name) or default


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="etcd-wamp", description=(
        "Run the etcd-wamp node or component, and operate on its tables."))
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="a local etcd and the Crossbar node with the "
                                          "component (what `make run` does)")
    port = _env("ETCD_WAMP_PORT", None)
    run.add_argument("--port", type=int, default=int(port) if port else None,
                     help="web port: explorer and WAMP at /ws ($ETCD_WAMP_PORT, else the node "
                          "config's: 8080 for the demo node)")
    run.add_argument("--web-port", dest="port", type=int, help=argparse.SUPPRESS)
    run.add_argument("--etcd-port", type=int,
                     default=int(_env("ETCD_WAMP_ETCD_PORT", "2379") or 2379),
                     help="client port of the local etcd ($ETCD_WAMP_ETCD_PORT, 2379)")
    run.add_argument("--data-dir", default=_env("ETCD_WAMP_DATA_DIR", "etcd-wamp-data"),
                     help="etcd's data, the rendered node config and logs "
                          "($ETCD_WAMP_DATA_DIR, ./etcd-wamp-data)")
    run.add_argument("--etcd", default=_env("ETCD_ENDPOINTS", None), metavar="ENDPOINTS",
                     help="comma-separated etcd URLs to use instead of starting a local etcd "
                          "($ETCD_ENDPOINTS)")
    run.add_argument("--node", default=_env("ETCD_WAMP_NODE_DIR", None), metavar="DIR",
                     help="a node dir from `etcd-wamp init` (default: the packaged demo node)")

    commands.add_parser("component", add_help=False,
                                    help="the component standalone (see `etcd-wamp component "
                                         "--help`)")

    init = commands.add_parser("init", help="write a node dir: .crossbar/config.json, web/ and "
                                            "a commented tables.json")
    init.add_argument("dir")
    init.add_argument("--force", action="store_true", help="overwrite existing files")
    init.add_argument("--nodes", type=int, default=1, metavar="N",
                      help="N nodes linked by router-to-router links: DIR/node1 ... DIR/nodeN")
    init.add_argument("--port", type=int, default=8080,
                      help="web port of the (first) node; node i gets PORT+i-1 (8080)")
    init.add_argument("--link-port", type=int, default=8090,
                      help="with --nodes: port of node 1's link transport; node i gets "
                           "LINK_PORT+i-1 (8090)")

    for name, text in (("export", "write a table as JSON Lines (one snapshot)"),
                       ("import", "put JSON Lines rows into a table (txn batches)")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("table")
        if name == "export":
            sub.add_argument("-o", "--output", default="-", help="file (default: stdout)")
        else:
            sub.add_argument("input", nargs="?", default="-", help="file (default: stdin)")
            sub.add_argument("--resume", action="store_true",
                             help="continue after the line recorded in the position file")
            sub.add_argument("--position", default=None,
                             help="position file (default: INPUT.position; needed for stdin "
                                  "to resume)")
        _client_options(sub)

    status = commands.add_parser("status", help="etcd members, leader, revision, db size, "
                                                "and which instance publishes which table")
    status.add_argument("--config", default=None,
                        help="the component's tables.json (endpoints, namespace, prefix)")
    status.add_argument("--etcd", default=_env("ETCD_ENDPOINTS", None), metavar="ENDPOINTS",
                        help="comma-separated etcd URLs ($ETCD_ENDPOINTS, else the config's, "
                             "else http://127.0.0.1:2379)")
    status.add_argument("--namespace", default=None, help="etcd namespace (default: the "
                                                          "config's, else app/)")
    status.add_argument("--prefix", default=None, help="WAMP prefix (default: the config's, "
                                                       "else etcd)")
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    return parser


def _client_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--router", default=_env("ETCD_WAMP_URL", DEFAULT_ROUTER),
                     help=f"ws://, wss:// or unix:/path ($ETCD_WAMP_URL, {DEFAULT_ROUTER})")
    sub.add_argument("--realm", default="realm1")
    sub.add_argument("--prefix", default="etcd", help="the component's prefix (etcd)")
    sub.add_argument("--authid", default=_env("ETCD_WAMP_AUTHID", None),
                     help="log in as this authid ($ETCD_WAMP_AUTHID); anonymous without")
    sub.add_argument("--ticket", default=_env("ETCD_WAMP_TICKET", None),
                     help="WAMP-ticket secret ($ETCD_WAMP_TICKET)")
    sub.add_argument("--key", default=_env("ETCD_WAMP_KEY", None),
                     help="Ed25519 private key file: WAMP-cryptosign ($ETCD_WAMP_KEY)")
    sub.add_argument("--ca", default=_env("ETCD_WAMP_CA", None),
                     help="CA certificate (PEM) of a wss:// router whose certificate the "
                          "system does not trust ($ETCD_WAMP_CA)")
    progress = sub.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None,
                          help="a progress bar on stderr (default: only on a terminal)")
    progress.add_argument("--no-progress", dest="progress", action="store_false")


def _rows(count: int) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"


def _fail(command: str, message: str, code: int = 1) -> int:
    print(f"etcd-wamp {command}: {message}", file=sys.stderr)
    return code


def cmd_run(args: argparse.Namespace) -> int:
    from .node import NODE_FILES, NodeOptions, StartFailed, run, web_port

    node_dir = Path(args.node) if args.node else NODE_FILES
    try:
        port = args.port if args.port is not None else web_port(node_dir)
    except StartFailed as exc:
        return _fail("run", str(exc))
    options = NodeOptions(port=port, etcd_port=args.etcd_port,
                          data_dir=Path(args.data_dir), endpoints=split_endpoints(args.etcd),
                          node_dir=node_dir)
    try:
        return run(options)
    except StartFailed as exc:
        return _fail("run", str(exc))


MAX_NODES = 32  # every node links to every other: N * (N - 1) links


def _init_ports_problem(nodes: int, port: int, link_port: int) -> str | None:
    """Why ``init --nodes`` cannot lay out these nodes' ports, or None: node i takes PORT+i-1
    and LINK_PORT+i-1, all of them valid and no two the same (with the defaults, 11 nodes
    would give node 11 node 1's link port)."""
    if not 1 <= nodes <= MAX_NODES:
        return f"--nodes must be from 1 to {MAX_NODES}, not {nodes}"
    webs = range(port, port + nodes)
    links = range(link_port, link_port + nodes) if nodes > 1 else range(0)
    for name, ports in (("--port", webs), ("--link-port", links)):
        if ports and not (ports[0] >= 1 and ports[-1] <= 65535):
            return f"{name} {ports[0]}: the ports {ports[0]}-{ports[-1]} are not all valid"
    clash = sorted(set(webs) & set(links))
    if clash:
        return (f"the web ports {webs[0]}-{webs[-1]} and link ports {links[0]}-{links[-1]} "
                f"overlap (port {clash[0]}): choose --port and --link-port further apart")
    return None


def cmd_init(args: argparse.Namespace) -> int:
    from .linked import write_linked_nodes
    from .node import NODE_FILES

    problem = _init_ports_problem(args.nodes, args.port, args.link_port)
    if problem:
        return _fail("init", problem, 2)
    root = Path(args.dir)
    targets = [root] if args.nodes == 1 else [root / f"node{i + 1}" for i in range(args.nodes)]
    written = [path for target in targets for path in
               (target / ".crossbar" / "config.json", target / "tables.json", target / "web")]
    existing = [str(path) for path in written if path.exists()]
    if existing and not args.force:
        return _fail("init", f"{', '.join(existing)} exist (--force overwrites)", 2)
    config = json.loads((NODE_FILES / ".crossbar" / "config.json").read_text())
    for worker in config["workers"]:
        # `etcd-wamp run` sets the workers' pythonpath; `crossbar start` finds the installed
        # package without one.
        worker.get("options", {}).pop("pythonpath", None)
        for transport in worker.get("transports", []):
            if transport.get("type") == "web":
                transport["endpoint"]["port"] = args.port
    tables = (NODE_FILES / "tables.json").read_text()
    if args.nodes > 1:
        write_linked_nodes(targets, config, tables, args.link_port)
    else:
        (root / ".crossbar").mkdir(parents=True, exist_ok=True)
        (root / ".crossbar" / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        (root / "tables.json").write_text(tables)
    for target in targets:
        shutil.copytree(NODE_FILES / "web", target / "web", dirs_exist_ok=True)
    if args.nodes == 1:
        print(f"wrote {root}/: .crossbar/config.json (the node), tables.json (the component's "
              f"tables: edit it), web/ (the explorer)\n"
              f"run it:  etcd-wamp run --node {root}")
        return 0
    print(f"wrote {args.nodes} linked nodes {root}/node1 ... {root}/node{args.nodes}: each "
          f".crossbar/ (config, node key), tables.json (edit them alike), web/\n"
          f"node i: web port {args.port}+i-1, link port {args.link_port}+i-1 (127.0.0.1)")
    return 0


def _react(command: str, body: Callable[[Any], Awaitable[int]]) -> int:
    """Run ``body(reactor)`` to its end; connection and WAMP errors become a one-line message."""
    from autobahn.wamp.exception import ApplicationError
    from twisted.internet import defer, task

    from txetcd import EtcdError

    from .client import ConnectFailed
    from .transfer import TransferError

    code: list[int] = []

    async def guarded(reactor: Any) -> None:
        try:
            code.append(await body(reactor))
        except (ConnectFailed, TransferError, EtcdError, OSError, ValueError) as exc:
            code.append(_fail(command, str(exc)))
        except ApplicationError as exc:
            code.append(_fail(command, f"{exc.error}: {exc.kwargs.get('message', exc.args)}"))

    try:
        task.react(lambda reactor: defer.ensureDeferred(guarded(reactor)))
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            raise
    return code[0] if code else 1


def _client(args: argparse.Namespace) -> Any:
    from .client import ClientOptions

    return ClientOptions(router=args.router, realm=args.realm, authid=args.authid,
                         ticket=args.ticket, key=args.key, ca=args.ca)


def cmd_export(args: argparse.Namespace) -> int:
    from .client import connect
    from .transfer import export_table

    async def body(reactor: Any) -> int:
        session = await connect(reactor, _client(args))
        out = sys.stdout if args.output == "-" else open(args.output, "w")  # noqa: SIM115
        try:
            count = await export_table(session, args.prefix, args.table, out, args.progress)
        finally:
            if out is not sys.stdout:
                out.close()
            else:
                out.flush()
            session.leave()
        print(f"exported {_rows(count)} of {args.table}", file=sys.stderr)
        return 0

    return _react("export", body)


def cmd_import(args: argparse.Namespace) -> int:
    from .client import connect
    from .transfer import import_table

    if args.position:
        position: Path | None = Path(args.position)
    elif args.input != "-":
        position = Path(args.input + ".position")
    else:
        position = None
    if args.resume and position is None:
        return _fail("import", "--resume from stdin needs --position FILE", 2)

    async def body(reactor: Any) -> int:
        session = await connect(reactor, _client(args))
        source = sys.stdin if args.input == "-" else open(args.input)  # noqa: SIM115
        try:
            report = await import_table(
                session, args.prefix, args.table, source, position=position,
                resume=args.resume, progress=args.progress,
                on_refused=lambda line, why: print(f"line {line}: refused: {why}",
                                                   file=sys.stderr))
        finally:
            if source is not sys.stdin:
                source.close()
            session.leave()
        resumed = f" (resumed after line {report.skipped_lines})" if report.skipped_lines else ""
        print(f"imported {_rows(report.imported)} into {args.table}{resumed}; "
              f"{len(report.refused)} refused", file=sys.stderr)
        return 1 if report.refused else 0

    return _react("import", body)


def cmd_status(args: argparse.Namespace) -> int:
    from txetcd import EtcdError

    from .config import EtcdSettings, parse_settings
    from .status import cluster_status, connect, format_status, publishers

    tables: list[str] | None = None
    prefix, etcd = "etcd", EtcdSettings(namespace=b"app/")
    if args.config:
        with open(args.config) as f:
            settings = parse_settings(json.load(f))
        prefix, etcd, tables = settings.prefix, settings.etcd, [t.name for t in settings.tables]
    endpoints = list(split_endpoints(args.etcd)) or etcd.endpoints
    namespace = args.namespace.encode() if args.namespace is not None else etcd.namespace
    etcd = EtcdSettings(endpoints, namespace, etcd.user, etcd.password, etcd.ca)
    prefix = args.prefix or prefix

    async def body(reactor: Any) -> int:
        try:
            cluster = await cluster_status(reactor, etcd)
        except EtcdError as exc:  # no member answers: that is the state to report
            state = {"state": "unreachable", "endpoints": endpoints, "cause": str(exc)}
            print(json.dumps({"etcd": state}, indent=2) if args.json else
                  f"etcd: unreachable at {', '.join(endpoints)}: {exc}")
            return 1
        client = connect(reactor, etcd)
        try:
            elected = await publishers(client, prefix, tables)
        finally:
            await client.close()
        if args.json:
            print(json.dumps({"etcd": cluster, "namespace": namespace.decode(errors="replace"),
                              "prefix": prefix, "tables": elected}, indent=2))
        else:
            print(format_status(cluster, elected, namespace.decode(errors="replace"), prefix))
        return 0 if all("error" not in m for m in cluster["members"]) else 1

    return _react("status", body)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["component"]:  # all its options are the component's own
        from .__main__ import main as component_main

        return component_main(argv[1:], prog="etcd-wamp component")
    args = _parser().parse_args(argv)
    handlers = {"run": cmd_run, "init": cmd_init, "export": cmd_export, "import": cmd_import,
                "status": cmd_status}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
