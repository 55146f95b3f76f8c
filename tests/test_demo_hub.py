"""`federation demo --hub`: a real JupyterHub spawning with MultiClusterKubeSpawner into the demo's
clusters, and what it says when something it needs is missing."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from federation import demo_hub
from federation.testing.harness import ServiceThread, answering_host, free_port, wait_for


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


def test_the_printed_addresses_answer_as_printed(capsys) -> None:
    """The hub's login page and REST API are printed on the hub's own address, with no double
    slash (/hub/api//users is a 404)."""
    hub = SimpleNamespace(url="http://127.0.0.1:8081", token="driver-t", log_path="/x/hub.log")
    stack = SimpleNamespace(hub=hub, service=SimpleNamespace(url="http://127.0.0.1:8001"),
                            hub_kubeconfig="/x/hub/kubeconfig",
                            clusters=SimpleNamespace(kubeconfig="/x/clusters/kubeconfig"))
    demo_hub._print_try_lines(stack)  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert "log in: http://127.0.0.1:8081/hub/login " in out
    assert "http://127.0.0.1:8081/hub/api/users\n" in out
    assert not re.search(r"[^:]//", out.replace("http://", "")), out


@pytest.mark.parametrize(("bind", "host"), [("0.0.0.0", "127.0.0.1"), ("", "127.0.0.1"),
                                            ("::", "[::1]"), ("::1", "[::1]"),
                                            ("127.0.0.1", "127.0.0.1"), ("10.1.2.3", "10.1.2.3")])
def test_a_wildcard_bind_is_reached_on_loopback(bind: str, host: str) -> None:
    assert answering_host(bind) == host


def test_the_service_url_answers_for_a_wildcard_bind(tmp_path: Path) -> None:
    """The hub is given the service's URL as its proxy api_url: never http://0.0.0.0:..."""
    from .conftest import fast_settings

    svc = ServiceThread(fast_settings(tmp_path / "clusters.yaml"), host="0.0.0.0", port=18001)
    assert svc.url == "http://127.0.0.1:18001"


def _read_until(proc: subprocess.Popen[str], marker: str) -> str:
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if marker in line:
            return "".join(lines)
    raise AssertionError(f"the demo ended before {marker!r}:\n{''.join(lines)}")


def _log_in_and_spawn(hub_url: str, user: str, profile: str) -> list[str]:
    """What a browser does: the login form, the spawn form with a profile; every redirect it
    is sent to (each must be the hub's own address, which answers)."""
    seen = []
    with httpx.Client(base_url=hub_url, timeout=30) as browser:
        browser.event_hooks["response"] = [lambda r: seen.append(r.headers.get("location", ""))]
        page = browser.get("/hub/login")
        assert page.status_code == 200
        login = browser.post("/hub/login", data={"username": user, "password": "any",
                                                 "_xsrf": browser.cookies["_xsrf"]},
                             follow_redirects=True)
        assert login.status_code == 200 and login.url.path == "/hub/spawn", login.url
        assert f"value='{profile}'" in login.text, "the spawn page offers the cluster profiles"
        (xsrf,) = re.findall(r'xsrf_token: "([^"]+)"', login.text)
        spawn = browser.post("/hub/spawn", data={"profile": profile, "_xsrf": xsrf})
        assert spawn.status_code == 302 and spawn.headers["location"].startswith(
            "/hub/spawn-pending/"), spawn
        home = browser.get("/hub/home")
        assert home.status_code == 200 and str(home.url).startswith(hub_url)
    return [url for url in seen if url]


@pytest.mark.slow
def test_the_hub_demo_spawns_across_the_clusters_and_cleans_up(tmp_path: Path) -> None:
    if shutil.which("kubectl") is None or demo_hub.missing_requirements():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the hub demo: {demo_hub.missing_requirements()}")
        pytest.skip(f"the hub demo cannot run here: {demo_hub.missing_requirements()}")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "federation.cli", "demo", "--hub", "--host", "0.0.0.0", "--port",
         str(port)], env={**os.environ, "TMPDIR": str(tmp_path)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        out = _read_until(proc, "press Ctrl-C")
        for user, server, profile in demo_hub.USERS:
            path = f"/user/{user}" + (f"/{server}" if server else "")
            (line,) = [line for line in out.splitlines() if line.strip().startswith(f"{path}:")]
            assert f"route in {profile} to the Service" in line, line
            assert ("(edge)" in line) == (profile != "hub"), line
            assert f"profile {profile}" in out
        assert "/user/bob/gpu        -> http://west.demo.example.org:8080" in out
        assert f"federation proxy API on http://127.0.0.1:{port} " in out, "not 0.0.0.0"
        (hub_url,) = re.findall(r"log in: (http://127\.0\.0\.1:\d+)/hub/login ", out)
        (api_line,) = [line for line in out.splitlines() if "the hub's REST API" in line]
        token, users_url = re.findall(r"token (\S+)' (\S+)$", api_line)[0]
        assert users_url == f"{hub_url}/hub/api/users"
        users = httpx.get(users_url, headers={"Authorization": f"token {token}"}).json()
        assert {u["name"] for u in users} >= {"alice", "bob", "carol"}

        redirects = _log_in_and_spawn(hub_url, "dave", "east")
        assert redirects and all(u.startswith(("/", hub_url)) for u in redirects), redirects

        def dave_route() -> str | None:
            routes = httpx.get(f"http://127.0.0.1:{port}/api/routes",
                               headers={"Authorization": f"token {demo_hub.TOKEN}"}).json()
            return routes.get("/user/dave", {}).get("target")

        assert wait_for(dave_route, "dave's route", 60) == "http://east.demo.example.org:80"

        (log_line,) = [line for line in out.splitlines() if "the hub's log" in line]
        hub_log = Path(log_line.split()[-1]).read_text()
        assert "Received unhandled user_options" not in hub_log
        assert "Detected possible direct connection" not in hub_log
    finally:
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest + err
    assert "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == [], "the demo left files behind"
