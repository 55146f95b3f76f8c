"""A real Prometheus server (Debian's ``prometheus`` package) scraping a stand-in for an Istio
ingress gateway's metrics, for the activity tests.

Where the binary is missing the tests skip with the reason, except in CI (``CI=true``), where
they fail: scripts/test.sh installs the package there.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest

from federation.testing.harness import free_port, serve_http, wait_for

SCRAPE_INTERVAL = 0.2  # seconds; the tests read activity every 0.5 s


def prometheus_binary(search_path: str | None = None) -> str:
    """The prometheus binary: $FEDERATION_PROMETHEUS, else on PATH or in /usr/bin (Debian's)."""
    if search_path is None:
        search_path = os.environ.get("PATH", "") + os.pathsep + "/usr/bin"
    path = os.environ.get("FEDERATION_PROMETHEUS") or shutil.which("prometheus", path=search_path)
    if path is None:
        reason = "the prometheus binary is missing (apt-get install prometheus; scripts/test.sh does it as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


class GatewayMetrics:
    """What an Istio ingress gateway's /stats/prometheus shows: ``istio_requests_total`` by
    reporter, source_workload, destination_service and response_code."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, str, str], int] = {}
        self.lock = threading.Lock()
        metrics = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = metrics.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd, self.thread = serve_http(Handler)
        self.port = self.httpd.server_address[1]

    def hit(
        self,
        destination: str,
        count: int = 1,
        code: str = "200",
        reporter: str = "source",
        workload: str = "istio-ingressgateway",
    ) -> None:
        """``count`` requests to ``destination`` seen by ``workload``."""
        with self.lock:
            key = (reporter, workload, destination, code)
            self.counts[key] = self.counts.get(key, 0) + count

    def render(self) -> str:
        lines = ["# TYPE istio_requests_total counter"]
        with self.lock:
            for (reporter, workload, dest, code), value in sorted(self.counts.items()):
                lines.append(
                    f'istio_requests_total{{reporter="{reporter}",source_workload="{workload}",'
                    f'source_workload_namespace="istio-system",destination_service="{dest}",'
                    f'response_code="{code}",request_protocol="http"}} {value}'
                )
        return "\n".join(lines) + "\n"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Prometheus:
    """``prometheus`` on a loopback port, scraping the gateway stand-in every 0.2 s."""

    def __init__(self, directory: Path, target_port: int) -> None:
        self.binary = prometheus_binary()
        self.directory = directory
        self.port = free_port()
        self.config = directory / "prometheus.yml"
        self.config.write_text(
            "global:\n"
            f"  scrape_interval: {int(SCRAPE_INTERVAL * 1000)}ms\n"
            f"  scrape_timeout: {int(SCRAPE_INTERVAL * 750)}ms\n"
            "scrape_configs:\n"
            "  - job_name: istio-ingressgateway\n"
            "    metrics_path: /stats/prometheus\n"
            "    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target_port}']\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        self.starts += 1
        log = open(self.directory / f"prometheus-{self.starts}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [self.binary, f"--config.file={self.config}",
             f"--storage.tsdb.path={self.directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        started = time.time()
        # Ready is not enough: target discovery reaches the scraper a few seconds later, and the
        # tests need the gateway scraped all along, as it is in a running mesh.
        while not self._scraped_since(started):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"prometheus did not start scraping:\n{self.log()}")
            time.sleep(0.05)

    def _scraped_since(self, started: float) -> bool:
        try:
            r = httpx.get(self.url + "/api/v1/query", params={"query": "timestamp(up == 1)"}, timeout=1)
            return any(float(s["value"][1]) > started for s in r.json()["data"]["result"])
        except (httpx.HTTPError, ValueError, KeyError):
            return False

    def log(self) -> str:
        return (self.directory / f"prometheus-{self.starts}.log").read_text(errors="replace")

    def pause(self) -> None:
        """Hung: connections are accepted by the kernel, nothing answers, nothing is scraped."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def value(self, destination: str) -> float:
        """The latest scraped count of gateway requests to ``destination`` (0 if none)."""
        query = f'sum(istio_requests_total{{destination_service="{destination}"}})'
        result = httpx.get(self.url + "/api/v1/query", params={"query": query}, timeout=5).json()
        series = result["data"]["result"]
        return float(series[0]["value"][1]) if series else 0.0

    def wait_scraped(self, destination: str, at_least: float, timeout: float = 10.0) -> None:
        wait_for(lambda: self.value(destination) >= at_least,
                 f"prometheus to scrape {at_least} requests to {destination}", timeout)


@contextmanager
def running_prometheus(directory: Path) -> Iterator[tuple[Prometheus, GatewayMetrics]]:
    """The gateway stand-in and a Prometheus scraping it, both stopped afterwards."""
    gateway = GatewayMetrics()
    directory.mkdir(parents=True, exist_ok=True)
    prometheus = Prometheus(directory, gateway.port)
    try:
        prometheus.start()
        yield prometheus, gateway
    finally:
        prometheus.stop()
        gateway.stop()
