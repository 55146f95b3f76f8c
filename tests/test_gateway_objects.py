"""The Gateway API builders: every object validates against the Gateway API CRDs (and the
CEL rules they carry); names stay DNS labels; what the CRDs would refuse is refused before
anything is written; config keys for the backend."""

from __future__ import annotations

import json
import random

import jsonschema
import pytest

from federation.config import parse_registry
from federation.errors import ConfigError, InvalidRoute
from federation.gateway.objects import (
    ANN_SPEC,
    build_route,
    gateway_duration,
    path_problem,
    spec_hash,
    with_spec_hash,
)
from federation.mirror import fingerprint
from federation.model import ANN_ROUTES, Entry, decode_entries
from federation.placement import user_service_names
from federation.plan import plan_route, render_table

from .conftest import GATEWAY_CRDS, base_config
from .gateway_schema import validate_gateway
from .routing.test_properties import random_table

NOW = "2026-11-20T12:00:00.000Z"


def registry(instance: str = "jupyterhub", **cluster_keys):
    doc = base_config(instance=instance)
    for c in doc["clusters"]:
        c["backend"] = "gateway-api"
        c.update(cluster_keys)
    return parse_registry(doc, check_kubeconfig=False)


@pytest.mark.upstream_schemas("gateway-api")
def test_every_object_of_random_tables_validates() -> None:
    reg = registry("i" * 40, sectionName="https", http={
        "stripPrefix": True, "timeout": "2.5m",
        "requestHeaders": {"set": {"X-Forwarded-Prefix": "{prefix}"}, "add": {"X-A": "1"},
                           "remove": ["Cookie2"]}})
    kinds = set()
    for seed in range(40):
        table, _ = random_table(random.Random(seed))
        table["/ext/files"] = {"target": "https://files.example.com"}
        for objects in render_table(reg, table).values():
            for obj in objects:
                validate_gateway(obj, GATEWAY_CRDS)
                kinds.add(obj["kind"])
    assert kinds == {"HTTPRoute", "Service", "EndpointSlice", "BackendTLSPolicy",
                     "ReferenceGrant"}


@pytest.mark.upstream_schemas("gateway-api", "istio")
def test_istio_hostname_edge_objects_validate() -> None:
    """externalBackend: istioHostname: the edge hop names the remote ingress host through
    Istio's Hostname backendRef, made known to the mesh by a ServiceEntry (and TLS by a
    DestinationRule); every object passes its CRD (Istio's for the Istio kinds)."""
    from .conftest import ISTIO_CRDS
    from .istio_schema import validate

    reg = registry(externalBackend="istioHostname")
    table, _ = random_table(random.Random(5))
    table["/user/bob"] = {"target": "https://east.hub.example.org", "user": "bob"}
    table["/ext/files"] = {"target": "https://files.example.com"}
    kinds = set()
    for objects in render_table(reg, table).values():
        for obj in objects:
            kinds.add(obj["kind"])
            if obj["apiVersion"].startswith("networking.istio.io/"):
                validate(obj, ISTIO_CRDS)
            else:
                validate_gateway(obj, GATEWAY_CRDS)
    assert {"ServiceEntry", "DestinationRule", "HTTPRoute"} <= kinds
    assert "BackendTLSPolicy" not in kinds
    hub = render_table(reg, {"/user/bob": table["/user/bob"]})["hub"]
    ref = hub[0]["spec"]["rules"][0]["backendRefs"][0]
    assert ref == {"group": "networking.istio.io", "kind": "Hostname",
                   "name": "east.hub.example.org", "port": 443}
    doc = base_config()
    doc["clusters"][0]["externalBackend"] = "istioHostname"
    with pytest.raises(ConfigError, match="externalBackend: only for backend: gateway-api"):
        parse_registry(doc, check_kubeconfig=False)


def test_a_rendered_table_is_what_the_service_would_write() -> None:
    """Objects stored from the builders (a benchmark's table, or one applied by hand) carry the
    hash of the object as built: the service's first housekeeping pass takes them as its own
    instead of rewriting every HTTPRoute and support object of the table."""
    reg = registry()
    table, _ = random_table(random.Random(3))
    table["/ext/files"] = {"target": "https://files.example.com"}
    for objects in render_table(reg, table).values():
        for obj in objects:
            annotations = obj["metadata"]["annotations"]
            assert annotations.get(ANN_SPEC) == spec_hash(obj), obj["metadata"]["name"]
            assert fingerprint(obj) == fingerprint(with_spec_hash(obj))


@pytest.mark.upstream_schemas("gateway-api")
def test_validation_can_fail() -> None:
    reg = registry()
    obj = build_route(reg, reg.clusters["hub"], Entry("/user/a", "http://hub:8081", "hub", {}, NOW))
    validate_gateway(obj, GATEWAY_CRDS)
    broken = json.loads(json.dumps(obj))
    broken["spec"]["rules"][0]["matches"][0]["path"]["value"] = "/user/%2Fa"
    with pytest.raises(jsonschema.ValidationError):
        validate_gateway(broken, GATEWAY_CRDS)
    broken = json.loads(json.dumps(obj))
    broken["spec"]["hostnames"] = [f"h{i}.example.org" for i in range(17)]
    with pytest.raises(jsonschema.ValidationError):
        validate_gateway(broken, GATEWAY_CRDS)


