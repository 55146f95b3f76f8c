"""The proxy API contract (../shared/reference/proxy-api-contract.md), row by row, over HTTP
against the service backed by three emulated clusters."""

from __future__ import annotations

import json
import time
from datetime import datetime

import httpx
import pytest

from ..conftest import TOKEN, objects_in, stored_routes

USER = {"user": "alice", "server_name": "", "jupyterhub": True}


def add(api, path: str, target: str = "http://10.1.2.3:8888", **data) -> None:
    resp = api.post(f"/api/routes{path}", json={"target": target, **data})
    assert resp.status_code == 201, resp.text
    assert resp.content == b""


def test_get_whole_table_both_spellings(api) -> None:
    add(api, "/user/alice", **USER)
    for url in ("/api/routes", "/api/routes/"):
        resp = api.get(url)
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("application/json")
        assert set(resp.json()) == {"/user/alice"}


def test_get_one_route_and_404_with_empty_body(api) -> None:
    add(api, "/user/alice", "http://10.1.2.3:8888", **USER)
    resp = api.get("/api/routes/user/alice")
    assert resp.status_code == 200
    route = resp.json()
    assert route["target"] == "http://10.1.2.3:8888"
    assert route["user"] == "alice" and route["jupyterhub"] is True
    missing = api.get("/api/routes/user/nobody")
    assert missing.status_code == 404 and missing.content == b""


def test_post_without_path_is_root_and_post_replaces(api, clusters) -> None:
    resp = api.post("/api/routes", json={"target": "http://hub:8081", "hub": True})
    assert resp.status_code == 201 and resp.content == b""
    assert api.get("/api/routes").json()["/"]["target"] == "http://hub:8081"
    add(api, "/", "http://hub:8082", hub=True, extra="x")
    route = api.get("/api/routes").json()["/"]
    assert route["target"] == "http://hub:8082" and route["extra"] == "x"
    assert len([p for p in stored_routes(clusters)["hub"]]) == 1


def test_repeated_post_is_harmless(api, clusters) -> None:
    for _ in range(3):
        add(api, "/user/alice", **USER)
    assert list(api.get("/api/routes").json()) == ["/user/alice"]
    assert list(stored_routes(clusters)["hub"]) == ["/user/alice"]


def test_delete_then_404(api, clusters) -> None:
    add(api, "/user/alice", **USER)
    resp = api.delete("/api/routes/user/alice")
    assert resp.status_code == 204 and resp.content == b""
    assert api.get("/api/routes").json() == {}
    assert stored_routes(clusters)["hub"] == {}
    again = api.delete("/api/routes/user/alice")
    assert again.status_code == 404


def test_unknown_api_paths_and_methods(api) -> None:
    assert api.get("/api/nothing").status_code == 404
    assert api.get("/api/").status_code == 404
    assert api.put("/api/routes/user/alice", json={"target": "http://x"}).status_code == 405
    assert api.patch("/api/routes", json={}).status_code == 405


@pytest.mark.parametrize("header", [None, "token wrong", "Bearer wrong", TOKEN, "token"])
def test_missing_or_wrong_token_is_403(service, header) -> None:
    import httpx

    headers = {"Authorization": header} if header else {}
    for method, url in (("GET", "/api/routes"), ("POST", "/api/routes/x"), ("DELETE", "/api/routes/x"),
                        ("GET", "/clusters")):
        resp = httpx.request(method, service.url + url, headers=headers, json={"target": "http://a"})
        assert resp.status_code == 403, (method, url, header)


