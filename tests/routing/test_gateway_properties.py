"""Property tests of the Gateway API backend: one HTTPRoute per route routes every request as
configurable-http-proxy would, in any creation order, under both readings of hostnames, across
both hops, for gateway-api-only setups and mixed ones in both directions (an Istio home with
gateway-api remotes, and the reverse). Tables are random; seeds are fixed."""

from __future__ import annotations

import random
from typing import Any
from urllib.parse import quote

import pytest

from federation.config import Registry, parse_registry
from federation.placement import Destination, destination_in, edge_destination, place
from federation.plan import render_table

from ..conftest import base_config
from .evaluator import all_orders, route
from .gateway_evaluator import route_gateway
from .test_properties import GATEWAY, HUB_HOST, chp_expected, probes, random_table

SETUPS = {
    "gateway-api": {"hub": "gateway-api", "east": "gateway-api", "west": "gateway-api"},
    "istio-home": {"hub": "istio", "east": "gateway-api", "west": "gateway-api"},
    "gateway-home": {"hub": "gateway-api", "east": "istio", "west": "gateway-api"},
    # the edge hop through Istio's Hostname backendRef and a ServiceEntry
    "gateway-home-istio-hostname": {"hub": "gateway-api+hostname", "east": "istio",
                                    "west": "gateway-api"},
}


def make_registry(backends: dict[str, str], http: dict[str, Any] | None = None) -> Registry:
    doc = base_config()
    for c in doc["clusters"]:
        backend, _, option = backends[c["name"]].partition("+")
        c["backend"] = backend
        if option == "hostname":
            c["externalBackend"] = "istioHostname"
        if http:
            c["http"] = http
    return parse_registry(doc, check_kubeconfig=False)


def _seen(dest: Destination, backend: str) -> str:
    """How each evaluator names a destination: Istio a mesh host, the Gateway API model the
    address behind a selector-less Service."""
    if backend == "gateway-api" and dest.kind == "ip":
        return f"ip:{dest.address}"
    return dest.host


def expected_hops(registry: Registry, table: dict[str, Any], key: str | None) -> tuple[Any, Any]:
    if key is None:
        return None, None
    body = table[key]
    data = {k: v for k, v in body.items() if k != "target"}
    owner = place(registry, body["target"], data).cluster
    final = _seen(destination_in(owner, body["target"], data, registry.instance), owner.backend)
    if owner.name == registry.home:
        return final, None
    return edge_destination(owner).host, final


def one_hop(registry: Registry, objects: list[dict[str, Any]], cluster: str, host: str,
            wire: str, rng: random.Random) -> tuple[str | None, str, str]:
    """(destination, host sent on, path sent on) of one cluster's gateway, checked to be the
    same in every merge order (Istio) or creation order and hostname reading (Gateway API)."""
    answers = set()
    if registry.clusters[cluster].backend == "istio":
        vs = [o for o in objects if o["kind"] == "VirtualService"]
        for order in all_orders(len(vs), 3, rng):
            got = route(vs, gateway=GATEWAY, host=host, path=wire, order=order)
            answers.add((got.destination_host, None, got.rewritten_path))
    else:
        names = [f"{o['metadata']['namespace']}/{o['metadata']['name']}" for o in objects]
        for reading in ("spec", "vhost"):
            for _ in range(3):
                created = dict(zip(names, rng.sample(range(len(names)), len(names)), strict=True))
                got = route_gateway(objects, gateway=GATEWAY, host=host, path=wire,
                                    created=created, reading=reading)
                answers.add((got.backend, got.host, got.path))
    assert len(answers) == 1, (cluster, host, wire, answers)
    dest, sent_host, path = answers.pop()
    return dest, sent_host or host, path


