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
from .conftest import ISTIO_CRDS, REPO
from .istio_schema import validate

DOCS = REPO / "docs"
GUIDE = DOCS / "operations.md"

# Commands that need a live cluster, and the command the suite runs in their place.
NEEDS_CLUSTER = {
    "helm upgrade --install federation-proxy": "helm template federation-proxy",
}
# Commands whose run lives in another test (or, for the image, whose offline twin does).
RUN_ELSEWHERE = {
    "federation check --config clusters.yaml": "tests/test_cli.py::test_check_reports_per_cluster",
    "docker build -t registry.example.org/jupyterhub/federation-proxy:0.2.0 .":
        "tests/test_docs.py::test_image_matches_the_chart",
    "docker push registry.example.org/jupyterhub/federation-proxy:0.2.0":
        "tests/test_docs.py::test_image_matches_the_chart",
}
CLEANUP = 'kubectl --context "$CONTEXT"'
KUBECONFIG_COMMANDS = ("kubectl config", "kubectl create secret")


def guide_commands() -> list[str]:
    """Every command of the guide's ```sh blocks, apart from the go-live checklist's (run by
    tests/test_golive.py)."""
    text = GUIDE.read_text()
    start = text.index("## Go-live checklist")
    text = text[:start] + text[text.index("\n## ", start + 1):]
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


def test_settings_reference_is_current() -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import render_settings_doc
    finally:
        sys.path.pop(0)
    text = GUIDE.read_text()
    assert text == render_settings_doc.render(text), \
        "run: .venv/bin/python scripts/render_settings_doc.py"
    from federation.settings import Settings

    for name in Settings.model_fields:
        if name != "auth_token":
            assert f"`FEDERATION_{name.upper()}`" in text


def test_image_matches_the_chart() -> None:
    """The offline twin of the guide's docker build and push: the image the Dockerfile builds is
    the one the chart runs (user, entrypoint, config path, port, version)."""
    dockerfile = (REPO / "Dockerfile").read_text()
    chart = yaml.safe_load((REPO / "charts" / "federation-proxy" / "Chart.yaml").read_text())
    values = yaml.safe_load((REPO / "charts" / "federation-proxy" / "values.yaml").read_text())
    from federation import __version__

    assert str(chart["appVersion"]) == __version__
    assert f"USER {values['containerSecurityContext']['runAsUser']}:" in dockerfile
    assert 'ENTRYPOINT ["federation"]' in dockerfile
    assert '"--config", "/etc/federation/clusters.yaml"' in dockerfile
    assert f"EXPOSE {values['service']['port']}" in dockerfile
    assert values["containerSecurityContext"]["readOnlyRootFilesystem"] is True
    assert "WORKDIR /tmp" in dockerfile  # the one writable place (an emptyDir in the chart)


def test_example_values_install_the_image_the_guide_builds() -> None:
    """The chart has no default image: the example values set the one section 0 builds and
    pushes, tagged with the release's version."""
    values = yaml.safe_load((DOCS / "examples" / "federation-values.yaml").read_text())
    chart = yaml.safe_load((REPO / "charts" / "federation-proxy" / "Chart.yaml").read_text())
    image = f"{values['image']['repository']}:{values['image']['tag']}"
    assert f"docker build -t {image} ." in guide_commands()
    assert f"docker push {image}" in guide_commands()
    assert str(values["image"]["tag"]) == str(chart["appVersion"])


