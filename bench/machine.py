"""The machine and software a benchmark ran on, for the report's header."""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        return "not installed"
    try:
        return subprocess.run([node, "--version"], capture_output=True, text=True,
                              timeout=10, check=False).stdout.strip()
    except OSError:
        return "unknown"


def source_digest(root: Path = REPO) -> str:
    """A digest of the service's sources under ``root``: which code the figures belong to."""
    digest = hashlib.sha256()
    for path in sorted((root / "federation").rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def snapshot_sources(directory: Path) -> Path:
    """Copy federation/ into ``directory``: every service process of a run imports this copy
    (PYTHONPATH), so the figures belong to one version even if the tree is edited meanwhile."""
    shutil.copytree(REPO / "federation", directory / "federation",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return directory


def machine(latency: float, sources: Path = REPO) -> dict[str, str]:
    logical = os.cpu_count() or 0
    physical = psutil.cpu_count(logical=False) or logical
    return {
        "CPU": f"{_cpu_model()}, {logical} logical cores ({physical} physical)",
        "Memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "Packages": ", ".join(f"{p} {_version(p)}" for p in
                              ("fastapi", "uvicorn", "kubernetes", "httpx", "jupyterhub")),
        "Node.js": _node(),
        "Kubernetes API latency": f"{latency * 1000:g} ms added to every request",
        "Service sources": f"federation/ sha256 {source_digest(sources)} (a snapshot taken "
        "at the start; every service process ran it)",
    }
