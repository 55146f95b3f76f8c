"""`federation demo --hub`: a real JupyterHub spawning with MultiClusterKubeSpawner into the demo's
clusters, and what it says when something it needs is missing."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from federation import demo_hub
from federation.testing.harness import free_port


def test_without_the_hub_extra_it_says_what_to_install(monkeypatch, capsys) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "multicluster_kubespawner" else real(name, *a))
    monkeypatch.setattr(demo_hub, "find_kubectl", lambda: None)
    assert demo_hub.run_hub_demo(port=free_port(), once=True) == 2
    out = capsys.readouterr().out
    assert "pip install 'jupyterhub-federation-proxy[hub]'" in out
    assert "'multicluster_kubespawner' is not installed" in out
    assert "kubectl is not on PATH" in out
    assert "'jupyterhub' is not installed" not in out


@pytest.mark.slow
def test_the_hub_demo_spawns_across_the_clusters_and_cleans_up(tmp_path: Path) -> None:
    if shutil.which("kubectl") is None or demo_hub.missing_requirements():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the hub demo: {demo_hub.missing_requirements()}")
        pytest.skip(f"the hub demo cannot run here: {demo_hub.missing_requirements()}")
    done = subprocess.run(
        [sys.executable, "-m", "federation.cli", "demo", "--hub", "--once", "--port",
         str(free_port())], env={**os.environ, "TMPDIR": str(tmp_path)}, capture_output=True,
        text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for user, server, profile in demo_hub.USERS:
        path = f"/user/{user}" + (f"/{server}" if server else "")
        (line,) = [line for line in out.splitlines() if line.strip().startswith(f"{path}:")]
        assert f"route in {profile} to the Service" in line, line
        assert ("(edge)" in line) == (profile != "hub"), line
        assert f"profile {profile}" in out
    assert "/user/bob/gpu        -> http://west.demo.example.org:8080" in out
    assert list(tmp_path.iterdir()) == [], "the demo left files behind"
