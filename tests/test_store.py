"""The store's shard trees against emulated clusters: splits under concurrent writers from two
replicas, routes answering throughout, and the upgrade from the first release's layout."""

from __future__ import annotations

import concurrent.futures
import json
import random
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from federation.config import Registry
from federation.istio.layout import ShardKey, path_hash
from federation.istio.objects import ANN_SPLIT, build_root, build_shard, roots_for_shard
from federation.mesh import plural_of, support_objects
from federation.model import Entry, decode_entries, entry_destination
from federation.plan import plan_route
from federation.routespec import RouteKey
from federation.testing.harness import ServiceThread

from .conftest import CONTEXTS, TOKEN, fast_settings, objects_in, running_replicas, stored_routes
from .routing.evaluator import all_orders, route
from .routing.test_interleavings import check_objects
from .test_replicas import wait_for

HEADERS = {"Authorization": f"token {TOKEN}"}
GATEWAY = "istio-system/jupyterhub-gateway"
CAPACITY = 4
TARGETS = ["https://east.hub.example.org", "http://west.hub.example.org:8080",
           "http://10.0.0.7:8888", "http://jupyter-x.jhub:8888"]


def body_for(i: int) -> dict[str, Any]:
    return {"target": TARGETS[i % len(TARGETS)], "user": f"u{i}", "server_name": ""}


def shards_of(clusters: Any, name: str) -> list[dict[str, Any]]:
    return [o for o in objects_in(clusters, name)
            if o["metadata"]["labels"].get("federation.jupyter.org/role") == "shard"]


def assert_bounded(clusters: Any, capacity: int) -> None:
    for name in CONTEXTS:
        for obj in shards_of(clusters, name):
            assert len(decode_entries(obj)) <= capacity, obj["metadata"]["name"]


@pytest.mark.slow
def test_shards_split_under_two_replicas_writing_at_once(config_path: Path, clusters) -> None:
    rng = random.Random(5)
    expected: dict[str, dict[str, Any]] = {f"/user/u{i}": body_for(i) for i in range(96)}
    doomed = set(rng.sample(sorted(expected), 24))
    with running_replicas(config_path, 2, shard_routes=CAPACITY) as (a, b):

        def post(item: tuple[int, str]) -> int:
            i, path = item
            svc = (a, b)[i % 2]
            return httpx.post(svc.url + "/api/routes" + path, headers=HEADERS,
                              json=expected[path], timeout=30).status_code

        def delete(item: tuple[int, str]) -> int:
            i, path = item
            svc = (b, a)[i % 2]
            return httpx.delete(svc.url + "/api/routes" + path, headers=HEADERS,
                                timeout=30).status_code

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            assert set(pool.map(post, enumerate(expected))) == {201}
            assert set(pool.map(delete, enumerate(sorted(doomed)))) == {204}
        for path in doomed:
            del expected[path]
        for svc in (a, b):
            svc.run(svc.federation.reconcile(grace=0))
        a.run(a.federation.reconcile(grace=0))
        owned = {}
        for _name, routes in stored_routes(clusters).items():
            for path, entry in routes.items():
                if not entry.get("edge"):
                    assert path not in owned, f"{path} owned twice"
                    owned[path] = entry["target"]
        assert owned == {p: body["target"] for p, body in expected.items()}
        assert_bounded(clusters, CAPACITY)
        markers = [o for o in shards_of(clusters, "hub") if o["metadata"]["annotations"].get(ANN_SPLIT)]
        assert len(markers) >= 4, "the table should have split several times"
        for svc in (a, b):
            def same(svc: Any = svc) -> bool:
                table = httpx.get(svc.url + "/api/routes", headers=HEADERS).json()
                return {p: r["target"] for p, r in table.items()} == owned

            wait_for(same, 2.0)
        check_objects(clusters, a.federation.registry, expected, rng)


