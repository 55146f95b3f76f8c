"""Two hubs on the same three emulated clusters, sharing the remote clusters' ingress hosts:
host claims (federation/claims.py) keep each host with one hub from before its first rule.

Every step is judged through both hops with the routing evaluators: no probe sent to one hub's
public host may reach a server of the other hub's users, whatever the gateways' merge order.
Both backends; both hubs in one namespace, or each in its own (one z2jh release per namespace,
both with the default instance name ``jupyterhub``).
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from federation import metrics
from federation.claims import LEASES, claim_name, holder_of
from federation.claims_cli import release_claims, take_claims
from federation.config import Registry, load_registry
from federation.kube import build_clients
from federation.testing.harness import ServiceThread, wait_for, write_clusters_yaml

from .conftest import CONTEXTS, GATEWAY_CRDS, ISTIO_CRDS, TOKEN, base_config, fast_settings
from .routing.test_shared_hubs import PROBES, TABLE, hop

USERS = ("alice", "bob")
VS = ("networking.istio.io", "v1", "virtualservices")
GATEWAY_KINDS = (("gateway.networking.k8s.io", "v1", "httproutes"), ("", "v1", "services"),
                 ("discovery.k8s.io", "v1", "endpointslices"),
                 ("gateway.networking.k8s.io", "v1beta1", "referencegrants"))


@dataclass(frozen=True)
class Hub:
    instance: str
    namespace: str
    host: str
    users: str  # the prefix of its users' namespaces

    @property
    def identity(self) -> str:
        return f"{self.namespace}/{self.instance}"


HUB_A = Hub("jupyterhub", "jupyterhub", "hub.example.org", "huba")
# The second hub: beside the first in its namespace, or a release of its own namespace with
# the default instance name (the names alone would not tell the two apart).
HUB_B = {"one-namespace": Hub("hubb", "jupyterhub", "hubb.example.org", "hubb"),
         "own-namespaces": Hub("jupyterhub", "hubb", "hubb.example.org", "hubb")}


@pytest.fixture
def shared_clusters(tmp_path: Path) -> Iterator[Any]:
    from federation.testing import EmulatedClusters

    crds = sorted(ISTIO_CRDS.glob("*-crd.yaml")) + sorted(GATEWAY_CRDS.glob("*-crd.yaml"))
    namespaces = ("jupyterhub", "hubb", "default", "istio-system")
    with EmulatedClusters(list(CONTEXTS.values()), tmp_path, crd_files=crds,
                          namespaces=namespaces) as emulated:
        for server in emulated.servers.values():
            for prefix in ("huba", "hubb"):  # the spawner makes each user's namespace
                for user in USERS:
                    server.add_namespace(f"{prefix}-{user}")
        yield emulated


def hub_config(tmp_path: Path, clusters: Any, hub: Hub, backend: str, own_ingress: bool = False,
               only: tuple[str, ...] | None = None) -> Path:
    doc = base_config(str(clusters.kubeconfig), instance=hub.instance)
    doc["defaults"].update(namespace=hub.namespace, hosts=[hub.host], backend=backend)
    doc["clusters"] = [c for c in doc["clusters"] if only is None or c["name"] in only]
    for cluster in doc["clusters"]:
        cluster["userService"] = {"namespace": f"{hub.users}-{{username}}"}
        url = cluster.get("ingressPublicUrl")
        if url and own_ingress:
            cluster["ingressPublicUrl"] = url.replace("://", f"://{hub.users}-", 1)
    name = f"{hub.namespace}-{hub.instance}-{int(own_ingress)}-{len(doc['clusters'])}.yaml"
    return write_clusters_yaml(tmp_path / name, doc)


def hub_table(registry: Registry) -> dict[str, Any]:
    return {path: {"target": registry.clusters[cluster].ingress_public_url or "http://hub:8081",
                   **data} for path, (cluster, data) in TABLE.items()}


def api(svc: ServiceThread) -> httpx.Client:
    return httpx.Client(base_url=svc.url, headers={"Authorization": f"token {TOKEN}"},
                        timeout=20)


def post_table(svc: ServiceThread, registry: Registry) -> None:
    with api(svc) as client:
        for path, body in hub_table(registry).items():
            resp = client.post(f"/api/routes{path}", json=body)
            assert resp.status_code == 201, resp.text


def objects_of(clusters: Any, backend: str) -> dict[str, list[Any]]:
    """Every routing object of every hub, per cluster, as the gateways see them."""
    kinds = (VS,) if backend == "istio" else GATEWAY_KINDS
    return {name: [o for kind in kinds for o in clusters.servers[context].objects(*kind)]
            for name, context in CONTEXTS.items()}


def written_by(clusters: Any, backend: str, hub: Hub) -> list[str]:
    return [f"{name}/{o['metadata']['name']}"
            for name, objs in objects_of(clusters, backend).items() for o in objs
            if o["metadata"]["namespace"] == hub.namespace
            and (o["metadata"].get("labels") or {}).get("federation.jupyter.org/instance")
            == hub.instance]


def reached(registry: Registry, backend: str, objects: dict[str, list[Any]], path: str,
            rng: random.Random) -> set[str | None]:
    """Every destination a request to the hub's host reaches, through both hops and in
    every merge order the evaluators try."""
    host = registry.clusters["hub"].hosts[0]
    out: set[str | None] = set()
    for dest, authority in hop(backend, objects["hub"], host, path, rng):
        remote = next((c for c in registry.clusters.values()
                       if c.ingress_origin and c.ingress_origin[1] == dest), None)
        if remote is None:
            out.add(dest)
            continue
        out |= {d for d, _ in hop(backend, objects[remote.name], authority, path, rng)}
    return out


def service(hub: Hub, user_service: str) -> str:
    user = user_service.split("--")[0].removeprefix("jupyter-")
    return f"{user_service}.{hub.users}-{user}.svc.cluster.local"


def assert_apart(clusters: Any, backend: str, hubs: dict[Hub, Registry],
                 serving: tuple[Hub, ...] = ()) -> None:
    """No probe of one hub's host reaches the other hub's users; each hub in ``serving``
    reaches exactly its own."""
    objects = objects_of(clusters, backend)
    rng = random.Random(21)
    for hub, registry in hubs.items():
        others = {service(o, s) for o in hubs if o != hub for s in PROBES.values()}
        for path, user_service in PROBES.items():
            got = reached(registry, backend, objects, path, rng)
            assert not got & others, (hub, path, got)
            if hub in serving:
                assert got == {service(hub, user_service)}, (hub, path, got)


def leases(clusters: Any) -> dict[tuple[str, str], str]:
    """(cluster, host) -> holder of every claim on the clusters."""
    out = {}
    for name, context in CONTEXTS.items():
        for lease in clusters.servers[context].objects(*LEASES_KIND, "istio-system"):
            out[(name, lease["metadata"]["annotations"]["federation.jupyter.org/host"])] = \
                holder_of(lease)
    return out


LEASES_KIND = (LEASES.group, LEASES.version, LEASES.plural)
CONTESTED = {("east", "east.hub.example.org"), ("west", "west.hub.example.org")}


def start_together(services: list[ServiceThread], timeout: float = 20.0) -> list[bool]:
    """Start every service at the same instant; which of them came up."""
    gate = threading.Barrier(len(services))
    for svc in services:
        run = svc.server.run

        def at_once(run: Any = run) -> None:
            gate.wait()
            run()

        svc.thread = threading.Thread(target=at_once, daemon=True)
        svc.thread.start()
    wait_for(lambda: not any(svc.thread.is_alive() and not svc.server.started
                             for svc in services), "each hub started or refused", timeout)
    return [svc.server.started and svc.thread.is_alive() for svc in services]


@pytest.mark.parametrize("layout", sorted(HUB_B))
@pytest.mark.parametrize("backend", ["istio", "gateway-api"])
# uvicorn ends its thread with SystemExit when the start-up fails, as it ends the process.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_two_hubs_started_together_on_empty_clusters(
        tmp_path: Path, shared_clusters: Any, backend: str, layout: str) -> None:
    hub_b = HUB_B[layout]
    configs = {h: hub_config(tmp_path, shared_clusters, h, backend) for h in (HUB_A, hub_b)}
    hubs = {h: load_registry(c) for h, c in configs.items()}
    services = {h: ServiceThread(fast_settings(c)) for h, c in configs.items()}
    try:
        up = dict(zip(services, start_together(list(services.values())), strict=True))
        # Exactly one hub holds every contested host; the other was refused before any rule.
        assert sorted(up.values()) == [False, True], up
        winner = next(h for h, ok in up.items() if ok)
        loser = next(h for h, ok in up.items() if not ok)
        held = leases(shared_clusters)
        assert {k: held[k] for k in CONTESTED} == {k: winner.identity for k in CONTESTED}
        assert loser.identity not in held.values()  # what it took before the refusal went back
        assert written_by(shared_clusters, backend, loser) == []
        assert_apart(shared_clusters, backend, hubs)

        services[winner].wait_ready()
        post_table(services[winner], hubs[winner])
        assert_apart(shared_clusters, backend, hubs, serving=(winner,))
        assert written_by(shared_clusters, backend, loser) == []

        # The refused hub, given ingress hosts of its own, serves its users beside the other.
        config = hub_config(tmp_path, shared_clusters, loser, backend, own_ingress=True)
        hubs[loser] = load_registry(config)
        services[loser] = ServiceThread(fast_settings(config)).start()
        services[loser].wait_ready()
        assert_apart(shared_clusters, backend, hubs, serving=(winner,))
        post_table(services[loser], hubs[loser])
        assert_apart(shared_clusters, backend, hubs, serving=(winner, loser))
    finally:
        for svc in services.values():
            if svc.thread.is_alive():
                svc.stop()


@pytest.mark.parametrize("backend", ["istio", "gateway-api"])
def test_a_reload_that_adds_a_conflicting_cluster_is_refused(
        tmp_path: Path, shared_clusters: Any, backend: str) -> None:
    hub_b = HUB_B["own-namespaces"]
    first = hub_config(tmp_path, shared_clusters, HUB_A, backend)
    # The second hub starts on two clusters with ingress hosts of its own on them...
    second = hub_config(tmp_path, shared_clusters, hub_b, backend, own_ingress=True,
                        only=("hub", "east"))
    hubs = {HUB_A: load_registry(first), hub_b: load_registry(second)}
    with ServiceThread(fast_settings(first)) as svc_a, \
            ServiceThread(fast_settings(second, reload_interval=3600)) as svc_b:
        post_table(svc_a, hubs[HUB_A])
        # ...then its file adds west, sharing west's ingress host with the first hub.
        doc = base_config(str(shared_clusters.kubeconfig))
        west = next(c for c in doc["clusters"] if c["name"] == "west")
        west["userService"] = {"namespace": "hubb-{username}"}
        text = second.read_text().replace("clusters:\n", "clusters:\n- " + _yaml_item(west), 1)
        second.write_text(text)
        assert svc_b.run(svc_b.federation.reload_file(second)) is False
        error = svc_b.federation.last_reload_error
        assert "west.hub.example.org" in error and "claimed by hub 'jupyterhub/jupyterhub'" in error
        assert list(svc_b.federation.registry.clusters) == ["hub", "east"]  # kept running config
        assert ("west", "hubb.example.org") not in leases(shared_clusters)  # given back
        assert [o for o in written_by(shared_clusters, backend, hub_b) if o.startswith("west/")] \
            == []
        assert_apart(shared_clusters, backend, hubs, serving=(HUB_A,))
        with api(svc_b) as client:
            assert client.get("/readyz").status_code == 200  # still serves on its own hosts


def _yaml_item(cluster: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(cluster, sort_keys=False).replace("\n", "\n  ").rstrip() + "\n"


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_removed_hubs_claims_are_released_or_taken_over(
        tmp_path: Path, shared_clusters: Any) -> None:
    backend = "istio"
    hub_b = HUB_B["one-namespace"]
    first = hub_config(tmp_path, shared_clusters, HUB_A, backend)
    second = hub_config(tmp_path, shared_clusters, hub_b, backend)
    reg_a, reg_b = load_registry(first), load_registry(second)
    with ServiceThread(fast_settings(first)) as svc_a:
        post_table(svc_a, reg_a)
    settings = fast_settings(first)

    async def claims(registry: Registry, action: Any, *args: Any) -> list[tuple[bool, str]]:
        clients = build_clients(registry, settings)
        try:
            return list(await action(registry, clients, *args))
        finally:
            await asyncio.gather(*(c.close() for c in clients.values()))

    # The first hub is removed: its claims stay while its rules do, and are not taken silently.
    lines = asyncio.run(claims(reg_a, release_claims))
    assert not any(fine for fine, _ in lines) and "still on cluster" in lines[0][1]
    refused = ServiceThread(fast_settings(second))
    with pytest.raises(RuntimeError, match="did not start"):
        refused.start()
    refused.stop()
    taken = asyncio.run(claims(reg_b, take_claims, "jupyterhub", 60))
    assert all("still renews it" in text for fine, text in taken if not fine)
    assert len([t for t in taken if not t[0]]) == len(CONTESTED)

    # The operator deletes its objects, and hands its hosts over once its claims expired.
    for context in CONTEXTS.values():
        for obj in shared_clusters.servers[context].objects(*VS, "jupyterhub"):
            _delete(shared_clusters.servers[context], obj)
    later = asyncio.run(claims(reg_b, take_claims, "jupyterhub/jupyterhub", 60,
                               lambda: _now() + timedelta(days=1)))
    assert all(fine for fine, _ in later), later
    assert {leases(shared_clusters)[k] for k in CONTESTED} == {hub_b.identity}
    with ServiceThread(fast_settings(second)) as svc_b:
        post_table(svc_b, reg_b)
        assert_apart(shared_clusters, backend, {HUB_A: reg_a, hub_b: reg_b}, serving=(hub_b,))
    # The first hub's own public host it still holds; removed for good, it gives it up.
    assert ("hub", HUB_A.host) in leases(shared_clusters)
    assert all(fine for fine, _ in asyncio.run(claims(reg_a, release_claims)))
    assert HUB_A.identity not in leases(shared_clusters).values()


def _now() -> Any:
    from federation.claimer import now

    return now()


def _delete(server: Any, obj: dict[str, Any]) -> None:
    meta = obj["metadata"]
    url = f"{server.url}/apis/networking.istio.io/v1/namespaces/{meta['namespace']}/" \
          f"virtualservices/{meta['name']}"
    resp = httpx.delete(url, headers={"Authorization": f"Bearer {server.token}"}, verify=False)
    assert resp.status_code == 200, resp.text


def test_a_route_write_needing_a_host_held_elsewhere_is_409_and_writes_nothing(
        tmp_path: Path, shared_clusters: Any) -> None:
    """East is down while the second hub starts (its claims there cannot be taken yet); the
    first hub takes them; the second hub's first route there is refused with the fix, shown
    by /readyz, /clusters and the metric, until the first hub is gone and housekeeping
    takes the host."""
    backend = "istio"
    hub_b = HUB_B["own-namespaces"]
    first = hub_config(tmp_path, shared_clusters, HUB_A, backend)
    second = hub_config(tmp_path, shared_clusters, hub_b, backend)
    # West with an ingress host of its own: only east is shared.
    second.write_text(second.read_text().replace("://west.", "://hubb-west."))
    reg_a, reg_b = load_registry(first), load_registry(second)
    east = shared_clusters.servers[CONTEXTS["east"]]
    east.set_down(True)
    svc_b = ServiceThread(fast_settings(second)).start()
    try:
        wait_for(lambda: httpx.get(svc_b.url + "/readyz").status_code == 200, "hub b ready")
        east.set_down(False)
        wait_for(lambda: not svc_b.federation.stores["east"].client.circuit.is_open,
                 "hub b to reach east again")
        with ServiceThread(fast_settings(first)) as svc_a:
            post_table(svc_a, reg_a)
        body = hub_table(reg_b)
        with api(svc_b) as client:
            resp = client.post("/api/routes/user/alice", json=body["/user/alice"])
            assert resp.status_code == 409, resp.text
            message = resp.json()["error"]
            assert "refused, nothing written" in message
            assert "east.hub.example.org" in message and "'jupyterhub/jupyterhub'" in message
            assert "federation claims take --from jupyterhub/jupyterhub" in message
            assert client.get("/api/routes").json() == {}
            # West's host is its own: its routes are written.
            resp = client.post("/api/routes/user/bob", json=body["/user/bob"])
            assert resp.status_code == 201, resp.text
            ready = client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["clusters"] == ["east"]
            row = client.get("/clusters/east").json()["host_claims"]
            assert [c["holder"] for c in row["held_elsewhere"]] == ["jupyterhub/jupyterhub"]
            assert row["held"] == [] and row["not_yet_claimed"] == ["hubb.example.org"]
            assert metrics.HOST_CLAIM_CONFLICTS.labels("east")._value.get() == 1
        assert [o for o in written_by(shared_clusters, backend, hub_b)
                if o.startswith("east/")] == []
        hubs = {HUB_A: reg_a, hub_b: reg_b}
        assert_apart(shared_clusters, backend, hubs, serving=(HUB_A,))

        # The first hub is removed (objects deleted, claims released): housekeeping takes east.
        for context in CONTEXTS.values():
            for obj in shared_clusters.servers[context].objects(*VS, "jupyterhub"):
                if obj["metadata"]["labels"]["federation.jupyter.org/instance"] == "jupyterhub" \
                        and obj["metadata"]["namespace"] == "jupyterhub":
                    _delete(shared_clusters.servers[context], obj)
        clients = build_clients(reg_a, fast_settings(first))

        async def release() -> list[tuple[bool, str]]:
            try:
                return await release_claims(reg_a, clients)
            finally:
                await asyncio.gather(*(c.close() for c in clients.values()))

        assert all(fine for fine, _ in asyncio.run(release()))
        svc_b.run(svc_b.federation.reconcile(grace=0))
        with api(svc_b) as client:
            assert client.get("/readyz").status_code == 200
            resp = client.post("/api/routes/user/alice", json=body["/user/alice"])
            assert resp.status_code == 201, resp.text
        assert metrics.HOST_CLAIM_CONFLICTS.labels("east")._value.get() == 0
        assert_apart(shared_clusters, backend, hubs, serving=())
        assert leases(shared_clusters)[("east", "east.hub.example.org")] == hub_b.identity
    finally:
        svc_b.stop()


def test_claim_names_are_dns_safe_and_unique() -> None:
    import re

    names = {h: claim_name(h) for h in ("east.hub.example.org", "a-b.c", "a.b-c", "*",
                                        "*.hub.example.org", "x" * 60 + ".example.org")}
    assert len(set(names.values())) == len(names)
    for name in names.values():
        assert len(name) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name
    assert names["east.hub.example.org"].startswith("federation-host-east-hub-example-org-")


@pytest.mark.parametrize("backend", ["istio", "gateway-api"])
def test_housekeeping_writes_nothing_for_a_host_it_could_not_claim(
        tmp_path: Path, shared_clusters: Any, backend: str) -> None:
    """The second hub's file gives east the shared ingress host while east is out of reach
    (the reload cannot claim it there, and the first hub holds it). When east is back,
    housekeeping must not render the second hub's objects there for that host."""
    hub_b = HUB_B["own-namespaces"]
    first = hub_config(tmp_path, shared_clusters, HUB_A, backend)
    second = hub_config(tmp_path, shared_clusters, hub_b, backend, own_ingress=True)
    reg_a, reg_b = load_registry(first), load_registry(second)
    east = shared_clusters.servers[CONTEXTS["east"]]
    with ServiceThread(fast_settings(first)) as svc_a, \
            ServiceThread(fast_settings(second, reload_interval=3600)) as svc_b:
        post_table(svc_a, reg_a)
        post_table(svc_b, reg_b)
        hubs = {HUB_A: reg_a, hub_b: reg_b}
        assert_apart(shared_clusters, backend, hubs, serving=(HUB_A, hub_b))
        east.set_down(True)
        shared = second.read_text().replace("://hubb-east.", "://east.")
        assert shared != second.read_text()
        second.write_text(shared)
        assert svc_b.run(svc_b.federation.reload_file(second)) is True
        hubs[hub_b] = load_registry(second)
        east.set_down(False)
        wait_for(lambda: not svc_b.federation.stores["east"].client.circuit.is_open,
                 "hub b to reach east again")
        svc_b.run(svc_b.federation.reconcile(grace=0))
        assert not svc_b.federation.claims.holds("east")
        assert [c.holder for c in svc_b.federation.claims.conflicts("east")] \
            == [HUB_A.identity]
        hostnames = {h for o in objects_of(shared_clusters, backend)["east"]
                     if o["metadata"]["namespace"] == hub_b.namespace
                     for key in ("hostnames", "hosts")
                     for h in (o.get("spec") or {}).get(key) or []}
        assert "east.hub.example.org" not in hostnames, hostnames
        # Nor does it re-point the home cluster's edge rules at that host.
        assert_apart(shared_clusters, backend, hubs, serving=(HUB_A,))


