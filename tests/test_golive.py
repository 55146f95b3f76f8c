"""The go-live checklist (docs/operations.md) as an operator runs it: its kubectl and `federation`
blocks run in order against emulated clusters, with the real kubectl, from a folder of their own.

The test stands in for what is outside them: the token controller (it fills each
service-account token Secret and holds that token to the rules the applied Roles give its
account), and, in place of the chart's install, the service started on the kubeconfig and
clusters.yaml the checklist built. Blocks that need docker, helm, DNS or a live hub are skipped,
each with its reason in SKIPPED; the files those blocks use are checked here offline.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from federation.cli import main
from federation.testing import EmulatedClusters
from federation.testing.harness import ServiceThread
from federation.testing.kubeapi.rbac import rules_for

from .charts.conftest import require_helm
from .conftest import CONTEXTS, REPO, TOKEN, base_config, fast_settings

GUIDE = REPO / "docs" / "operations.md"
EXAMPLES = REPO / "docs" / "examples"
HOME_CTX = CONTEXTS["hub"]
REMOTE_CTXS = [CONTEXTS["east"], CONTEXTS["west"]]
OURS = "app.kubernetes.io/managed-by=jupyterhub-federation-proxy"

# A block's first command -> why it cannot run against emulated clusters.
SKIPPED = {
    "docker build -t registry.example.org/jupyterhub/federation-proxy:0.2.0 .":
        "docker and a registry (tests/test_docs.py::test_image_matches_the_chart checks the "
        "Dockerfile against the chart)",
    "docker build -f docs/examples/hub.Dockerfile --build-arg Z2JH_VERSION=4.0.0 -t "
    "registry.example.org/jupyterhub/k8s-hub-multicluster:4.0.0 docs/examples":
        "docker and a registry (test_hub_dockerfile checks the file)",
    'kubectl --context "$HOME_CTX" apply -f docs/examples/certificate.yaml':
        "cert-manager, a DNS-01 issuer, a LoadBalancer and public DNS "
        "(test_certificate_matches_the_gateway checks the file)",
    'helm --kube-context "$HOME_CTX" upgrade --install federation-proxy charts/federation-proxy '
    "--namespace jupyterhub -f federation-values.yaml":
        "helm into a live cluster: the test runs the service on the checklist's kubeconfig "
        "and clusters.yaml in its place (tests/test_docs.py renders the chart)",
    'kubectl --context "$HOME_CTX" --namespace jupyterhub port-forward service/hub 8081:8081 &':
        "a running hub's REST API (tests/e2e/test_mcks.py drives the same API)",
    "helm repo add jupyterhub https://hub.jupyter.org/helm-chart/ --force-update":
        "z2jh in a live cluster (test_docs.py checks z2jh-values.yaml against the chart)",
    "curl -sS -o /dev/null -w '%{http_code}\\n' --resolve \"hub.example.org:443:$GATEWAY_IP\" "
    "https://hub.example.org/hub/health":
        "DNS and the gateway's public address",
    'helm --kube-context "$HOME_CTX" upgrade jupyterhub jupyterhub/jupyterhub --namespace jupyterhub '
    "--version 4.0.0 -f config.yaml":
        "z2jh in a live cluster",
    'helm --kube-context "$HOME_CTX" uninstall federation-proxy --namespace jupyterhub':
        "helm in a live cluster: the test stops its service in its place",
    'for CTX in "$HOME_CTX" $REMOTE_CTXS; do kubectl --context "$CTX" delete -f '
    'docs/examples/spawner-rbac.yaml; done':
        "the emulated clusters do not delete namespaces",
}
# A block's first command -> what its output must show.
EXPECTED = {
    "federation config from-values federation-values.yaml > clusters.yaml": "all checks passed",
}


def checklist() -> str:
    text = GUIDE.read_text(encoding="utf-8")
    start = text.index("## Go-live checklist")
    return text[start:text.index("\n## ", start + 1)]


def blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", checklist(), re.S)


def first_command(block: str) -> str:
    return next(line.strip() for line in block.splitlines()
                if line.strip() and not line.lstrip().startswith("#"))


# ----------------------------------------------------------------- what stands in for the rest


class TokenController:
    """Fills each service-account token Secret, as the cluster's token controller does, and
    holds the token to the rules the applied Roles and bindings give its account."""

    def __init__(self, clusters: EmulatedClusters) -> None:
        self.clusters = clusters
        self.filled: dict[tuple[str, str, str], str] = {}

    def run(self) -> None:
        for context, server in self.clusters.servers.items():
            rbac = [o for plural in ("roles", "rolebindings", "clusterroles", "clusterrolebindings")
                    for o in server.objects("rbac.authorization.k8s.io", "v1", plural)]
            for secret in server.objects("", "v1", "secrets"):
                if secret.get("type") == "kubernetes.io/service-account-token":
                    self._fill(context, server, secret, rbac)

    def _fill(self, context: str, server: Any, secret: dict[str, Any], rbac: list[Any]) -> None:
        meta = secret["metadata"]
        key = (context, meta["namespace"], meta["name"])
        if key in self.filled:
            return
        account = meta["annotations"]["kubernetes.io/service-account.name"]
        token = secrets.token_urlsafe(24)
        server.add_token(token, f"system:serviceaccount:{meta['namespace']}:{account}",
                         rules_for(rbac, account, meta["namespace"]))
        secret["data"] = {"token": base64.b64encode(token.encode()).decode()}
        url = f"{server.url}/api/v1/namespaces/{meta['namespace']}/secrets/{meta['name']}"
        httpx.put(url, json=secret, headers={"Authorization": f"Bearer {server.token}"},
                  verify=self.clusters.tls.client_context()).raise_for_status()  # type: ignore[union-attr]
        self.filled[key] = token


def add_z2jh_secret(clusters: EmulatedClusters) -> None:
    """z2jh's Secret ``hub``, holding the proxy token the hub and the chart share."""
    server = clusters[HOME_CTX]
    key = "hub.config.ConfigurableHTTPProxy.auth_token"
    secret = {"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": "hub", "namespace": "jupyterhub"},
              "data": {key: base64.b64encode(TOKEN.encode()).decode()}}
    httpx.post(f"{server.url}/api/v1/namespaces/jupyterhub/secrets", json=secret,
               headers={"Authorization": f"Bearer {server.token}"},
               verify=clusters.tls.client_context()).raise_for_status()  # type: ignore[union-attr]