def stable_paths_route(clusters: Any, registry: Registry, stable: dict[str, Any],
                       rng: random.Random) -> None:
    """Every stable route answers from the hub's gateway, in a few merge orders."""
    home = [o for o in objects_in(clusters, "hub")]
    for path, body in stable.items():
        want = entry_destination(registry, registry.clusters["hub"], plan_route(
            registry, path, body, "x").writes[-1][1]).host
        for order in all_orders(len(home), 2, rng):
            got = route(home, gateway=GATEWAY, host="hub.example.org",
                        path=quote(path + "/lab", safe="/@~"), order=order)
            assert got.destination_host == want, (path, got)


@pytest.mark.slow
def test_routes_answer_throughout_splits(config_path: Path, clusters) -> None:
    rng = random.Random(11)
    stable = {f"/user/s{i}": body_for(i) for i in range(12)}
    with ServiceThread(fast_settings(config_path, shard_routes=CAPACITY)) as svc:
        registry = svc.federation.registry
        for path, body in stable.items():
            svc.run(svc.federation.add_route(path, dict(body)))
        done = threading.Event()

        def storm() -> None:
            try:
                with httpx.Client(base_url=svc.url, headers=HEADERS, timeout=30) as client:
                    for i in range(60):
                        assert client.post(f"/api/routes/user/n{i}", json=body_for(i)).status_code == 201
            finally:
                done.set()

        writer = threading.Thread(target=storm)
        writer.start()
        snapshots = 0
        while not done.is_set():
            stable_paths_route(clusters, registry, stable, rng)
            snapshots += 1
        writer.join()
        stable_paths_route(clusters, registry, stable, rng)
        assert snapshots >= 3
        svc.run(svc.federation.reconcile(grace=0))
        assert_bounded(clusters, CAPACITY)


# -- upgrade from the first release's layout (64 hashed buckets per depth) ------------------


def legacy_objects(registry: Registry, table: dict[str, dict[str, Any]]) -> dict[str, list[Any]]:
    """The objects the first release wrote for this table."""
    per_cluster: dict[str, dict[ShardKey, dict[str, Entry]]] = {n: {} for n in registry.clusters}
    for path, body in table.items():
        for cluster, entry in plan_route(registry, path, body, "2026-01-01T00:00:00.000Z").writes:
            key = RouteKey.parse(path)
            shard = ShardKey(key.host or "", key.depth, 0, path_hash(path) % 64, legacy=True)
            per_cluster[cluster].setdefault(shard, {})[path] = entry
    out: dict[str, list[Any]] = {}
    for name, shards in per_cluster.items():
        cluster = registry.clusters[name]
        objs = [build_shard(registry, cluster, k, v) for k, v in shards.items()]
        roots: dict[str, list[str]] = {}
        for k in shards:
            for host_key in roots_for_shard(cluster, k.host, k.depth, set()):
                roots.setdefault(host_key, []).append(k.name(registry.instance))
        objs += [build_root(registry, cluster, h, names) for h, names in roots.items()]
        support = {}
        for entries in shards.values():
            for e in entries.values():
                for o in support_objects(registry, cluster, entry_destination(registry, cluster, e)):
                    support[o["metadata"]["name"]] = o
        out[name] = objs + list(support.values())
    return out


def preload(clusters: Any, objects: dict[str, list[Any]]) -> None:
    from kubernetes import config as k8s_config
    from kubernetes.client import CustomObjectsApi

    for name, objs in objects.items():
        api_client = k8s_config.new_client_from_config(str(clusters.kubeconfig), CONTEXTS[name])
        api = CustomObjectsApi(api_client)
        for obj in objs:
            api.create_namespaced_custom_object("networking.istio.io", "v1", "jupyterhub",
                                                plural_of(obj), obj)
        api_client.close()


@pytest.fixture
def legacy_table() -> dict[str, dict[str, Any]]:
    table = {"/": {"target": "http://hub:8081", "hub": True}}
    table.update({f"/user/u{i}": body_for(i) for i in range(80)})
    table["/user/u1/gpu"] = {"target": "http://10.0.0.8:8888", "user": "u1", "server_name": "gpu"}
    return table


