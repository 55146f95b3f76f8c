"""The real kubectl on the demo's emulated clusters (HTTPS, one kubeconfig context each), running
the commands MultiClusterKubeSpawner runs and those a newcomer tries first."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from federation.testing.kubeapi import EmulatedClusters

KEY = "mcks.hub.jupyter.org/key"


def objects(key: str, image: str = "jupyter/base-notebook:1", env_value: str = "1") -> str:
    """What MultiClusterKubeSpawner's default templates render for one user (04-ingress too)."""
    labels = {KEY: key}
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": key, "labels": labels}},
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": key, "labels": labels},
         "spec": {"serviceAccountName": key, "containers": [{
             "name": "notebook", "image": image, "args": ["jupyterhub-singleuser"],
             "ports": [{"containerPort": 8888}], "resources": {"limits": {}, "requests": {}},
             "env": [{"name": "JUPYTERHUB_API_URL", "value": env_value},
                     {"name": "MEM_LIMIT", "valueFrom": {"resourceFieldRef": {
                         "containerName": "notebook", "resource": "limits.memory"}}}]}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": key, "labels": labels},
         "spec": {"selector": labels,
                  "ports": [{"protocol": "TCP", "port": 8888, "targetPort": 8888}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
         "metadata": {"name": key, "labels": labels},
         "spec": {"ingressClassName": "contour", "rules": [{"http": {"paths": [{
             "path": "/user/x/", "pathType": "Prefix",
             "backend": {"service": {"name": key, "port": {"number": 8888}}}}]}}]}},
    ]
    return yaml.safe_dump_all(docs)


@pytest.fixture(scope="module")
def kubectl_bin() -> str:
    path = shutil.which("kubectl")
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI must run the kubectl tests: scripts/test.sh installs kubectl")
        pytest.skip("kubectl is not installed here (scripts/test.sh installs it in CI)")
    return path


@pytest.fixture
def demo_clusters(tmp_path: Path) -> Iterator[EmulatedClusters]:
    """The demo's clusters, as federation/demo.py starts them (no CRD files, HTTPS)."""
    with EmulatedClusters(["hub", "east", "west"], tmp_path / "clusters", tls=True,
                          pod_ready_delay=0.3, pod_stop_delay=0.3) as clusters:
        yield clusters


@pytest.fixture
def kubectl(kubectl_bin: str, demo_clusters: EmulatedClusters, tmp_path: Path) -> Any:
    env = {**os.environ, "KUBECONFIG": str(demo_clusters.kubeconfig), "HOME": str(tmp_path)}

    def run(*args: str, stdin: str | None = None, ok: bool = True,
            context: str = "east") -> subprocess.CompletedProcess[str]:
        done = subprocess.run([kubectl_bin, f"--context={context}", *args], input=stdin,
                              text=True, capture_output=True, env=env, timeout=60)
        if ok:
            assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done

    return run


def names(cluster: Any, group: str, plural: str) -> list[str]:
    return [o["metadata"]["name"] for o in cluster.objects(group, "v1", plural, "jupyterhub")]


def test_short_names_and_categories(kubectl: Any) -> None:
    resources = kubectl("api-resources", "-o", "wide").stdout
    rows = {line.split()[0]: line for line in resources.splitlines()[1:]}
    assert rows["virtualservices"].split()[1] == "vs"
    assert rows["pods"].split()[1] == "po" and "all" in rows["pods"]
    assert rows["serviceaccounts"].split()[1] == "sa"
    assert rows["ingresses"].split()[1] == "ing"
    assert rows["persistentvolumeclaims"].split()[1] == "pvc"
    assert "No resources found" in kubectl("get", "vs").stderr
    assert "No resources found" in kubectl("get", "all").stderr


def test_apply_validates_creates_and_reapplies(kubectl: Any, demo_clusters: Any) -> None:
    east = demo_clusters["east"]
    typo = objects("jupyter-bad").replace("containerPort", "containerport")
    refused = kubectl("apply", "-f", "-", stdin=typo, ok=False)
    assert refused.returncode != 0 and 'unknown field "spec.containers[0].ports[0].containerport"' \
        in refused.stderr, refused.stderr
    assert "validate=false" not in refused.stderr
    # kubectl applies each document on its own: only the invalid Pod is missing
    assert "jupyter-bad" not in names(east, "", "pods")
    assert "jupyter-bad" in names(east, "", "services")

    created = kubectl("apply", "--wait", "-f", "-", "-o", "yaml", stdin=objects("jupyter-alice"))
    kinds = [o["kind"] for o in yaml.safe_load(created.stdout)["items"]]
    assert kinds == ["ServiceAccount", "Pod", "Service", "Ingress"]
    (svc,) = [s for s in east.objects("", "v1", "services", "jupyterhub")
              if s["metadata"]["name"] == "jupyter-alice"]
    assert svc["spec"]["clusterIP"] and svc["spec"]["type"] == "ClusterIP"

    # re-applied with a new image and env value: kubectl sends strategic merge patches
    kubectl("apply", "-f", "-", stdin=objects("jupyter-alice", "jupyter/base-notebook:2", "2"))
    (pod,) = east.objects("", "v1", "pods", "jupyterhub")  # jupyter-bad was refused
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "jupyter/base-notebook:2"
    assert [e.get("value") for e in container["env"]] == ["2", None]
    applied = json.loads(pod["metadata"]["annotations"][
        "kubectl.kubernetes.io/last-applied-configuration"])
    assert applied["spec"]["containers"][0]["image"] == "jupyter/base-notebook:2"


def test_wait_delete_wait_and_selectors(kubectl: Any, demo_clusters: Any) -> None:
    east = demo_clusters["east"]
    kubectl("apply", "-f", "-", stdin=objects("jupyter-alice"))
    kubectl("apply", "-f", "-", stdin=objects("jupyter-bob"))
    waited = kubectl("wait", "--for=condition=Ready", "pod/jupyter-alice", "--timeout=20s")
    assert "condition met" in waited.stdout
    ip = kubectl("get", "pod", "jupyter-alice", "-o", "jsonpath={.status.podIP}").stdout
    assert ip.startswith("10.")

    kubectl("delete", "-f", "-", "--wait", stdin=objects("jupyter-alice"))
    for plural in ("pods", "services", "serviceaccounts"):
        assert names(east, "", plural) == ["jupyter-bob"]
    assert names(east, "networking.k8s.io", "ingresses") == ["jupyter-bob"]

    kubectl("delete", "pods,services,serviceaccounts,ingresses", "-l", f"{KEY}=jupyter-bob",
            "--wait")
    assert all(names(east, "", p) == [] for p in ("pods", "services", "serviceaccounts"))
    gone = kubectl("wait", "--for=condition=Ready", "pod/jupyter-bob", "--timeout=2s", ok=False)
    assert gone.returncode != 0 and "not found" in gone.stderr  # MCKS's poll: not running


def test_patch_local_as_mcks_runs_it(kubectl: Any, tmp_path: Path) -> None:
    source = tmp_path / "pod.yaml"
    source.write_text(objects("jupyter-alice").split("---\n")[1])
    patched = kubectl("patch", "--local", "-f", str(source), "--patch",
                      json.dumps({"spec": {"nodeSelector": {"pool": "gpu"}}}), "-o", "yaml")
    assert yaml.safe_load(patched.stdout)["spec"]["nodeSelector"] == {"pool": "gpu"}


def test_a_pod_stays_pending_without_the_kubelet(kubectl_bin: str, tmp_path: Path) -> None:
    with EmulatedClusters(["east"], tmp_path / "c", tls=True, kubelet=False) as clusters:
        env = {**os.environ, "KUBECONFIG": str(clusters.kubeconfig), "HOME": str(tmp_path)}
        subprocess.run([kubectl_bin, "apply", "-f", "-"], input=objects("jupyter-alice"),
                       text=True, env=env, check=True, capture_output=True, timeout=60)
        waited = subprocess.run([kubectl_bin, "wait", "--for=condition=Ready", "pod/jupyter-alice",
                                 "--timeout=1s"], text=True, env=env, capture_output=True,
                                timeout=60)
        assert waited.returncode != 0 and "timed out" in waited.stderr
