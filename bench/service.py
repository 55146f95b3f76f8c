"""``federation serve`` as a separate process, so its memory, CPU time and event loop are its
own: the emulated clusters and the load generators stay in the harness process."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from federation.testing.harness import free_port

TOKEN = "bench-proxy-token-0123456789"
LIST_POLL = 0.05  # seconds between table reads while waiting for the whole table


def federation_command() -> list[str]:
    script = Path(sys.executable).with_name("federation")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "federation.cli"]


class ServiceProcess:
    """One service process; ``profile`` runs it under cProfile, written when it stops."""

    def __init__(self, config: Path, *, profile: Path | None = None, log: Path | None = None,
                 sources: Path | None = None, env: dict[str, str] | None = None,
                 expect_routes: int | None = None):
        self.config = config
        self.env = dict(env or {})  # extra FEDERATION_* settings
        # When set, start() also waits until GET /api/routes lists this many routes.
        self.expect_routes = expect_routes
        self.sources = sources  # a directory holding the federation/ package to run
        self.profile = profile
        self.log_path = log
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.ps: psutil.Process | None = None
        self.ready_seconds = float("nan")
        self.listed_seconds = float("nan")  # spawn to the whole table listed (expect_routes)
        self.start_peak_rss = 0  # the high-water mark of RSS once started (and listed)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> float:
        """Start and wait for /readyz 200 (and, with ``expect_routes``, for GET /api/routes to
        list them all); returns the seconds from spawn to ready."""
        if self.profile is not None:
            cmd = [sys.executable, "-m", "cProfile", "-o", str(self.profile), "-m", "federation.cli"]
        else:
            cmd = federation_command()
        cmd += ["serve", "--config", str(self.config), "--host", "127.0.0.1",
                "--port", str(self.port)]
        # Production defaults, except quieter logs; only the token is required.
        env = {**os.environ, "CONFIGPROXY_AUTH_TOKEN": TOKEN, "FEDERATION_LOG_LEVEL": "warning",
               **self.env}
        if self.sources is not None:
            # Ahead of the editable install; the cwd must not hold another federation/.
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.sources),
                                                              env.get("PYTHONPATH")]))
        self.ready_seconds = self.listed_seconds = float("nan")
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        start = time.perf_counter()
        self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                     cwd=self.sources or self.config.parent)
        self.ps = psutil.Process(self.proc.pid)
        deadline = start + timeout
        last_list = 0.0
        headers = {"Authorization": f"token {TOKEN}"}
        with httpx.Client(timeout=30) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"federation serve exited with {self.proc.returncode}{self._log_tail()}"
                    )
                now = time.perf_counter()
                try:
                    if (math.isnan(self.ready_seconds)
                            and client.get(self.url + "/readyz").status_code == 200):
                        self.ready_seconds = time.perf_counter() - start
                    # The table read is heavier: asked at most every LIST_POLL seconds.
                    if (self.expect_routes is not None and math.isnan(self.listed_seconds)
                            and now - last_list >= LIST_POLL):
                        last_list = now
                        response = client.get(self.url + "/api/routes", headers=headers)
                        if (response.status_code == 200
                                and len(response.json()) >= self.expect_routes):
                            self.listed_seconds = time.perf_counter() - start
                except httpx.HTTPError:
                    pass
                if not math.isnan(self.ready_seconds) and (
                        self.expect_routes is None or not math.isnan(self.listed_seconds)):
                    break
                if time.perf_counter() > deadline:
                    self.stop()
                    raise RuntimeError(f"federation serve did not become ready{self._log_tail()}")
                time.sleep(0.005)
        self.start_peak_rss = self.peak_rss()
        return self.ready_seconds

    def _log_tail(self, lines: int = 5) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        tail = self.log_path.read_text(errors="replace").strip().splitlines()[-lines:]
        return ": " + " | ".join(tail) if tail else ""

    def peak_rss(self) -> int:
        """The high-water mark of resident memory (Linux; 0 where unknown)."""
        assert self.proc is not None
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def rss(self) -> int:
        assert self.ps is not None
        return int(self.ps.memory_info().rss)

    def cpu_seconds(self) -> float:
        assert self.ps is not None
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def stop(self, timeout: float = 20.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        # SIGINT: uvicorn shuts down cleanly, and cProfile writes its stats on the way out.
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> ServiceProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