def test_bearer_token_also_accepted(service) -> None:
    import httpx

    resp = httpx.get(service.url + "/api/routes", headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status_code == 200


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'"text"', "JSON object"),
        (b"null", "'target'"),
        (b"{}", "'target'"),
        (b'{"target": 5}', "must be a string"),
        (b'{"target": null}', "must be a string"),
        (b'{"target": "hub:8081"}', "absolute http"),
        (b'{"target": "/relative"}', "absolute http"),
        (b'{"target": "ftp://x.org"}', "absolute http"),
        (b'{"target": "http://x.org:99999"}', "not a valid URL"),
        (b'{"target": "http://hub:8081", "cluster": "mars"}', "unknown cluster"),
        (b'{"target": "https://east.hub.example.org"}', "no 'user'"),
        (b'{"target": "https://east.hub.example.org", "user": {"name": "a"}}', "must be a string"),
        (b'{"target": "http://10.0.0.299:80"}', "all-numeric"),
        (b'{"target": "http://' + b"h" * 300 + b'"}', "300 characters"),
        (b'{"target": "http://a_b.example.org"}', "'a_b'"),
        (b'{"target": "http://hub:0"}', "port 0"),
        (b'{"target": NaN}', "not valid JSON"),
        (b"[" * 100_000, "nested too deeply"),
        (b'{"target": "http://hub:8081", "x": "\\ud800"}', "surrogate"),
        (b'{"target": "http://hub:8081", "n": 1e999}', "infinity"),
    ],
)
def test_bad_post_is_400_and_writes_nothing(api, clusters, body, fragment) -> None:
    before = {n: dict(s.request_counts) for n, s in clusters.servers.items()}
    resp = api.post("/api/routes/user/alice", content=body,
                    headers={"Content-Type": "application/json"})
    assert resp.status_code == 400, resp.text
    assert fragment in resp.json()["error"]
    after = {n: dict(s.request_counts) for n, s in clusters.servers.items()}
    for name in before:
        for verb in ("create", "update", "patch", "delete"):
            assert after[name].get(verb, 0) == before[name].get(verb, 0), (name, verb)
    assert api.get("/api/routes").json() == {}


def test_bad_paths(api) -> None:
    for bad in ("a%01b", "a%0Ab", "a%0D%0Ab"):  # a newline stops the router's path pattern
        for method in ("POST", "GET", "DELETE"):
            resp = api.request(method, f"/api/routes/user/{bad}",
                               json={"target": "http://a:1"} if method == "POST" else None)
            assert resp.status_code == 400 and "control" in resp.json()["error"], (bad, method)
            # without the token it is a 403, as every other route answers: the token comes first
            with httpx.Client(base_url=api.base_url) as anonymous:
                resp = anonymous.request(method, f"/api/routes/user/{bad}")
            assert resp.status_code == 403, (bad, method, resp.text)
    long = "/user/" + "x" * 1100
    resp = api.post(f"/api/routes{long}", json={"target": "http://a:1"})
    assert resp.status_code == 400 and "1024" in resp.json()["error"]
    assert api.get("/api/routes").json() == {}