def check_table(registry: Registry, table: dict[str, Any], host_mode: bool,
                rng: random.Random) -> int:
    rendered = render_table(registry, table)
    checked = 0
    for host, path in probes(table, rng):
        want = chp_expected(table, host, path, host_mode)
        hop1, hop2 = expected_hops(registry, table, want)
        wire = quote(path, safe="/@~")
        got, sent_host, sent_path = one_hop(registry, rendered[registry.home], registry.home,
                                            host, wire, rng)
        assert got == hop1, (host, path, want, got)
        if hop2 is not None:
            owner = next(c for c in registry.clusters.values()
                         if c.ingress_origin and c.ingress_origin[1] == hop1)
            if registry.home_cluster.backend == "istio":
                sent_host = hop1 if host == HUB_HOST else host  # rewrite.authority (Istio)
            # A plain route reaches the remote ingress by its own name; a host route keeps its host.
            assert sent_host == (hop1 if host == HUB_HOST else host), (host, path, sent_host)
            assert sent_path == wire  # the path is kept on the first hop
            got2, _, _ = one_hop(registry, rendered[owner.name], owner.name, sent_host, wire, rng)
            assert got2 == hop2, (host, path, want, got2)
        checked += 1
    return checked


@pytest.mark.parametrize("setup", sorted(SETUPS))
@pytest.mark.parametrize("chunk", range(3))
def test_random_tables_route_like_chp(setup: str, chunk: int) -> None:
    registry = make_registry(SETUPS[setup])
    total = 0
    for seed in range(chunk * 40, chunk * 40 + 40):  # 120 tables per setup
        rng = random.Random(seed)
        table, mode = random_table(rng)
        total += check_table(registry, table, mode == "host", rng)
    assert total > 60


def test_http_options_map_to_standard_filters() -> None:
    registry = make_registry(SETUPS["gateway-api"], {
        "stripPrefix": True, "timeout": "1.5m",
        "requestHeaders": {"set": {"X-Forwarded-Prefix": "{prefix}"}, "remove": ["X-Drop"]}})
    table = {
        "/": {"target": "http://hub:8081", "hub": True},
        "/user/alice": {"target": "http://10.0.0.5:8888", "user": "alice"},
        "/user/alice/gpu": {"target": "http://10.0.0.6:8888", "user": "alice", "server_name": "gpu"},
    }
    check_table(registry, table, False, random.Random(7))
    home = render_table(registry, table)["hub"]
    got = route_gateway(home, gateway=GATEWAY, host=HUB_HOST, path="/user/alice/gpu/lab?x=1",
                        headers={"X-Drop": "1"})
    assert got.backend == "ip:10.0.0.6"
    assert got.path == "/lab?x=1"
    assert got.request_headers == {"x-forwarded-prefix": "/user/alice/gpu"}
    assert got.timeout == "1m30s"
    assert route_gateway(home, gateway=GATEWAY, host=HUB_HOST, path="/user/alice").path == "/"


def test_host_routing_needs_the_host_defaults() -> None:
    """The check is able to fail: without the per-host ``/`` objects, a gateway that builds one
    virtual host per name sends a host-routed host's other paths nowhere (CHP: to ``/``)."""
    registry = make_registry(SETUPS["gateway-api"])
    table = {"/": {"target": "http://hub:8081"},
             "/alice.hub.example.org/user/alice": {"target": "http://10.0.0.5:8888"}}
    home = render_table(registry, table)["hub"]
    without = [o for o in home if o["metadata"]["labels"].get("federation.jupyter.org/role")
               != "host-default"]
    assert len(without) < len(home)
    for objects, want in ((home, "hub.jupyterhub.svc.cluster.local"), (without, None)):
        got = route_gateway(objects, gateway=GATEWAY, host="alice.hub.example.org",
                            path="/hub/login", reading="vhost")
        assert got.backend == want
    # The spec's own reading does not need them: the "/" route names only the hub's host.
    got = route_gateway(home, gateway=GATEWAY, host="alice.hub.example.org", path="/hub/login")
    assert got.backend == "hub.jupyterhub.svc.cluster.local"


