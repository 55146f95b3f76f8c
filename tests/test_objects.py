from __future__ import annotations

import json

import pytest

from federation.config import parse_registry
from federation.istio.layout import ShardKey, top
from federation.istio.objects import build_root, build_shard, route_rule
from federation.mesh import support_objects
from federation.model import ANN_ROUTES, Entry, decode_entries, dns_label
from federation.placement import destination_in, edge_destination
from federation.routespec import RouteKey, normalize_path

from .conftest import ISTIO_CRDS, base_config
from .istio_schema import validate


@pytest.fixture
def registry():
    doc = base_config()
    doc["clusters"][1]["http"] = {
        "stripPrefix": True, "timeout": "300s",
        "requestHeaders": {"set": {"X-Forwarded-Prefix": "{prefix}"}, "remove": ["Cookie2"]},
    }
    return parse_registry(doc, check_kubeconfig=False)


def entry(path: str, target: str, owner: str, **data) -> Entry:
    return Entry(path, target, owner, data, "2026-11-20T12:00:00.000Z")


@pytest.mark.parametrize(
    ("raw", "path", "host", "rest", "depth"),
    [
        ("", "/", None, "/", 0),
        ("/", "/", None, "/", 0),
        ("/user/alice/", "/user/alice", None, "/user/alice", 2),
        ("user/alice", "/user/alice", None, "/user/alice", 2),
        ("/jupyter", "/jupyter", None, "/jupyter", 1),
        ("/alice.hub.example.org/user/alice", "/alice.hub.example.org/user/alice",
         "alice.hub.example.org", "/user/alice", 2),
        ("/host.name/", "/host.name", "host.name", "/", 0),
    ],
)
def test_route_keys(raw, path, host, rest, depth) -> None:
    key = RouteKey.parse(normalize_path(raw))
    assert (key.path, key.host, key.rest, key.depth) == (path, host, rest, depth)


