"""The Gateway API backend end to end, over HTTP: emulated clusters serving the Gateway API
CRDs, the proxy API contract's main rows, JupyterHub's own proxy client, mixed backends both
ways, and switching a cluster's backend with no route lost."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from federation.model import decode_entries
from federation.placement import user_service_names
from federation.testing.harness import wait_for

from ..conftest import CONTEXTS, GATEWAY_CRDS, ISTIO_CRDS, TOKEN, base_config, fast_settings
from ..gateway_schema import validate_gateway
from .test_jupyterhub_client import ROUTES, hub_proxy, spec

GW = ("gateway.networking.k8s.io", "v1", "httproutes")
ALL_GATEWAY = {"hub": "gateway-api", "east": "gateway-api", "west": "gateway-api"}


@pytest.fixture
def gw_clusters(tmp_path: Path) -> Iterator[Any]:
    from federation.testing import EmulatedClusters

    crds = sorted(ISTIO_CRDS.glob("*-crd.yaml")) + sorted(GATEWAY_CRDS.glob("*-crd.yaml"))
    with EmulatedClusters(list(CONTEXTS.values()), tmp_path, crd_files=crds) as emulated:
        for name in ("east", "west"):  # the spawner makes each user's namespace
            for _, _, data in ROUTES:
                if "user" in data:
                    emulated.servers[CONTEXTS[name]].add_namespace(
                        user_service_names(registry_cluster(name), data["user"], "")[1])
        yield emulated


def registry_cluster(name: str) -> Any:
    from federation.config import parse_registry

    return parse_registry(base_config(), check_kubeconfig=False).clusters[name]


def write_config(tmp_path: Path, clusters: Any, backends: dict[str, str]) -> Path:
    from federation.testing.harness import write_clusters_yaml

    doc = base_config(str(clusters.kubeconfig))
    for c in doc["clusters"]:
        c["backend"], _, option = backends[c["name"]].partition("+")
        if option == "hostname":
            c["externalBackend"] = "istioHostname"
    return write_clusters_yaml(tmp_path / "clusters.yaml", doc)


def service_on(config: Path) -> Any:
    from federation.testing.harness import ServiceThread

    return ServiceThread(fast_settings(config))


def client(svc: Any) -> httpx.Client:
    return httpx.Client(base_url=svc.url, headers={"Authorization": f"token {TOKEN}"}, timeout=20)


def objects(clusters: Any, name: str, kind: tuple[str, str, str] = GW) -> list[dict[str, Any]]:
    return clusters.servers[CONTEXTS[name]].objects(*kind, "jupyterhub")


def routes_in(clusters: Any, name: str, kind: tuple[str, str, str] = GW) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for obj in objects(clusters, name, kind):
        for path, entry in decode_entries(obj).items():
            assert path not in out, f"{path} stored twice in {name}"
            out[path] = entry
    return out


def all_written(clusters: Any) -> list[dict[str, Any]]:
    out = []
    for name in CONTEXTS:
        server = clusters.servers[CONTEXTS[name]]
        for group, version, plural in (GW, ("", "v1", "services"),
                                       ("discovery.k8s.io", "v1", "endpointslices"),
                                       ("gateway.networking.k8s.io", "v1", "backendtlspolicies"),
                                       ("gateway.networking.k8s.io", "v1beta1", "referencegrants")):
            out += server.objects(group, version, plural)
    return out


def test_hub_client_round_trip_on_gateway_api(tmp_path: Path, gw_clusters: Any) -> None:
    with service_on(write_config(tmp_path, gw_clusters, ALL_GATEWAY)) as svc:
        async def scenario() -> None:
            proxy = hub_proxy(svc)
            for routespec, target, data in ROUTES:
                await proxy.add_route(routespec, target, dict(data))
            routes = await proxy.get_all_routes()
            assert set(routes) == {r[0] for r in ROUTES}
            for routespec, target, data in ROUTES:
                got = await proxy.get_route(routespec)
                assert got is not None and got["target"] == target, routespec
                assert {k: v for k, v in got["data"].items() if k != "last_activity"} == data
            await proxy.delete_route(spec("zoe"))
            assert await proxy.get_route(spec("zoe")) is None
            await proxy.delete_route(spec("zoe"))  # 404 is "already deleted" for the hub

        asyncio.run(scenario())
    assert set(routes_in(gw_clusters, "east")) == {"/user/秀樹"}
    home = routes_in(gw_clusters, "hub")
    assert home["/user/秀樹"].edge and home["/user/秀樹"].owner == "east"
    assert "/user/zoe" not in home  # its edge rule went with it
    kinds = set()
    for obj in all_written(gw_clusters):
        if GATEWAY_CRDS.exists():
            validate_gateway(obj, GATEWAY_CRDS)
        kinds.add(obj["kind"])
    # the pod IP, the remote ingresses (one https), the user Services' namespaces
    assert {"HTTPRoute", "Service", "EndpointSlice", "BackendTLSPolicy",
            "ReferenceGrant"} <= kinds


def test_contract_rows_on_gateway_api(tmp_path: Path, gw_clusters: Any) -> None:
    with service_on(write_config(tmp_path, gw_clusters, ALL_GATEWAY)) as svc, client(svc) as api:
        assert api.post("/api/routes", json={"target": "http://hub:8081"}).status_code == 201
        body = {"target": "http://10.1.2.3:8888", "user": "alice"}
        for _ in range(2):  # a repeated POST is harmless
            assert api.post("/api/routes/user/alice/", json=body).status_code == 201
        assert api.get("/api/routes/user/alice").json()["target"] == "http://10.1.2.3:8888"
        assert set(api.get("/api/routes").json()) == {"/", "/user/alice"}
        # a move to another cluster: the new copy wins, the old one goes
        moved = {"target": "https://east.hub.example.org", "user": "alice", "server_name": ""}
        assert api.post("/api/routes/user/alice", json=moved).status_code == 201
        assert routes_in(gw_clusters, "east")["/user/alice"].owner == "east"
        assert routes_in(gw_clusters, "hub")["/user/alice"].edge
        assert api.post("/api/routes/user/a//b", json=body).status_code == 400
        assert api.delete("/api/routes/user/alice").status_code == 204
        assert api.get("/api/routes/user/alice").status_code == 404
        assert api.delete("/api/routes/user/alice").status_code == 404
        assert set(routes_in(gw_clusters, "hub")) == {"/"}
        assert routes_in(gw_clusters, "east") == {}
        rows = api.get("/clusters").json()["clusters"]
        assert [r["routes"] for r in rows] == [1, 0, 0]
        assert all(r["watch"] == "synced" for r in rows)


@pytest.mark.parametrize("backends", [
    {"hub": "istio", "east": "gateway-api", "west": "gateway-api"},
    {"hub": "gateway-api", "east": "istio", "west": "istio"},
    {"hub": "gateway-api+hostname", "east": "istio", "west": "gateway-api"},
])
def test_mixed_backends_store_each_side_in_its_kind(tmp_path: Path, gw_clusters: Any,
                                                    backends: dict[str, str]) -> None:
    vs = ("networking.istio.io", "v1", "virtualservices")
    with service_on(write_config(tmp_path, gw_clusters, backends)) as svc, client(svc) as api:
        for path, target, data in ROUTES:
            assert api.post(f"/api/routes{path}", json={"target": target, **data}).status_code == 201
        assert len(api.get("/api/routes").json()) == len(ROUTES)
    kind = {"istio": vs, "gateway-api": GW}
    hub_backend = backends["hub"].partition("+")[0]
    home = routes_in(gw_clusters, "hub", kind[hub_backend])
    east = routes_in(gw_clusters, "east", kind[backends["east"]])
    assert set(east) == {"/user/zoe", "/user/秀樹"}
    assert home["/user/zoe"].edge and not home["/"].edge
    other = "gateway-api" if hub_backend == "istio" else "istio"
    assert routes_in(gw_clusters, "hub", kind[other]) == {}
    if backends["hub"].endswith("+hostname"):
        # the edge hop's ServiceEntry (and DestinationRule for east's https), no ExternalName
        entries = objects(gw_clusters, "hub", ("networking.istio.io", "v1", "serviceentries"))
        assert {"east.hub.example.org", "west.hub.example.org"} <= {
            h for e in entries for h in e["spec"]["hosts"]}
        assert objects(gw_clusters, "hub", ("networking.istio.io", "v1", "destinationrules"))
        assert not any(s["spec"].get("type") == "ExternalName"
                       for s in objects(gw_clusters, "hub", ("", "v1", "services")))


def test_switching_a_backend_moves_every_route(tmp_path: Path, gw_clusters: Any) -> None:
    vs = ("networking.istio.io", "v1", "virtualservices")
    istio = {"hub": "istio", "east": "istio", "west": "istio"}
    config = write_config(tmp_path, gw_clusters, istio)
    with service_on(config) as svc, client(svc) as api:
        for path, target, data in ROUTES:
            assert api.post(f"/api/routes{path}", json={"target": target, **data}).status_code == 201
        before = api.get("/api/routes").json()
        east_before = routes_in(gw_clusters, "east", vs)
        switched = {**istio, "east": "gateway-api", "hub": "gateway-api"}
        write_config(tmp_path, gw_clusters, switched)
        svc.app.state.reload_trigger.set()
        def old_objects_gone() -> bool:
            assert api.get("/api/routes").json() == before  # none lost on the way
            return not (objects(gw_clusters, "east", vs) or objects(gw_clusters, "hub", vs))

        wait_for(old_objects_gone, "the old backend's objects to go")
        assert svc.federation.registry.clusters["east"].backend == "gateway-api"
        assert api.get("/api/routes").json() == before
        assert routes_in(gw_clusters, "east") == east_before
        assert set(routes_in(gw_clusters, "hub")) == set(before)  # routes and edge rules
        # the old objects are gone; the untouched cluster keeps its own
        assert objects(gw_clusters, "east", vs) == [] and objects(gw_clusters, "hub", vs) == []
        assert routes_in(gw_clusters, "west", vs)
        assert api.delete("/api/routes/user/zoe").status_code == 204
        assert "/user/zoe" not in routes_in(gw_clusters, "east")


def test_a_newer_write_of_a_route_wins_across_replicas(tmp_path: Path, gw_clusters: Any) -> None:
    """Two replicas: an older write arriving late never replaces a newer one (written-at, then
    owner), and every replica's table converges on what is stored."""
    from federation.model import Entry

    from ..conftest import running_replicas

    config = write_config(tmp_path, gw_clusters, ALL_GATEWAY)
    with running_replicas(config, 2) as (one, two), client(one) as api1, client(two) as api2:
        body = {"target": "http://10.1.2.3:8888", "user": "alice"}
        assert api1.post("/api/routes/user/alice", json=body).status_code == 201
        newer = {"target": "http://10.1.2.4:8888", "user": "alice"}
        assert api2.post("/api/routes/user/alice", json=newer).status_code == 201
        stored = routes_in(gw_clusters, "hub")["/user/alice"]
        assert stored.target == newer["target"]
        late = Entry("/user/alice", "http://10.9.9.9:8888", "hub", {}, "2000-01-01T00:00:00.000Z")
        one.run(one.federation.stores["hub"].backend.put(late))
        assert routes_in(gw_clusters, "hub")["/user/alice"] == stored
        wait_for(lambda: all(a.get("/api/routes/user/alice").json()["target"] == newer["target"]
                             for a in (api1, api2)), "both replicas to list the newer write", 10)
        # a delete through one replica is seen by the other, and a stale delete is a 404
        assert api1.delete("/api/routes/user/alice").status_code == 204
        assert routes_in(gw_clusters, "hub") == {}
        wait_for(lambda: api2.get("/api/routes/user/alice").status_code == 404,
                 "the other replica to see the delete", 10)
        assert api2.delete("/api/routes/user/alice").status_code == 404


