"""The docs stay true: generated objects are current, examples are valid, and every command in
the operator's guide is run here (or, for the two that need a live cluster, its offline twin)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from federation.config import kubeconfig_contexts, parse_registry

from .charts.conftest import require_helm
from .conftest import ISTIO_CRDS, REPO, shared_file
from .istio_schema import validate

DOCS = REPO / "docs"
GUIDE = DOCS / "operations.md"

# Commands that need a live cluster, and the command the suite runs in their place.
NEEDS_CLUSTER = {
    "helm upgrade --install federation-proxy": "helm template federation-proxy",
}
# Commands whose run lives in another test.
RUN_ELSEWHERE = {
    "federation check --config clusters.yaml": "tests/test_cli.py::test_check_reports_per_cluster",
}


def guide_commands() -> list[str]:
    text = GUIDE.read_text()
    return [line.strip() for block in re.findall(r"```sh\n(.*?)```", text, re.S)
            for line in block.splitlines() if line.strip()]


def test_objects_doc_is_current() -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import render_objects_doc
    finally:
        sys.path.pop(0)
    assert (DOCS / "objects.md").read_text() == render_objects_doc.render(), \
        "run: .venv/bin/python scripts/render_objects_doc.py"


def test_every_guide_command_is_accounted_for() -> None:
    commands = guide_commands()
    assert len(commands) >= 7
    for cmd in commands:
        runnable = cmd.startswith(("helm lint", "helm template", "kubectl config", "kubectl create secret"))
        elsewhere = cmd in RUN_ELSEWHERE
        offline_twin = any(cmd.startswith(k) for k in NEEDS_CLUSTER)
        assert runnable or elsewhere or offline_twin, f"no test runs: {cmd}"
    for test in RUN_ELSEWHERE.values():
        path, name = test.split("::")
        assert f"def {name}(" in (REPO / path).read_text()
    for twin in NEEDS_CLUSTER.values():
        assert any(c.startswith(twin) for c in commands)


def test_guide_helm_commands_run() -> None:
    helm = require_helm()
    for cmd in guide_commands():
        if cmd.startswith(("helm lint", "helm template")):
            args = shlex.split(cmd)
            result = subprocess.run([helm, *args[1:]], cwd=REPO, capture_output=True, text=True)
            assert result.returncode == 0, (cmd, result.stderr)


def test_guide_kubeconfig_commands_run(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed here; the commands are plain kubectl config calls")
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    env = {**os.environ, "EAST_SERVER": "https://203.0.113.10", "EAST_CA_FILE": str(ca),
           "EAST_TOKEN": "remote-sa-token", "KUBECONFIG": str(tmp_path / "unused")}
    secret = ""
    for cmd in guide_commands():
        if cmd.startswith("kubectl"):
            result = subprocess.run(cmd, shell=True, cwd=tmp_path, env=env, capture_output=True,
                                    text=True, executable="/bin/bash")
            assert result.returncode == 0, (cmd, result.stderr)
            secret = result.stdout or secret
    contexts = kubeconfig_contexts([tmp_path / "federation-kubeconfig"])
    assert "arn:aws:eks:us-east-1:123456789012:cluster/jupyter-east" in contexts
    manifest = yaml.safe_load(secret)
    assert manifest["kind"] == "Secret" and "config" in manifest["data"]


def test_examples_are_valid() -> None:
    values = yaml.safe_load((DOCS / "examples" / "federation-values.yaml").read_text())
    registry = parse_registry(values["config"], check_kubeconfig=False)
    assert registry.home == "hub" and len(registry.clusters) == 3
    hub = yaml.safe_load((DOCS / "examples" / "z2jh-values.yaml").read_text())
    api_url = hub["hub"]["config"]["ConfigurableHTTPProxy"]["api_url"]
    assert api_url == f"http://{values['service']['name']}.jupyterhub.svc:8001"
    assert hub["hub"]["config"]["ConfigurableHTTPProxy"]["should_start"] is False


def test_example_gateway_validates() -> None:
    shared_file("istio")
    gateway = yaml.safe_load((DOCS / "examples" / "gateway.yaml").read_text())
    validate(gateway, ISTIO_CRDS)


def test_remote_rbac_matches_the_chart_role() -> None:
    helm = require_helm()
    rendered = subprocess.run(
        [helm, "template", "f", "charts/federation-proxy", "--namespace", "jupyterhub"],
        cwd=REPO, capture_output=True, text=True, check=True).stdout
    chart_roles = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Role"]
    chart_rules = [r for role in chart_roles for r in role["rules"]
                   if "virtualservices" in r["resources"]]
    docs = list(yaml.safe_load_all((DOCS / "examples" / "remote-rbac.yaml").read_text()))
    (role,) = [d for d in docs if d["kind"] == "Role"]
    assert role["rules"] == chart_rules


def test_readme_hub_snippet_uses_the_charts_service() -> None:
    """The README's api_url must reach this chart's Service, never z2jh's own proxy-api."""
    values = yaml.safe_load((REPO / "charts" / "federation-proxy" / "values.yaml").read_text())
    name = values["service"]["name"]
    assert name != "proxy-api"
    (url,) = re.findall(r'api_url = "([^"]+)"', (REPO / "README.md").read_text())
    assert url == f"http://{name}.jupyterhub.svc:{values['service']['port']}"
