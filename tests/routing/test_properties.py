"""Property tests: the objects the service writes route every request exactly as
configurable-http-proxy would (deepest whole-segment prefix wins), in any merge order, across
the two hops of edge routing. Tables are random; seeds are fixed so a failure reproduces."""

from __future__ import annotations

import random
from typing import Any
from urllib.parse import quote

import pytest

from federation.config import Registry, parse_registry
from federation.istio.layout import DEFAULT_CAPACITY
from federation.placement import destination_in, dns_safe, edge_destination
from federation.plan import render_table
from federation.routespec import RouteKey

from ..conftest import base_config
from .evaluator import all_orders, chp_route, route

GATEWAY = "istio-system/jupyterhub-gateway"
HUB_HOST = "hub.example.org"
USERS = ["al", "alice", "alice2", "Alice", "秀樹", "~TestJH", "has@", "50fia", "zoe", "a.b", "bob-1"]
SERVERS = ["gpu", "gpu-1", "GPU", "g", "my server"]
TARGETS = [
    ("https://east.hub.example.org", "east"),
    ("http://west.hub.example.org:8080", "west"),
    ("http://10.12.{n}.4:8888", "hub"),
    ("http://jupyter-{u}.jhub:8888", "hub"),
]


def make_registry(http: dict[str, Any] | None = None) -> Registry:
    doc = base_config()
    if http:
        for c in doc["clusters"]:
            c["http"] = http
    return parse_registry(doc, check_kubeconfig=False)


def random_table(rng: random.Random) -> tuple[dict[str, dict[str, Any]], str]:
    mode = rng.choice(["root", "base", "host"])
    base = "/jupyter" if mode == "base" else ""
    table: dict[str, dict[str, Any]] = {}
    if mode != "base" or rng.random() < 0.9:
        table[base or "/"] = {"target": "http://hub:8081", "hub": True, "jupyterhub": True}
    if mode == "base" and rng.random() < 0.3:
        table["/"] = {"target": "http://landing:80", "extra": True}
    for n, user in enumerate(rng.sample(USERS, rng.randint(1, 7))):
        servers = [""] + rng.sample(SERVERS, rng.randint(0, 2))
        for server in servers:
            if rng.random() < 0.2:
                continue
            target, _ = rng.choice(TARGETS)
            target = target.format(n=n, u=dns_safe(user))
            prefix = f"/u{n}-{dns_safe(user).strip('-')}.{HUB_HOST}" if mode == "host" else base
            path = f"{prefix}/user/{user}" + (f"/{server}" if server else "")
            table[path] = {"target": target, "user": user, "server_name": server, "jupyterhub": True}
    for svc in rng.sample(["announce", "ann", "dask-gateway"], rng.randint(0, 2)):
        # With subdomain_host, JupyterHub routes services on the hub's own host.
        prefix = f"/{HUB_HOST}" if mode == "host" else base
        table[f"{prefix}/services/{svc}"] = {"target": f"http://{svc}:8000", "service": svc}
    return table, mode


def probes(table: dict[str, Any], rng: random.Random) -> list[tuple[str, str]]:
    """(host, decoded path) pairs around every route: itself, below it, beside it."""
    out = {(HUB_HOST, "/"), (HUB_HOST, "/user/nobody/lab"), (HUB_HOST, "/jupyter/user/nobody")}
    for path in table:
        key = RouteKey.parse(path)
        host = key.host or HUB_HOST
        rest = key.rest
        for probe in (rest, rest + "/", rest + "/lab/tree", rest + "2", rest + "-x/y",
                      rest.rsplit("/", 1)[0] or "/", rest + "/gpu", rest + "/GPU/api"):
            out.add((host, probe.replace("//", "/")))
        if key.host:
            out.add((key.host, "/hub/login"))
    picked = sorted(out)
    rng.shuffle(picked)
    return picked


def chp_expected(table: dict[str, Any], host: str, path: str, host_mode: bool) -> str | None:
    """configurable-http-proxy's answer: with host routing the lookup key is /<host><path>."""
    if host_mode:
        return chp_route(table, f"/{host}{path}" if path != "/" else f"/{host}")
    return chp_route(table, path)


def expected_destination(registry: Registry, table: dict[str, Any], key: str | None) -> tuple[Any, Any]:
    """(first hop, second hop) destination hosts for the route CHP picks."""
    if key is None:
        return None, None
    body = table[key]
    data = {k: v for k, v in body.items() if k != "target"}
    from federation.placement import place

    owner = place(registry, body["target"], data).cluster
    final = destination_in(owner, body["target"], data, registry.instance)
    if owner.name == registry.home:
        return final.host, None
    return edge_destination(owner).host, final.host


def vs_of(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == "VirtualService"]