def read_token(block: str, cwd: Path, env: dict[str, str]) -> str:
    """The variables block: HOME_CTX and REMOTE_CTXS are the test's (the emulated clusters'
    contexts); its TOKEN line runs as written."""
    (line,) = [line for line in block.splitlines() if line.startswith("export TOKEN=")]
    token = run_block(line + '\nprintf %s "$TOKEN"', cwd, env)
    assert token == TOKEN
    return token


def add_leftover_server(clusters: EmulatedClusters) -> None:
    """A pod KubeSpawner started and the hub forgot at the spawner switch (step 9)."""
    server = clusters[HOME_CTX]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "jupyter-ann", "namespace": "jupyterhub",
        "labels": {"component": "singleuser-server"}},
        "spec": {"containers": [{"name": "notebook", "image": "quay.io/jupyter/base-notebook"}]}}
    httpx.post(f"{server.url}/api/v1/namespaces/jupyterhub/pods", json=pod,
               headers={"Authorization": f"Bearer {server.token}"},
               verify=clusters.tls.client_context()).raise_for_status()  # type: ignore[union-attr]


def routing_objects(clusters: EmulatedClusters) -> int:
    return sum(len([o for o in server.objects("networking.istio.io", "v1", plural, "jupyterhub")
                    if (o["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by")])
               for server in clusters.servers.values()
               for plural in ("virtualservices", "serviceentries", "destinationrules"))


# -------------------------------------------------------------------------------- the checklist


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI must run the checklist test: scripts/test.sh installs kubectl")
        pytest.skip("kubectl is not installed on this machine (scripts/test.sh installs it in CI)")
    return path


def test_the_checklist_runs_against_emulated_clusters(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    kubectl()
    work = tmp_path / "work"
    work.mkdir()
    (work / "docs").symlink_to(REPO / "docs")
    (work / "federation-values.yaml").write_text(yaml.safe_dump({"config": base_config()}))
    env = {**os.environ, "HOME": str(tmp_path), "HOME_CTX": HOME_CTX,
           "REMOTE_CTXS": " ".join(REMOTE_CTXS),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    ran: list[str] = []
    service: ServiceThread | None = None
    # z2jh made the home cluster's jupyterhub namespace; the remote clusters have none yet
    with EmulatedClusters(list(CONTEXTS.values()), tmp_path / "clusters", tls=True,
                          namespaces=("default", "istio-system")) as clusters:
        clusters[HOME_CTX].add_namespace("jupyterhub")
        add_z2jh_secret(clusters)
        env["KUBECONFIG"] = str(clusters.kubeconfig)  # the operator's, as an administrator
        controller = TokenController(clusters)
        try:
            for block in blocks():
                first = first_command(block)
                if first.startswith('helm --kube-context "$HOME_CTX" uninstall') and service is not None:
                    service.stop()  # R4's stand-in
                    service = None
                if first.startswith('kubectl --context "$HOME_CTX" --namespace jupyterhub '
                                    'delete pods'):
                    add_leftover_server(clusters)
                if first.startswith("export HOME_CTX="):
                    env["TOKEN"] = read_token(block, work, env)
                    continue
                if first in SKIPPED:
                    if first.startswith('helm --kube-context "$HOME_CTX" upgrade --install federation-proxy'):
                        service = start_service(work, monkeypatch)  # step 8's stand-in
                        assert routing_objects(clusters) > 0
                        assert host_claims(clusters) > 0
                    continue
                out = run_block(block, work, env)
                ran.append(first)
                assert EXPECTED.get(first, "") in out, (first, out)
                controller.run()
        finally:
            if service is not None:
                service.stop()
        after_rollback(clusters)
    assert_files_built(work)
    assert len(ran) >= 8, ran


def run_block(block: str, cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{block}\n--- exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def start_service(work: Path, monkeypatch: pytest.MonkeyPatch) -> ServiceThread:
    """The chart's pod, as far as the service goes: clusters.yaml from the values, the
    kubeconfig from the Secret; it writes routes with the accounts' tokens."""
    monkeypatch.setenv("KUBECONFIG", str(work / "federation-kubeconfig"))
    service = ServiceThread(fast_settings(work / "clusters.yaml")).start()
    service.wait_ready()
    with httpx.Client(base_url=service.url, headers={"Authorization": f"token {TOKEN}"},
                      timeout=30) as http:
        for path, body in (("/", {"target": "http://hub:8081"}),
                           ("/user/ann", {"target": "https://east.hub.example.org", "user": "ann"}),
                           ("/user/bo", {"target": "http://west.hub.example.org:8080", "user": "bo"})):
            assert http.post("/api/routes" + path, json=body).status_code == 201
    return service


def host_claims(clusters: EmulatedClusters) -> int:
    return sum(len(clusters[c].objects("coordination.k8s.io", "v1", "leases", "istio-system"))
               for c in CONTEXTS.values())


def after_rollback(clusters: EmulatedClusters) -> None:
    home = clusters[HOME_CTX]
    assert routing_objects(clusters) == 0  # R5 removed every object of the service
    assert host_claims(clusters) == 0  # and released its host claims
    assert home.objects("", "v1", "pods", "jupyterhub") == []  # step 9's leftover deleted
    names = {o["metadata"]["name"] for o in home.objects("", "v1", "secrets", "jupyterhub")}
    assert not names & {"federation-kubeconfig", "jupyterhub-spawner-kubeconfig",
                        "federation-proxy-token"}  # R6
    for context in REMOTE_CTXS:
        assert clusters[context].objects("rbac.authorization.k8s.io", "v1", "roles",
                                         "jupyterhub") == []


def assert_files_built(work: Path) -> None:
    from federation.config import kubeconfig_contexts

    for name, namespace in (("federation-kubeconfig", "jupyterhub"),
                            ("hub-kubeconfig", "jupyter-users")):
        config = yaml.safe_load((work / name).read_text())
        assert set(kubeconfig_contexts([work / name])) == set(CONTEXTS.values())
        assert {c["context"]["namespace"] for c in config["contexts"]} == {namespace}
        assert all(u["user"]["token"] for u in config["users"])


def test_every_skipped_block_is_in_the_checklist() -> None:
    firsts = [first_command(b) for b in blocks()]
    assert not set(SKIPPED) - set(firsts), set(SKIPPED) - set(firsts)
    assert not set(EXPECTED) - set(firsts)
    assert len(firsts) - len(SKIPPED) >= 8  # most of it runs


# ------------------------------------------------------------------- the files the blocks use


def test_hub_dockerfile() -> None:
    text = (EXAMPLES / "hub.Dockerfile").read_text()
    (z2jh,) = re.findall(r"^ARG Z2JH_VERSION=(\S+)$", text, re.M)
    assert "FROM quay.io/jupyterhub/k8s-hub:${Z2JH_VERSION}" in text
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (pin,) = [d for d in extras["hub"] if d.startswith("jupyterhub-multicluster-kubespawner")]
    assert f"pip install --no-cache-dir {pin}\n" in text  # the version the e2e test runs
    assert re.search(r"^ARG KUBECTL_VERSION=v\d+\.\d+\.\d+$", text, re.M)
    assert "hashlib.sha256(binary).hexdigest() == expected" in text
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users[-1] not in ("root", "0")
    hub = yaml.safe_load((EXAMPLES / "z2jh-values.yaml").read_text())["hub"]
    image = f"{hub['image']['name']}:{hub['image']['tag']}"
    assert str(hub["image"]["tag"]) == z2jh
    build = next(c for c in SKIPPED if c.startswith("docker build -f docs/examples/hub.Dockerfile"))
    assert f"-t {image} " in build and f"Z2JH_VERSION={z2jh} " in build


def test_certificate_matches_the_gateway() -> None:
    cert = yaml.safe_load((EXAMPLES / "certificate.yaml").read_text())
    gateway = yaml.safe_load((EXAMPLES / "gateway.yaml").read_text())
    (https,) = [s for s in gateway["spec"]["servers"] if s["port"]["protocol"] == "HTTPS"]
    assert cert["metadata"]["namespace"] == gateway["metadata"]["namespace"]
    assert cert["spec"]["secretName"] == https["tls"]["credentialName"]
    assert set(https["hosts"]) <= set(cert["spec"]["dnsNames"])
    assert f"certificate/{cert['metadata']['name']} " in checklist()


def chart_objects(*args: str) -> list[dict[str, Any]]:
    helm = require_helm()
    rendered = subprocess.run(
        [helm, "template", "federation-proxy", "charts/federation-proxy", "--namespace",
         "jupyterhub", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(rendered) if d]


def test_home_rbac_has_the_charts_rules_under_other_names() -> None:
    chart = chart_objects("-f", "docs/examples/federation-values.yaml",
                          "--set", "rbac.gatewayNamespaces={istio-system}",
                          "--set", "config.defaults.backend=gateway-api")
    home = list(yaml.safe_load_all((EXAMPLES / "home-rbac.yaml").read_text()))
    remote = list(yaml.safe_load_all((EXAMPLES / "remote-rbac.yaml").read_text()))

    def names(docs: list[dict[str, Any]]) -> set[tuple[str, str | None, str]]:
        return {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs
                if d["kind"] != "Secret"}

    assert names(remote) & names(chart)  # why home-rbac.yaml exists
    assert not names(home) & names(chart)
    chart_account = ("federation-proxy", "jupyterhub")
    (home_account,) = [(d["metadata"]["name"], d["metadata"]["namespace"]) for d in home
                       if d["kind"] == "ServiceAccount"]
    chart_rules = rules_for(chart, *chart_account)
    home_rules = rules_for(home, *home_account)
    # Every decision either set of rules makes, in the namespaces they name and one they don't.
    namespaces = {r.namespace for r in chart_rules + home_rules if r.namespace} | {"default"}
    asked = {(verb, group, resource, namespace)
             for rule in chart_rules + home_rules
             for verb in rule.verbs for group in rule.groups for resource in rule.resources
             for namespace in namespaces}
    assert len(asked) > 100
    differ = sorted(q for q in asked
                    if any(r.allows(*q, "") for r in home_rules)
                    != any(r.allows(*q, "") for r in chart_rules))
    assert not differ, differ
    (token,) = [d for d in home if d["kind"] == "Secret"]
    assert token["metadata"]["annotations"]["kubernetes.io/service-account.name"] == home_account[0]


# ------------------------------------------------------------------ federation config from-values


def configmap_clusters_yaml(values_file: Path) -> dict[str, Any]:
    (configmap,) = [d for d in chart_objects("-f", str(values_file)) if d["kind"] == "ConfigMap"]
    return dict(yaml.safe_load(configmap["data"]["clusters.yaml"]))


@pytest.mark.parametrize("values", [
    {"kubeconfig": {"existingSecret": "federation-kubeconfig"}},  # the example's file, below
    {"config": {"defaults": {"hosts": ["hub.example.org"]},  # the rest from the chart's values
                "clusters": [{"name": "hub", "context": "home"},
                             {"name": "east", "context": "east",
                              "ingressPublicUrl": "https://east.hub.example.org",
                              "userService": {"namespace": "jupyter-users"}}]}},
])
def test_from_values_prints_what_the_chart_renders(values: dict[str, Any], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    example = yaml.safe_load((EXAMPLES / "federation-values.yaml").read_text())
    doc = {**example, **values} if "config" not in values else dict(values)
    doc.setdefault("image", example["image"])  # the chart renders nothing without one
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(doc))
    rendered = configmap_clusters_yaml(path)
    rendered.pop("kubeconfig", None)  # the path inside the pod
    assert main(["config", "from-values", str(path)]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == rendered
    assert main(["config", "from-values", str(path), "--kubeconfig", "/k/config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["kubeconfig"] == "/k/config"


def test_from_values_needs_a_context_for_an_in_cluster_home(
        capsys: pytest.CaptureFixture[str]) -> None:
    values = REPO / "charts" / "federation-proxy" / "values.yaml"
    assert main(["config", "from-values", str(values)]) == 2
    err = capsys.readouterr().err
    assert "'hub' has inCluster: true" in err and "--home-context" in err
    assert main(["config", "from-values", str(values), "--home-context", "admin@home"]) == 0
    (home,) = yaml.safe_load(capsys.readouterr().out)["clusters"]
    assert home == {"name": "hub", "context": "admin@home"}


@pytest.mark.parametrize(("text", "message"), [
    ("service: {name: x}\n", "no `config` mapping"),
    ("config: {home: nowhere, clusters: [{name: hub, context: c}]}\n", "nowhere"),
    ("config: [\n", "is not YAML"),
])
def test_from_values_refuses_bad_values_in_one_line(text: str, message: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(text)
    assert main(["config", "from-values", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err, captured.err
