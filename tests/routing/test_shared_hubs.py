"""Two hubs (instances) on the same three clusters, namespace and gateways.

With their own ingress hosts, each hub's host reaches its own users through both hops, in
every merge or creation order. Sharing the remote ingress hosts, the gateways mix the two
hubs' users (shown by the evaluators), so the set-up is detected (``federation.sharing``) and
the service refuses to start.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from federation import sharing
from federation.config import Registry, parse_registry
from federation.errors import ConfigError, KubeError
from federation.kube import Resource
from federation.model import LABEL_INSTANCE
from federation.plan import render_table
from federation.sharing import find_shared_hosts, refuse_shared_hosts, shared_hosts

from ..conftest import base_config
from .evaluator import all_orders, route
from .gateway_evaluator import route_gateway
from .test_properties import GATEWAY

HOSTS = {"jupyterhub": "hub.example.org", "hubb": "hubb.example.org"}
# Where each route's server runs ("hub": http://hub:8081; else that cluster's ingress URL).
TABLE = {
    "/": ("hub", {}),
    "/user/alice": ("east", {"user": "alice", "server_name": ""}),
    "/user/alice/gpu": ("west", {"user": "alice", "server_name": "gpu"}),
    "/user/bob": ("west", {"user": "bob", "server_name": ""}),
}
PROBES = {"/user/alice/lab": "jupyter-alice", "/user/alice/gpu/lab": "jupyter-alice--gpu",
          "/user/bob/tree": "jupyter-bob"}


def hub_registry(instance: str, backend: str, own_ingress: bool) -> Registry:
    doc = base_config()
    doc["instance"] = instance
    doc["defaults"]["hosts"] = [HOSTS.get(instance, f"{instance}.example.org")]
    for cluster in doc["clusters"]:
        cluster["backend"] = backend
        cluster["userService"] = {"namespace": f"{instance}-{{username}}"}
        url = cluster.get("ingressPublicUrl")
        if url and own_ingress and instance != "jupyterhub":
            # Another DNS name for the same ingress gateway.
            cluster["ingressPublicUrl"] = url.replace("://", f"://{instance}-", 1)
    return parse_registry(doc, check_kubeconfig=False)


def hub_table(registry: Registry) -> dict[str, Any]:
    """What this hub POSTs: remote servers at its own view of each cluster's ingress URL."""
    out = {}
    for path, (cluster, data) in TABLE.items():
        url = registry.clusters[cluster].ingress_public_url or "http://hub:8081"
        out[path] = {"target": url, **data}
    return out


def both_hubs(backend: str, own_ingress: bool) -> tuple[list[Registry], dict[str, list[Any]]]:
    """Both hubs' registries, and every cluster's objects of both hubs together."""
    registries = [hub_registry(i, backend, own_ingress) for i in HOSTS]
    objects: dict[str, list[Any]] = {}
    for registry in registries:
        for cluster, objs in render_table(registry, hub_table(registry)).items():
            objects.setdefault(cluster, []).extend(objs)
    return registries, objects


def hop(backend: str, objects: list[Any], host: str, path: str,
        rng: random.Random) -> set[tuple[str | None, str]]:
    """Every (destination, authority sent on) one gateway gives in some merge/creation order."""
    answers = set()
    if backend == "istio":
        vs = [o for o in objects if o["kind"] == "VirtualService"]
        for order in all_orders(len(vs), 6, rng):
            got = route(vs, gateway=GATEWAY, host=host, path=path, order=order)
            answers.add((got.destination_host, _authority(vs, got.virtual_service,
                                                          got.rule_name, host)))
        return answers
    names = [f"{o['metadata']['namespace']}/{o['metadata']['name']}" for o in objects]
    for reading in ("spec", "vhost"):
        for _ in range(6):
            created = dict(zip(names, rng.sample(range(len(names)), len(names)), strict=True))
            got = route_gateway(objects, gateway=GATEWAY, host=host, path=path,
                                created=created, reading=reading)
            answers.add((got.backend, got.host))
    return answers


