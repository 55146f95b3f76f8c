"""``federation demo --hub``: the demo with a real JupyterHub spawning through
MultiClusterKubeSpawner into three emulated clusters, this service as its proxy, a few users
spawned across the clusters, and a printout of where each route went and why.

jupyterhub and jupyterhub-multicluster-kubespawner are not dependencies of the service: without
them (or without kubectl, which the spawner runs) it says what to install. The temporary folder
(kubeconfigs with tokens, the hub's database) is removed on every exit.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from .config import Registry, load_registry
from .demo import install_gateways, until_interrupted
from .demo import workdir as demo_workdir
from .placement import destination_in, place
from .settings import Settings
from .testing.harness import ServiceThread
from .testing.mcks import USER_NAMESPACE, ClusterSpec, Stack, find_kubectl, running_stack

TOKEN = "demo-token"
HUB_HOST = "hub.demo.example.org"
SPECS = [
    ClusterSpec("hub", "hub", "http://hub-ingress.demo.example.org", "Home cluster"),
    ClusterSpec("east", "east", "http://east.demo.example.org", "East"),
    ClusterSpec("west", "west", "http://west.demo.example.org:8080", "West"),
]
# (user, server name, profile): a default server per cluster and a named one
USERS = [("alice", "", "east"), ("bob", "gpu", "west"), ("carol", "", "hub")]
INSTALL_HINT = (
    "federation demo --hub runs a real JupyterHub with MultiClusterKubeSpawner: install them with "
    "pip install 'jupyterhub-federation-proxy[hub]' (from a clone: pip install -e '.[hub]')"
)


def missing_requirements() -> list[str]:
    """What the hub demo needs and does not find, as lines to print (empty: all there)."""
    problems = []
    for module in ("jupyterhub", "multicluster_kubespawner"):
        if importlib.util.find_spec(module) is None:
            problems.append(f"python package {module!r} is not installed. {INSTALL_HINT}")
    if find_kubectl() is None:
        problems.append("kubectl is not on PATH: MultiClusterKubeSpawner runs it "
                        "(e.g. apt-get install kubectl, or https://kubernetes.io/docs/tasks/tools/)")
    return problems


def _install_gateways(stack: Stack) -> None:
    """The plain demo's Gateways, so `federation check` passes."""
    install_gateways(stack.clusters, load_registry(stack.config_path))


def _reason(registry: Registry, path: str, target: str, data: dict[str, Any]) -> str:
    """Why the route is where it is: the target is a profile's ingress_public_url."""
    placement = place(registry, target, data)
    cluster = placement.cluster
    dest = destination_in(cluster, target, data, registry.instance)
    line = (f"{path}: target {target} is {cluster.name}'s ingressPublicUrl -> "
            f"route in {cluster.name} to the Service {dest.host}:{dest.port}")
    if cluster.name != registry.home:
        line += f"; the home cluster forwards {path} from {HUB_HOST} to it (edge)"
    return line


def _route_line(stack: Stack, user: str, server: str, profile: str) -> str:
    path = f"/user/{user}" + (f"/{server}" if server else "")
    cluster = stack.cluster(profile)
    key = f"jupyter-{user}" + (f"--{server}" if server else "")
    pods = [p for p in cluster.objects("", "v1", "pods", USER_NAMESPACE)
            if p["metadata"]["name"] == key]
    pod_ip = pods[0]["status"].get("podIP", "?") if pods else "(no pod)"
    spec = next(s for s in stack.specs if s.name == profile)
    reason = _reason(load_registry(stack.config_path), path, spec.ingress_public_url,
                     {"user": user, "server_name": server})
    return (f"  {user:<6} profile {profile:<5} MCKS created Pod+Service {key} in {profile} "
            f"(pod IP {pod_ip})\n      {reason}")


def _print_summary(stack: Stack) -> None:
    headers = {"Authorization": f"token {TOKEN}"}
    with httpx.Client(base_url=stack.service.url, headers=headers, timeout=10) as http:
        table = http.get("/api/routes").json()
        health = http.get("/clusters", params={"format": "text"}).text
    print(f"JupyterHub {stack.hub.url}/hub/ spawning with MultiClusterKubeSpawner; "
          f"federation proxy API on {stack.service.url} (token {TOKEN})\n")
    print("each user's server, the cluster MCKS used, and where the route went:")
    for user, server, profile in USERS:
        print(_route_line(stack, user, server, profile))
    print("\nroute table (GET /api/routes):")
    for path, route in table.items():
        print(f"  {path:<20} -> {route['target']}")
    print("\nclusters (GET /clusters?format=text):")
    print(health)


def _print_try_lines(stack: Stack) -> None:
    print(f"log in: {stack.hub.url}/hub/login (any name, any password). The spawn page offers "
          "one profile per cluster; the server's route then shows in the route table "
          f"(curl -H 'Authorization: token {TOKEN}' {stack.service.url}/api/routes). The servers "
          "themselves are stand-ins inside the emulated clusters, which no browser reaches: "
          "opening one ends at the hub's 'Redirect loop detected' page (behind a real gateway "
          "the route leads to it); /hub/home lists them.")
    print("look around (contexts: hub, east, west):")
    print(f"  the spawner's objects: kubectl --kubeconfig {stack.hub_kubeconfig} --context east "
          "get pods,services,ingresses -o wide")
    print(f"  the routes:            kubectl --kubeconfig {stack.clusters.kubeconfig} "
          "--context east get vs -n jupyterhub")
    print(f"  the hub's REST API:    curl -H 'Authorization: token {stack.hub.token}' "
          f"{stack.hub.url}/hub/api/users")
    print(f"  the hub's log:         {stack.hub.log_path}")
    print("press Ctrl-C to stop (the demo's temporary folder is removed)")


def run_hub_demo(port: int = 8001, host: str = "127.0.0.1", once: bool = False) -> int:
    problems = missing_requirements()
    if problems:
        for line in problems:
            print(f"error: {line}")
        return 2
    kubectl = find_kubectl()
    assert kubectl is not None

    def service(config: Path) -> Any:
        settings = Settings(config=config, auth_token=SecretStr(TOKEN), reconcile_interval=5,
                            gc_grace=10)
        return ServiceThread(settings, host=host, port=port)

    with demo_workdir("federation-demo-hub-") as workdir, running_stack(
            workdir, SPECS, "hub", kubectl=kubectl, service=service, hosts=[HUB_HOST]) as stack:
        _install_gateways(stack)
        print("starting JupyterHub and spawning servers (a few seconds)...", flush=True)
        stack.hub.start()
        for user, server, profile in USERS:
            stack.hub.create_user(user)
            stack.hub.spawn(user, server, profile)
        _print_summary(stack)
        if once:
            return 0
        _print_try_lines(stack)
        until_interrupted()
    return 0
