"""The ``federation`` command as an operator runs it (real subprocesses)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from federation.testing.harness import free_port, wait_for, wait_until_ready

from .conftest import CONTEXTS, TOKEN, base_config

FEDERATION = [sys.executable, "-m", "federation.cli"]


def run(args: list[str], env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "CONFIGPROXY_AUTH_TOKEN"}
    full_env.update(env or {})
    return subprocess.run(FEDERATION + args, capture_output=True, text=True, env=full_env, timeout=timeout)


def test_serve_refuses_to_start_without_a_token(config_path: Path) -> None:
    result = run(["serve", "--config", str(config_path)])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "CONFIGPROXY_AUTH_TOKEN is not set" in lines[0] and "--no-auth" in lines[0]


def test_serve_refuses_a_broken_config(tmp_path: Path, clusters) -> None:
    doc = base_config(str(clusters.kubeconfig))
    doc["clusters"][1]["context"] = "typo-context"
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = run(["serve", "--config", str(path)], env={"CONFIGPROXY_AUTH_TOKEN": TOKEN})
    assert result.returncode == 2
    assert str(path) in result.stderr
    assert "clusters[east].context" in result.stderr and "typo-context" in result.stderr
    assert "token-" not in result.stderr  # kubeconfig credentials never shown


def test_serve_answers_the_hub(config_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        FEDERATION + ["serve", "--config", str(config_path), "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, "CONFIGPROXY_AUTH_TOKEN": TOKEN}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(url)
        headers = {"Authorization": f"token {TOKEN}"}
        assert httpx.post(url + "/api/routes/user/x", json={"target": "http://10.0.0.1:8888"},
                          headers=headers).status_code == 201
        assert httpx.get(url + "/api/routes", headers=headers).json()["/user/x"]["target"] == \
            "http://10.0.0.1:8888"
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert TOKEN not in out


def test_demo_prints_placement() -> None:
    port = free_port()
    result = run(["demo", "--once", "--port", str(port)], timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "/user/alice" in out and "cluster east" in out and "cluster west" in out
    assert "jupyter-alice.jupyter-users.svc.cluster.local:8888" in out
    assert "jupyter-bob--gpu.jupyter-users.svc.cluster.local:8888" in out
    assert "ip-10-12-3-4" in out


def test_check_reports_per_cluster(config_path: Path, clusters) -> None:
    result = run(["check", "--config", str(config_path)])
    out = result.stdout
    for name in ("hub", "east", "west"):
        assert f"{name}" in out
    assert "ok   reachable" in out
    assert "ok   create and delete VirtualServices" in out
    # the emulated clusters have no Gateway object: check says so and fails
    assert "FAIL gateway exists" in out
    assert result.returncode == 1


def test_check_names_the_url_it_could_not_reach(config_path: Path, clusters) -> None:
    server = clusters.servers[CONTEXTS["west"]]
    server.set_down(True)
    result = run(["check", "--config", str(config_path)])
    assert result.returncode == 1
    (line,) = [line for line in result.stdout.splitlines() if "FAIL reachable" in line]
    assert server.url in line and "cannot reach the API server" in line


def test_bad_settings_name_their_variables_all_at_once(config_path: Path) -> None:
    result = run(["serve", "--config", str(config_path)],
                 env={"CONFIGPROXY_AUTH_TOKEN": TOKEN, "FEDERATION_LOG_FORMAT": "xml",
                      "FEDERATION_KUBE_RETRIES": "-1"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("federation: FEDERATION_") for line in lines)
    assert any(line.startswith("federation: FEDERATION_LOG_FORMAT='xml': Input should be 'text' or 'json'")
               for line in lines)
    assert any("FEDERATION_KUBE_RETRIES='-1'" in line for line in lines)
    check = run(["check", "--config", str(config_path)], env={"FEDERATION_LOG_FORMAT": "xml"})
    assert check.returncode == 2 and "FEDERATION_LOG_FORMAT" in check.stderr
    assert "Traceback" not in check.stderr


def test_a_bad_token_setting_is_named_but_not_shown() -> None:
    from pydantic import ValidationError

    from federation.settings import Settings, describe_error

    with pytest.raises(ValidationError) as info:
        Settings(config=Path("c.yaml"), auth_token=["not-a-string-secret"])  # type: ignore[arg-type]
    (line,) = [describe_error(e) for e in info.value.errors()]
    assert line.startswith("CONFIGPROXY_AUTH_TOKEN or FEDERATION_AUTH_TOKEN: ")
    assert "not-a-string-secret" not in line


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_serve_stops_on_sigint_even_when_started_ignoring_it(config_path: Path, signum: str) -> None:
    """A background job of a non-interactive shell starts with SIGINT ignored."""
    import signal

    port = free_port()
    proc = subprocess.Popen(
        ["/bin/sh", "-c", 'trap "" INT; exec "$@"', "sh", *FEDERATION, "serve", "--config",
         str(config_path), "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, "CONFIGPROXY_AUTH_TOKEN": TOKEN}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_until_ready(f"http://127.0.0.1:{port}")
        proc.send_signal(getattr(signal, signum))
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "Traceback" not in out


def test_python_m_federation_and_help_name_both_backends() -> None:
    result = subprocess.run([sys.executable, "-m", "federation", "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and "usage: federation" in result.stdout
    assert "Istio VirtualServices" in result.stdout and "Gateway API HTTPRoutes" in result.stdout
    for command in ("serve", "check", "demo"):
        text = run([command, "--help"]).stdout
        assert "HTTPRoutes" in text and "VirtualServices" in text, command


@pytest.mark.parametrize("args", [[], ["serve"], ["bogus"]])
def test_usage_errors(args: list[str]) -> None:
    assert run(args).returncode == 2


def test_sighup_reloads_the_config(config_path: Path, clusters) -> None:
    import signal

    port = free_port()
    proc = subprocess.Popen(
        FEDERATION + ["serve", "--config", str(config_path), "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, "CONFIGPROXY_AUTH_TOKEN": TOKEN, "FEDERATION_RELOAD_INTERVAL": "3600"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"token {TOKEN}"}

    def names() -> list[str]:
        return [r["name"] for r in httpx.get(url + "/clusters", headers=headers).json()["clusters"]]

    try:
        wait_until_ready(url)
        assert names() == ["hub", "east", "west"]
        doc = base_config(str(clusters.kubeconfig))
        doc["clusters"] = doc["clusters"][:2]
        config_path.write_text(yaml.safe_dump(doc))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: names() == ["hub", "east"], "the reload to drop west", timeout=10)
        assert proc.poll() is None  # still serving
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_version() -> None:
    from federation import __version__

    result = run(["--version"])
    assert result.returncode == 0 and result.stdout.strip() == f"federation {__version__}"


@pytest.mark.parametrize("command", ["serve", "check", "demo"])
def test_help_explains_every_option_with_its_default(command: str) -> None:
    from federation.cli import build_parser

    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    text = run([command, "--help"]).stdout
    for action in sub._actions:
        if action.dest == "help":
            continue
        assert action.help, f"{command} {action.option_strings} has no help"
        flag = action.option_strings[0]
        assert flag in text
        if action.default not in (None, False, argparse.SUPPRESS):
            assert f"(default: {action.default})" in text, (command, flag)


@pytest.mark.parametrize("port", ["99999", "0", "http"])
@pytest.mark.parametrize("command", ["serve", "demo"])
def test_bad_port_is_one_line(command: str, port: str, capsys) -> None:
    from federation.cli import main

    with pytest.raises(SystemExit) as exited:
        main([command, "--config", "unused.yaml", "--port", port] if command == "serve"
             else [command, "--port", port])
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--port" in lines[0] and "not a port" in lines[0]


def test_busy_port_names_the_flag(config_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for args in (["serve", "--config", str(config_path)], ["demo"]):
            result = run([*args, "--host", "127.0.0.1", "--port", str(port)],
                         env={"CONFIGPROXY_AUTH_TOKEN": TOKEN})
            assert result.returncode == 2, result.stderr
            (line,) = result.stderr.strip().splitlines()
            assert f"port {port}" in line and "already in use" in line and "--port" in line


@pytest.mark.parametrize("other", ["bogus", "a/b/c", "/jupyterhub", "jupyterhub/"])
def test_claims_take_names_the_other_hub_as_namespace_and_instance(
        other: str, capsys: pytest.CaptureFixture[str]) -> None:
    from federation.cli import main

    assert main(["claims", "take", "--config", "clusters.yaml", "--from", other]) == 2
    err = capsys.readouterr().err
    assert f"--from {other!r}" in err and "<namespace>/<instance>" in err
