"""``federation demo``: three emulated clusters, the service on :8001, sample routes, and a
printout of which cluster holds which object and why. Nothing to install, nothing to configure.

The emulated API servers speak HTTPS with a CA made for this run (in the demo's kubeconfig), so
``kubectl`` can read them; each holds the Gateway the routes bind (Istio's, or with
``--backend gateway-api`` a Gateway API Gateway carrying the status its controller would give it),
so ``federation check`` passes on them. The temporary folder (kubeconfig with tokens, clusters.yaml) is removed on every
exit: normal, Ctrl-C, SIGTERM or error.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import signal
import sys
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
USER_NAMESPACE = "jupyter-users"  # the remote clusters' user Services (MultiClusterKubeSpawner 0.2)
GATEWAY = ("istio-system", "jupyterhub-gateway")
GATEWAY_API = "gateway.networking.k8s.io/v1"
HUB_HOST = "hub.demo.example.org"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

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
    "istio": {
        "root": "binds the Gateway for the hub's host, delegates to the shards deepest first",
        "shard": "the rules of routes of one path depth (d<depth>s<level>-<bucket>: split in two as they grow)",
        "support": "lets the gateway reach a target outside the mesh (a pod IP, a remote ingress)",
    },
    "gateway-api": {
        "route": "one HTTPRoute per route, attached to the Gateway (the longest path prefix wins)",
        "support": "a Service the route's backendRef names: a pod IP's (with its EndpointSlice), "
                   "or an ExternalName for a remote ingress",
    },
}


def demo_config(kubeconfig: Path, backend: str = "istio") -> dict[str, object]:
    defaults: dict[str, object] = {
        "namespace": NAMESPACE,
        "gateway": "/".join(GATEWAY),
        "hosts": [HUB_HOST],
        "clusterDomain": "cluster.local",
    }
    if backend != "istio":
        defaults["backend"] = backend
    return {
        "kubeconfig": str(kubeconfig),
        "home": "hub",
        "defaults": defaults,
        "clusters": [
            {"name": "hub", "context": "hub"},
            # userService: where MultiClusterKubeSpawner 0.2 puts users' Services (the
            # namespace of the hub's context for the cluster).
            {"name": "east", "context": "east", "ingressPublicUrl": "https://east.demo.example.org",
             "userService": {"namespace": USER_NAMESPACE}},
            {"name": "west", "context": "west", "ingressPublicUrl": "http://west.demo.example.org:8080",
             "userService": {"namespace": USER_NAMESPACE}},
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


def gateway_api_gateway(hosts: list[str]) -> dict[str, Any]:
    """A Gateway API Gateway as docs/examples/gateway-api-gateway.yaml shows it (plain HTTP
    here): one listener per host, each admitting HTTPRoutes from the service's namespace."""
    admit = {"namespaces": {"from": "Selector", "selector": {
        "matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}}}}
    return {
        "apiVersion": GATEWAY_API, "kind": "Gateway",
        "metadata": {"name": GATEWAY[1], "namespace": GATEWAY[0]},
        "spec": {"gatewayClassName": "istio", "listeners": [
            {"name": f"http-{i}", "protocol": "HTTP", "port": 80, "hostname": host,
             "allowedRoutes": admit} for i, host in enumerate(hosts)]},
    }


def gateway_api_status(gateway: dict[str, Any]) -> dict[str, Any]:
    """The status a controller writes on a Gateway it has accepted and programmed."""
    generation = gateway["metadata"].get("generation", 1)

    def condition(kind: str) -> dict[str, Any]:
        return {"type": kind, "status": "True", "reason": kind, "message": "demo: as a controller "
                "would report it", "observedGeneration": generation,
                "lastTransitionTime": "2024-01-01T00:00:00Z"}

    listeners = [{"name": lst["name"], "attachedRoutes": 0,
                  "supportedKinds": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}],
                  "conditions": [condition(k) for k in ("Accepted", "Programmed", "ResolvedRefs")]}
                 for lst in gateway["spec"]["listeners"]]
    return {**gateway, "status": {"conditions": [condition("Accepted"), condition("Programmed")],
                                  "listeners": listeners}}


def target_namespaces(registry: Registry) -> dict[str, set[str]]:
    """Per cluster, the namespaces of the sample routes' Services other than the service's own
    (the spawner and the operator make them; the gateway-api backend grants its routes access
    there with a ReferenceGrant)."""
    out: dict[str, set[str]] = {name: set() for name in registry.clusters}
    for _, data in SAMPLE_ROUTES:
        target = str(data["target"])
        cluster = place(registry, target, data).cluster
        dest = destination_in(cluster, target, data, registry.instance)
        if dest.kind == "service":
            namespace = dest.host.split(".")[1]
            if namespace != cluster.namespace:
                out[cluster.name].add(namespace)
    return out


def install_gateways(clusters: EmulatedClusters, registry: Registry) -> None:
    """Each cluster's Gateway accepts the hub's host and, in a remote one, its own ingress host
    (edge traffic arrives addressed to it), as a real install needs; created through each
    cluster's API, as an operator (and, for its status, a controller) would."""
    namespaces = target_namespaces(registry)
    for name, cluster in registry.clusters.items():
        server = clusters[cluster.context or name]
        hosts = list(cluster.hosts) + ([cluster.ingress_origin[1]] if cluster.ingress_origin else [])
        verify = clusters.tls.client_context() if clusters.tls else True
        with httpx.Client(base_url=server.url, verify=verify, timeout=10,
                          headers={"Authorization": f"Bearer {server.token}"}) as http:
            if cluster.backend == "istio":
                http.post(f"/apis/{GROUP}/{VERSION}/namespaces/{GATEWAY[0]}/gateways",
                          json=gateway_object(hosts)).raise_for_status()
            else:
                _install_gateway_api(http, hosts, namespaces[name])


def sample_services(registry: Registry) -> dict[str, list[dict[str, Any]]]:
    """Per cluster, the Services the sample routes go to (the spawner makes the users', the
    operator the hub's and its services'): so the demo's destination checks find them."""
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in registry.clusters}
    for _, data in SAMPLE_ROUTES:
        target = str(data["target"])
        cluster = place(registry, target, data).cluster
        dest = destination_in(cluster, target, data, registry.instance)
        if dest.kind == "service":
            name, namespace = dest.host.split(".")[:2]
            out[cluster.name].append({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"ports": [{"port": dest.port, "targetPort": dest.port}]},
            })
    return out


