"""The ``federation`` command: serve, check, claims, demo."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import NoReturn

from . import __version__, logs
from .chart_values import add_config_parser
from .config import Registry, load_registry
from .environment import (
    SettingsProblem,
    in_cluster_problem,
    read_settings,
    unknown_variables,
    warmup_problem,
)
from .errors import ConfigError
from .settings import Settings


def port_problem(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on, as one line naming the flag; None when free.
    (uvicorn would end in a traceback, or exit with a message that names no option.)"""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except PermissionError:
        return f"not allowed to listen on port {port} (below 1024?): choose another with --port"
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return (f"port {port} on {host} is already in use (configurable-http-proxy's API "
                    "uses 8001 too): choose another with --port")
        return f"cannot listen on {host}:{port} ({exc.strerror}): check --host and --port"
    return None


class Stopped(Exception):  # noqa: N818 - a request to stop, not a failure
    """SIGINT or SIGTERM asked ``serve`` to stop."""


def stop_on_signals() -> None:
    """SIGINT and SIGTERM stop ``serve``, set explicitly: a background job of a non-interactive
    shell inherits SIGINT as ignored. uvicorn takes both over while it serves, shuts down
    gracefully, restores these handlers and raises the signal again: it ends here as exit 0."""

    def stop(signum: int, frame: object) -> None:
        raise Stopped(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)


BACKENDS = ("istio", "gateway-api")  # clusters.yaml's backend values


def fail(message: str) -> int:
    print(f"federation: {message}", file=sys.stderr)
    return 2


def load_settings(config: str | None, **given: object) -> Settings:
    """Settings; --config, when given, wins over FEDERATION_CONFIG. Raises SettingsProblem."""
    if config is not None:
        given["config"] = Path(config)
    return read_settings(**given)


def load_config(config: str | None, **given: object) -> tuple[Settings, Registry] | str:
    """The settings and clusters.yaml they name, or the one-line problem with either."""
    try:
        settings = load_settings(config, **given)
    except SettingsProblem as exc:
        return _settings_error(exc)
    try:
        return settings, load_registry(settings.config)
    except ConfigError as exc:
        return str(exc)


def _settings_error(exc: SettingsProblem) -> str:
    """Every bad setting, one per line, each naming its environment variable."""
    return "\nfederation: ".join(exc.lines)


def warn_unknown_variables() -> None:
    """After logging is set up: a mistyped FEDERATION_* name would otherwise go unnoticed."""
    for line in unknown_variables(os.environ):
        logging.getLogger("federation").warning(line)


def cmd_serve(args: argparse.Namespace) -> int:
    loaded = load_config(args.config, **({"no_auth": True} if args.no_auth else {}))
    if isinstance(loaded, str):
        return fail(loaded)
    settings, registry = loaded
    problem = in_cluster_problem(registry) or port_problem(args.host, args.port)
    if problem:
        return fail(problem)
    import uvicorn

    from .app import create_app

    # Secrets are registered with the redaction guard by the app (at start and each reload).
    logs.setup_logging(settings.log_level, settings.log_format)
    warn_unknown_variables()
    # Warned, not refused, by serve (check refuses): a cluster taken out of clusters.yaml
    # before the variable would otherwise keep every restarting pod from starting.
    if (stale_warmup := warmup_problem(settings, registry)) is not None:
        logging.getLogger("federation").warning(stale_warmup)
    if settings.no_auth:
        logging.getLogger("federation").warning("running WITHOUT authentication (--no-auth)")
    app = create_app(settings, registry=registry)
    # log_config=None: uvicorn's lines go through our handler (format, redaction); our
    # middleware writes the access log, so uvicorn's own is off.
    # Keep-alive past uvicorn's 5 s: a client that pauses longer must not race the server
    # closing its idle connection (a POST lost that way is not retried by most clients).
    stop_on_signals()
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=settings.log_level,
                    access_log=False, log_config=None, timeout_keep_alive=75)
    except Stopped:
        pass
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from .check import run_check

    loaded = load_config(args.config, no_auth=True, kube_retries=0)
    if isinstance(loaded, str):
        return fail(loaded)
    settings, registry = loaded
    problem = warmup_problem(settings, registry)
    if problem:
        return fail(problem)
    # Only problems, through the redacting handler: the findings themselves go to stdout.
    logs.setup_logging("warning", settings.log_format)
    warn_unknown_variables()
    return asyncio.run(run_check(registry, settings))


