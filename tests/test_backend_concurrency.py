"""Both backends (and a mixed set-up) under the same concurrency and faults.

Two replicas take a hub's writes at once, on API servers that answer GETs late (decided before
a concurrent write, delivered after it), deliver watch events late, and fail short bursts of
requests of every verb with 500, 429 and 503. The writes share objects on purpose: routes of one
shard, new host roots and host defaults, the home cluster's edge objects, paths written through
both replicas at once, and DELETEs of paths nobody added (JupyterHub's route check sends those).

What must hold: the hub sees almost no 5xx (the service absorbs short bursts), every
acknowledged write is stored and listed by a fresh replica, and nothing deleted comes back.
The re-read rule after a conflict (federation.mirror.Mirror.reread) is what these interleavings
test hardest: with it reverted to forgetting an object on a GET's 404, this module fails.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from federation.model import decode_entries
from federation.testing import EmulatedClusters
from federation.testing.harness import write_clusters_yaml

from .conftest import CONTEXTS, GATEWAY_CRDS, ISTIO_CRDS, TOKEN, base_config, running_replicas

pytestmark = pytest.mark.slow  # about 15 s per set-up

BACKENDS = {
    "istio": {"hub": "istio", "east": "istio", "west": "istio"},
    "gateway-api": {"hub": "gateway-api", "east": "gateway-api", "west": "gateway-api"},
    "mixed": {"hub": "gateway-api", "east": "istio", "west": "gateway-api"},
}
KINDS = {"istio": ("networking.istio.io", "v1", "virtualservices"),
         "gateway-api": ("gateway.networking.k8s.io", "v1", "httproutes")}
USERS = [f"u{i}" for i in range(24)]
HOSTS = [f"h{i}.example.org" for i in range(4)]
READ_DELAY = 0.25  # a GET's answer waits up to this long after it is decided
WATCH_LAG = 0.4  # every watch event arrives this late


@pytest.fixture
def lagging_clusters(tmp_path: Path) -> Iterator[Any]:
    # The emulator serves both backends' kinds without their CRDs; with ../shared beside the
    # clone it also checks every write against the upstream schemas (the suite passes either way).
    crds = sorted(ISTIO_CRDS.glob("*-crd.yaml")) + sorted(GATEWAY_CRDS.glob("*-crd.yaml"))
    with EmulatedClusters(list(CONTEXTS.values()), tmp_path, crd_files=crds) as emulated:
        for server in emulated.servers.values():
            server.read_delay = READ_DELAY
            server.watch_lag = WATCH_LAG
        yield emulated


def target(rng: random.Random, user: str) -> tuple[str, dict[str, Any]]:
    """A hub's kind of target: a pod IP in the home cluster, or a user's server in a remote
    cluster behind its shared ingress URL (MultiClusterKubeSpawner)."""
    pick = rng.random()
    if pick < 0.4:
        return f"http://10.0.{rng.randrange(4)}.{rng.randrange(1, 9)}:8888", {"user": user}
    ingress = "https://east.hub.example.org" if pick < 0.7 else "http://west.hub.example.org:8080"
    return ingress, {"user": user}


def path_plan(rng: random.Random) -> list[str]:
    """Paths that share objects: every depth, several new hosts, and "/" (host defaults)."""
    paths = ["/"] + [f"/user/{u}" for u in USERS]
    paths += [f"/user/{u}/lab/{n}" for u in USERS[:8] for n in ("a", "b")]
    paths += [f"/{h}/user/{u}" for h in HOSTS for u in USERS[:4]]
    paths += [f"/{h}/services/{s}/x" for h in HOSTS for s in ("dash", "grafana")]
    rng.shuffle(paths)
    return paths


class Hub:
    """A hub's view of the routes: each path's writes in order, retried on 5xx as the hub's
    route check would; what was acknowledged last, and the 5xx seen."""

    def __init__(self, urls: list[str]) -> None:
        self.clients = [httpx.Client(base_url=u, headers={"Authorization": f"token {TOKEN}"},
                                     timeout=30) for u in urls]
        self.expected: dict[str, dict[str, Any] | None] = {}
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def call(self, rng: random.Random, method: str, path: str,
             body: dict[str, Any] | None = None) -> int:
        for _ in range(6):
            client = rng.choice(self.clients)
            response = client.request(method, "/api/routes" + path, json=body)
            if response.status_code < 500:
                return response.status_code
            with self.lock:
                self.errors.append(f"{method} {path}: {response.status_code} {response.text}")
            time.sleep(0.2)
        raise AssertionError(f"{method} {path} kept failing: {self.errors[-1]}")

    def post(self, rng: random.Random, path: str, body: dict[str, Any]) -> None:
        assert self.call(rng, "POST", path, body) == 201
        with self.lock:
            self.expected[path] = body

    def delete(self, rng: random.Random, path: str) -> None:
        status = self.call(rng, "DELETE", path)
        with self.lock:
            had = self.expected.get(path) is not None
            self.expected[path] = None
        # A route the hub was told is stored cannot be missing when it deletes it (404 would
        # leave it stored: the hub reads 404 as "already deleted"). For one already deleted
        # either answer is right: a replica that has not heard of the delete yet says 204.
        assert status in ((204,) if had else (204, 404)), f"DELETE {path}: {status}"

    def close(self) -> None:
        for client in self.clients:
            client.close()


def worker(hub: Hub, paths: list[str], seed: int, ops: int) -> None:
    """One path's writes in sequence; between them, DELETEs of paths nobody added."""
    rng = random.Random(seed)
    for n in range(ops):
        path = rng.choice(paths)
        if rng.random() < 0.25:
            hub.delete(rng, path)
        else:
            target_url, data = target(rng, path.rsplit("/", 1)[-1] or "hub")
            hub.post(rng, path, {"target": target_url, **data, "seq": f"{seed}-{n}"})
        if rng.random() < 0.3:
            hub.delete(rng, f"/user/nobody-{rng.randrange(10_000)}/" + "x/" * rng.randrange(3))


