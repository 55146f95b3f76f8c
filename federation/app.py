"""The FastAPI application: factory, lifespan, error mapping and config reload."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__, logs, metrics
from .api import clusters, health, routes
from .api.deps import Authorized, check_token
from .config import Registry, kubeconfig_paths, load_registry
from .errors import ClusterUnavailable, ConfigError, FederationError, InvalidRoute, KubeError
from .routespec import has_control
from .service import Federation
from .settings import Settings

log = logging.getLogger(__name__)


def _error(status: int, message: str, **extra: object) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(InvalidRoute)
    async def invalid_route(_: Request, exc: InvalidRoute) -> JSONResponse:
        return _error(exc.status_code, str(exc))

    @app.exception_handler(KubeError)
    async def kube_error(_: Request, exc: KubeError) -> JSONResponse:
        # 5xx so that the hub retries; the body names the cluster, never credentials.
        if isinstance(exc, ClusterUnavailable):
            return _error(503, str(exc), cluster=exc.cluster)
        if exc.status in (404, 409):
            return _error(503, f"concurrent change, try again: {exc}", cluster=exc.cluster)
        return _error(502, f"cluster {exc.cluster!r} refused the change: {exc}", cluster=exc.cluster)

    @app.exception_handler(FederationError)
    async def federation_error(_: Request, exc: FederationError) -> JSONResponse:
        return _error(500, str(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, "invalid request")

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error: %s: %s", type(exc).__name__, exc, exc_info=exc)
        return _error(500, "internal error (see the service log)")


async def _watch_config(app: FastAPI, settings: Settings) -> None:
    """Reload clusters.yaml when it changes or on SIGHUP; a broken file keeps the old config."""
    path = Path(settings.config)
    trigger: asyncio.Event = app.state.reload_trigger

    def stamp() -> tuple[float, int] | None:
        try:
            st = path.stat()
            return (st.st_mtime, st.st_size)
        except OSError:
            return None

    last = stamp()
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(trigger.wait(), timeout=settings.reload_interval)
        forced = trigger.is_set()
        trigger.clear()
        current = stamp()
        if not forced and current == last:
            continue
        last = current
        await reload_config(app)


async def reload_config(app: FastAPI) -> bool:
    federation: Federation = app.state.federation
    return await federation.reload_file(Path(app.state.settings.config))


def _register_secrets(settings: Settings, registry: Registry) -> None:
    """Tell the log redaction guard the API token and every kubeconfig credential."""
    logs.register_secret(settings.token())
    logs.register_kubeconfig_secrets(kubeconfig_paths(registry.kubeconfig))


def _startup_line(settings: Settings, registry: Registry) -> None:
    clusters = {
        name: c.context or "in-cluster" for name, c in registry.clusters.items()
    }
    log.info(
        "federation proxy %s starting: instance %s, home %s, clusters %s; auth %s",
        __version__, registry.instance, registry.home,
        ", ".join(f"{n} (context {ctx})" for n, ctx in clusters.items()),
        "off (--no-auth)" if settings.no_auth else "on",
        extra={"event": "start", "version": __version__, "instance": registry.instance,
               "home": registry.home, "clusters": list(clusters), "config": str(settings.config)},
    )


# Probes and scrapes arrive every few seconds from every kubelet and Prometheus: their lines
# would drown the hub's own requests, so they are logged at DEBUG only.
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
access_log = logging.getLogger("federation.access")


def _log_access(scope: Any, template: str, status: int, seconds: float) -> None:
    path = scope.get("path", "")
    level = logging.DEBUG if path in _QUIET_PATHS else logging.INFO
    if not access_log.isEnabledFor(level):
        return
    method = scope.get("method", "")
    client = scope.get("client")
    millis = round(seconds * 1000, 1)
    # The path only: never the query string, the headers (Authorization) or the body.
    access_log.log(level, "%s %s %s %.1fms", method, path, status, millis, extra={
        "method": method, "path": path, "route": template, "status": status,
        "duration_ms": millis, "client": client[0] if client else None,
    })


class _Measure:
    """Request count and latency per route template (a plain ASGI middleware: Starlette's
    BaseHTTPMiddleware costs a task and a stream per request)."""

    def __init__(self, app: Any, access: bool = True) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def record(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            method = scope.get("method", "")
            metrics.API_REQUESTS.labels(template, method, str(status[0])).inc()
            elapsed = time.perf_counter() - start
            metrics.API_LATENCY.labels(template, method).observe(elapsed)
            if self.access:
                _log_access(scope, template, status[0], elapsed)


def create_app(
    settings: Settings,
    registry: Registry | None = None,
    federation: Federation | None = None,
) -> FastAPI:
    """Build the app; the federation is built and started in the lifespan, not at import."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        fed = federation
        if fed is None:
            reg = registry if registry is not None else load_registry(settings.config)
            fed = Federation(reg, settings)
        app.state.federation = fed
        _register_secrets(settings, fed.registry)
        _startup_line(settings, fed.registry)
        app.state.loop = asyncio.get_running_loop()
        app.state.reload_trigger = asyncio.Event()
        try:
            await fed.refuse_shared_hosts()
        except ConfigError:
            await fed.stop()  # closes the clients; nothing else was started
            raise
        await fed.start()
        reloader = asyncio.create_task(_watch_config(app, settings)) if settings.config else None
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, app.state.reload_trigger.set)
        try:
            yield
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGHUP)
            if reloader is not None:
                reloader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reloader
            await fed.stop()

    app = FastAPI(
        title="JupyterHub federation proxy",
        version=__version__,
        lifespan=lifespan,
        # Only /healthz, /readyz (and /metrics, if so configured) answer without the token:
        # the schema is served behind it below, the interactive docs not at all.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        description="configurable-http-proxy's REST API, backed by Istio VirtualServices in many clusters.",
    )
    app.state.settings = settings
    _install_error_handlers(app)

    app.add_middleware(_Measure, access=settings.access_log)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # The router's path pattern stops at a newline, so a route path with control
        # characters would not reach the routes' own check: answer as that check does.
        # (The scope's path: request.url drops newlines, as urllib.parse does.)
        # The token comes first, as on every other route: no caller learns anything without it.
        path = str(request.scope.get("path", ""))
        if exc.status_code == 404 and path.startswith("/api/routes/") and has_control(path):
            if not check_token(settings, request.headers.get("authorization")):
                return _error(403, "missing or wrong token")
            return _error(400, "route path contains control characters")
        return _error(exc.status_code, str(exc.detail))

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Authorized])
    async def openapi() -> JSONResponse:
        return JSONResponse(
            get_openapi(title=app.title, version=app.version, description=app.description,
                        routes=app.routes)
        )

    app.include_router(routes.router)
    app.include_router(clusters.router)
    app.include_router(health.router)
    return app
