"""Planning a POST: every rule that refuses a route before anything is queued, and the data
that must be accepted (configurable-http-proxy keeps any JSON)."""

from __future__ import annotations

import json

import pytest

from federation.config import parse_registry
from federation.errors import InvalidRoute
from federation.plan import MAX_DATA_DEPTH, plan_route, render_table

from .conftest import ISTIO_CRDS, base_config
from .istio_schema import validate

NOW = "2026-01-01T00:00:00.000Z"
EAST = "https://east.hub.example.org"
ODD_VALUES = [{"name": "alice", "id": 7}, ["alice"], 7, 1.5, True, None, {}, [], "", "日本"]


@pytest.fixture
def registry():
    return parse_registry(base_config(), check_kubeconfig=False)


def nested(depth: int) -> object:
    value: object = "leaf"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("value", ODD_VALUES)
@pytest.mark.parametrize("key", ["user", "server_name", "anything"])
def test_any_json_data_is_kept_where_no_name_is_needed(registry, key, value) -> None:
    body = {"target": "http://10.1.2.3:8888", key: value, "jupyterhub": True}
    plan = plan_route(registry, "/user/x", body, NOW)
    (cluster, entry), = plan.writes
    assert cluster == "hub"
    assert entry.data == {key: value, "jupyterhub": True}


@pytest.mark.parametrize("value", [v for v in ODD_VALUES if not isinstance(v, str) and v is not None])
def test_ingress_route_needs_a_string_user(registry, value) -> None:
    with pytest.raises(InvalidRoute, match="'user' in route data must be a string"):
        plan_route(registry, "/user/x", {"target": EAST, "user": value}, NOW)


@pytest.mark.parametrize("value", [None, ""])
def test_ingress_route_without_user_names_the_missing_key(registry, value) -> None:
    with pytest.raises(InvalidRoute, match="no 'user'"):
        plan_route(registry, "/user/x", {"target": EAST, "user": value}, NOW)


@pytest.mark.parametrize("value", [v for v in ODD_VALUES if not isinstance(v, str) and v is not None])
def test_ingress_route_needs_a_string_or_null_server_name(registry, value) -> None:
    with pytest.raises(InvalidRoute, match="'server_name' in route data must be a string or null"):
        plan_route(registry, "/user/x", {"target": EAST, "user": "a", "server_name": value}, NOW)


def test_ingress_route_with_null_server_name_is_the_default_server(registry) -> None:
    plan = plan_route(registry, "/user/x", {"target": EAST, "user": "a", "server_name": None}, NOW)
    assert [c for c, _ in plan.writes] == ["east", "hub"]


def test_user_whose_service_name_is_over_63_characters_is_refused(registry) -> None:
    # "jupyter-" + 55 = 63 characters: the longest Service name; one more is refused
    plan_route(registry, "/user/x", {"target": EAST, "user": "u" * 55}, NOW)
    with pytest.raises(InvalidRoute, match="destination host .* label of 64"):
        plan_route(registry, "/user/x", {"target": EAST, "user": "u" * 56}, NOW)
    with pytest.raises(InvalidRoute, match="label of"):
        plan_route(registry, "/user/x", {"target": EAST, "user": "u", "server_name": "s" * 60}, NOW)


def test_short_host_whose_service_fqdn_is_over_253_is_refused(registry) -> None:
    host = "a" * 60 + "." + "b" * 60 + "." + "c" * 60 + ".svc"  # 185, + ".cluster.local"
    plan_route(registry, "/x", {"target": f"http://{host}:80"}, NOW)
    long = "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 55 + ".svc"  # 250 -> 264
    with pytest.raises(InvalidRoute, match="destination host .* characters long"):
        plan_route(registry, "/x", {"target": f"http://{long}:80"}, NOW)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"extra": nested(MAX_DATA_DEPTH)}, "nested deeper"),
        ({"extra": float("nan")}, "NaN"),
        ({"extra": float("-inf")}, "infinity"),
        ({"extra": {1: "x"}}, "keys must be strings"),
        ({"extra": ("a", "b")}, "tuple"),
        ({"extra": "\ud800"}, "surrogate"),
        ({"\udfff": 1}, "surrogate"),
        ({"extra": "x" * 17_000}, "KiB"),
        ({"cluster": {"name": "east"}}, "unknown cluster {'name': 'east'}"),
        ({"cluster": ["x" * 500]}, "unknown cluster ['xxx"),
    ],
)
def test_data_that_cannot_be_stored_and_served_back_is_refused(registry, data, fragment) -> None:
    with pytest.raises(InvalidRoute) as info:
        plan_route(registry, "/x", {"target": "http://hub:8081", **data}, NOW)
    assert fragment in str(info.value)
    assert len(str(info.value)) < 300


def test_data_at_the_depth_limit_is_kept(registry) -> None:
    value = nested(MAX_DATA_DEPTH - 1)
    plan = plan_route(registry, "/x", {"target": "http://hub:8081", "extra": value}, NOW)
    assert plan.writes[0][1].data == {"extra": value}


@pytest.mark.parametrize(
    ("path", "target", "fragment"),
    [
        ("/x", "http://10.0.0.299:80", "all-numeric"),
        ("/x", "http://" + "h" * 300, "300 characters"),
        ("/x", "http://a_b.example.org", "'a_b'"),
        ("/x", "http://hub:0", "port 0"),
        ("/" + "a" * 64 + ".hub.example.org/user/a", "http://hub:8081", "label of 64"),
    ],
)
def test_invalid_host_or_port_is_refused_in_planning(registry, path, target, fragment) -> None:
    with pytest.raises(InvalidRoute, match=fragment):
        plan_route(registry, path, {"target": target}, NOW)


@pytest.mark.upstream_schemas("istio")
def test_objects_for_odd_data_validate(registry) -> None:
    """A table with JSON objects as names renders, and every object passes Istio's checks."""
    targets = ("http://10.1.2.3:8888", "http://[fd00::]:80", "https://files.example.com")
    table = {
        f"/user/{i}/{j}": {"target": t, "user": v, "server_name": v}
        for i, v in enumerate(ODD_VALUES)
        for j, t in enumerate(targets)
    }
    table["/user/named"] = {"target": EAST, "user": "Ann", "server_name": "gpu"}
    objects = [o for objs in render_table(registry, table, NOW).values() for o in objs]
    for obj in objects:
        validate(obj, ISTIO_CRDS)
    stored = {}
    for obj in objects:
        stored.update(json.loads(obj["metadata"]["annotations"].get("federation.jupyter.org/routes", "{}")))
    assert {p: e["data"] for p, e in stored.items() if "data" in e} == {
        p: {k: v for k, v in body.items() if k != "target"} for p, body in table.items()
    }
