"""Benchmark worlds: N emulated Kubernetes API servers, a clusters.yaml spreading routes over
them, the route tables the benchmark POSTs, and direct preloading of stored objects."""

from __future__ import annotations

import gc
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from federation.config import Registry, load_registry
from federation.mesh import GROUP, VERSION
from federation.model import decode_entries
from federation.placement import user_service_names
from federation.plan import render_table
from federation.testing import EmulatedClusters
from federation.testing.harness import write_clusters_yaml

from .watch import BOOKMARK_SECONDS, GATEWAY, RESOURCES, WriteRecorder

HOME = "hub"
NAMESPACE = "jupyterhub"
USER_NAMESPACE = "jhub"  # of Service-name targets: http://jupyter-<user>.jhub:8888
# The kinds that hold routes, one per backend: (group, version, plural).
ROUTE_KINDS = ((GROUP, VERSION, "virtualservices"), (GATEWAY, "v1", "httproutes"))
Route = tuple[str, dict[str, Any]]


def cluster_names(count: int) -> list[str]:
    """The home cluster first, then remote clusters r1, r2, ..."""
    return [HOME] + [f"r{i}" for i in range(1, count)]


def ingress_url(name: str) -> str:
    return f"https://{name}.hub.example.org"


def clusters_document(
    names: list[str], kubeconfig: Path, shards: int | None = None, backend: str = "istio"
) -> dict[str, Any]:
    """clusters.yaml: a plain home cluster and remotes reached through their public ingress."""
    clusters: list[dict[str, Any]] = [{"name": HOME, "context": HOME}]
    # Each user's Service in one namespace, as MultiClusterKubeSpawner 0.2 puts them (the
    # namespace of the hub's context): required with ingressPublicUrl.
    clusters += [
        {"name": n, "context": n, "ingressPublicUrl": ingress_url(n),
         "userService": {"namespace": USER_NAMESPACE}} for n in names[1:]
    ]
    defaults: dict[str, Any] = {
        "namespace": NAMESPACE,
        "gateway": "istio-system/jupyterhub-gateway",
        "hosts": ["hub.example.org"],
    }
    if shards is not None:
        defaults["shards"] = shards
    if backend != "istio":
        defaults["backend"] = backend
    return {"kubeconfig": str(kubeconfig), "home": HOME, "defaults": defaults, "clusters": clusters}