def _authority(objects: list[Any], owner: str | None, rule_name: str | None,
               host: str) -> str:
    """The authority an Istio rule sends on: its ``rewrite.authority``, else the request's."""
    for obj in objects:
        if f"{obj['metadata']['namespace']}/{obj['metadata']['name']}" != owner:
            continue
        for rule in obj["spec"].get("http") or []:
            if rule.get("name") == rule_name:
                return str((rule.get("rewrite") or {}).get("authority") or host)
    return host


def served(registry: Registry, backend: str, objects: dict[str, list[Any]], path: str,
           rng: random.Random) -> set[str | None]:
    """The user Services a request to the hub's host reaches, through both hops."""
    host = registry.clusters["hub"].hosts[0]
    first = hop(backend, objects["hub"], host, path, rng)
    assert len(first) == 1, first
    ingress, authority = first.pop()
    assert authority == ingress  # the edge hop addresses the remote gateway by its own name
    remote = next(c for c in registry.clusters.values()
                  if c.ingress_origin and c.ingress_origin[1] == ingress)
    return {dest for dest, _ in hop(backend, objects[remote.name], authority, path, rng)}


def service_of(registry: Registry, user_service: str) -> str:
    user = user_service.split("--")[0].removeprefix("jupyter-")
    namespace = f"{registry.instance}-{user}"  # each hub's users in namespaces of their own
    return f"{user_service}.{namespace}.svc.cluster.local"


@pytest.mark.parametrize("backend", ["istio", "gateway-api"])
def test_hubs_with_their_own_ingress_hosts_reach_their_own_users(backend: str) -> None:
    registries, objects = both_hubs(backend, own_ingress=True)
    rng = random.Random(16)
    for registry in registries:
        for path, user_service in PROBES.items():
            got = served(registry, backend, objects, path, rng)
            assert got == {service_of(registry, user_service)}, (registry.instance, path, got)
        for name, cluster in registry.clusters.items():
            assert shared_hosts(registry, cluster, objects[name]) == []


@pytest.mark.parametrize("backend", ["istio", "gateway-api"])
def test_hubs_sharing_ingress_hosts_would_mix_their_users(backend: str) -> None:
    """Why the set-up is refused: the remote gateway merges both hubs' routes for the shared
    ingress host, and in some order the second hub's alice is served by the first hub's."""
    (hub_a, hub_b), objects = both_hubs(backend, own_ingress=False)
    got = served(hub_b, backend, objects, "/user/alice/lab", random.Random(16))
    assert service_of(hub_a, "jupyter-alice") in got


@pytest.mark.parametrize("backend", ["istio", "gateway-api"])
def test_a_shared_ingress_host_is_found_on_each_remote_cluster(backend: str) -> None:
    (hub_a, hub_b), objects = both_hubs(backend, own_ingress=False)
    for registry, other in ((hub_b, "jupyterhub"), (hub_a, "hubb")):
        found = {name: shared_hosts(registry, cluster, objects[name])
                 for name, cluster in registry.clusters.items()}
        assert found["hub"] == []  # each hub has its own public host at home
        for name, ingress in (("east", "east.hub.example.org"), ("west", "west.hub.example.org")):
            assert [(s.host, s.other, s.ingress) for s in found[name]] == [(ingress, other, True)]
            reason = found[name][0].reason(registry)
            assert f"instance {other!r}" in reason and ingress in reason
            assert "ingressPublicUrl" in reason and name in reason


def test_a_shared_public_host_is_found_too() -> None:
    hub_a = hub_registry("jupyterhub", "istio", own_ingress=True)
    doc = base_config()
    doc["instance"] = "hubb"  # with the first hub's public host
    hub_b = parse_registry(doc, check_kubeconfig=False)
    home = render_table(hub_a, hub_table(hub_a))["hub"]
    found = shared_hosts(hub_b, hub_b.clusters["hub"], home)
    assert [(s.host, s.other, s.ingress) for s in found] == [("hub.example.org", "jupyterhub", False)]


