"""Fault injection against the emulated clusters. Every storm ends by comparing the objects in
every cluster with the expected table: nothing lost, nothing duplicated, nothing left behind.

Storms are 1,000 operations; FEDERATION_STORM_OPS sets another size."""

from __future__ import annotations

import concurrent.futures
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from federation.testing.harness import ServiceThread, wait_for

from .conftest import CONTEXTS, TOKEN, base_config, running_replicas, stored_routes

HEADERS = {"Authorization": f"token {TOKEN}"}
STORM_OPS = int(os.environ.get("FEDERATION_STORM_OPS", "1000"))
TARGETS = {
    "east": "https://east.hub.example.org",
    "west": "http://west.hub.example.org:8080",
    "hub": "http://10.0.{i}.{j}:8888",
}


class Hub:
    """Calls the proxy API the way JupyterHub does: 5xx and connection errors are retried with
    backoff for about 30 s, anything below 500 is final; the call may go to any replica."""

    def __init__(self, replicas: list[ServiceThread]) -> None:
        self.replicas = replicas
        self.client = httpx.Client(headers=HEADERS, timeout=15)
        self.retries = 0
        self.lock = threading.Lock()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> int:
        deadline = time.monotonic() + 30
        delay = 0.05
        attempt = 0
        while True:
            live = [r for r in self.replicas if r.thread.is_alive()]
            replica = live[attempt % len(live)]
            attempt += 1
            try:
                resp = self.client.request(method, replica.url + "/api/routes" + path, json=body)
                if resp.status_code < 500:
                    return resp.status_code
                assert resp.json().get("error"), resp.text  # a JSON body, not a traceback
            except httpx.TransportError:
                pass
            with self.lock:
                self.retries += 1
            if time.monotonic() > deadline:
                raise AssertionError(f"{method} {path} kept failing")
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def table(self, replica: ServiceThread) -> dict[str, Any]:
        return self.client.get(replica.url + "/api/routes").json()


