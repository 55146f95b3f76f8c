"""The emulated API server's Leases, as host claims (federation/claims.py) rely on them:
create-only (a second create is 409 AlreadyExists), replace and delete held to the
resourceVersion, any namespace reachable, and RBAC from the Role YAML an operator applies
(docs/examples/remote-rbac.yaml: a service account in ``jupyterhub`` claiming in
``istio-system``)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from federation.claims import Claim, build_lease
from federation.config import parse_registry
from federation.testing.kubeapi import KubeAPIServer
from federation.testing.kubeapi.rbac import rules_for

from ..conftest import base_config

REPO = Path(__file__).resolve().parents[2]
LEASES = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"


@pytest.fixture
def server() -> Iterator[KubeAPIServer]:
    with KubeAPIServer("leases", token="admin") as srv:
        yield srv


def client(server: KubeAPIServer, token: str = "admin") -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"})


def lease(name: str = "federation-host-east", holder: str = "jupyterhub/jupyterhub") -> Any:
    registry = parse_registry(base_config(), check_kubeconfig=False)
    body = build_lease(registry, registry.clusters["east"],
                       Claim("east.hub.example.org", "istio-system", "east", True), 60,
                       datetime.now(UTC))
    body["metadata"]["name"] = name
    body["spec"]["holderIdentity"] = holder
    return body


def test_a_second_create_is_409_and_the_first_holder_stays(server: KubeAPIServer) -> None:
    with client(server) as http:
        url = LEASES.format(ns="istio-system")
        body = lease(holder="jupyterhub/jupyterhub")
        first = http.post(url, json=body)
        assert first.status_code == 201, first.text
        # Every field of the claim is a Lease field: none pruned.
        assert first.json()["spec"] == body["spec"]
        assert first.json()["metadata"]["annotations"] == body["metadata"]["annotations"]
        second = http.post(url, json=lease(holder="hubb/jupyterhub"))
        assert second.status_code == 409 and second.json()["reason"] == "AlreadyExists"
        got = http.get(f"{url}/federation-host-east").json()
        assert got["spec"]["holderIdentity"] == "jupyterhub/jupyterhub"


def test_replace_and_delete_are_held_to_the_resource_version(server: KubeAPIServer) -> None:
    with client(server) as http:
        url = LEASES.format(ns="istio-system")
        created = http.post(url, json=lease()).json()
        renewal = {**created, "spec": {**created["spec"], "renewTime": "2030-01-01T00:00:00.000000Z"}}
        renewed = http.put(f"{url}/federation-host-east", json=renewal)
        assert renewed.status_code == 200
        stale = http.put(f"{url}/federation-host-east", json={  # from the old version
            **created, "spec": {**created["spec"], "holderIdentity": "hubb/jupyterhub"}})
        assert stale.status_code == 409 and stale.json()["reason"] == "Conflict"
        gone = http.request("DELETE", f"{url}/federation-host-east", json={
            "preconditions": {"resourceVersion": created["metadata"]["resourceVersion"]}})
        assert gone.status_code == 409
        assert http.get(f"{url}/federation-host-east").status_code == 200


def test_the_remote_rbac_example_lets_the_service_claim_in_the_gateway_namespace(
        server: KubeAPIServer) -> None:
    docs = list(yaml.safe_load_all((REPO / "docs/examples/remote-rbac.yaml").read_text()))
    server.add_token("sa-token", "system:serviceaccount:jupyterhub:federation-proxy",
                     rules_for(docs, "federation-proxy", "jupyterhub"))
    with client(server, "sa-token") as http:
        url = LEASES.format(ns="istio-system")
        created = http.post(url, json=lease())
        assert created.status_code == 201, created.text
        name = created.json()["metadata"]["name"]
        assert http.get(f"{url}/{name}").status_code == 200
        assert http.put(f"{url}/{name}", json=created.json()).status_code == 200
        assert http.delete(f"{url}/{name}").status_code == 200
        # Nowhere else: not in another namespace, and no listing of every claim.
        assert http.post(LEASES.format(ns="default"), json=lease()).status_code == 403
        assert http.get(url).status_code == 403