def cmd_claims(args: argparse.Namespace) -> int:
    from .claims_cli import run_claims

    other = getattr(args, "other", None)
    if other is not None and (other.count("/") != 1 or not all(other.split("/"))):
        return fail(f"--from {other!r}: name the other hub as <namespace>/<instance>, as the "
                    "refusal and `federation claims list` show it (e.g. jupyterhub/jupyterhub)")
    loaded = load_config(args.config, no_auth=True)
    if isinstance(loaded, str):
        return fail(loaded)
    settings, registry = loaded
    logs.setup_logging("warning", settings.log_format)
    warn_unknown_variables()
    return asyncio.run(run_claims(registry, settings, args.action, other))


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    problem = port_problem(args.host, args.port)
    if problem:
        return fail(problem)
    try:  # the demo's service reads the same FEDERATION_* variables
        load_settings("clusters.yaml", no_auth=True)
    except SettingsProblem as exc:
        return fail(_settings_error(exc))
    logs.setup_logging("warning", "text")  # the printout is the demo's output, not the log
    warn_unknown_variables()
    if args.hub:
        if args.backend != "istio":
            print("federation demo: --hub runs on the Istio backend only", file=sys.stderr)
            return 2
        from .demo_hub import run_hub_demo

        return run_hub_demo(port=args.port, host=args.host, once=args.once)
    return run_demo(port=args.port, host=args.host, once=args.once, backend=args.backend)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (``federation serve: --port: ...``) rather than a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1-65535)")
    return port


def _add_listen(cmd: argparse.ArgumentParser, host: str, port: int) -> None:
    cmd.add_argument("--host", default=host, help="address to listen on")
    cmd.add_argument("--port", type=_port, default=port,
                     help="port to listen on (configurable-http-proxy's API port is 8001 too)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="federation",
        description="configurable-http-proxy's API, backed by the routing objects of many "
                    "clusters: Istio VirtualServices, or Gateway API HTTPRoutes (backend: "
                    "gateway-api in clusters.yaml)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    shown = argparse.ArgumentDefaultsHelpFormatter

    serve = sub.add_parser("serve", help="run the proxy API", formatter_class=shown,
                           description="Serve the proxy API, writing each route as Istio VirtualServices or "
                                       "Gateway API HTTPRoutes (each cluster's backend in "
                                       "clusters.yaml); settings: FEDERATION_* (docs/operations.md).")
    serve.add_argument("--config", default=None,
                       help="path to clusters.yaml (required, here or as FEDERATION_CONFIG)")
    _add_listen(serve, os.environ.get("FEDERATION_HOST", "0.0.0.0"), 8001)
    serve.add_argument("--no-auth", action="store_true",
                       help="run without CONFIGPROXY_AUTH_TOKEN (never in production)")
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check", help="connect to every cluster and report what works",
                           formatter_class=shown,
                           description="Reach every cluster, list and write its routing objects "
                                       "(VirtualServices or HTTPRoutes, by each cluster's backend), "
                                       "verify its Gateway. Exit 0 when every check passes.")
    check.add_argument("--config", default=None,
                       help="path to clusters.yaml (required, here or as FEDERATION_CONFIG)")
    check.set_defaults(func=cmd_check)

    claims = sub.add_parser(
        "claims", help="this hub's claims on its gateway hosts: list, release, take over",
        description="Each hub claims the gateway hosts it routes on each cluster with a Lease "
                    "(docs/operations.md, section 1c).")
    actions = claims.add_subparsers(dest="action", required=True, parser_class=_Parser)
    for action, text in (("list", "show who holds each host this hub routes"),
                         ("release", "give up this hub's claims (the hub is removed and its "
                                     "objects deleted)"),
                         ("take", "take over the claims of a hub that is gone")):
        cmd = actions.add_parser(action, help=text, description=text)
        cmd.add_argument("--config", help="path to clusters.yaml (default: FEDERATION_CONFIG)")
        if action == "take":
            cmd.add_argument("--from", dest="other", required=True,
                             help="the other hub, <namespace>/<instance> as the refusal names it")
        cmd.set_defaults(func=cmd_claims)

    demo = sub.add_parser("demo", help="run against three local emulated clusters",
                          formatter_class=shown)
    _add_listen(demo, "127.0.0.1", 8001)
    demo.add_argument("--once", action="store_true", help="print the placement and exit")
    demo.add_argument("--backend", choices=BACKENDS, default="istio",
                      help="the objects the routes become: Istio VirtualServices, or Gateway "
                           "API HTTPRoutes")
    demo.add_argument("--hub", action="store_true",
                      help="also run a real JupyterHub spawning with MultiClusterKubeSpawner "
                           "(needs the 'hub' extra and kubectl)")
    demo.set_defaults(func=cmd_demo)
    add_config_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