def storm_ops(rng: random.Random, n: int, users: int = 150) -> list[tuple[str, str, str | None]]:
    ops = []
    for step in range(n):
        user = f"u{rng.randrange(users)}"
        if rng.random() < 0.3:
            ops.append(("DELETE", user, None))
        else:
            cluster = rng.choice(list(TARGETS))
            ops.append(("POST", user, TARGETS[cluster].format(i=step // 250, j=step % 250)))
    return ops


def expected_table(ops: list[tuple[str, str, str | None]]) -> dict[str, str]:
    table: dict[str, str] = {}
    for method, user, target in ops:
        if method == "POST":
            assert target is not None
            table[f"/user/{user}"] = target
        else:
            table.pop(f"/user/{user}", None)
    return table


def run_storm(hub: Hub, ops: list[tuple[str, str, str | None]], workers: int = 16,
              during: Any = None) -> None:
    by_user: dict[str, list[tuple[str, str, str | None]]] = {}
    for op in ops:
        by_user.setdefault(op[1], []).append(op)
    done = [0]

    def run_user(user: str) -> None:
        for method, _, target in by_user[user]:
            body = {"target": target, "user": user, "jupyterhub": True} if target else None
            status = hub.call(method, f"/user/{user}", body)
            assert status in ((201,) if method == "POST" else (204, 404)), (method, user, status)
            done[0] += 1

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(run_user, u) for u in by_user]
        if during is not None:
            while done[0] < len(ops) // 3:
                time.sleep(0.01)
            during()
        for f in futures:
            f.result()


def assert_objects_match(clusters: Any, replicas: list[ServiceThread], expected: dict[str, str]) -> None:
    """Nothing lost, nothing duplicated, nothing left behind; every replica agrees."""
    for svc in replicas:
        if svc.thread.is_alive():
            svc.run(svc.federation.reconcile(grace=0))
    deadline = time.monotonic() + 10
    while True:
        stored = stored_routes(clusters)
        owned: dict[str, str] = {}
        duplicated = []
        for cluster, routes in stored.items():
            for path, entry in routes.items():
                if entry.get("edge"):
                    continue
                if path in owned:
                    duplicated.append(path)
                owned[path] = entry["target"]
                assert entry["owner"] == cluster
        edges = {p: e["owner"] for p, e in stored["hub"].items() if e.get("edge")}
        want_edges = {p: c for p, t in expected.items() for c in ("east", "west") if TARGETS[c] == t}
        if owned == expected and not duplicated and edges == want_edges:
            break
        if time.monotonic() > deadline:
            assert not duplicated
            assert owned == expected
            assert edges == want_edges
        time.sleep(0.2)
        for svc in replicas:
            if svc.thread.is_alive():
                svc.run(svc.federation.reconcile(grace=0))
    for svc in replicas:
        if svc.thread.is_alive():
            assert_table_converges(svc, expected)
    # nothing left behind: support objects only for targets still in use
    hub_se = {o["spec"]["hosts"][0] for o in clusters.servers[CONTEXTS["hub"]].objects(
        "networking.istio.io", "v1", "serviceentries", "jupyterhub")}
    wanted_se = {t.split("//")[1].split(":")[0] for t in expected.values() if "hub.example.org" in t}
    wanted_se |= {"ip-" + t.split("//")[1].split(":")[0].replace(".", "-") + ".jupyterhub.federation.internal"
                  for t in expected.values() if t.startswith("http://10.")}
    assert hub_se == wanted_se


def assert_table_converges(svc: ServiceThread, expected: dict[str, str], timeout: float = 10.0) -> None:
    """The replica serves the expected table once its watches have heard the last writes.

    Its table is fed by its watches, so a write the other replica made a moment ago (the
    reconcile passes above repair stale copies) reaches it a moment later; a table that is still
    wrong after ``timeout`` is a lost update, reported with what differs and the watches' state."""
    deadline = time.monotonic() + timeout
    while True:
        served = {p: r["target"] for p, r in Hub([svc]).table(svc).items()}
        if served == expected:
            return
        if time.monotonic() > deadline:
            wrong = {p: (served.get(p), expected.get(p)) for p in set(served) | set(expected)
                     if served.get(p) != expected.get(p)}
            health = {name: (store.health.state, store.health.last_error)
                      for name, store in svc.federation.stores.items()}
            raise AssertionError(f"replica {svc.url} serves {len(wrong)} routes wrong after "
                                 f"{timeout:.0f}s (served, expected): {sorted(wrong.items())[:10]}; "
                                 f"watches: {health}")
        time.sleep(0.1)


@pytest.fixture
def replicas(config_path: Path):
    with running_replicas(config_path, 2) as services:
        yield services


def server(clusters: Any, name: str) -> Any:
    return clusters.servers[CONTEXTS[name]]


@pytest.mark.slow
def test_outage_of_one_cluster_during_a_storm(replicas, clusters) -> None:
    hub = Hub(replicas)
    rng = random.Random(1)
    ops = storm_ops(rng, STORM_OPS)
    east = server(clusters, "east")

    def outage() -> None:
        east.set_down(True)
        # While east is down: its routes stay listed, others still change, its own fail fast.
        table = hub.table(replicas[0])
        assert any(r["target"] == TARGETS["east"] for r in table.values())
        start = time.monotonic()
        resp = hub.client.post(replicas[0].url + "/api/routes/user/probe-east",
                               json={"target": TARGETS["east"], "user": "probe-east"})
        assert resp.status_code == 503 and time.monotonic() - start < 10
        assert "east" in resp.json()["error"]
        assert hub.call("POST", "/user/probe-hub", {"target": "http://10.9.9.9:80"}) == 201
        assert hub.call("DELETE", "/user/probe-hub") == 204
        threading.Timer(1.5, east.set_down, args=(False,)).start()

    run_storm(hub, ops, during=outage)
    assert hub.retries > 0
    assert_objects_match(clusters, replicas, expected_table(ops))


def test_down_cluster_shows_in_clusters_within_one_probe_interval(service, clusters) -> None:
    server(clusters, "west").set_down(True)
    settings = service.settings
    with httpx.Client(headers=HEADERS) as client:
        def rows_once_west_is_down() -> dict[str, Any] | None:
            rows = {r["name"]: r for r in client.get(service.url + "/clusters").json()["clusters"]}
            return rows if rows["west"]["reachable"] is False else None

        rows = wait_for(rows_once_west_is_down, "west shown unreachable",
                        settings.probe_interval * 2 + 1)
        assert rows["hub"]["reachable"] is True and rows["east"]["reachable"] is True
        assert rows["west"]["last_error"]
        text = client.get(service.url + "/clusters?format=text").text
        assert "west" in text and "False" in text
        one = client.get(service.url + "/clusters/west").json()
        assert one["reachable"] is False and one["context"] == CONTEXTS["west"]
        assert client.get(service.url + "/clusters/mars").status_code == 404
        # a down cluster does not take the replica out of service
        assert client.get(service.url + "/readyz").status_code == 200
        assert client.post(service.url + "/api/routes/user/a", json={"target": "http://10.0.0.1:80"}
                           ).status_code == 201
    server(clusters, "west").set_down(False)


@pytest.mark.slow
def test_latency_spike_in_one_cluster_does_not_slow_others(replicas, clusters) -> None:
    hub = Hub(replicas)
    server(clusters, "west").latency = 0.5
    start = time.monotonic()
    slow = threading.Thread(target=lambda: [hub.call("POST", f"/user/w{i}", {
        "target": TARGETS["west"], "user": f"w{i}"}) for i in range(3)])
    slow.start()
    fast_times = []
    for i in range(10):
        t0 = time.monotonic()
        assert hub.call("POST", f"/user/h{i}", {"target": f"http://10.1.0.{i}:80"}) == 201
        fast_times.append(time.monotonic() - t0)
    slow.join()
    server(clusters, "west").latency = 0
    assert max(fast_times) < 0.5, fast_times
    assert time.monotonic() - start >= 0.5
    expected = {f"/user/w{i}": TARGETS["west"] for i in range(3)}
    expected |= {f"/user/h{i}": f"http://10.1.0.{i}:80" for i in range(10)}
    assert_objects_match(clusters, replicas, expected)


@pytest.mark.slow
def test_429_and_500_bursts_are_retried(replicas, clusters) -> None:
    hub = Hub(replicas)
    server(clusters, "hub").inject_errors(3, 429, retry_after=0.1)
    server(clusters, "east").inject_errors(4, 500)
    ops = storm_ops(random.Random(3), 200)
    run_storm(hub, ops)
    assert_objects_match(clusters, replicas, expected_table(ops))


@pytest.mark.slow
def test_broken_watches_and_410_relist(replicas, clusters) -> None:
    hub = Hub(replicas)
    ops = storm_ops(random.Random(4), 300)

    def break_everything() -> None:
        for s in clusters.servers.values():
            s.compact()
            s.break_watches()

    run_storm(hub, ops, during=break_everything)
    assert_objects_match(clusters, replicas, expected_table(ops))
    restarts = sum(s.health.watch_restarts for s in replicas[1].federation.stores.values())
    assert restarts > 0


@pytest.mark.slow
def test_replica_crash_mid_storm(replicas, clusters) -> None:
    hub = Hub(replicas)
    ops = storm_ops(random.Random(5), STORM_OPS // 2)
    run_storm(hub, ops, during=replicas[0].stop)
    assert not replicas[0].thread.is_alive()
    assert_objects_match(clusters, replicas, expected_table(ops))


@pytest.mark.slow
def test_config_reload_mid_storm(replicas, clusters, config_path: Path) -> None:
    hub = Hub(replicas)
    ops = storm_ops(random.Random(6), 400)

    def reload() -> None:
        doc = base_config(str(clusters.kubeconfig))
        doc["defaults"]["hosts"] = ["hub.example.org", "www.hub.example.org"]
        config_path.write_text(yaml.safe_dump(doc))
        for svc in replicas:
            svc.app.state.reload_trigger.set()

    run_storm(hub, ops, during=reload)
    assert_objects_match(clusters, replicas, expected_table(ops))


def test_broken_config_reload_keeps_the_old_config(service, clusters, config_path: Path) -> None:
    with httpx.Client(headers=HEADERS) as client:
        client.post(service.url + "/api/routes/user/a", json={"target": TARGETS["east"], "user": "a"})
        config_path.write_text("home: [broken\n")
        service.app.state.reload_trigger.set()
        wait_for(lambda: service.federation.last_reload_error, "the reload refused", timeout=5)
        assert "not valid YAML" in service.federation.last_reload_error
        assert set(client.get(service.url + "/api/routes").json()) == {"/user/a"}
        assert client.post(service.url + "/api/routes/user/b", json={
            "target": TARGETS["west"], "user": "b"}).status_code == 201
        # a good file that drops a cluster removes it and leaves the others' routes alone
        doc = base_config(str(clusters.kubeconfig))
        doc["clusters"] = [c for c in doc["clusters"] if c["name"] != "west"]
        config_path.write_text(yaml.safe_dump(doc))
        service.app.state.reload_trigger.set()
        wait_for(lambda: "west" not in service.federation.stores, "west's store gone", timeout=5)
        assert set(client.get(service.url + "/api/routes").json()) == {"/user/a"}
        names = [r["name"] for r in client.get(service.url + "/clusters").json()["clusters"]]
        assert names == ["hub", "east"]


def test_secrets_never_appear(service, clusters, caplog) -> None:
    server(clusters, "east").set_down(True)
    with httpx.Client(headers=HEADERS) as client:
        client.post(service.url + "/api/routes/user/a", json={"target": TARGETS["east"], "user": "a"})
        time.sleep(service.settings.probe_interval + 0.3)
        body = client.get(service.url + "/clusters").text
        body += client.get(service.url + "/metrics").text
    server(clusters, "east").set_down(False)
    kube_tokens = [s.token for s in clusters.servers.values()]
    for secret in [TOKEN, *kube_tokens]:
        assert secret not in body
        assert secret not in caplog.text


def test_delete_unseen_route_with_a_cluster_down_is_503_not_404(service, clusters) -> None:
    """A DELETE for a route this replica has not seen reads the shards it would be in; when a
    cluster cannot be read, the route may be there, so the hub is told to ask again (503)
    rather than told it is gone (404)."""
    east = clusters.servers[CONTEXTS["east"]]
    east.set_down(True)
    try:
        resp = httpx.delete(service.url + "/api/routes/user/unseen", headers=HEADERS, timeout=30)
        assert resp.status_code == 503, resp.text
        assert resp.json()["cluster"] == "east"
    finally:
        east.set_down(False)
    deadline = time.monotonic() + 15
    while True:
        resp = httpx.delete(service.url + "/api/routes/user/unseen", headers=HEADERS, timeout=30)
        if resp.status_code == 404 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert resp.status_code == 404