def test_body_over_1_mib_is_413(api) -> None:
    body = json.dumps({"target": "http://a:1", "pad": "x" * (1024 * 1024)})
    resp = api.post("/api/routes/user/big", content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 413
    assert api.get("/api/routes").json() == {}


def test_large_data_under_limit_is_refused_clearly(api) -> None:
    resp = api.post("/api/routes/user/big", json={"target": "http://a:1", "pad": "x" * 100_000})
    assert resp.status_code == 400 and "KiB" in resp.json()["error"]


def test_paths_are_decoded_and_lose_one_trailing_slash(api) -> None:
    add(api, "/user/foo%40bar", **USER)
    add(api, "/user/%E7%A7%80%E6%A8%B9/", **USER)
    add(api, "/user/zoe//", **USER)
    table = api.get("/api/routes").json()
    assert set(table) == {"/user/foo@bar", "/user/秀樹", "/user/zoe/"}
    assert api.get("/api/routes/user/%E7%A7%80%E6%A8%B9").json()["target"] == "http://10.1.2.3:8888"
    assert api.delete("/api/routes/user/foo@bar").status_code == 204


def test_table_shape_keys_targets_and_last_activity(api) -> None:
    add(api, "/", "http://hub:8081", hub=True, jupyterhub=True)
    add(api, "/user/alice", "https://east.hub.example.org", user="alice", server_name="",
        jupyterhub=True, extra={"nested": [1, 2]}, anything="else")
    table = api.get("/api/routes").json()
    assert table["/"] == {"hub": True, "jupyterhub": True, "target": "http://hub:8081",
                          "last_activity": table["/"]["last_activity"]}
    alice = table["/user/alice"]
    assert alice["target"] == "https://east.hub.example.org"  # exactly as POSTed
    assert alice["extra"] == {"nested": [1, 2]} and alice["anything"] == "else"
    stamp = alice["last_activity"]
    assert stamp.endswith("Z") and datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def test_inactive_since(api) -> None:
    add(api, "/user/old", **USER)
    time.sleep(0.05)
    cutoff = datetime.utcnow().isoformat() + "Z"
    time.sleep(0.05)
    add(api, "/user/new", **USER)
    assert set(api.get("/api/routes", params={"inactive_since": cutoff}).json()) == {"/user/old"}
    assert set(api.get("/api/routes", params={"inactiveSince": cutoff}).json()) == {"/user/old"}
    resp = api.get("/api/routes", params={"inactive_since": "yesterday"})
    assert resp.status_code == 400


def test_no_request_ends_in_a_traceback(api) -> None:
    for method, url, body in [
        ("POST", "/api/routes/x", b"\xff\xfe"),
        ("GET", "/api/routes/%ZZ", None),
        ("DELETE", "/api/routes/" + "y" * 2000, None),
        ("POST", "/clusters", b"{}"),
    ]:
        resp = api.request(method, url, content=body)
        assert resp.status_code < 500, (method, url, resp.status_code, resp.text)
        assert "Traceback" not in resp.text


def test_routes_land_in_the_right_cluster(api, clusters) -> None:
    add(api, "/", "http://hub:8081", hub=True, jupyterhub=True)
    add(api, "/user/alice", "https://east.hub.example.org", user="alice", server_name="", jupyterhub=True)
    add(api, "/user/Bob/gpu-1", "http://west.hub.example.org:8080", user="Bob", server_name="gpu-1",
        jupyterhub=True)
    add(api, "/user/carol", "http://jupyter-carol.jhub:8888", user="carol", server_name="")
    stored = stored_routes(clusters)
    assert set(stored["east"]) == {"/user/alice"}
    assert set(stored["west"]) == {"/user/Bob/gpu-1"}
    # home holds its own routes and the edge rules for the remote ones
    assert set(stored["hub"]) == {"/", "/user/carol", "/user/alice", "/user/Bob/gpu-1"}
    assert stored["hub"]["/user/alice"]["edge"] is True
    rules = {r["name"]: r for o in objects_in(clusters, "west") for r in o["spec"].get("http", [])
             if "route" in r}
    (bob,) = rules.values()
    assert bob["route"][0]["destination"] == {
        "host": "jupyter--42ob--gpu-2d1.jupyter-users.svc.cluster.local", "port": {"number": 8888}}
    # the home cluster forwards alice's path to east's ingress, with TLS origination
    se = {o["spec"]["hosts"][0] for o in objects_in(clusters, "hub", "serviceentries")}
    assert se == {"east.hub.example.org", "west.hub.example.org"}
    (dr,) = objects_in(clusters, "hub", "destinationrules")
    assert dr["spec"]["host"] == "east.hub.example.org"


def test_move_between_clusters_removes_the_old_object(api, clusters) -> None:
    add(api, "/user/alice", "https://east.hub.example.org", **USER)
    add(api, "/user/alice", "http://west.hub.example.org:8080", **USER)
    stored = stored_routes(clusters)
    assert "/user/alice" not in stored["east"]
    assert stored["west"]["/user/alice"]["target"] == "http://west.hub.example.org:8080"
    assert stored["hub"]["/user/alice"]["owner"] == "west"
    add(api, "/user/alice", "http://10.9.9.9:8888", **USER)
    stored = stored_routes(clusters)
    assert "/user/alice" not in stored["west"]
    assert stored["hub"]["/user/alice"]["owner"] == "hub" and "edge" not in stored["hub"]["/user/alice"]
    assert api.get("/api/routes/user/alice").json()["target"] == "http://10.9.9.9:8888"


@pytest.mark.parametrize(
    ("cutoff", "listed"),
    [("0001-01-01T00:00:00+01:00", False), ("0999-01-01T00:00:00Z", False),
     ("9999-12-31T23:59:59-01:00", True)],
)
def test_inactive_since_at_the_ends_of_the_calendar(api, cutoff, listed) -> None:
    """An offset that takes year 1 or 9999 out of range, and years before 1000, compare right."""
    add(api, "/user/old", **USER)
    resp = api.get("/api/routes", params={"inactive_since": cutoff})
    assert resp.status_code == 200, resp.text
    assert ("/user/old" in resp.json()) is listed


def test_any_json_as_names_is_kept_where_no_service_is_named(api) -> None:
    """configurable-http-proxy keeps any JSON data; names only matter at a cluster's ingress."""
    data = {"user": {"name": "alice", "groups": ["a"]}, "server_name": [1, 2.5, None],
            "extra": {"nested": {"deeper": True}}}
    add(api, "/user/alice", "http://10.1.2.3:8888", **data)
    route = api.get("/api/routes/user/alice").json()
    assert {k: route[k] for k in data} == data