def pod_ip(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def user_route(i: int, names: list[str], kind: str = "spread") -> Route:
    """Route number ``i`` as the hub POSTs it.

    ``spread`` places route i in cluster i mod N: in the home cluster as a kubespawner pod-IP
    target (one ServiceEntry per IP), elsewhere as that cluster's ingress. ``service``, ``ip``
    and ``remote`` pin the kind: a Service-name target in home, a pod IP in home, the first
    remote cluster's ingress.
    """
    user = f"u{i}"
    if kind == "spread":
        owner = names[i % len(names)]
        kind = "ip" if owner == HOME else "remote"
    else:
        owner = names[1] if kind == "remote" and len(names) > 1 else HOME
    if kind == "service":
        target = f"http://jupyter-{user}.{USER_NAMESPACE}:8888"
    elif kind == "ip" or owner == HOME:
        target = f"http://{pod_ip(i)}:8888"
    else:
        target = ingress_url(owner)
    body = {"target": target, "user": user, "server_name": "", "jupyterhub": True}
    return f"/user/{user}", body


def routes(start: int, count: int, names: list[str], kind: str = "spread") -> list[Route]:
    return [user_route(i, names, kind) for i in range(start, start + count)]


def entries_in(obj: dict[str, Any]) -> int:
    """Route entries stored on one shard object."""
    return len(decode_entries(obj))


def settle_harness() -> None:
    """Collect the harness's heap and take what survives out of the cycle collector's walk.

    The emulated API servers and the load generators share this process, and at 50,000 routes
    it holds tens of millions of objects: a full collection took 5-10 s, stopping the emulated
    clusters and the clients timing the service alike (an idle /healthz timed here measured
    the harness's pause, not the service's). Called before a service starts and before an
    idle window; World.close gives the frozen heap back to the collector."""
    gc.collect()
    gc.freeze()


@dataclass
class World:
    """Emulated clusters on loopback plus the clusters.yaml that points at them."""

    names: list[str]
    directory: Path
    emulated: EmulatedClusters = field(init=False)
    config_path: Path = field(init=False)
    registry: Registry = field(init=False)
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    @classmethod
    def create(cls, count: int, shards: int | None = None, backend: str = "istio") -> World:
        tmp = tempfile.TemporaryDirectory(prefix="federation-bench-")
        world = cls(cluster_names(count), Path(tmp.name), tmp)
        # No CRD schemas: the emulator's validation cost is the harness's, not the service's,
        # and both the service and the bare client would pay it alike.
        # USER_NAMESPACE: where Service-name targets live (a Gateway API route to one needs a
        # ReferenceGrant there). istio-system: the gateway's, where each hub claims its hosts.
        world.emulated = EmulatedClusters(world.names, world.directory,
                                          namespaces=(NAMESPACE, USER_NAMESPACE, "istio-system"))
        world.emulated.start()
        world.config_path = write_clusters_yaml(
            world.directory / "clusters.yaml",
            clusters_document(world.names, world.emulated.kubeconfig, shards, backend),
        )
        world.registry = load_registry(world.config_path)
        return world

    def close(self) -> None:
        self.emulated.stop()
        gc.unfreeze()  # the next collection frees the cycles among this world's objects
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> World:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_latency(self, seconds: float) -> None:
        for server in self.emulated.servers.values():
            server.latency = seconds

    @contextmanager
    def recorder(self) -> Iterator[WriteRecorder]:
        """Watches on every cluster, recording what the service stores (see bench.watch).
        Idle watches get a bookmark every BOOKMARK_SECONDS meanwhile, so that a sync knows
        they are caught up."""
        servers = self.emulated.servers.values()
        saved = [server.bookmark_interval for server in servers]
        for server in servers:
            server.bookmark_interval = BOOKMARK_SECONDS
        recorder = WriteRecorder({n: (s.url, s.token) for n, s in self.emulated.servers.items()},
                                 NAMESPACE)
        try:
            yield recorder.start()
        finally:
            recorder.stop()
            for server, interval in zip(servers, saved, strict=True):
                server.bookmark_interval = interval

    def custom_api(self, name: str) -> k8s.CustomObjectsApi:
        """A bare ``kubernetes`` client for one cluster, configured as the service's is."""
        api_client = k8s_config.new_client_from_config(
            config_file=str(self.emulated.kubeconfig), context=name
        )
        api_client.configuration.retries = False
        return k8s.CustomObjectsApi(api_client)

    def route_objects(self, name: str) -> list[dict[str, Any]]:
        """The objects holding routes in one cluster (VirtualServices or HTTPRoutes)."""
        server = self.emulated.servers[name]
        return [obj for kind in ROUTE_KINDS for obj in server.objects(*kind, NAMESPACE)]

    def stored_paths(self) -> dict[str, set[str]]:
        """Route paths stored per cluster, edge entries excluded (they mirror a remote's)."""
        stored: dict[str, set[str]] = {}
        for name in self.names:
            paths: set[str] = set()
            for obj in self.route_objects(name):
                paths.update(p for p, e in decode_entries(obj).items() if not e.edge)
            stored[name] = paths
        return stored

    def stored_routes(self) -> dict[str, int]:
        """Route entries stored per cluster, edge entries excluded."""
        return {name: len(paths) for name, paths in self.stored_paths().items()}

    def median_shard(self, name: str = HOME) -> dict[str, Any]:
        """A shard of median size: what one route write in this cluster typically rewrites."""
        shards = sorted(
            (obj for obj in self.route_objects(name) if entries_in(obj)), key=entries_in
        )
        return shards[len(shards) // 2]

    def object_count(self) -> int:
        return sum(len(self.emulated.servers[n].objects(*kind, NAMESPACE))
                   for n in self.names for kind in RESOURCES)

    def user_services(self, table: list[Route]) -> dict[str, list[dict[str, Any]]]:
        """By cluster, the Services the spawner made for the routes that name one (those to a
        remote cluster's ingress, routed there to the user's Service), as MultiClusterKubeSpawner
        names them: a real hub's routes lead to Services that exist."""
        owners = {ingress_url(name): name for name in self.names[1:]}
        out: dict[str, list[dict[str, Any]]] = {}
        for _, body in table:
            owner = owners.get(body["target"])
            if owner is None:
                continue
            cluster = self.registry.clusters[owner]
            name, namespace = user_service_names(cluster, body["user"], body["server_name"])
            port = cluster.user_service.port
            out.setdefault(owner, []).append({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"ports": [{"port": port, "targetPort": port}]}})
        return out

    def add_user_services(self, table: list[Route], workers: int = 8) -> int:
        """Create the Services of :meth:`user_services` (as the spawner does before the hub
        adds the route); returns how many."""
        return self._create(self.user_services(table), workers)

    def preload(self, table: list[Route], workers: int = 8) -> int:
        """Store the objects of a whole table straight into the clusters, as if POSTed, with the
        users' Services; returns how many routing objects were created. Run with latency 0:
        this is set-up, not measurement."""
        self.add_user_services(table, workers)
        return self._create(render_table(self.registry, dict(table)), workers)

    def _create(self, rendered: dict[str, list[dict[str, Any]]], workers: int) -> int:
        created = 0
        for name, objects in rendered.items():
            server = self.emulated.servers[name]
            with httpx.Client(base_url=server.url, timeout=60,
                              headers={"Authorization": f"Bearer {server.token}"}) as http:

                def create(obj: dict[str, Any], http: httpx.Client = http) -> None:
                    namespace = obj["metadata"].get("namespace") or NAMESPACE
                    http.post(collection_path(obj, namespace), json=obj).raise_for_status()

                with ThreadPoolExecutor(workers) as pool:
                    list(pool.map(create, objects))
            created += len(objects)
        return created


def collection_path(obj: dict[str, Any], namespace: str) -> str:
    """The REST path of the collection an object of any kind is created in."""
    api_version, kind = obj["apiVersion"], obj["kind"]
    plural = kind.lower()[:-1] + "ies" if kind.endswith("y") else kind.lower() + "s"
    prefix = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
    return f"{prefix}/namespaces/{namespace}/{plural}"
