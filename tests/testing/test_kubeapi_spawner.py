"""The emulator's parts for a spawner's objects, over HTTP: OpenAPI v3, strategic merge patches,
the stand-in kubelet, Service defaults, and per-token access records and RBAC rules."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from federation.testing.harness import wait_for
from federation.testing.kubeapi import KubeAPIServer
from federation.testing.kubeapi.patch import _PatchError
from federation.testing.kubeapi.rbac import rules_for
from federation.testing.kubeapi.strategic import strategic_merge

PODS = "/api/v1/namespaces/jupyterhub/pods"
SMP = {"Content-Type": "application/strategic-merge-patch+json"}


@pytest.fixture
def server() -> Iterator[KubeAPIServer]:
    with KubeAPIServer("east", pod_ready_delay=0.05, pod_stop_delay=0.05) as running:
        yield running


@pytest.fixture
def http(server: KubeAPIServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10,
                      headers={"Authorization": f"Bearer {server.token}"}) as client:
        yield client


def pod(name: str = "jupyter-alice", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "notebook", "image": "a:1",
                                     "env": [{"name": "A", "value": "1"}]}], **spec}}


def eventually(predicate: Any, timeout: float = 5.0) -> Any:
    return wait_for(predicate, "the spawner's objects", timeout)


# -- strategic merge patches --------------------------------------------------------------


def test_strategic_merge_merges_lists_by_their_key() -> None:
    doc = {"spec": {"containers": [
        {"name": "a", "image": "x:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
         "ports": [{"containerPort": 8888}]},
        {"name": "b", "image": "y:1"}],
        "tolerations": [{"key": "k"}]}}
    patch = {"spec": {
        "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
        "containers": [{"name": "a", "env": [{"name": "B", "$patch": "delete"},
                                             {"name": "C", "value": "3"}]}],
        "tolerations": [{"key": "other"}]}}
    merged = strategic_merge(doc, patch)
    a = merged["spec"]["containers"][1]
    assert [c["name"] for c in merged["spec"]["containers"]] == ["b", "a"]
    assert a["image"] == "x:1" and a["ports"] == [{"containerPort": 8888}]
    assert a["env"] == [{"name": "A", "value": "1"}, {"name": "C", "value": "3"}]
    assert merged["spec"]["tolerations"] == [{"key": "other"}]  # no merge key: replaced
    assert doc["spec"]["containers"][0]["env"][1] == {"name": "B", "value": "2"}  # input intact


def test_strategic_merge_directives() -> None:
    doc = {"metadata": {"finalizers": ["a", "b"], "labels": {"x": "1", "y": "2"}},
           "spec": {"selector": {"k": "v", "old": "1"}, "strategy": {"type": "A", "extra": 1}}}
    merged = strategic_merge(doc, {
        "metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "labels": {"y": None}},
        "spec": {"selector": {"$patch": "replace", "k": "w"},
                 "strategy": {"$retainKeys": ["type"], "type": "B"}}})
    assert merged["metadata"] == {"finalizers": ["b"], "labels": {"x": "1"}}
    assert merged["spec"] == {"selector": {"k": "w"}, "strategy": {"type": "B"}}
    with pytest.raises(_PatchError, match="merge key"):
        strategic_merge(doc, {"spec": {"containers": [{"image": "no-name"}]}})


def test_strategic_patch_over_http_only_for_built_in_kinds(http: httpx.Client) -> None:
    http.post(PODS, json=pod()).raise_for_status()
    r = http.patch(f"{PODS}/jupyter-alice", headers=SMP, json={"spec": {"containers": [
        {"name": "notebook", "env": [{"name": "B", "value": "2"}]}]}})
    assert r.status_code == 200, r.text
    env = r.json()["spec"]["containers"][0]["env"]
    assert env == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    vs = "/apis/networking.istio.io/v1/namespaces/jupyterhub/virtualservices"
    http.post(vs, json={"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                        "metadata": {"name": "v"}, "spec": {}}).raise_for_status()
    refused = http.patch(f"{vs}/v", headers=SMP, json={"spec": {"hosts": ["a"]}})
    assert refused.status_code == 415  # as for any custom resource


# -- validation by the kinds' schemas, OpenAPI -------------------------------------------


def test_strict_validation_refuses_unknown_fields_and_writes_nothing(http: httpx.Client) -> None:
    bad = pod(nodeSelectr={"a": "b"})
    r = http.post(PODS, params={"fieldValidation": "Strict"}, json=bad)
    assert r.status_code == 400 and 'unknown field "spec.nodeSelectr"' in r.json()["message"]
    assert http.get(PODS).json()["items"] == []
    # Warn (the default) prunes it, as the apiserver does
    r = http.post(PODS, json=bad)
    assert r.status_code == 201 and "nodeSelectr" not in r.json()["spec"]
    assert "unknown field" in r.headers["Warning"]


def test_openapi_v3_lets_kubectl_validate_on_the_server(http: httpx.Client) -> None:
    index = http.get("/openapi/v3").json()["paths"]
    assert {"api/v1", "apis/networking.k8s.io/v1", "apis/networking.istio.io/v1"} <= set(index)
    doc = http.get(index["api/v1"]["serverRelativeURL"]).json()
    patch = doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {"group": "", "version": "v1", "kind": "Pod"}
    assert "fieldValidation" in {p["name"] for p in patch["parameters"]}
    schema = doc["components"]["schemas"]["io.k8s.api.core.v1.Pod"]
    assert "containers" in schema["properties"]["spec"]["properties"]
    assert http.get("/openapi/v3/apis/nothing.example.org/v1").status_code == 404


# -- kubelet and Service defaults -----------------------------------------------------------


def test_kubelet_starts_and_ends_pods(http: httpx.Client) -> None:
    created = http.post(PODS, json=pod()).json()
    assert created["status"]["phase"] == "Pending"
    ready = eventually(lambda: (s := http.get(f"{PODS}/jupyter-alice").json()["status"])
                       .get("phase") == "Running" and s)
    assert {c["type"]: c["status"] for c in ready["conditions"]}["Ready"] == "True"
    assert ready["podIP"].startswith("10.244.")
    deleted = http.delete(f"{PODS}/jupyter-alice").json()
    assert deleted["metadata"]["deletionTimestamp"]  # terminating first, as on a real node
    eventually(lambda: http.get(f"{PODS}/jupyter-alice").status_code == 404)


def test_a_service_gets_a_cluster_ip_and_port_defaults(http: httpx.Client) -> None:
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "jupyter-alice"},
           "spec": {"selector": {"k": "v"}, "ports": [{"port": 8888}]}}
    spec = http.post("/api/v1/namespaces/jupyterhub/services", json=svc).json()["spec"]
    assert spec["type"] == "ClusterIP" and spec["clusterIP"].startswith("10.96.")
    assert spec["ports"] == [{"port": 8888, "protocol": "TCP", "targetPort": 8888}]


# -- tokens, access records, RBAC -----------------------------------------------------------

ROLE = """
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: spawner, namespace: jupyterhub}
rules:
  - apiGroups: [""]
    resources: ["pods"]
    verbs: ["get", "create"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: spawner, namespace: jupyterhub}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: spawner}
