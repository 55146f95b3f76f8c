"""``federation check`` for a gateway-api cluster: the Gateway exists, is Programmed, and a
listener admits HTTPRoutes from the service's namespace."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from federation.config import parse_registry
from federation.errors import NotFound
from federation.gateway.check import admits, gateway_findings

from .conftest import base_config


class FakeClient:
    def __init__(self, objects: dict[str, Any]) -> None:
        self.objects = objects

    async def read(self, path: str) -> Any:
        if path not in self.objects:
            raise NotFound(f"get {path}: 404", cluster="hub", verb="get", status=404)
        return self.objects[path]


def cluster(**keys: Any) -> Any:
    doc = base_config()
    doc["clusters"][0].update({"backend": "gateway-api", **keys})
    return parse_registry(doc, check_kubeconfig=False).clusters["hub"]


GW_PATH = "/apis/gateway.networking.k8s.io/v1/namespaces/istio-system/gateways/jupyterhub-gateway"
NS_PATH = "/api/v1/namespaces/jupyterhub"


def gateway(programmed: str, listeners: list[dict[str, Any]]) -> dict[str, Any]:
    return {"spec": {"listeners": listeners},
            "status": {"conditions": [{"type": "Programmed", "status": programmed,
                                       "reason": "Programmed" if programmed == "True" else "Pending"}]}}


def findings(objects: dict[str, Any], **keys: Any) -> dict[str, bool | None]:
    got = asyncio.run(gateway_findings(FakeClient(objects), cluster(**keys)))
    return {check: ok for check, ok, _ in got}


def test_a_programmed_gateway_that_admits_us_passes() -> None:
    listener = {"name": "https", "protocol": "HTTPS",
                "allowedRoutes": {"namespaces": {"from": "Selector", "selector": {
                    "matchLabels": {"hub": "yes"}}}}}
    objects = {GW_PATH: gateway("True", [listener]),
               NS_PATH: {"metadata": {"labels": {"hub": "yes"}}}}
    assert findings(objects) == {"Gateway exists": True, "Gateway Programmed": True,
                                 "Gateway admits our routes": True}
    objects[NS_PATH] = {"metadata": {"labels": {}}}
    assert findings(objects)["Gateway admits our routes"] is False


def test_missing_unprogrammed_or_closed_gateways_fail() -> None:
    assert findings({}) == {"Gateway exists": False}
    same = {"name": "http", "protocol": "HTTP"}  # default: routes from the Gateway's namespace
    got = findings({GW_PATH: gateway("False", [same]), NS_PATH: {"metadata": {}}})
    assert got["Gateway Programmed"] is False and got["Gateway admits our routes"] is False
    open_ = {"name": "other", "protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "All"}}}
    got = findings({GW_PATH: gateway("True", [same, open_]), NS_PATH: {}})
    assert got["Gateway admits our routes"] is True
    # with sectionName, only that listener counts
    got = findings({GW_PATH: gateway("True", [same, open_]), NS_PATH: {}}, sectionName="http")
    assert got["Gateway admits our routes"] is False


@pytest.mark.parametrize(("listener", "want"), [
    ({"protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "Same"}}}, False),
    ({"protocol": "TCP", "allowedRoutes": {"namespaces": {"from": "All"}}}, False),
    ({"protocol": "HTTPS", "allowedRoutes": {"kinds": [{"kind": "GRPCRoute"}],
                                             "namespaces": {"from": "All"}}}, False),
    ({"protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "Selector", "selector": {
        "matchExpressions": [{"key": "a", "operator": "Exists"}]}}}}, None),
])
def test_listener_admission(listener: dict[str, Any], want: bool | None) -> None:
    assert admits(listener, "istio-system", "jupyterhub", {}) is want
    assert admits({**listener, "allowedRoutes": {}}, "jupyterhub", "jupyterhub", {}) is (
        listener["protocol"] != "TCP")


def test_route_status_counts_what_the_gateway_refused() -> None:
    from federation.gateway.backend import GatewayBackend
    from federation.gateway.index import ROUTES, RouteObjectIndex
    from federation.gateway.objects import build_route
    from federation.mirror import RouteEntries
    from federation.model import Entry
    from federation.scope import Scope
    from federation.table import RouteTable

    registry = parse_registry({**base_config(), "defaults": {
        **base_config()["defaults"], "backend": "gateway-api"}}, check_kubeconfig=False)
    hub = registry.clusters["hub"]
    cache = RouteObjectIndex(RouteEntries("hub", RouteTable()))
    backend = GatewayBackend(Scope(registry, hub), None, cache)  # type: ignore[arg-type]  # status needs no mirror
    reasons = [("Accepted", "NotAllowedByListeners"), ("ResolvedRefs", "BackendNotFound"),
               ("Accepted", "NoMatchingListenerHostname"), None]
    for i, reason in enumerate(reasons):
        obj = build_route(registry, hub, Entry(f"/user/u{i}", "http://hub:8081", "hub", {}, "t"))
        obj["metadata"]["resourceVersion"] = str(i + 1)
        conditions = [{"type": "Accepted", "status": "True"}]
        if reason:
            conditions = [{"type": reason[0], "status": "False", "reason": reason[1]}]
        obj["status"] = {"parents": [{"parentRef": {"name": "g"}, "conditions": conditions}]}
        cache.put(ROUTES, obj["metadata"]["name"], obj, None)
    status = backend.status(examples=2)
    assert (status["not_accepted"], status["unresolved_refs"]) == (2, 1)
    assert len(status["examples"]) == 2
    assert all(": Accepted " in e or ": ResolvedRefs " in e for e in status["examples"])
    # a route the gateway accepts again leaves the count
    name = sorted(cache.problems)[0]
    obj = {"metadata": {"name": name, "resourceVersion": "99", "labels": {
        "federation.jupyter.org/role": "route"}, "annotations": {}},
        "status": {"parents": [{"conditions": [{"type": "Accepted", "status": "True"}]}]}}
    cache.put(ROUTES, name, obj, None)
    assert sum(backend.status().get(k) for k in ("not_accepted", "unresolved_refs")) == 2