def test_shard_rules_are_segment_exact_and_carry_the_route(registry) -> None:
    hub = registry.clusters["hub"]
    e = entry("/user/alice", "http://10.1.2.3:8888", "hub", user="alice", server_name="", jupyterhub=True)
    key = top(RouteKey.parse(e.path))
    obj = build_shard(registry, hub, key, {e.path: e})
    rule = obj["spec"]["http"][0]
    assert rule["match"] == [{"uri": {"exact": "/user/alice"}}, {"uri": {"prefix": "/user/alice/"}}]
    assert "hosts" not in obj["spec"] and "gateways" not in obj["spec"]  # a delegate
    stored = json.loads(obj["metadata"]["annotations"][ANN_ROUTES])
    assert stored["/user/alice"]["target"] == "http://10.1.2.3:8888"
    assert stored["/user/alice"]["data"] == {"user": "alice", "server_name": "", "jupyterhub": True}
    assert decode_entries(obj) == {e.path: e}
    labels = obj["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "jupyterhub-federation-proxy"
    assert labels["federation.jupyter.org/instance"] == "jupyterhub"


def test_root_orders_delegates_deepest_first(registry) -> None:
    hub = registry.clusters["hub"]
    legacy = [ShardKey("", d, 0, b, legacy=True).name("jupyterhub")
              for d, b in [(0, 5), (2, 1), (3, 0), (1, 7), (2, 0)]]
    tree = [ShardKey("", d, lv, b).name("jupyterhub") for d, lv, b in [(2, 1, 1), (2, 0, 0), (3, 2, 3)]]
    root = build_root(registry, hub, "", legacy + tree)
    order = [r["delegate"]["name"] for r in root["spec"]["http"]]
    # Deepest first; within a depth a parent before its children, the legacy layout last.
    assert order == ["jupyterhub-d3s2-3", "jupyterhub-r3-000", "jupyterhub-d2s0-0",
                     "jupyterhub-d2s1-1", "jupyterhub-r2-000", "jupyterhub-r2-001",
                     "jupyterhub-r1-007", "jupyterhub-r0-005"]
    assert root["spec"]["gateways"] == ["istio-system/jupyterhub-gateway"]
    assert root["spec"]["hosts"] == ["hub.example.org"]
    assert all("match" not in r for r in root["spec"]["http"])


def test_remote_root_accepts_its_ingress_host(registry) -> None:
    east = registry.clusters["east"]
    root = build_root(registry, east, "", [])
    assert root["spec"]["hosts"] == ["hub.example.org", "east.hub.example.org"]


def test_http_options_apply_with_prefix_placeholder(registry) -> None:
    east = registry.clusters["east"]
    e = entry("/user/bob/gpu", "https://east.hub.example.org", "east", user="bob", server_name="gpu")
    obj = build_shard(registry, east, top(RouteKey.parse(e.path)), {e.path: e})
    rule = obj["spec"]["http"][0]
    assert rule["rewrite"] == {"uri": "/"}
    assert rule["timeout"] == "300s"
    assert rule["headers"]["request"] == {"set": {"X-Forwarded-Prefix": "/user/bob/gpu"},
                                          "remove": ["Cookie2"]}
    assert rule["route"][0]["destination"] == {
        "host": "jupyter-bob--gpu.jupyter-users.svc.cluster.local", "port": {"number": 8888}}


def test_names_are_dns_labels() -> None:
    long = dns_label("x" * 40, "edge", "y" * 40)
    assert len(long) <= 63
    assert long != dns_label("x" * 40, "edge", "y" * 39 + "z")
    assert len(ShardKey("a" * 60 + ".org", 512, 16, 0xFFFF).name("i" * 40)) <= 63
    assert len(ShardKey("a" * 60 + ".org", 12, 0, 1023, legacy=True).name("i" * 40)) <= 63


def all_objects(registry):
    hub, east = registry.clusters["hub"], registry.clusters["east"]
    entries = [
        entry("/", "http://hub:8081", "hub", hub=True),
        entry("/jupyter", "http://hub:8081", "hub", hub=True),
        entry("/user/carol", "http://10.12.3.4:8888", "hub", user="carol"),
        entry("/user/秀樹", "http://jupyter-x.jhub:8888", "hub", user="秀樹"),
        entry("/alice.hub.example.org/user/alice", "http://jupyter-alice:8888", "hub", user="alice"),
    ]
    remote = entry("/user/bob/gpu", "https://east.hub.example.org", "east", user="bob", server_name="gpu")
    edge = Entry(remote.path, remote.target, "east", {}, remote.last_activity, edge=True)
    objs = []
    for e in entries + [edge]:
        objs.append(build_shard(registry, hub, top(RouteKey.parse(e.path)), {e.path: e}))
    objs.append(build_shard(registry, east, top(RouteKey.parse(remote.path)), {remote.path: remote}))
    objs.append(build_root(registry, hub, "", [o["metadata"]["name"] for o in objs]))
    objs.append(build_root(registry, hub, "alice.hub.example.org", ["x-r2-001"]))
    objs += support_objects(registry, hub, destination_in(hub, "http://10.12.3.4:8888", {}, "jupyterhub"))
    objs += support_objects(registry, hub, edge_destination(east))
    objs += support_objects(registry, hub, destination_in(hub, "https://files.example.com", {}, "jupyterhub"))
    return objs


@pytest.mark.upstream_schemas("istio")
def test_every_object_validates_against_istio_schemas(registry) -> None:
    objs = all_objects(registry)
    kinds = {o["kind"] for o in objs}
    assert kinds == {"VirtualService", "ServiceEntry", "DestinationRule"}
    for obj in objs:
        validate(obj, ISTIO_CRDS)


@pytest.mark.upstream_schemas("istio")
def test_schema_validation_can_fail(registry) -> None:
    import jsonschema

    obj = all_objects(registry)[0]
    obj["spec"]["http"][0]["match"][0]["uri"] = {"prefixx": "/"}
    with pytest.raises(jsonschema.ValidationError):
        validate(obj, ISTIO_CRDS)


def test_memo_takes_any_json_as_user_and_keeps_types_apart(registry) -> None:
    """Route data is any JSON: a dict 'user' must not break the memo, and user "1" (a name)
    must not be served the rule memoised for user 1 (refused at an ingress target)."""
    from federation.errors import InvalidRoute
    from federation.istio.objects import ShardMemo

    east, memo = registry.clusters["east"], ShardMemo()
    for user in ({"name": "a"}, ["a"], 1):
        entry = Entry("/user/a", "http://10.1.2.3:8888", "east", {"user": user}, "t")
        assert memo.rule(registry, east, entry) == memo.rule(registry, east, entry)
    ingress = "https://east.hub.example.org"
    named = memo.rule(registry, east, Entry("/user/b", ingress, "east", {"user": "1"}, "t"))
    assert named is not None
    assert json.loads(named)["route"][0]["destination"]["host"].startswith("jupyter-1.")
    # Planning refuses it; a stored one (hand-edited) is kept with no rule rather than wrong.
    assert memo.rule(registry, east, Entry("/user/b", ingress, "east", {"user": 1}, "t")) is None
    with pytest.raises(InvalidRoute):
        route_rule(registry, east, Entry("/user/b", ingress, "east", {"user": 1}, "t"))


def has_route(obj: dict) -> bool:
    """Not a root (a root's rules delegate; they have no destination to spoil)."""
    return obj["kind"] != "VirtualService" or any("route" in r for r in obj["spec"]["http"])


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        ("VirtualService", ("spec", "http", 0, "route", 0, "destination", "host"), "a" * 64 + ".svc"),
        ("VirtualService", ("spec", "http", 0, "route", 0, "destination", "host"), "10.0.0.299"),
        ("VirtualService", ("spec", "http", 0, "route", 0, "destination", "port", "number"), 0),
        ("ServiceEntry", ("spec", "hosts", 0), "a_b.example.org"),
        ("ServiceEntry", ("spec", "ports", 0, "number"), 70000),
        ("DestinationRule", ("spec", "host"), "x" * 256),
    ],
)
@pytest.mark.upstream_schemas("istio")
def test_webhook_rules_can_fail(registry, kind, path, value) -> None:
    """The test-side transcription of Istio's webhook rules catches each kind of bad value."""
    import jsonschema

    obj = next(o for o in all_objects(registry) if o["kind"] == kind and has_route(o))
    validate(obj, ISTIO_CRDS)
    node = obj
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        validate(obj, ISTIO_CRDS)


