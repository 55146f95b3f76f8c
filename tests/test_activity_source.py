"""One cluster's activity source against a real HTTPS server standing in for Prometheus's API:
what each read asks, the credentials it sends, and that they are never shown or logged."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from federation.activity import ActivityMonitor, ActivitySource
from federation.config import Activity, parse_registry
from federation.model import Entry
from federation.table import RouteTable

from .conftest import base_config, fast_settings

make_tls = pytest.importorskip("tests.e2e.test_real_hub").make_tls

T0 = 1_800_000_000.0
TOKEN = "tok-first-0123456789"
ROTATED = "tok-rotated-9876543210"


class FakePrometheus:
    """HTTPS on loopback: records each query_range request and answers ``self.answer``."""

    def __init__(self, tls: tuple[Path, Path]) -> None:
        import ssl

        self.requests: list[dict[str, Any]] = []
        self.answer: tuple[int, dict[str, Any]] = (200, matrix("a.svc", T0))
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                fake.requests.append({"path": self.path, "headers": dict(self.headers), "form": form})
                status, body = fake.answer
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls[0]), str(tls[1]))
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def matrix(dest: str, ts: float) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {"destination_service": dest}, "values": [[ts, "1"]]}]}}


@pytest.fixture
def tls(tmp_path: Path) -> tuple[Path, Path, Path]:
    return make_tls(tmp_path, "localhost")  # type: ignore[no-any-return]


@pytest.fixture
def prom(tls: tuple[Path, Path, Path]) -> Iterator[FakePrometheus]:
    server = FakePrometheus((tls[1], tls[2]))
    yield server
    server.stop()


def source_for(prom: FakePrometheus, tmp_path: Path, ca: Path | None, **extra: Any) -> ActivitySource:
    token = tmp_path / "token"
    if not token.exists():
        token.write_text(TOKEN + "\n")
    values: dict[str, Any] = {
        "prometheus_url": f"https://localhost:{prom.port}/prometheus/", "query": None,
        "gateway_workload": "istio-ingressgateway", "bearer_token_file": str(token),
        "ca_file": None if ca is None else str(ca), "timeout": 2.0,
        "headers": (("X-Scope-OrgID", "hub"),),
    }
    values.update(extra)
    return ActivitySource("east", Activity(**values))


def test_a_read_asks_one_range_query_with_token_and_headers(
    prom: FakePrometheus, tls: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    async def reads() -> list[dict[str, float]]:
        source = source_for(prom, tmp_path, tls[0])
        try:
            first = await source.read(T0 + 7, 60, 600)
            (tmp_path / "token").write_text(ROTATED)  # rotated in place, as a mounted Secret is
            second = await source.read(T0 + 65, 60, 600)
            return [first, second]
        finally:
            await source.close()

    assert asyncio.run(reads()) == [{"a.svc": T0}, {"a.svc": T0}]
    first, second = prom.requests
    assert first["path"] == "/prometheus/api/v1/query_range"
    assert first["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert first["headers"]["X-Scope-OrgID"] == "hub"
    assert second["headers"]["Authorization"] == f"Bearer {ROTATED}"
    # The first read recovers the recent past; the next one starts at the last point read.
    assert (float(first["form"]["start"]), float(first["form"]["end"])) == (T0 - 600, T0)
    assert (float(second["form"]["start"]), float(second["form"]["end"])) == (T0, T0 + 60)
    assert float(first["form"]["step"]) == 60
    assert "offset 60000ms" in first["form"]["query"]


def test_failures_name_the_cause_and_never_the_token(
    prom: FakePrometheus, tls: tuple[Path, Path, Path], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    entry = Entry("/user/a", "https://east.hub.example.org", "east", {"user": "a"},
                  "2027-01-15T08:00:00.000Z")
    registry = parse_registry(base_config(), check_kubeconfig=False)
    table = RouteTable()
    table.update("east", "/user/a", entry)
    monitor = ActivityMonitor(lambda: registry, table, fast_settings(tmp_path / "c.yaml"))

    async def read(source: ActivitySource) -> dict[str, Any]:
        try:
            await monitor._read(registry, source)
            return source.describe()
        finally:
            await source.close()

    caplog.set_level(logging.INFO, logger="federation.activity")
    prom.answer = (401, {"message": "unauthorized"})
    state = asyncio.run(read(source_for(prom, tmp_path, tls[0])))
    assert (state["state"], state["last_error"]) == (
        "failing", f"HTTP 401 from https://localhost:{prom.port}/prometheus/api/v1/query_range")
    prom.answer = (400, {"status": "error", "errorType": "bad_data", "error": "parse error"})
    assert asyncio.run(read(source_for(prom, tmp_path, tls[0])))["last_error"] == (
        "query refused: parse error")
    prom.answer = (200, {"status": "success", "data": {"resultType": "matrix", "result": "x"}})
    assert "not a list of series" in asyncio.run(read(source_for(prom, tmp_path, tls[0])))["last_error"]
    # Without the CA that signed the server's certificate, the connection is refused.
    untrusted = asyncio.run(read(source_for(prom, tmp_path, None)))
    assert untrusted["state"] == "failing" and "CERTIFICATE_VERIFY_FAILED" in untrusted["last_error"]
    missing = str(tmp_path / "unmounted-token")
    unreadable = asyncio.run(read(source_for(prom, tmp_path, tls[0], bearer_token_file=missing)))
    assert unreadable["last_error"].startswith("cannot read bearerTokenFile")
    garbled = tmp_path / "garbled-ca.pem"  # replaced since the config was loaded
    garbled.write_text("not a certificate")
    assert asyncio.run(read(source_for(prom, tmp_path, garbled)))["last_error"] == (
        f"cannot load caFile {garbled}")
    assert len(prom.requests) == 3  # none over an unverified connection, none without its token

    shown = json.dumps(state) + caplog.text
    assert "cannot read the activity of east" in caplog.text
    assert TOKEN not in shown and "Bearer" not in shown
    assert table.get("/user/a") is entry and table.public(entry)["last_activity"] == entry.last_activity
