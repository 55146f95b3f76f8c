"""``federation demo``: three emulated clusters, the service on :8001, sample routes, and a
printout of which cluster holds which object and why. Nothing to install, nothing to configure.

The emulated API servers speak HTTPS with a CA made for this run (in the demo's kubeconfig), so
``kubectl`` can read them; each holds the Istio Gateway the routes bind, so ``federation check``
passes on them. The temporary folder (kubeconfig with tokens, clusters.yaml) is removed on every
exit: normal, Ctrl-C, SIGTERM or error.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from .config import Registry, load_registry
from .mesh import GROUP, VERSION
from .model import ANN_ROUTES
from .placement import destination_in, place
from .settings import Settings
from .testing.harness import ServiceThread, write_clusters_yaml
from .testing.kubeapi import EmulatedClusters

TOKEN = "demo-token"
NAMESPACE = "jupyterhub"
GATEWAY = ("istio-system", "jupyterhub-gateway")
HUB_HOST = "hub.demo.example.org"

SAMPLE_ROUTES = [
    ("/", {"target": "http://hub:8081", "hub": True, "jupyterhub": True}),
    ("/user/alice", {"target": "https://east.demo.example.org", "user": "alice",
                     "server_name": "", "jupyterhub": True}),
    ("/user/bob/gpu", {"target": "http://west.demo.example.org:8080", "user": "bob",
                       "server_name": "gpu", "jupyterhub": True}),
    ("/user/carol", {"target": "http://10.12.3.4:8888", "user": "carol", "server_name": "",
                     "jupyterhub": True}),
    ("/services/announce", {"target": "http://announce.jhub:8000", "service": "announce",
                            "jupyterhub": True}),
]

ROLES = {
    "root": "binds the Gateway for the hub's host, delegates to the shards deepest first",
    "shard": "the rules of routes of one path depth (d<depth>s<level>-<bucket>: split in two as they grow)",
    "support": "lets the gateway reach a target outside the mesh (a pod IP, a remote ingress)",
}


def demo_config(kubeconfig: Path) -> dict[str, object]:
    return {
        "kubeconfig": str(kubeconfig),
        "home": "hub",
        "defaults": {
            "namespace": NAMESPACE,
            "gateway": "/".join(GATEWAY),
            "hosts": [HUB_HOST],
            "clusterDomain": "cluster.local",
        },
        "clusters": [
            {"name": "hub", "context": "hub"},
            {"name": "east", "context": "east", "ingressPublicUrl": "https://east.demo.example.org"},
            {"name": "west", "context": "west", "ingressPublicUrl": "http://west.demo.example.org:8080"},
        ],
    }


def gateway_object(hosts: list[str]) -> dict[str, Any]:
    """The Gateway an operator creates next to Istio's ingress gateway (docs/examples/gateway.yaml)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "Gateway",
        "metadata": {"name": GATEWAY[1], "namespace": GATEWAY[0]},
        "spec": {"selector": {"istio": "ingressgateway"}, "servers": [
            {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": hosts}]},
    }


def install_gateways(clusters: EmulatedClusters, registry: Registry) -> None:
    """Each cluster's Gateway accepts the hub's host and, in a remote one, its own ingress host
    (edge traffic arrives addressed to it), as a real install needs."""
    for name, cluster in registry.clusters.items():
        server = clusters[cluster.context or name]
        hosts = list(cluster.hosts) + ([cluster.ingress_origin[1]] if cluster.ingress_origin else [])
        verify = clusters.tls.client_context() if clusters.tls else True
        with httpx.Client(base_url=server.url, verify=verify, timeout=10,
                          headers={"Authorization": f"Bearer {server.token}"}) as http:
            http.post(f"/apis/{GROUP}/{VERSION}/namespaces/{GATEWAY[0]}/gateways",
                      json=gateway_object(hosts)).raise_for_status()


def why(registry: Registry, path: str, data: dict[str, Any]) -> str:
    """One line on why the route is in its cluster and where its traffic goes there."""
    placement = place(registry, data["target"], data)
    cluster = placement.cluster
    dest = destination_in(cluster, data["target"], data, registry.instance)
    where = f"{dest.host}:{dest.port}"
    if placement.rule == "data":
        return f"{path}: the route data names cluster {cluster.name} -> {where}"
    if placement.rule == "ingress":
        return (f"{path}: target is {cluster.name}'s ingressPublicUrl (MultiClusterKubeSpawner) "
                f"-> the user's Service {where} in {cluster.name}; the home cluster forwards "
                f"{path} from {HUB_HOST} to {cluster.ingress_public_url} (edge)")
    reason = {
        "ip": f"a pod IP: a ServiceEntry names it {dest.host}",
        "service": "a Service name, expanded in the home cluster",
        "external": "a host outside the mesh",
    }.get(dest.kind, dest.kind)
    return (f"{path}: target matches no cluster's ingressPublicUrl, so the home cluster "
            f"({cluster.name}) -> {where} ({reason})")


def _rules(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    role = meta["labels"].get("federation.jupyter.org/role")
    if obj["kind"] != "VirtualService":
        return f"hosts={obj['spec'].get('hosts', obj['spec'].get('host'))}"
    if role == "root":
        return f"hosts={obj['spec']['hosts']} delegates=" + ",".join(
            r["delegate"]["name"] for r in obj["spec"]["http"])
    routes = json.loads(meta["annotations"].get(ANN_ROUTES, "{}"))
    return ", ".join(
        f"{p} -> {r['route'][0]['destination']['host']}:"
        f"{r['route'][0]['destination']['port']['number']}"
        + (" (edge: forwarded to that cluster's ingress)" if routes[p].get("edge") else "")
        for p, r in zip(sorted(routes), obj["spec"]["http"], strict=False))


def describe_objects(clusters: EmulatedClusters) -> str:
    lines = []
    for name, server in clusters.servers.items():
        lines.append(f"cluster {name} ({server.url}):")
        for plural in ("virtualservices", "serviceentries", "destinationrules"):
            for obj in server.objects(GROUP, VERSION, plural, NAMESPACE):
                meta = obj["metadata"]
                role = meta["labels"].get("federation.jupyter.org/role")
                lines.append(f"  {obj['kind']:<16} {meta['name']:<28} {role:<8} {_rules(obj)}")
    return "\n".join(lines)


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    """A private temporary folder removed on any exit; SIGTERM ends the demo like Ctrl-C."""
    path = Path(tempfile.mkdtemp(prefix="federation-demo-"))

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Signal handlers belong to the main thread; elsewhere (an embedding caller) skip it.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, interrupt) if main else None
    try:
        yield path
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(path, ignore_errors=True)


def _print_summary(service: ServiceThread, clusters: EmulatedClusters, registry: Registry,
                   config: Path) -> None:
    headers = {"Authorization": f"token {TOKEN}"}
    with httpx.Client(base_url=service.url, headers=headers, timeout=10) as http:
        for path, body in SAMPLE_ROUTES:
            http.post("/api/routes" + path, json=body).raise_for_status()
        table = http.get("/api/routes").json()
        health = http.get("/clusters", params={"format": "text"}).text
    print(f"federation proxy API on {service.url} (token: {TOKEN}); config {config}\n")
    print("route table (GET /api/routes):")
    for path, route in table.items():
        print(f"  {path:<20} -> {route['target']}")
    print("\nwhy each route is where it is:")
    for path, body in SAMPLE_ROUTES:
        print("  " + why(registry, path, body))
    print("\nobjects written, per cluster (roles: " + "; ".join(
        f"{role}: {what}" for role, what in ROLES.items()) + "):")
    print(describe_objects(clusters))
    print("\nclusters (GET /clusters?format=text):")
    print(health)


def _print_try_lines(service: ServiceThread, clusters: EmulatedClusters, config: Path) -> None:
    print("look at the objects with kubectl (contexts: " + ", ".join(clusters.servers) + "):")
    print(f"  kubectl --kubeconfig {clusters.kubeconfig} --context east "
          f"get virtualservices -n {NAMESPACE}")
    print(f"check every cluster:  federation check --config {config}")
    print(f"the route table:      curl -H 'Authorization: token {TOKEN}' {service.url}/api/routes")
    print("press Ctrl-C to stop (the demo's temporary folder is removed)")


def run_demo(port: int = 8001, host: str = "127.0.0.1", once: bool = False) -> int:
    with _workdir() as workdir, EmulatedClusters(["hub", "east", "west"], workdir,
                                                 tls=True) as clusters:
        config = write_clusters_yaml(workdir / "clusters.yaml", demo_config(clusters.kubeconfig))
        registry = load_registry(config)
        install_gateways(clusters, registry)
        settings = Settings(config=config, auth_token=SecretStr(TOKEN), reconcile_interval=5,
                            gc_grace=10)
        with ServiceThread(settings, host=host, port=port) as service:
            _print_summary(service, clusters, registry, config)
            if once:
                return 0
            _print_try_lines(service, clusters, config)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                print("stopping")
    return 0