def test_housekeeping_follows_config_and_removes_unused_objects(tmp_path: Path,
                                                                gw_clusters: Any) -> None:
    """A reload's new http options reach existing HTTPRoutes; the support objects and host
    defaults of removed routes go (after the grace period, 0 here)."""
    from federation.testing.harness import write_clusters_yaml

    config = write_config(tmp_path, gw_clusters, ALL_GATEWAY)
    services = ("", "v1", "services")
    with service_on(config) as svc, client(svc) as api:
        assert api.post("/api/routes", json={"target": "http://hub:8081"}).status_code == 201
        host_route = "/alice.hub.example.org/user/alice"
        assert api.post(f"/api/routes{host_route}",
                        json={"target": "http://10.1.2.3:8888"}).status_code == 201
        roles = sorted(o["metadata"]["labels"]["federation.jupyter.org/role"]
                       for o in objects(gw_clusters, "hub"))
        assert roles == ["host-default", "route", "route"]
        assert len(objects(gw_clusters, "hub", services)) == 1
        doc = yaml.safe_load(config.read_text())
        doc["defaults"]["http"] = {"timeout": "30s"}
        write_clusters_yaml(config, doc)
        svc.app.state.reload_trigger.set()
        wait_for(lambda: svc.federation.registry.home_cluster.http.timeout == "30s",
                 "the reload of the http options")
        svc.run(svc.federation.reconcile(grace=0))
        for obj in objects(gw_clusters, "hub"):
            assert all(r["timeouts"] == {"request": "30s"} for r in obj["spec"]["rules"])
        assert api.delete(f"/api/routes{host_route}").status_code == 204
        assert api.delete("/api/routes/").status_code == 204
        svc.run(svc.federation.reconcile(grace=0))
        assert objects(gw_clusters, "hub") == []
        assert objects(gw_clusters, "hub", services) == []
        assert objects(gw_clusters, "hub", ("discovery.k8s.io", "v1", "endpointslices")) == []