def test_route_carries_its_state_and_unicode_paths_are_percent_encoded() -> None:
    reg = registry()
    east = reg.clusters["east"]
    e = Entry("/user/秀樹", "https://east.hub.example.org", "east",
              {"user": "秀樹", "server_name": ""}, NOW)
    obj = build_route(reg, east, e)
    assert decode_entries(obj) == {e.path: e}
    assert json.loads(obj["metadata"]["annotations"][ANN_ROUTES])[e.path]["owner"] == "east"
    values = [m["path"]["value"] for r in obj["spec"]["rules"] for m in r["matches"]]
    assert values == ["/user/%E7%A7%80%E6%A8%B9"]
    # the remote ingress host is a hostname too: the edge hop arrives addressed to it
    assert obj["spec"]["hostnames"] == ["hub.example.org", "east.hub.example.org"]
    ref = obj["spec"]["rules"][0]["backendRefs"][0]
    # MultiClusterKubeSpawner's naming (tested against its vectors in test_placement.py)
    name, namespace = user_service_names(east, "秀樹", "")
    assert (ref["name"], ref["namespace"], ref["port"]) == (name, namespace, 8888)
    assert len(obj["metadata"]["name"]) <= 63


@pytest.mark.parametrize("path", ["/user/a//b", "/user/./x", "/user/x/..", "/user/."])
def test_paths_the_crd_refuses_are_refused_first(path: str) -> None:
    with pytest.raises(InvalidRoute, match="Gateway API"):
        plan_route(registry(), path, {"target": "http://hub:8081"}, NOW)
    # The Istio backend takes them as before.
    plan_route(parse_registry(base_config(), check_kubeconfig=False), path,
               {"target": "http://hub:8081"}, NOW)


def test_ip_host_routes_are_refused_on_gateway_api() -> None:
    with pytest.raises(InvalidRoute, match="IP address"):
        plan_route(registry(), "/10.0.0.1/user/a", {"target": "http://hub:8081"}, NOW)


def test_path_problem_accepts_every_wire_spelling() -> None:
    assert path_problem("/user/has@/~x/%E7%A7%80") is None
    assert path_problem("/user/a%2fb") is not None
    assert path_problem("/" + "a" * 1024) is not None


@pytest.mark.parametrize(("text", "want"), [("30s", "30s"), ("1.5s", "1s500ms"),
                                             ("2.5m", "2m30s"), ("500ms", "500ms"),
                                             ("1h", "1h"), ("0s", "0s")])
def test_durations_become_gateway_api_durations(text: str, want: str) -> None:
    assert gateway_duration(text) == want


def test_config_backend_keys() -> None:
    reg = registry(sectionName="https")
    hub = reg.clusters["hub"]
    assert (hub.backend, hub.section_name) == ("gateway-api", "https")
    assert parse_registry(base_config(), check_kubeconfig=False).clusters["hub"].backend == "istio"
    doc = base_config()
    doc["clusters"][0]["backend"] = "nginx"
    with pytest.raises(ConfigError, match=r"clusters\[hub\]\.backend"):
        parse_registry(doc, check_kubeconfig=False)
    doc = base_config()
    doc["clusters"][0]["sectionName"] = "https"
    with pytest.raises(ConfigError, match="only for backend: gateway-api"):
        parse_registry(doc, check_kubeconfig=False)
    doc = base_config()
    doc["defaults"]["backend"] = "gateway-api"
    doc["clusters"][0]["sectionName"] = "Bad_Name"
    with pytest.raises(ConfigError, match="sectionName"):
        parse_registry(doc, check_kubeconfig=False)


@pytest.mark.upstream_schemas("gateway-api")
def test_example_gateway_validates_and_admits_the_namespace() -> None:
    """The guide's example Gateway is valid and its listeners admit the service's routes."""
    import yaml

    from federation.gateway.check import admits

    from .conftest import REPO
    from .istio_schema import validators

    gateway = yaml.safe_load((REPO / "docs" / "examples" / "gateway-api-gateway.yaml").read_text())
    validators(str(GATEWAY_CRDS))[("Gateway", "v1")].validate(
        {k: v for k, v in gateway.items() if k != "metadata"})
    labels = {"kubernetes.io/metadata.name": "jupyterhub"}
    assert all(admits(lst, "istio-system", "jupyterhub", labels) for lst in gateway["spec"]["listeners"])


def test_activity_follows_the_service_a_pod_ip_route_names() -> None:
    """Traffic activity is matched by the mesh's destination_service: on the Gateway API a
    pod IP is reached through the selector-less Service its rule names."""
    from federation.activity import Destinations

    reg = registry()
    hub = reg.clusters["hub"]
    e = Entry("/user/a", "http://10.1.2.3:8888", "hub", {}, NOW)
    ref = build_route(reg, hub, e)["spec"]["rules"][0]["backendRefs"][0]
    assert Destinations().host(reg, hub, e) == f"{ref['name']}.jupyterhub.svc.cluster.local"
    istio = parse_registry(base_config(), check_kubeconfig=False)
    assert Destinations().host(istio, istio.clusters["hub"], e) == \
        "ip-10-1-2-3.jupyterhub.federation.internal"