@pytest.mark.slow
def test_a_legacy_table_is_served_then_moved_with_no_gap(config_path: Path, clusters,
                                                          legacy_table) -> None:
    from federation.config import load_registry

    registry = load_registry(config_path)
    preload(clusters, legacy_objects(registry, legacy_table))
    rng = random.Random(3)
    with ServiceThread(fast_settings(config_path, shard_routes=16)) as svc:
        table = httpx.get(svc.url + "/api/routes", headers=HEADERS).json()
        assert {p: r["target"] for p, r in table.items()} == \
            {p: b["target"] for p, b in legacy_table.items()}
        home_table = {p: b for p, b in legacy_table.items() if p != "/"}
        moving = threading.Thread(target=lambda: svc.run(svc.federation.reconcile(grace=0), 120))
        moving.start()
        while moving.is_alive():
            stable_paths_route(clusters, registry, home_table, rng)
        moving.join()
        svc.run(svc.federation.reconcile(grace=0))
        for name in CONTEXTS:
            names = [o["metadata"]["name"] for o in shards_of(clusters, name)]
            assert not [n for n in names if "-r" in n.rsplit("-", 2)[-2]], names
        assert_bounded(clusters, 16)
        table = httpx.get(svc.url + "/api/routes", headers=HEADERS).json()
        assert {p: r["target"] for p, r in table.items()} == \
            {p: b["target"] for p, b in legacy_table.items()}
        check_objects(clusters, registry, legacy_table, rng)
        stored = stored_routes(clusters)
        assert json.dumps(stored["hub"]["/"]) and "/user/u1/gpu" in stored["hub"]


def test_big_route_data_splits_shards_instead_of_failing(service, clusters) -> None:
    """Routes carry up to 16 KiB of data; 20 of them at once would pass Kubernetes' 256 KiB
    annotation limit on one shard, so the shard splits first and every POST is stored."""
    blob = "x" * 15_000
    bodies = {f"/user/big{i}": {"target": f"http://10.0.1.{i}:8888", "note": blob}
              for i in range(20)}

    def post(path: str) -> int:
        return httpx.post(service.url + "/api/routes" + path, headers=HEADERS,
                          json=bodies[path], timeout=30).status_code

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        assert set(pool.map(post, bodies)) == {201}
    table = httpx.get(service.url + "/api/routes", headers=HEADERS).json()
    assert all(table[p]["note"] == blob for p in bodies)
    for obj in shards_of(clusters, "hub"):
        size = len(json.dumps(obj["metadata"]["annotations"]).encode())
        assert size < 256 * 1024, obj["metadata"]["name"]
    assert len([o for o in shards_of(clusters, "hub") if decode_entries(o)]) >= 2


@pytest.mark.slow
def test_a_lagging_replica_deletes_routes_that_moved_into_new_shards(config_path: Path,
                                                                      clusters) -> None:
    """Replica b stops hearing from the clusters while a's writes split shards: b's DELETEs
    follow the markers into children b has never seen, and really remove the routes."""
    with running_replicas(config_path, 2, shard_routes=CAPACITY) as (a, b):
        first = {f"/user/f{i}": body_for(i) for i in range(6)}
        for path, body in first.items():
            assert httpx.post(a.url + "/api/routes" + path, headers=HEADERS, json=body).status_code == 201
        wait_for(lambda: len(httpx.get(b.url + "/api/routes", headers=HEADERS).json()) == 6, 5.0)
        for store in b.federation.stores.values():
            b.run(store.stop_watching())
        for i in range(40):  # splits b does not hear of
            assert httpx.post(a.url + f"/api/routes/user/g{i}", headers=HEADERS,
                              json=body_for(i)).status_code == 201
        for path in first:
            assert httpx.delete(b.url + "/api/routes" + path, headers=HEADERS).status_code == 204
        a.run(a.federation.reconcile(grace=0))
        stored = stored_routes(clusters)
        left = [p for routes in stored.values() for p in routes if p in first]
        assert left == [], left