def test_an_object_read_again_keeps_the_entries_it_held_unchanged(registry) -> None:
    hub = registry.clusters["hub"]
    alice = entry("/user/alice", "http://10.1.2.3:8888", "hub", user="alice", n=1)
    bob = entry("/user/bob", "http://10.1.2.4:8888", "hub", user="bob", n=1)
    key = top(RouteKey.parse(alice.path))
    first = decode_entries(build_shard(registry, hub, key, {alice.path: alice, bob.path: bob}))
    moved = entry("/user/bob", "http://10.9.9.9:8888", "hub", user="bob", n=1)
    again = decode_entries(build_shard(registry, hub, key, {alice.path: alice, moved.path: moved}),
                           first)
    assert again["/user/alice"] is first["/user/alice"]
    assert again["/user/bob"] is not first["/user/bob"]
    assert again["/user/bob"] == moved


@pytest.mark.parametrize("value", [1.0, True, "1", [1], {"n": 1}])
def test_route_data_equal_in_python_but_of_another_type_is_read_anew(registry, value) -> None:
    hub = registry.clusters["hub"]
    before = entry("/user/alice", "http://10.1.2.3:8888", "hub", n=1)
    key = top(RouteKey.parse(before.path))
    first = decode_entries(build_shard(registry, hub, key, {before.path: before}))
    after = entry("/user/alice", "http://10.1.2.3:8888", "hub", n=value)
    again = decode_entries(build_shard(registry, hub, key, {after.path: after}), first)
    assert again["/user/alice"] is not first["/user/alice"]
    assert type(again["/user/alice"].data["n"]) is type(value)


def test_entries_read_from_objects_share_their_strings(registry) -> None:
    hub = registry.clusters["hub"]
    e = entry("/user/alice", "http://10.1.2.3:8888", "hub", user="alice")
    key = top(RouteKey.parse(e.path))
    one = decode_entries(build_shard(registry, hub, key, {e.path: e}))["/user/alice"]
    two = decode_entries(build_shard(registry, hub, key, {e.path: e}))["/user/alice"]
    assert one is not two
    for field in ("path", "target", "owner", "last_activity"):
        assert getattr(one, field) is getattr(two, field)


def test_a_shard_read_again_unchanged_changes_nothing_in_the_index(registry) -> None:
    from federation.istio.index import ShardIndex
    from federation.mirror import RouteEntries
    from federation.table import RouteTable

    hub = registry.clusters["hub"]
    routes = {f"/user/u{i}": entry(f"/user/u{i}", f"http://10.1.2.{i}:8888", "hub", n=i)
              for i in range(20)}
    obj = build_shard(registry, hub, top(RouteKey.parse("/user/u0")), routes)
    entries = RouteEntries("hub", RouteTable())
    index = ShardIndex("jupyterhub", entries)
    name = obj["metadata"]["name"]
    index.put("virtualservices", name, json.loads(json.dumps(obj)), None)
    held = {path: entries.entry(path) for path in routes}
    changes = entries.changes
    index.put("virtualservices", name, json.loads(json.dumps(obj)), None)  # a watch event
    assert entries.changes == changes  # no route looked at again
    assert all(entries.entry(path) is held[path] for path in routes)