subjects: [{kind: ServiceAccount, name: spawner, namespace: users}]
"""


def test_each_token_is_recorded_and_held_to_its_rules(server: KubeAPIServer) -> None:
    rules = rules_for(yaml.safe_load_all(ROLE), "spawner", "users")
    assert rules_for(yaml.safe_load_all(ROLE), "spawner", "elsewhere") == []
    server.add_token("spawner-token", "system:serviceaccount:users:spawner", rules)
    with httpx.Client(base_url=server.url, timeout=10,
                      headers={"Authorization": "Bearer spawner-token"}) as http:
        assert http.post(PODS, json=pod()).status_code == 201
        assert http.get(f"{PODS}/jupyter-alice").status_code == 200
        refused = http.delete(f"{PODS}/jupyter-alice")
        assert refused.status_code == 403
        assert refused.json()["message"] == (
            'pods "jupyter-alice" is forbidden: User "system:serviceaccount:users:spawner" cannot '
            'delete resource "pods" in API group "" in the namespace "jupyterhub"')
        assert http.get("/api/v1/namespaces/default/pods/x").status_code == 403
    user = "system:serviceaccount:users:spawner"
    assert server.accesses(user) == {("create", "", "pods", "jupyterhub"),
                                     ("get", "", "pods", "jupyterhub")}
    assert server.accesses(user, allowed=False) == {("delete", "", "pods", "jupyterhub"),
                                                    ("get", "", "pods", "default")}
    with httpx.Client(base_url=server.url, timeout=10,
                      headers={"Authorization": "Bearer wrong"}) as http:
        assert http.get(PODS).status_code == 401
