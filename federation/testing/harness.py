"""Running the service in-process on a loopback port (tests, the demo, the benchmark)."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import uvicorn
import yaml

from ..app import create_app
from ..settings import Settings


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def write_clusters_yaml(path: str | Path, document: dict[str, Any]) -> Path:
    path = Path(path)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def serve_http(handler: type[BaseHTTPRequestHandler], host: str = "127.0.0.1",
               tls: tuple[Path, Path] | None = None
               ) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """A stand-in HTTP(S) server on a free port of ``host``, served from a daemon thread
    (``tls``: its certificate and key files). Stop it with ``shutdown()``."""
    httpd = ThreadingHTTPServer((host, 0), handler)
    httpd.daemon_threads = True
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls[0]), str(tls[1]))
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    return httpd, thread


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Poll ``predicate`` until it returns something true (returned), or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def wait_until_ready(url: str, timeout: float = 30.0) -> None:
    """Poll ``url``/readyz until it answers 200 (a starting process refuses connections)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not become ready in {timeout:.0f}s")


def answering_host(bind: str) -> str:
    """The host part of a URL that reaches a server bound to ``bind``: loopback for a wildcard
    bind, brackets around an IPv6 address."""
    if bind in ("", "0.0.0.0"):
        return "127.0.0.1"
    if bind == "::":
        return "[::1]"
    return f"[{bind}]" if ":" in bind else bind


class ServiceThread:
    """``federation serve`` in a background thread, for callers that need a real HTTP port."""

    def __init__(
        self, settings: Settings, host: str = "127.0.0.1", port: int | None = None
    ) -> None:
        self.settings = settings
        self.host = host
        self.port = port or free_port(host)
        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app,
            host=host,
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        # Signal handlers can only be installed from the main thread.
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign,attr-defined]
        self.thread = threading.Thread(target=self.server.run, name="federation-serve", daemon=True)

    @property
    def url(self) -> str:
        """An address that answers: a wildcard bind (0.0.0.0, ::) is reached on loopback."""
        return f"http://{answering_host(self.host)}:{self.port}"

    @property
    def federation(self) -> Any:
        return self.app.state.federation

    def run(self, coro: Any, timeout: float = 60.0) -> Any:
        """Run a coroutine on the service's own event loop (the cache lives there)."""
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.app.state.loop).result(timeout)

    def start(self, timeout: float = 20.0) -> ServiceThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the service did not start")
            time.sleep(0.01)
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        wait_until_ready(self.url, timeout)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    def __enter__(self) -> ServiceThread:
        self.start()
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