def test_a_claim_lost_while_a_write_waits_is_refused_not_skipped(
        tmp_path: Path, shared_clusters: Any) -> None:
    """East's claim goes to another hub while a route write waits for the home cluster's
    claims: the write is refused (409), never answered 201 with east's rule left out."""
    from federation.claims import HeldElsewhere, wanted_claims

    backend = "istio"
    config = hub_config(tmp_path, shared_clusters, HUB_A, backend)
    registry = load_registry(config)
    with ServiceThread(fast_settings(config)) as svc:
        claims = svc.federation.claims
        require = claims.require
        (lost,) = [c for c in wanted_claims(registry, ["east"]) if c.ingress]

        def lose_east() -> None:
            claims.held.pop(lost.key, None)
            claims.elsewhere[lost.key] = HeldElsewhere(lost, "hubb/hubb")
            claims.ready.discard("east")

        async def home_then_lose_east(cluster: str, client: Any) -> None:
            await require(cluster, client)
            if cluster == "hub":  # lost once every claim was checked, before the writes
                asyncio.get_running_loop().call_soon(lose_east)

        claims.ready.discard("hub")  # the home cluster's claims are taken at this write
        claims.require = home_then_lose_east  # type: ignore[method-assign]
        body = hub_table(registry)["/user/alice"]
        with api(svc) as client:
            resp = client.post("/api/routes/user/alice", json=body)
            assert resp.status_code == 409, resp.text
            assert "east.hub.example.org" in resp.json()["error"]
        assert [o for o in written_by(shared_clusters, backend, HUB_A)
                if o.startswith("east/")] == []