def test_guide_cleanup_command_removes_only_the_services_objects(tmp_path: Path) -> None:
    """The uninstall command, run with kubectl against emulated clusters the service wrote to."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed here (scripts/test.sh installs it in CI)")
    import httpx

    from federation.testing import EmulatedClusters
    from federation.testing.harness import ServiceThread, write_clusters_yaml

    from .conftest import CONTEXTS, TOKEN, base_config, fast_settings

    (cmd,) = [c for c in guide_commands() if c.startswith(CLEANUP)]
    with EmulatedClusters(list(CONTEXTS.values()), tmp_path, tls=True) as clusters:
        config = write_clusters_yaml(tmp_path / "clusters.yaml", base_config(str(clusters.kubeconfig)))
        with ServiceThread(fast_settings(config)) as svc:
            httpx.post(svc.url + "/api/routes/user/ann", headers={"Authorization": f"token {TOKEN}"},
                       json={"target": "https://east.hub.example.org", "user": "ann"}
                       ).raise_for_status()
        east = clusters[CONTEXTS["east"]]
        stranger = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                    "metadata": {"name": "not-ours", "namespace": "jupyterhub"}, "spec": {}}
        httpx.post(east.url + "/apis/networking.istio.io/v1/namespaces/jupyterhub/virtualservices",
                   json=stranger, headers={"Authorization": f"Bearer {east.token}"},
                   verify=clusters.tls.client_context()).raise_for_status()  # type: ignore[union-attr]
        assert len(east.objects("networking.istio.io", "v1", "virtualservices", "jupyterhub")) == 3
        env = {**os.environ, "KUBECONFIG": str(clusters.kubeconfig), "HOME": str(tmp_path),
               "CONTEXT": CONTEXTS["east"]}
        result = subprocess.run(cmd, shell=True, env=env, capture_output=True, text=True,
                                executable="/bin/bash", timeout=60)
        assert result.returncode == 0, result.stderr
        left = east.objects("networking.istio.io", "v1", "virtualservices", "jupyterhub")
        assert [o["metadata"]["name"] for o in left] == ["not-ours"]


def test_every_guide_command_is_accounted_for() -> None:
    commands = guide_commands()
    assert len(commands) >= 7
    for cmd in commands:
        runnable = cmd.startswith(("helm lint", "helm template", CLEANUP, *KUBECONFIG_COMMANDS))
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
        if cmd.startswith(KUBECONFIG_COMMANDS):
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


@pytest.mark.upstream_schemas("istio")
def test_example_gateway_validates() -> None:
    gateway = yaml.safe_load((DOCS / "examples" / "gateway.yaml").read_text())
    validate(gateway, ISTIO_CRDS)


def test_remote_rbac_matches_the_chart_role() -> None:
    """The remote account may do what the chart's home account may: write the Istio kinds in
    the service's namespace, read the Gateway (for check) in the Gateway's namespace."""
    helm = require_helm()
    rendered = subprocess.run(
        [helm, "template", "f", "charts/federation-proxy", "--namespace", "jupyterhub",
         "--set", "rbac.gatewayNamespaces={istio-system}",
         "--set", "image.repository=registry.example.org/fp", "--set", "image.tag=1"],
        cwd=REPO, capture_output=True, text=True, check=True).stdout
    chart_roles = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "Role"]
    docs = list(yaml.safe_load_all((DOCS / "examples" / "remote-rbac.yaml").read_text()))
    doc_roles = [d for d in docs if d["kind"] == "Role"]

    def rules(roles: list, resource: str, namespace: str) -> list:
        return [r for role in roles if role["metadata"]["namespace"] == namespace
                for r in role["rules"] if r["resources"] == [resource] or
                (resource == "virtualservices" and resource in r["resources"])]

    assert rules(doc_roles, "virtualservices", "jupyterhub") == \
        rules(chart_roles, "virtualservices", "jupyterhub")
    assert rules(doc_roles, "gateways", "istio-system") == \
        rules(chart_roles, "gateways", "istio-system") != []
    assert rules(doc_roles, "leases", "istio-system") == \
        rules(chart_roles, "leases", "istio-system") != []  # the host claims
    bindings = {d["metadata"]["name"]: d for d in docs if d["kind"] == "RoleBinding"}
    for role in doc_roles:
        binding = bindings[role["metadata"]["name"]]
        assert binding["metadata"]["namespace"] == role["metadata"]["namespace"]
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "federation-proxy",
                                        "namespace": "jupyterhub"}]


def test_hub_example_matches_the_clusters() -> None:
    """MultiClusterKubeSpawner's profiles name the same contexts and ingress URLs as
    clusters.yaml: a mismatch would place users' routes in the wrong cluster."""
    config = yaml.safe_load((DOCS / "examples" / "federation-values.yaml").read_text())["config"]
    hub = yaml.safe_load((DOCS / "examples" / "z2jh-values.yaml").read_text())["hub"]
    profiles = hub["config"]["MultiClusterKubeSpawner"]["profile_list"]
    spawner = {(p["spawner_override"]["kubernetes_context"],
                p["spawner_override"]["ingress_public_url"]) for p in profiles}
    assert spawner == {(c["context"], c["ingressPublicUrl"]) for c in config["clusters"]}
    registry = parse_registry(config, check_kubeconfig=False)
    from federation.placement import place

    for context, url in spawner:
        placed = place(registry, url, {"user": "ann"})
        assert placed.rule == "ingress" and placed.cluster.context == context


def test_hub_network_policy_reaches_the_charts_pods() -> None:
    helm = require_helm()
    rendered = subprocess.run(
        [helm, "template", "federation-proxy", "charts/federation-proxy", "--namespace",
         "jupyterhub", "-f", "docs/examples/federation-values.yaml"],
        cwd=REPO, capture_output=True, text=True, check=True).stdout
    objects = [d for d in yaml.safe_load_all(rendered) if d]
    (deployment,) = [d for d in objects if d["kind"] == "Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["containerPort"] for p in container["ports"]}
    hub = yaml.safe_load((DOCS / "examples" / "z2jh-values.yaml").read_text())["hub"]
    (egress,) = hub["networkPolicy"]["egress"]
    assert egress["to"][0]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert {p["port"] for p in egress["ports"]} <= ports
    assert hub["extraEnv"]["KUBECONFIG"].startswith(hub["extraVolumeMounts"][0]["mountPath"] + "/")


def test_readme_hub_snippet_uses_the_charts_service() -> None:
    """The README's api_url must reach this chart's Service, never z2jh's own proxy-api."""
    values = yaml.safe_load((REPO / "charts" / "federation-proxy" / "values.yaml").read_text())
    name = values["service"]["name"]
    assert name != "proxy-api"
    (url,) = re.findall(r'api_url = "([^"]+)"', (REPO / "README.md").read_text())
    assert url == f"http://{name}.jupyterhub.svc:{values['service']['port']}"