def contested(hub: Hub, path: str, seed: int, rounds: int) -> None:
    """A POST and a DELETE of one path at once, through one replica, then the other: no
    order between them, so only the agreement of every reader is checked for it."""
    rng = random.Random(seed)
    with ThreadPoolExecutor(2) as pair:
        for n in range(rounds):
            same = rng.random()  # equal seeds: both requests go to the same replica first
            body = {"target": "http://10.9.9.9:8888", "seq": f"c{seed}-{n}"}
            both = [pair.submit(hub.call, random.Random(same), "POST", path, body),
                    pair.submit(hub.call, random.Random(same), "DELETE", path)]
            for job in both:
                job.result()


def fresh_hosts(hub: Hub, seed: int, rounds: int) -> None:
    """Routes of a host nobody routed before, at several depths, through one replica at once,
    with DELETEs of its paths nobody added: new shards, a new host root and host default,
    read (a DELETE's look) while they are being created."""
    rng = random.Random(seed)
    with ThreadPoolExecutor(6) as burst:
        for n in range(rounds):
            host = f"n{seed}-{n}.example.org"
            same = rng.random()  # equal seeds: the whole burst goes to one replica
            adds = [f"/{host}/a", f"/{host}/a/b", f"/{host}/a/b/c", f"/{host}/u/x"]
            jobs = [burst.submit(hub.post, random.Random(same), p,
                                 {"target": f"http://10.1.{n}.{i + 1}:8888", "seq": f"{seed}-{n}"})
                    for i, p in enumerate(adds)]
            jobs += [burst.submit(hub.delete, random.Random(same), p)
                     for p in (f"/{host}/a/zz", f"/{host}/q", f"/{host}/a/b/zz")]
            for job in jobs:
                job.result()


def bursts(clusters: Any, stop: threading.Event, seed: int) -> None:
    """Short bursts of 500, 429 and 503 on every verb, somewhere, every few tenths of a second."""
    rng = random.Random(seed)
    servers = list(clusters.servers.values())
    while not stop.wait(rng.uniform(0.2, 0.5)):
        status = rng.choice([500, 503, 429])
        rng.choice(servers).inject_errors(rng.randrange(1, 3), status,
                                          retry_after=0 if status == 429 else None)