def test_a_switch_that_cannot_write_keeps_the_running_config(tmp_path: Path,
                                                              gw_clusters: Any) -> None:
    """When the new kind cannot be written (here: creates refused), the reload is refused as a
    whole: the old backend keeps serving every route, and a later reload completes it."""
    vs = ("networking.istio.io", "v1", "virtualservices")
    istio = {"hub": "istio", "east": "istio", "west": "istio"}
    config = write_config(tmp_path, gw_clusters, istio)
    with service_on(config) as svc, client(svc) as api:
        for path, target, data in ROUTES[:3]:
            assert api.post(f"/api/routes{path}", json={"target": target, **data}).status_code == 201
        before = api.get("/api/routes").json()
        east_before = routes_in(gw_clusters, "east", vs)
        gw_clusters.servers[CONTEXTS["east"]].inject_errors(2, 422, verbs=["create"])
        write_config(tmp_path, gw_clusters, {**istio, "east": "gateway-api"})
        svc.app.state.reload_trigger.set()
        wait_for(lambda: svc.federation.last_reload_error is not None, "the refused reload")
        assert "cannot move the routes of east" in svc.federation.last_reload_error
        assert svc.federation.registry.clusters["east"].backend == "istio"
        assert api.get("/api/routes").json() == before
        assert routes_in(gw_clusters, "east", vs) == east_before
        def switched() -> bool:
            svc.app.state.reload_trigger.set()  # a later reload completes the switch
            return bool(svc.federation.registry.clusters["east"].backend == "gateway-api")

        wait_for(switched, "a later reload to switch east")
        assert api.get("/api/routes").json() == before
        assert routes_in(gw_clusters, "east") == east_before