def install_sample_services(clusters: EmulatedClusters, registry: Registry) -> None:
    """Create the sample routes' Services (and their namespaces) in their clusters."""
    for name, services in sample_services(registry).items():
        cluster = registry.clusters[name]
        server = clusters[cluster.context or name]
        verify = clusters.tls.client_context() if clusters.tls else True
        with httpx.Client(base_url=server.url, verify=verify, timeout=10,
                          headers={"Authorization": f"Bearer {server.token}"}) as http:
            for svc in services:
                namespace = svc["metadata"]["namespace"]
                made = http.post("/api/v1/namespaces", json={
                    "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
                if made.status_code != 409:  # already there (the gateway-api set-up)
                    made.raise_for_status()
                http.post(f"/api/v1/namespaces/{namespace}/services",
                          json=svc).raise_for_status()


def _install_gateway_api(http: httpx.Client, hosts: list[str], namespaces: set[str]) -> None:
    for namespace in sorted(namespaces):
        http.post("/api/v1/namespaces", json={
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace},
        }).raise_for_status()
    base = f"/apis/{GATEWAY_API}/namespaces/{GATEWAY[0]}/gateways"
    created = http.post(base, json=gateway_api_gateway(hosts))
    created.raise_for_status()
    # Status is a subresource: written apart, as the Gateway's controller would.
    http.put(f"{base}/{GATEWAY[1]}/status",
             json=gateway_api_status(created.json())).raise_for_status()


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
    if obj["kind"] == "HTTPRoute":
        return _http_route_rules(obj)
    if obj["kind"] in ("Service", "EndpointSlice", "BackendTLSPolicy"):
        return _support_summary(obj)
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


def _http_route_rules(obj: dict[str, Any]) -> str:
    rules = []
    for rule in obj["spec"].get("rules") or []:
        paths = [m["path"]["value"] for m in rule.get("matches") or [] if "path" in m]
        refs = [f"{r.get('kind', 'Service')} {r.get('namespace', obj['metadata']['namespace'])}/"
                f"{r['name']}:{r.get('port')}" for r in rule.get("backendRefs") or []]
        rules.append(f"{','.join(paths) or '/'} -> {', '.join(refs)}")
    return f"hosts={obj['spec'].get('hostnames')} " + "; ".join(rules)


def _support_summary(obj: dict[str, Any]) -> str:
    spec = obj.get("spec") or {}
    if obj["kind"] == "EndpointSlice":
        return "addresses=" + ",".join(a for e in obj.get("endpoints") or [] for a in e["addresses"])
    if obj["kind"] == "BackendTLSPolicy":
        return f"TLS to {(spec.get('validation') or {}).get('hostname')}"
    if spec.get("type") == "ExternalName":
        return f"ExternalName {spec.get('externalName')}"
    return "selector-less, ports=" + ",".join(str(p.get("port")) for p in spec.get("ports") or [])


# What the printout lists per backend: (group, version, plural).
LISTED = {
    "istio": [(GROUP, VERSION, "virtualservices"), (GROUP, VERSION, "serviceentries"),
              (GROUP, VERSION, "destinationrules")],
    "gateway-api": [("gateway.networking.k8s.io", "v1", "httproutes"), ("", "v1", "services"),
                    ("discovery.k8s.io", "v1", "endpointslices"),
                    ("gateway.networking.k8s.io", "v1", "backendtlspolicies")],
}


def describe_objects(clusters: EmulatedClusters, backend: str = "istio") -> str:
    lines = []
    for name, server in clusters.servers.items():
        lines.append(f"cluster {name} ({server.url}):")
        for group, version, plural in LISTED[backend]:
            for obj in server.objects(group, version, plural, NAMESPACE):
                meta = obj["metadata"]
                role = (meta.get("labels") or {}).get("federation.jupyter.org/role")
                if role is None:
                    continue  # not written by the service
                lines.append(f"  {obj['kind']:<16} {meta['name']:<30} {role:<8} {_rules(obj)}")
    return "\n".join(lines)


@contextlib.contextmanager
def workdir(prefix: str = "federation-demo-") -> Iterator[Path]:
    """A private temporary folder removed on any exit; SIGINT and SIGTERM end the demo."""
    path = Path(tempfile.mkdtemp(prefix=prefix))

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # SIGINT too, explicitly: a background job of a non-interactive shell inherits it as
    # ignored, and Python then leaves it ignored (kill -INT would do nothing).
    # Signal handlers belong to the main thread; elsewhere (an embedding caller) skip it.
    main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, interrupt) for sig in STOP_SIGNALS} if main else {}
    try:
        yield path
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        shutil.rmtree(path, ignore_errors=True)