class ListingClient:
    """A cluster's objects as the API server would list them (label selector, pages)."""

    def __init__(self, objects: list[Any]) -> None:
        self.objects = objects
        self.calls: list[str] = []

    async def list(self, res: Resource, label_selector: str, limit: int | None = None,
                   continue_token: str | None = None) -> dict[str, Any]:
        from federation.testing.kubeapi.selectors import _labels_match, _parse_label_selector

        self.calls.append(label_selector)
        wanted = _parse_label_selector(label_selector)
        kind = "HTTPRoute" if res.plural == "httproutes" else "VirtualService"
        items = [o for o in self.objects if o["kind"] == kind
                 and _labels_match(wanted, o["metadata"].get("labels") or {})]
        start = int(continue_token or 0)
        end = start + (limit or len(items))
        more = {"continue": str(end)} if end < len(items) else {}
        return {"items": items[start:end], "metadata": more}


@pytest.mark.parametrize("backend", ["istio", "gateway-api"])
def test_start_is_refused_when_another_hub_shares_an_ingress_host(backend: str) -> None:
    (hub_a, hub_b), objects = both_hubs(backend, own_ingress=False)
    clients = {name: ListingClient([o for o in objs if o["metadata"]["labels"][LABEL_INSTANCE]
                                    == "jupyterhub"]) for name, objs in objects.items()}
    with pytest.raises(ConfigError) as err:
        asyncio.run(refuse_shared_hosts(hub_b, dict(clients)))
    message = str(err.value)
    assert "east.hub.example.org" in message and "west.hub.example.org" in message
    assert "'jupyterhub'" in message and "ingressPublicUrl host" in message
    # The hub that is alone on its hosts starts.
    asyncio.run(refuse_shared_hosts(hub_a, dict(clients)))


def test_each_other_instance_is_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """One plain object per instance decides; the rest of its objects are not paged through."""
    monkeypatch.setattr(sharing, "PAGE", 2)
    _, objects = both_hubs("gateway-api", own_ingress=False)
    hub_c = hub_registry("hubc", "gateway-api", own_ingress=False)
    # Pages of the first hub's routes only, then the second hub's.
    by_hub = {i: [o for o in objects["east"] if o["metadata"]["labels"][LABEL_INSTANCE] == i]
              for i in HOSTS}
    client = ListingClient(by_hub["jupyterhub"] * 3 + by_hub["hubb"])
    found = asyncio.run(find_shared_hosts(hub_c, hub_c.clusters["east"], client))
    assert sorted(s.other for s in found) == ["hubb", "jupyterhub"]
    assert len(client.calls) == 3
    assert client.calls[-1].endswith("notin (hubb,hubc,jupyterhub)")


class DownClient:
    async def list(self, res: Resource, label_selector: str, limit: int | None = None,
                   continue_token: str | None = None) -> dict[str, Any]:
        raise KubeError("list on cluster 'west': cannot reach the API server", cluster="west")


def test_a_cluster_that_cannot_be_read_is_logged_and_passed_over(
        caplog: pytest.LogCaptureFixture) -> None:
    """A down cluster must not keep the proxy down; the refusal still comes from the others."""
    (_, hub_b), objects = both_hubs("istio", own_ingress=False)
    first_hub = [o for o in objects["east"] if o["metadata"]["labels"][LABEL_INSTANCE] == "jupyterhub"]
    clients: dict[str, Any] = {"hub": ListingClient([]), "west": DownClient(),
                               "east": ListingClient(first_hub)}
    with pytest.raises(ConfigError) as err:
        asyncio.run(refuse_shared_hosts(hub_b, clients))
    assert "east.hub.example.org" in str(err.value) and "west" not in str(err.value)
    unread = [r for r in caplog.records if getattr(r, "cluster", None) == "west"]
    assert unread and "could not look for other hubs" in unread[0].getMessage()
    del clients["east"]
    asyncio.run(refuse_shared_hosts(hub_b, clients))  # nothing found: no refusal
