"""The chart's RBAC for clusters on the Gateway API: granted only where a cluster uses it."""

from __future__ import annotations

from typing import Any

import pytest

from .test_chart import EXPECTED_RULES, FULLNAME, OUTSIDE_PREFIX, assert_no_wildcards

GATEWAY_WRITE = ["get", "list", "watch", "create", "update", "patch", "delete"]


def gateway_values(where: str) -> dict[str, Any]:
    hub: dict[str, Any] = {"name": "hub", "inCluster": True}
    defaults: dict[str, Any] = {"gateway": "istio-system/jupyterhub-gateway",
                                "hosts": ["hub.example.org"]}
    (defaults if where == "defaults" else hub)["backend"] = "gateway-api"
    hub["sectionName"] = "https"
    return {"config": {"home": "hub", "defaults": defaults, "clusters": [hub]}}


@pytest.mark.parametrize("where", ["defaults", "cluster"])
def test_gateway_api_kinds_are_granted_when_a_cluster_uses_them(render, where: str) -> None:
    rendered = render(values=gateway_values(where))
    rules = rendered.one("Role", FULLNAME)["rules"]
    assert rules[:len(EXPECTED_RULES)] == EXPECTED_RULES
    extra = {(tuple(r["apiGroups"]), tuple(r["resources"])): r["verbs"]
             for r in rules[len(EXPECTED_RULES):]}
    assert extra == {
        (("gateway.networking.k8s.io",), ("httproutes", "backendtlspolicies")): GATEWAY_WRITE,
        (("",), ("services",)): GATEWAY_WRITE,
        (("discovery.k8s.io",), ("endpointslices",)): GATEWAY_WRITE,
    }
    cluster_role = rendered.one("ClusterRole", f"{OUTSIDE_PREFIX}-gateway-api")
    assert [(r["resources"], r["verbs"]) for r in cluster_role["rules"]] == [
        (["referencegrants"], ["create"]), (["gateways"], ["get", "list"]),
        (["namespaces"], ["get"])]
    assert_no_wildcards(rules + cluster_role["rules"])
    binding = rendered.one("ClusterRoleBinding", f"{OUTSIDE_PREFIX}-gateway-api")
    assert binding["roleRef"]["name"] == f"{OUTSIDE_PREFIX}-gateway-api"


def test_istio_only_setups_get_no_gateway_api_rights(render) -> None:
    rendered = render()
    assert rendered.one("Role", FULLNAME)["rules"] == EXPECTED_RULES
    assert not rendered.has("ClusterRole")
