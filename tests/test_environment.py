"""Settings as the operator gives them: every mistake one line naming the variable (the CLI run
as a subprocess, stderr free of tracebacks), FEDERATION_CONFIG in place of --config, mistyped
FEDERATION_* names warned about with the likely one, in-cluster credentials outside a pod, and a
refused connection called by its name."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from federation import kubeconfig
from federation.environment import (
    TOOLING_PREFIXES,
    TOOLING_VARIABLES,
    SettingsProblem,
    known_variables,
    read_settings,
    unknown_variables,
)
from federation.errors import ConfigError
from federation.testing.harness import free_port, wait_until_ready

from .conftest import CONTEXTS, REPO, TOKEN, base_config
from .test_config import write_kubeconfig

FEDERATION = [sys.executable, "-m", "federation.cli"]
POD_VARIABLES = ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without the service's own variables (nor a pod's), plus extra."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("FEDERATION_") and k != "CONFIGPROXY_AUTH_TOKEN"
           and k not in POD_VARIABLES}
    return {**env, **extra}


def run(args: list[str], timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(FEDERATION + args, capture_output=True, text=True,
                          env=clean_env(**env), timeout=timeout)


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


# --------------------------------------------------------------------- bad JSON


@pytest.mark.parametrize("command", ["serve", "check", "demo"])
def test_a_warmup_urls_that_is_not_json_is_one_line_naming_it(command: str,
                                                               tmp_path: Path) -> None:
    config = tmp_path / "clusters.yaml"
    config.write_text(yaml.safe_dump(base_config(str(tmp_path / "kubeconfig"))))
    args = {"serve": ["serve", "--config", str(config), "--port", str(free_port())],
            "check": ["check", "--config", str(config)],
            "demo": ["demo", "--once", "--port", str(free_port())]}[command]
    result = run(args, FEDERATION_WARMUP_URLS="{bad json", CONFIGPROXY_AUTH_TOKEN=TOKEN)
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert line.startswith("federation: FEDERATION_WARMUP_URLS is not valid JSON"), line
    assert '{"east": "https://east.hub.example.org"}' in line


@pytest.mark.parametrize("value, says", [
    ('["http://gw"]', "a JSON object of cluster name -> gateway base URL"),
    ('{"east": "gw.istio-system"}', "'east': 'gw.istio-system' is not an http(s) URL"),
    ('{"east": 8080}', "'east': 8080 is not an http(s) URL"),
])
def test_a_warmup_urls_of_the_wrong_shape_is_one_line_naming_it(value: str, says: str,
                                                                tmp_path: Path) -> None:
    config = tmp_path / "clusters.yaml"
    config.write_text(yaml.safe_dump(base_config(str(tmp_path / "kubeconfig"))))
    result = run(["check", "--config", str(config)], FEDERATION_WARMUP_URLS=value,
                 CONFIGPROXY_AUTH_TOKEN=TOKEN)
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert line.startswith("federation: FEDERATION_WARMUP_URLS="), line
    assert says in line and '{"east": "https://east.hub.example.org"}' in line, line


@pytest.mark.parametrize("command", ["check"])  # serve warns (a crash loop helps nobody)
def test_a_warmup_url_for_no_cluster_is_refused_naming_the_clusters(command: str,
                                                                    tmp_path: Path) -> None:
    kubeconfig_path = write_kubeconfig(tmp_path / "kubeconfig", list(CONTEXTS.values()))
    config = tmp_path / "clusters.yaml"
    config.write_text(yaml.safe_dump(base_config(str(kubeconfig_path))))
    args = {"serve": ["serve", "--config", str(config), "--port", str(free_port())],
            "check": ["check", "--config", str(config)]}[command]
    result = run(args, FEDERATION_WARMUP_URLS='{"eats": "https://east.hub.example.org"}',
                 CONFIGPROXY_AUTH_TOKEN=TOKEN)
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert "FEDERATION_WARMUP_URLS names no cluster 'eats'" in line, line
    assert "'east', 'hub', 'west'" in line, line


def test_read_settings_turns_every_failure_into_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDERATION_WARMUP_URLS", "[1,")
    with pytest.raises(SettingsProblem) as info:
        read_settings(config=Path("c.yaml"), no_auth=True)
    (line,) = info.value.lines
    assert line.startswith("FEDERATION_WARMUP_URLS is not valid JSON (")
    monkeypatch.setenv("FEDERATION_WARMUP_URLS", '{"east": "https://east.example.org"}')
    monkeypatch.setenv("FEDERATION_KUBE_RETRIES", "-1")
    with pytest.raises(SettingsProblem) as info:
        read_settings(config=Path("c.yaml"), no_auth=True)
    assert [line.split("=")[0] for line in info.value.lines] == ["FEDERATION_KUBE_RETRIES"]


# ------------------------------------------------------------ FEDERATION_CONFIG


def _serve(config_args: list[str], **env: str) -> subprocess.Popen[str]:
    port = env.pop("PORT")
    return subprocess.Popen(
        FEDERATION + ["serve", *config_args, "--host", "127.0.0.1", "--port", port],
        env=clean_env(CONFIGPROXY_AUTH_TOKEN=TOKEN, **env), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    return out


def test_serve_reads_federation_config_without_the_flag(config_path: Path) -> None:
    port = str(free_port())
    proc = _serve([], FEDERATION_CONFIG=str(config_path), PORT=port)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}")
        routes = httpx.get(f"http://127.0.0.1:{port}/api/routes",
                           headers={"Authorization": f"token {TOKEN}"})
        assert routes.status_code == 200
    finally:
        out = _stop(proc)
    assert "Traceback" not in out


def test_check_reads_federation_config_and_the_flag_wins(config_path: Path,
                                                         tmp_path: Path) -> None:
    via_env = run(["check"], FEDERATION_CONFIG=str(config_path))
    assert "ok   reachable" in via_env.stdout, via_env.stdout + via_env.stderr
    flag_wins = run(["check", "--config", str(config_path)],
                    FEDERATION_CONFIG=str(tmp_path / "missing.yaml"))
    assert "ok   reachable" in flag_wins.stdout, flag_wins.stdout + flag_wins.stderr


@pytest.mark.parametrize("command", ["serve", "check"])
def test_no_config_at_all_is_one_line_naming_both(command: str) -> None:
    result = run([command], CONFIGPROXY_AUTH_TOKEN=TOKEN)
    assert result.returncode == 2
    assert one_line(result.stderr) == (
        "federation: FEDERATION_CONFIG (--config): required but not set")


# ------------------------------------------------------- mistyped FEDERATION_*


def test_serve_warns_at_start_about_a_mistyped_variable(config_path: Path) -> None:
    port = str(free_port())
    proc = _serve(["--config", str(config_path)], PORT=port,
                  FEDERATION_RECONCILE_INTERVALL="30", FEDERATION_LOG_LEVEL="info",
                  # what Kubernetes sets for the chart's own Service: not a mistake
                  FEDERATION_PROXY_API_SERVICE_HOST="10.0.0.7",
                  FEDERATION_PROXY_API_PORT="tcp://10.0.0.7:8001")
    try:
        wait_until_ready(f"http://127.0.0.1:{port}")
        time.sleep(0.2)
    finally:
        out = _stop(proc)
    warnings = [line for line in out.splitlines() if "is not a setting" in line]
    assert len(warnings) == 1, out
    assert "WARNING" in warnings[0]
    assert warnings[0].endswith("FEDERATION_RECONCILE_INTERVALL is not a setting and is "
                                "ignored: did you mean FEDERATION_RECONCILE_INTERVAL?")


def test_check_warns_too(config_path: Path) -> None:
    result = run(["check", "--config", str(config_path)], FEDERATION_KUBE_RETRYS="1")
    assert "FEDERATION_KUBE_RETRYS is not a setting and is ignored: did you mean " \
           "FEDERATION_KUBE_RETRIES?" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("name", "meant"), [
    ("FEDERATION_LOGLEVEL", "FEDERATION_LOG_LEVEL"),
    ("FEDERATION_WARMUP_URL", "FEDERATION_WARMUP_URLS"),
    ("FEDERATION_AUTHTOKEN", "FEDERATION_AUTH_TOKEN"),
    ("FEDERATION_CONFIGG", "FEDERATION_CONFIG"),
    ("FEDERATION_SHARD_ROUTE", "FEDERATION_SHARD_ROUTES"),
    ("FEDERATION_SOMETHING_ELSE", None),
])
def test_the_likely_name(name: str, meant: str | None) -> None:
    (line,) = unknown_variables({name: "x"})
    if meant:
        assert line.endswith(f"did you mean {meant}?"), line
    else:
        assert line.endswith("the settings are listed in docs/operations.md#8-settings"), line


def test_known_names_and_other_programs_names_pass_silently() -> None:
    environ = {name: "x" for name in known_variables()}
    environ |= {"FEDERATION_SERVICE_HOST": "10.0.0.1", "FEDERATION_SERVICE_PORT": "80",
                "FEDERATION_SERVICE_PORT_HTTP": "80", "FEDERATION_PORT": "tcp://10.0.0.1:80",
                "FEDERATION_PORT_80_TCP": "tcp://10.0.0.1:80",
                "FEDERATION_PORT_80_TCP_ADDR": "10.0.0.1", "PATH": "/bin",
                "FEDERATION_TEST_WORKERS": "0", "FEDERATION_E2E_CONTEXT": "kind"}
    assert unknown_variables(environ) == []
    assert "FEDERATION_CONFIG" in environ and "CONFIGPROXY_AUTH_TOKEN" in environ
    # without the Service's _SERVICE_HOST, FEDERATION_PORT is a stray name
    assert unknown_variables({"FEDERATION_PORT": "8001"}) != []


def test_every_federation_name_the_repository_uses_is_known() -> None:
    """A variable the project's own code, scripts or docs use is never warned about."""
    used: set[str] = set()
    for path in [*REPO.glob("federation/**/*.py"), *REPO.glob("tests/**/*.py"),
                 *REPO.glob("bench/**/*.py"), *REPO.glob("scripts/*"), *REPO.glob("*.md"),
                 *REPO.glob("docs/**/*.md"), *REPO.glob("charts/**/*.yaml"), REPO / "Dockerfile"]:
        if path.is_file() and path != Path(__file__):
            used |= set(re.findall(r"\bFEDERATION_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    used = {name for name in used if not name.startswith(TOOLING_PREFIXES)}
    assert used - set(known_variables()) - set(TOOLING_VARIABLES) == set()
    assert unknown_variables(dict.fromkeys(used, "x")) == []


# ------------------------------------------------------------ inCluster outside a pod


@pytest.mark.parametrize("command", ["serve", "check"])
def test_in_cluster_outside_a_pod_is_one_line(command: str, tmp_path: Path) -> None:
    config = tmp_path / "clusters.yaml"
    config.write_text(yaml.safe_dump({
        "home": "hub", "defaults": {"namespace": "jupyterhub", "hosts": ["hub.example.org"],
                                    "gateway": "istio-system/jupyterhub-gateway"},
        "clusters": [{"name": "hub", "inCluster": True}]}))
    args = [command, "--config", str(config)] + (
        ["--port", str(free_port())] if command == "serve" else [])
    result = run(args, CONFIGPROXY_AUTH_TOKEN=TOKEN)
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert line.startswith("federation: cluster 'hub': inCluster: true, but this process does "
                           "not run in a Kubernetes pod (KUBERNETES_SERVICE_HOST"), line
    assert "KeyError" not in line


def test_in_cluster_without_a_token_says_so(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(ConfigError, match="no service account token at .*automountServiceAccount"):
        kubeconfig.in_cluster(tmp_path)


# --------------------------------------------------------------- connection refused


def test_check_calls_a_refused_connection_by_its_name(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    url = f"https://127.0.0.1:{port}"
    kubeconfig_path = tmp_path / "kubeconfig"
    kubeconfig_path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": url}}],
        "users": [{"name": "u", "user": {"token": "abc"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    config = tmp_path / "clusters.yaml"
    config.write_text(yaml.safe_dump({
        "kubeconfig": str(kubeconfig_path), "home": "hub",
        "defaults": {"namespace": "jupyterhub", "hosts": ["hub.example.org"],
                     "gateway": "istio-system/jupyterhub-gateway"},
        "clusters": [{"name": "hub", "context": "c"}]}))
    result = run(["check", "--config", str(config)])
    assert result.returncode == 1
    (line,) = [line for line in result.stdout.splitlines() if "reachable" in line]
    assert line.strip().startswith(f"FAIL reachable: {url}: ")
    assert line.endswith("cannot reach the API server (connection refused)"), line
    assert "ConnectTimeout" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
