"""configurable-http-proxy, the reference the service's table read is compared with."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import psutil

from federation.testing.harness import free_port

from .service import TOKEN

REPO = Path(__file__).resolve().parents[1]
# Its own prefix: npm prunes packages it did not install itself, and <repo>/.tools also holds
# the helm binary the chart tests install with --no-save; sharing the prefix would delete it.
PREFIX = REPO / ".tools" / "chp"
BINARY = PREFIX / "node_modules" / ".bin" / "configurable-http-proxy"


def find_chp(install: bool = True) -> tuple[Path | None, str]:
    """The CHP executable, installed with npm when missing; (None, why) when unavailable."""
    if BINARY.exists():
        return BINARY, ""
    on_path = shutil.which("configurable-http-proxy")
    if on_path:
        return Path(on_path), ""
    if not install:
        return None, "configurable-http-proxy is not installed"
    if shutil.which("npm") is None or shutil.which("node") is None:
        return None, "node/npm are not installed"
    PREFIX.mkdir(parents=True, exist_ok=True)
    try:
        # Short fetch timeouts: an offline machine leaves CHP out quickly instead of hanging.
        result = subprocess.run(
            ["npm", "install", "--prefix", str(PREFIX), "--no-audit", "--no-fund",
             "--loglevel=error", "--fetch-timeout=20000", "--fetch-retries=1",
             "configurable-http-proxy"],
            capture_output=True, text=True, timeout=180, check=False,
        )
    except subprocess.TimeoutExpired:
        return None, "npm install configurable-http-proxy timed out"
    if result.returncode != 0 or not BINARY.exists():
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        return None, f"npm install configurable-http-proxy failed: {tail[0]}"
    return BINARY, ""


def chp_version(binary: Path) -> str:
    package = binary.resolve().parents[1] / "package.json"
    try:
        return str(json.loads(package.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return "unknown"


class CHPProcess:
    """One configurable-http-proxy on loopback, with the same token as the service."""

    def __init__(self, binary: Path) -> None:
        self.binary = binary
        self.port = free_port()
        self.api_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self, timeout: float = 30.0) -> None:
        cmd = [str(self.binary), "--ip", "127.0.0.1", "--port", str(self.port),
               "--api-ip", "127.0.0.1", "--api-port", str(self.api_port),
               "--default-target", "http://127.0.0.1:9", "--log-level", "error"]
        env = {**os.environ, "CONFIGPROXY_AUTH_TOKEN": TOKEN}
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        headers = {"Authorization": f"token {TOKEN}"}
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"configurable-http-proxy exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/api/routes", headers=headers).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("configurable-http-proxy did not start")

    def rss(self) -> int:
        assert self.proc is not None
        return int(psutil.Process(self.proc.pid).memory_info().rss)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> CHPProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