def check_table(registry: Registry, table: dict[str, Any], host_mode: bool, rng: random.Random,
                orders: int = 5, capacity: int = DEFAULT_CAPACITY) -> int:
    rendered = render_table(registry, table, capacity=capacity)
    home = vs_of(rendered[registry.home])
    checked = 0
    for host, path in probes(table, rng):
        want = chp_expected(table, host, path, host_mode)
        hop1, hop2 = expected_destination(registry, table, want)
        wire = quote(path, safe="/@~")
        for order in all_orders(len(home), orders, rng):
            got = route(home, gateway=GATEWAY, host=host, path=wire, order=order)
            assert got.destination_host == hop1, (host, path, want, got, order)
        if hop2 is not None:
            owner = next(c for c in registry.clusters.values() if c.ingress_origin
                         and c.ingress_origin[1] == hop1)
            remote = vs_of(rendered[owner.name])
            for order in all_orders(len(remote), 2, rng):
                # Hop two: a plain route arrives addressed to the remote ingress, a host route keeps its host.
                second_host = hop1 if host == HUB_HOST else host
                got = route(remote, gateway=GATEWAY, host=second_host, path=wire, order=order)
                assert got.destination_host == hop2, (path, want, got)
                assert got.rewritten_path == wire  # the path is kept intact on both hops
        checked += 1
    return checked


@pytest.mark.parametrize("chunk", range(10))
def test_random_tables_route_like_chp_in_any_order(chunk: int) -> None:
    registry = make_registry()
    total = 0
    for seed in range(chunk * 50, chunk * 50 + 50):  # 500 tables in all
        rng = random.Random(seed)
        table, mode = random_table(rng)
        # Every other table in split shards (two routes each: trees several levels deep).
        total += check_table(registry, table, mode == "host", rng, capacity=2 if seed % 2 else 48)
    assert total > 500


def test_split_layouts_really_split() -> None:
    """The check above covers split trees: a table of a few routes per depth, at capacity 2,
    has markers and shards below level 0."""
    registry = make_registry()
    table, _ = random_table(random.Random(3))
    table.update({f"/user/extra{i}": {"target": "http://10.0.0.9:80"} for i in range(12)})
    objects = vs_of(render_table(registry, table, capacity=2)["hub"])
    levels = {o["metadata"]["annotations"].get("federation.jupyter.org/shard") for o in objects}
    assert any(level and level.split("/")[1] != "0" for level in levels)
    assert any(o["metadata"]["annotations"].get("federation.jupyter.org/split") for o in objects)


def test_http_options_keep_routing_right() -> None:
    registry = make_registry({"stripPrefix": True, "timeout": "60s",
                              "requestHeaders": {"set": {"X-Forwarded-Prefix": "{prefix}"}}})
    rng = random.Random(7)
    table = {
        "/": {"target": "http://hub:8081", "hub": True},
        "/user/alice": {"target": "http://10.0.0.5:8888", "user": "alice"},
        "/user/alice/gpu": {"target": "http://10.0.0.6:8888", "user": "alice", "server_name": "gpu"},
    }
    check_table(registry, table, False, rng)
    home = vs_of(render_table(registry, table)["hub"])
    got = route(home, gateway=GATEWAY, host=HUB_HOST, path="/user/alice/gpu/lab?x=1")
    assert got.destination_host == "ip-10-0-0-6.jupyterhub.federation.internal"
    assert got.rewritten_path == "/lab?x=1"
    assert got.request_headers["x-forwarded-prefix"] == "/user/alice/gpu"
    assert got.timeout == "60s"
    got = route(home, gateway=GATEWAY, host=HUB_HOST, path="/user/alice")
    assert got.rewritten_path == "/"


def test_naive_prefix_design_fails_the_same_check() -> None:
    """The check is able to fail: one VirtualService per route with a bare prefix match
    (the Istio proxy in the seeds) routes /user/alice2 to alice in some order."""
    table = {"/user/alice": "a", "/user/alice2": "b", "/jupyter": "h", "/jupyter/user/x": "x"}
    naive = [
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": f"vs{i}", "namespace": "jupyterhub"},
         "spec": {"hosts": [HUB_HOST], "gateways": [GATEWAY],
                  "http": [{"match": [{"uri": {"prefix": p}}],
                            "route": [{"destination": {"host": t}}]}]}}
        for i, (p, t) in enumerate(table.items())
    ]
    wrong = 0
    for order in all_orders(len(naive), 6, random.Random(1)):
        for path in ("/user/alice2/lab", "/jupyter/user/x/api"):
            got = route(naive, gateway=GATEWAY, host=HUB_HOST, path=path, order=order)
            if got.destination_host != table[chp_route(table, path)]:
                wrong += 1
    assert wrong > 0