def _print_summary(service: ServiceThread, clusters: EmulatedClusters, registry: Registry,
                   config: Path, backend: str) -> None:
    headers = {"Authorization": f"token {TOKEN}"}
    with httpx.Client(base_url=service.url, headers=headers, timeout=10) as http:
        for path, body in SAMPLE_ROUTES:
            http.post("/api/routes" + path, json=body).raise_for_status()
        table = http.get("/api/routes").json()
        health = http.get("/clusters", params={"format": "text"}).text
    print(f"federation proxy API on {service.url} (token: {TOKEN}); config {config}; "
          f"backend: {backend}\n")
    print("route table (GET /api/routes):")
    for path, route in table.items():
        print(f"  {path:<20} -> {route['target']}")
    print("\nwhy each route is where it is:")
    for path, body in SAMPLE_ROUTES:
        print("  " + why(registry, path, body))
    print("\nobjects written, per cluster (roles: " + "; ".join(
        f"{role}: {what}" for role, what in ROLES[backend].items()) + "):")
    print(describe_objects(clusters, backend))
    print("\nclusters (GET /clusters?format=text):")
    print(health)


def federation_command() -> str:
    """How to run ``federation`` as printed, whether or not the venv is on PATH: this
    interpreter by its absolute path (``python -m federation``)."""
    return f"{shlex.quote(sys.executable)} -m federation"


def _print_try_lines(service: ServiceThread, clusters: EmulatedClusters, config: Path,
                     backend: str) -> None:
    kind = "httproutes" if backend == "gateway-api" else "virtualservices"
    print("look at the objects with kubectl (contexts: " + ", ".join(clusters.servers) + "):")
    print(f"  kubectl --kubeconfig {shlex.quote(str(clusters.kubeconfig))} --context east "
          f"get {kind} -n {NAMESPACE}")
    print(f"check every cluster:  {federation_command()} check --config "
          f"{shlex.quote(str(config))}")
    print(f"the route table:      curl -H 'Authorization: token {TOKEN}' {service.url}/api/routes")
    print("press Ctrl-C to stop (the demo's temporary folder is removed)")


def run_demo(port: int = 8001, host: str = "127.0.0.1", once: bool = False,
             backend: str = "istio") -> int:
    with workdir() as folder, EmulatedClusters(["hub", "east", "west"], folder,
                                                 tls=True) as clusters:
        config = write_clusters_yaml(folder / "clusters.yaml",
                                     demo_config(clusters.kubeconfig, backend))
        registry = load_registry(config)
        install_gateways(clusters, registry)
        install_sample_services(clusters, registry)
        settings = Settings(config=config, auth_token=SecretStr(TOKEN), reconcile_interval=5,
                            gc_grace=10)
        with ServiceThread(settings, host=host, port=port) as service:
            _print_summary(service, clusters, registry, config, backend)
            if once:
                return 0
            _print_try_lines(service, clusters, config, backend)
            until_interrupted()
    return 0


def until_interrupted() -> None:
    """Wait for Ctrl-C (or SIGTERM, which :func:`workdir` turns into one)."""
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping")
