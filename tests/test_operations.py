"""Operations: warm-up wait, metrics, probes, and a schemathesis run against the OpenAPI."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import schemathesis.core.jsonschema.patterns  # noqa: F401 - see test_schemathesis_finds_no_5xx

from federation.testing.harness import ServiceThread

from .conftest import CONTEXTS, TOKEN, fast_settings
from .routing.evaluator import route

HEADERS = {"Authorization": f"token {TOKEN}"}


class FakeGateway:
    """An ingress gateway stand-in: routes each request over the VirtualServices stored in one
    emulated cluster (with the Istio evaluator), after a propagation delay, and answers with the
    matched rule's name in x-federation-route, as the real rule's response header does."""

    def __init__(self, server: Any, delay: float) -> None:
        self.server = server
        self.delay = delay
        self.first_seen: dict[str, float] = {}
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the base class names it
                vss = gateway.server.objects("networking.istio.io", "v1", "virtualservices", "jupyterhub")
                decision = route(vss, gateway="istio-system/jupyterhub-gateway",
                                 host=self.headers["Host"], path=self.path)
                name = decision.rule_name or ""
                seen = gateway.first_seen.setdefault(name, time.monotonic())
                self.send_response(200 if decision.matched else 404)
                if decision.matched and time.monotonic() - seen >= gateway.delay:
                    self.send_header("x-federation-route", name)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()


@pytest.mark.parametrize(("delay", "timeout", "waits", "timed_out"), [
    (0.6, 5.0, True, False),
    (30.0, 0.5, True, True),
])
def test_warmup_waits_for_the_gateway(config_path: Path, clusters, delay, timeout, waits, timed_out) -> None:
    from federation import metrics

    gateway = FakeGateway(clusters.servers[CONTEXTS["hub"]], delay)
    settings = fast_settings(config_path, warmup=True, warmup_timeout=timeout,
                             warmup_urls={"hub": gateway.url})
    before = metrics.WARMUP_TIMEOUTS.labels("hub")._value.get()
    try:
        with ServiceThread(settings) as svc, httpx.Client(headers=HEADERS, timeout=30) as http:
            start = time.monotonic()
            resp = http.post(svc.url + "/api/routes/user/alice",
                             json={"target": "https://east.hub.example.org", "user": "alice"})
            elapsed = time.monotonic() - start
            assert resp.status_code == 201
            assert elapsed >= min(delay, timeout) - 0.05
            assert elapsed < timeout + 2
    finally:
        gateway.close()
    after = metrics.WARMUP_TIMEOUTS.labels("hub")._value.get()
    assert (after - before == 1) is timed_out


def test_warmup_off_by_default(service) -> None:
    assert service.settings.warmup is False


def test_metrics(service, api) -> None:
    api.post("/api/routes/user/m", json={"target": "http://10.0.0.1:80"})
    api.get("/api/routes")
    assert httpx.get(service.url + "/metrics").status_code == 403
    text = api.get("/metrics").text
    for name in ("federation_api_requests_total", "federation_api_request_seconds",
                 "federation_kube_calls_total", "federation_kube_call_seconds", "federation_routes",
                 "federation_watch_restarts_total", "federation_cache_age_seconds"):
        assert name in text
    assert 'route="/api/routes/{path:path}",status="201"' in text
    assert 'cluster="hub",verb="create"' in text


def test_metrics_auth_can_be_turned_off(config_path: Path) -> None:
    with ServiceThread(fast_settings(config_path, metrics_auth=False)) as svc:
        assert httpx.get(svc.url + "/metrics").status_code == 200
        assert httpx.get(svc.url + "/api/routes").status_code == 403


def test_probes(service, clusters) -> None:
    assert httpx.get(service.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(service.url + "/readyz").status_code == 200


def test_readyz_waits_for_sync(config_path: Path, clusters) -> None:
    for s in clusters.servers.values():
        s.latency = 0.4
    svc = ServiceThread(fast_settings(config_path))
    svc.start()
    try:
        assert httpx.get(svc.url + "/readyz").status_code == 503
        svc.wait_ready()
    finally:
        svc.stop()
        for s in clusters.servers.values():
            s.latency = 0


def test_schemathesis_finds_no_5xx(service) -> None:
    # schemathesis and the module it imports lazily are imported with this module, at
    # collection: pytest rewrites a plugin's modules as they are imported, and doing that
    # after another test has hit a RecursionError trips a CPython 3.11 AST bug (SystemError).
    from hypothesis import HealthCheck, Phase, given, settings

    assert httpx.get(service.url + "/openapi.json").status_code == 403
    assert httpx.get(service.url + "/docs").status_code == 404
    schema = schemathesis.openapi.from_url(service.url + "/openapi.json", headers=HEADERS)
    failures: list[str] = []
    calls = [0]

    def make_check(operation: Any) -> Any:
        @given(operation.as_strategy())
        @settings(max_examples=25, deadline=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            case.headers = {**(case.headers or {}), **HEADERS}
            resp = case.call()
            calls[0] += 1
            # 503 is the designed answer for an unavailable cluster; anything else 5xx is a bug
            if resp.status_code >= 500 and resp.status_code != 503:
                failures.append(f"{case.method} {case.formatted_path} -> {resp.status_code}")

        return check

    operations = [op.ok() for op in schema.get_all_operations()]
    assert len(operations) >= 5
    for operation in operations:
        make_check(operation)()
    assert calls[0] >= 50
    assert not failures, failures[:5]
