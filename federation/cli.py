"""The ``federation`` command: serve, check, demo."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from . import logs
from .config import kubeconfig_paths, load_registry
from .errors import ConfigError
from .settings import Settings


def fail(message: str) -> int:
    print(f"federation: {message}", file=sys.stderr)
    return 2


def load_settings(config: str, no_auth: bool) -> Settings:
    kwargs: dict[str, object] = {"config": Path(config)}
    if no_auth:
        kwargs["no_auth"] = True
    return Settings(**kwargs)  # type: ignore[arg-type]


def _settings_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    msg = str(first["msg"]).removeprefix("Value error, ")
    loc = ".".join(str(p) for p in first["loc"])
    return f"{msg}" if not loc else f"setting {loc}: {msg}"


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config, args.no_auth)
    except ValidationError as exc:
        return fail(_settings_error(exc))
    try:
        registry = load_registry(settings.config)
    except ConfigError as exc:
        return fail(str(exc))
    import uvicorn

    from .app import create_app

    logs.register_secret(settings.token())
    logs.register_kubeconfig_secrets(kubeconfig_paths(registry.kubeconfig))
    logs.setup_logging(settings.log_level, settings.log_format)
    if settings.no_auth:
        logging.getLogger("federation").warning("running WITHOUT authentication (--no-auth)")
    app = create_app(settings, registry=registry)
    # log_config=None: uvicorn's lines go through our handler (format, redaction); our
    # middleware writes the access log, so uvicorn's own is off.
    uvicorn.run(app, host=args.host, port=args.port, log_level=settings.log_level,
                access_log=False, log_config=None)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from .check import run_check

    try:
        registry = load_registry(args.config)
    except ConfigError as exc:
        return fail(str(exc))
    settings = Settings(config=Path(args.config), no_auth=True, kube_retries=0)  # type: ignore[call-arg]
    return asyncio.run(run_check(registry, settings))


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(port=args.port, host=args.host, once=args.once)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="federation",
        description="configurable-http-proxy's API, backed by Istio VirtualServices in many clusters",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the proxy API")
    serve.add_argument("--config", required=True, help="path to clusters.yaml")
    serve.add_argument("--host", default=os.environ.get("FEDERATION_HOST", "0.0.0.0"))
    serve.add_argument("--port", type=int, default=8001)
    serve.add_argument("--no-auth", action="store_true",
                       help="run without CONFIGPROXY_AUTH_TOKEN (never in production)")
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check", help="connect to every cluster and report what works")
    check.add_argument("--config", required=True)
    check.set_defaults(func=cmd_check)

    demo = sub.add_parser("demo", help="run against three local emulated clusters")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8001)
    demo.add_argument("--once", action="store_true", help="print the placement and exit")
    demo.set_defaults(func=cmd_demo)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