def test_evaluator_ranks_by_spec() -> None:
    """The evaluator's own precedence: whole segments, longest prefix, then creation, name."""
    def route_obj(name: str, prefix: str, backend: str) -> dict[str, Any]:
        return {"kind": "HTTPRoute", "metadata": {"name": name, "namespace": "ns"},
                "spec": {"parentRefs": [{"name": "g", "namespace": "gw"}],
                         "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": prefix}}],
                                    "backendRefs": [{"name": backend, "port": 80}]}]}}

    objs = [route_obj("a", "/user/al", "al"), route_obj("b", "/user/alice/", "alice"),
            route_obj("c", "/user/alice", "alice-new"), route_obj("d", "/", "hub")]

    def pick(path: str, created: dict[str, int]) -> str | None:
        got = route_gateway(objs, gateway="gw/g", host="x", path=path, created=created)
        return None if got.backend is None else got.backend.split(".")[0]

    order = {"ns/a": 0, "ns/b": 1, "ns/c": 2, "ns/d": 3}
    assert pick("/user/alice2", order) == "hub"
    assert pick("/user/al/x", order) == "al"
    assert pick("/user/alice/lab", order) == "alice"  # same length: the older route
    assert pick("/user/alice/lab", {**order, "ns/c": -1}) == "alice-new"
    assert pick("/user/alice/lab", {**order, "ns/b": 2}) == "alice"  # tie: by name


def _objects_with_history(registry: Registry, table: dict[str, Any],
                          born: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
    """The clusters' objects for ``table``; an object keeps the creation time it got when it
    was first written (a replace keeps it, a delete then add gets a new one)."""
    rendered = render_table(registry, table)
    alive = set()
    for objects in rendered.values():
        for obj in objects:
            key = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
            alive.add(key)
            born.setdefault(key, len(born) + 1000)
            obj["metadata"]["creationTimestamp"] = f"2026-01-01T00:{born[key]:05d}"
    for key in set(born) - alive:
        del born[key]
    return rendered


@pytest.mark.parametrize("setup", sorted(SETUPS))
def test_add_replace_delete_sequences_route_like_chp(setup: str) -> None:
    """Tables built up and torn down route by route (targets replaced, routes moved between
    clusters, deleted and added again): after every step, every probe routes as CHP would."""
    registry = make_registry(SETUPS[setup])
    for seed in range(15):
        rng = random.Random(1000 + seed)
        pool, mode = random_table(rng)
        table: dict[str, Any] = {}
        born: dict[str, int] = {}
        for _ in range(12):
            path = rng.choice(sorted(pool))
            if path in table and rng.random() < 0.4:
                del table[path]
            else:
                body = dict(pool[path])
                if rng.random() < 0.5 and "user" in body:  # a replace that may move the route
                    body["target"] = rng.choice(["https://east.hub.example.org",
                                                 "http://west.hub.example.org:8080",
                                                 "http://10.9.0.1:8888"])
                table[path] = body
            if table:
                _checked_with_creation_times(registry, table, mode == "host", rng, born)


def _checked_with_creation_times(registry: Registry, table: dict[str, Any], host_mode: bool,
                                 rng: random.Random, born: dict[str, int]) -> None:
    rendered = _objects_with_history(registry, table, born)
    for host, path in probes(table, rng)[:20]:
        want = chp_expected(table, host, path, host_mode)
        hop1, _ = expected_hops(registry, table, want)
        wire = quote(path, safe="/@~")
        home = rendered[registry.home]
        if registry.home_cluster.backend == "istio":
            got = route([o for o in home if o["kind"] == "VirtualService"], gateway=GATEWAY,
                        host=host, path=wire).destination_host
        else:
            got = route_gateway(home, gateway=GATEWAY, host=host, path=wire).backend
        assert got == hop1, (host, path, want, got)