def stored(clusters: Any, backends: dict[str, str]) -> dict[str, dict[str, Any]]:
    """path -> the route data stored by its owner (edge rules left out)."""
    out: dict[str, dict[str, Any]] = {}
    for name, context in CONTEXTS.items():
        for obj in clusters.servers[context].objects(*KINDS[backends[name]], "jupyterhub"):
            for path, entry in decode_entries(obj).items():
                if entry.owner == name and not entry.edge:
                    assert path not in out, f"{path} stored by two owners"
                    out[path] = entry.data
    return out


def listed(url: str) -> dict[str, Any]:
    response = httpx.get(url + "/api/routes", headers={"Authorization": f"token {TOKEN}"})
    response.raise_for_status()
    return {p: r for p, r in response.json().items()}


@pytest.mark.parametrize("setup", list(BACKENDS))
def test_two_lagging_replicas_lose_no_acknowledged_write(tmp_path: Path, lagging_clusters: Any,
                                                          setup: str) -> None:
    backends = BACKENDS[setup]
    doc = base_config(str(lagging_clusters.kubeconfig))
    for cluster in doc["clusters"]:
        cluster["backend"] = backends[cluster["name"]]
    config = write_clusters_yaml(tmp_path / "clusters.yaml", doc)
    rng = random.Random(setup)
    paths = path_plan(rng)
    shares = [paths[i::8] for i in range(8)]  # each path written by one worker, in order
    stop = threading.Event()
    with running_replicas(config, 2, kube_retries=4, kube_deadline=10.0, circuit_threshold=50,
                          shard_routes=8) as replicas:
        hub = Hub([r.url for r in replicas])
        noise = threading.Thread(target=bursts, args=(lagging_clusters, stop, 7), daemon=True)
        noise.start()
        try:
            with ThreadPoolExecutor(10) as pool:
                jobs = [pool.submit(worker, hub, share, i, 18) for i, share in enumerate(shares)]
                jobs += [pool.submit(contested, hub, f"/user/shared{i}", 100 + i, 10)
                         for i in range(2)]
                jobs += [pool.submit(fresh_hosts, hub, 200 + i, 4) for i in range(2)]
                for job in jobs:
                    job.result()
        finally:
            stop.set()
            noise.join()
            for server in lagging_clusters.servers.values():
                server.clear_errors()
        total = 8 * 18 + 2 * 2 * 10 + 2 * 4 * 7
        # A writer that gives up on conflicts is a writer looping on a state it cannot see
        # (the re-read rule broken): never. Bursts the retries could not absorb: a few.
        assert not [e for e in hub.errors if "kept conflicting" in e], "\n".join(hub.errors)
        assert len(hub.errors) <= total // 40, "\n".join(hub.errors)
        time.sleep(WATCH_LAG + 0.5)  # every replica has heard every write
        # A move through a replica that had not heard of the route's old copy leaves that
        # copy for housekeeping (the newer write answers meanwhile): one pass, as every
        # replica runs on its interval.
        for replica in replicas:
            replica.run(replica.federation.reconcile())
        time.sleep(WATCH_LAG + 0.5)
        expected = {p: body for p, body in hub.expected.items() if body is not None}
        on_objects = stored(lagging_clusters, backends)
        for path, body in expected.items():
            assert on_objects.get(path, {}).get("seq") == body["seq"], f"{path} lost or stale"
        gone = [p for p, body in hub.expected.items() if body is None and p in on_objects]
        assert not gone, f"deleted routes came back: {gone}"
        views = [listed(r.url) for r in replicas]
        hub.close()
    with running_replicas(config, 1) as (fresh,):
        table = listed(fresh.url)
    for path, body in expected.items():
        assert table[path]["seq"] == body["seq"], path
    assert not [p for p in table if p in hub.expected and hub.expected[p] is None]
    for view in views:  # the replicas that took the writes agree with a fresh one
        assert {p: r.get("seq") for p, r in view.items()} == \
               {p: r.get("seq") for p, r in table.items()}
