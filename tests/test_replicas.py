"""Several replicas against the same clusters: one consistent table, nothing duplicated."""

from __future__ import annotations

import concurrent.futures
import random
import time
from pathlib import Path

import httpx
import pytest

from .conftest import TOKEN, running_replicas, stored_routes

HEADERS = {"Authorization": f"token {TOKEN}"}


@pytest.fixture
def replicas(config_path: Path):
    with running_replicas(config_path, 3) as services:
        yield services


def wait_for(predicate, timeout: float = 5.0) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)
    return time.monotonic() - start


def test_other_replica_sees_a_write_within_a_second(replicas) -> None:
    a, b, _ = replicas
    resp = httpx.post(a.url + "/api/routes/user/alice", headers=HEADERS,
                      json={"target": "https://east.hub.example.org", "user": "alice"})
    assert resp.status_code == 201

    def seen() -> bool:
        return "/user/alice" in httpx.get(b.url + "/api/routes", headers=HEADERS).json()

    assert wait_for(seen, timeout=1.0) < 1.0
    httpx.delete(b.url + "/api/routes/user/alice", headers=HEADERS)
    wait_for(lambda: httpx.get(a.url + "/api/routes/user/alice", headers=HEADERS).status_code == 404, 1.0)


def test_get_is_served_from_the_cache(replicas, clusters) -> None:
    a = replicas[0]
    httpx.post(a.url + "/api/routes/user/x", headers=HEADERS, json={"target": "http://10.0.0.1:80"})
    lists = {n: s.request_counts.get("list", 0) for n, s in clusters.servers.items()}
    for _ in range(20):
        assert httpx.get(a.url + "/api/routes", headers=HEADERS).status_code == 200
    assert {n: s.request_counts.get("list", 0) for n, s in clusters.servers.items()} == lists


def test_concurrent_posts_of_one_route_make_one_entry(replicas, clusters) -> None:
    targets = ["https://east.hub.example.org", "http://west.hub.example.org:8080", "http://10.0.0.7:8888"]
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        results = list(pool.map(
            lambda i: httpx.post(replicas[i % 3].url + "/api/routes/user/alice", headers=HEADERS,
                                 json={"target": targets[i % 3], "user": "alice"}, timeout=30).status_code,
            range(12)))
    assert results == [201] * 12
    # Housekeeping settles a route briefly owned twice (a move racing a move).
    time.sleep(0.3)
    replicas[0].run(replicas[0].federation.reconcile(grace=0))
    stored = stored_routes(clusters)
    owners = [c for c, routes in stored.items() if "/user/alice" in routes and not routes["/user/alice"].get("edge")]
    assert len(owners) == 1
    tables = [httpx.get(s.url + "/api/routes", headers=HEADERS).json() for s in replicas]
    wait_for(lambda: len({str(httpx.get(s.url + "/api/routes", headers=HEADERS).json()) for s in replicas}) == 1)
    assert all("/user/alice" in t for t in tables)


@pytest.mark.slow
def test_storm_over_replicas_ends_with_exactly_the_expected_objects(replicas, clusters) -> None:
    rng = random.Random(42)
    users = [f"u{i}" for i in range(60)]
    targets = ["https://east.hub.example.org", "http://west.hub.example.org:8080", "http://10.0.1.{i}:8888",
               "http://jupyter-{u}.jhub:8888"]
    ops = []
    for step in range(400):
        user = rng.choice(users)
        if rng.random() < 0.25:
            ops.append(("DELETE", user, None))
        else:
            ops.append(("POST", user, rng.choice(targets).format(i=step % 250, u=user)))
    # Each user's operations stay in order (as the hub sends them); users run concurrently.
    by_user: dict[str, list] = {}
    for op in ops:
        by_user.setdefault(op[1], []).append(op)

    def run_user(user: str) -> None:
        with httpx.Client(headers=HEADERS, timeout=30) as client:
            for method, _, target in by_user[user]:
                url = rng.choice(replicas).url + f"/api/routes/user/{user}"
                if method == "POST":
                    assert client.post(url, json={"target": target, "user": user}).status_code == 201
                else:
                    assert client.delete(url).status_code in (204, 404)

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        list(pool.map(run_user, list(by_user)))
    expected = {}
    for method, user, target in ops:
        if method == "POST":
            expected[f"/user/{user}"] = target
        else:
            expected.pop(f"/user/{user}", None)
    # Each replica's table is fed by its watches: the other replicas' last writes reach it a
    # moment later (longer on a loaded machine); a table still wrong after this is a lost update.
    for svc in replicas:
        wait_for(lambda svc=svc: {p: r["target"] for p, r in httpx.get(
            svc.url + "/api/routes", headers=HEADERS).json().items()} == expected, timeout=15)
    # A copy briefly left in a second cluster (a move whose replica had not yet seen the old
    # copy) is the reconciler's to remove; the tables above already answer with the newest.
    for svc in replicas:
        svc.run(svc.federation.reconcile(grace=0))
    stored = stored_routes(clusters)
    owned = {}
    for _cluster, routes in stored.items():
        for path, entry in routes.items():
            if not entry.get("edge"):
                assert path not in owned, f"{path} owned twice"
                owned[path] = entry["target"]
    assert owned == expected
    edge = {p for p, e in stored["hub"].items() if e.get("edge")}
    assert edge == {p for p, t in expected.items() if "hub.example.org" in t}


def test_delete_through_a_replica_that_has_not_seen_the_write(replicas, clusters) -> None:
    a, b, _ = replicas
    for store in b.federation.stores.values():  # b's caches stop hearing from the clusters
        b.run(store.stop_watching())
    for target in ("http://10.0.0.9:80", "https://east.hub.example.org"):
        assert httpx.post(a.url + "/api/routes/user/late", headers=HEADERS,
                          json={"target": target, "user": "late"}).status_code == 201
        resp = httpx.delete(b.url + "/api/routes/user/late", headers=HEADERS)
        assert resp.status_code == 204
        assert all("/user/late" not in routes for routes in stored_routes(clusters).values())
    assert httpx.delete(b.url + "/api/routes/user/never", headers=HEADERS).status_code == 404
