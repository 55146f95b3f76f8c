"""The demo as a newcomer uses it: kubectl reads its clusters, `federation check` passes on them,
stopping it (Ctrl-C, SIGTERM, an error) leaves nothing in the temporary directory."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from federation import demo
from federation.testing.harness import free_port

FEDERATION = [sys.executable, "-u", "-m", "federation"]
# As a background job of a non-interactive shell runs it: SIGINT inherited as ignored.
SIGINT_IGNORED = ["/bin/sh", "-c", 'trap "" INT; exec "$@"', "sh"]
# A shell without the venv on PATH: the printed lines must work as printed.
BARE_PATH = "/usr/local/bin:/usr/bin:/bin"


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI must run the kubectl test: scripts/test.sh installs kubectl")
        pytest.skip("kubectl is not installed on this machine (scripts/test.sh installs it in CI)")
    return path


def start_demo(tmp: Path, *extra: str) -> tuple[subprocess.Popen, list[str]]:
    """`federation demo` with its own TMPDIR and SIGINT ignored at start; returns the process
    and its output up to the 'press Ctrl-C' line."""
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = subprocess.Popen(SIGINT_IGNORED + FEDERATION + ["demo", "--port", str(free_port()), *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 90
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith("press Ctrl-C"):
            return proc, lines
        assert time.monotonic() < deadline
    proc.wait(5)
    raise AssertionError("demo ended early:\n" + "\n".join(lines))


def stop(proc: subprocess.Popen, sig: int) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()


def printed(out: list[str], start: str) -> list[str]:
    """The printed command line that starts with ``start`` (after its label), as argv."""
    (line,) = [line for line in out if start in line]
    return shlex.split(line[line.index(start):])


def run_printed(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(tmp_path), "PATH": BARE_PATH}  # kubectl's cache stays here
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)


def test_kubectl_and_check_work_on_the_demo_and_it_cleans_up(tmp_path: Path) -> None:
    binary = kubectl()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc, out = start_demo(tmp)
    try:
        args = printed(out, "kubectl --kubeconfig")
        listed = run_printed([binary, *args[1:]], tmp_path)
        assert listed.returncode == 0, listed.stderr
        assert "jupyterhub-root" in listed.stdout and "jupyterhub-d2s0-0" in listed.stdout
        # read the objects back: east holds alice's route to her own Service
        as_json = run_printed([binary, *args[1:], "-o", "json"], tmp_path)
        items = {o["metadata"]["name"]: o for o in json.loads(as_json.stdout)["items"]}
        (rule,) = items["jupyterhub-d2s0-0"]["spec"]["http"][0]["route"]
        assert rule["destination"]["host"] == "jupyter-alice.jupyter-users.svc.cluster.local"
        assert items["jupyterhub-root"]["spec"]["gateways"] == ["istio-system/jupyterhub-gateway"]

        # the check line runs as printed, from a shell where the venv is not on PATH
        check = run_printed(printed(out, f"{sys.executable} -m federation check"), tmp_path)
        assert check.returncode == 0, check.stdout + check.stderr
        assert "FAIL" not in check.stdout and check.stdout.count("ok   gateway exists") == 3
        if shutil.which("curl"):
            table = run_printed(printed(out, "curl -H"), tmp_path)
            assert table.returncode == 0 and "/user/alice" in json.loads(table.stdout)
    finally:
        code = stop(proc, signal.SIGINT)  # SIGINT although it was ignored at start
    assert code == 0
    assert list(tmp.iterdir()) == [], "the demo left files behind"


def test_the_gateway_api_demo_passes_check(tmp_path: Path) -> None:
    binary = kubectl()
    proc, out = start_demo(tmp_path, "--backend", "gateway-api")
    try:
        assert "backend: gateway-api" in out[0]
        check = run_printed(printed(out, f"{sys.executable} -m federation check"), tmp_path)
        assert check.returncode == 0, check.stdout + check.stderr
        for passed in ("Gateway Programmed", "Gateway admits our routes", "create and delete HTTPRoutes"):
            assert check.stdout.count(f"ok   {passed}") == 3, check.stdout
        listed = run_printed([binary, *printed(out, "kubectl --kubeconfig")[1:], "-o", "json"],
                             tmp_path)
        assert listed.returncode == 0, listed.stderr
        (route,) = json.loads(listed.stdout)["items"]  # east holds alice's HTTPRoute
        (ref,) = route["spec"]["rules"][0]["backendRefs"]
        assert (ref["namespace"], ref["name"]) == ("jupyter-users", "jupyter-alice")
    finally:
        stop(proc, signal.SIGTERM)


def test_sigterm_also_cleans_up(tmp_path: Path) -> None:
    proc, _ = start_demo(tmp_path)
    assert any(tmp_path.iterdir())  # the folder exists while the demo runs
    stop(proc, signal.SIGTERM)
    assert list(tmp_path.iterdir()) == []


def test_an_error_cleans_up(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def broken(*args: object) -> None:
        raise RuntimeError("gateway refused")

    monkeypatch.setattr(demo, "install_gateways", broken)
    with pytest.raises(RuntimeError, match="gateway refused"):
        demo.run_demo(port=free_port(), once=True)
    assert list(tmp_path.iterdir()) == []


def test_the_printout_says_why_each_route_is_where_it_is(tmp_path: Path) -> None:
    from federation.config import parse_registry

    registry = parse_registry(demo.demo_config(tmp_path / "kubeconfig"), check_kubeconfig=False)
    reasons = {path: demo.why(registry, path, body) for path, body in demo.SAMPLE_ROUTES}
    assert "east's ingressPublicUrl" in reasons["/user/alice"]
    assert "(edge)" in reasons["/user/alice"] and "jupyter-alice.jupyter-users" in reasons["/user/alice"]
    assert "west's ingressPublicUrl" in reasons["/user/bob/gpu"]
    assert "home cluster (hub)" in reasons["/user/carol"] and "pod IP" in reasons["/user/carol"]
    assert "home cluster (hub)" in reasons["/"]
    pinned = demo.why(registry, "/user/dan", {"target": "http://10.0.0.1:8888", "cluster": "west"})
    assert "names cluster west" in pinned
