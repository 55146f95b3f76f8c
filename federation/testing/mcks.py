"""A JupyterHub with MultiClusterKubeSpawner on emulated clusters, routed by this service: the
stack of ``federation demo --hub`` and of its end-to-end test.

Real: the ``jupyterhub`` process, ``multicluster_kubespawner`` (PyPI 0.2) and the ``kubectl`` it
runs, this service as the hub's proxy. Emulated (loopback): the clusters' API servers (with the
stand-in kubelet) and the users' servers: the hub waits for each server at its cluster's
ingress URL, which a resolver in the hub sends to a small HTTP responder here.

The hub is configured as docs/operations.md tells an operator: one profile per cluster whose
``kubernetes_context`` and ``ingress_public_url`` are the cluster's ``context`` and
``ingressPublicUrl`` in clusters.yaml, ``ConfigurableHTTPProxy`` pointed at this service, and its
own kubeconfig (its own token per cluster, user servers in ``USER_NAMESPACE``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from .harness import free_port, serve_http, wait_for
from .kubeapi import EmulatedClusters, write_kubeconfig
from .kubeapi.rbac import Rule

USER_NAMESPACE = "jupyter-users"  # the hub's contexts' namespace: MCKS 0.2 writes there
SPAWNER_USER = "system:serviceaccount:jupyter-users:jupyterhub-spawner"
SPAWNER_IMAGE = "quay.io/jupyter/base-notebook:2024-12-02"


@dataclass(frozen=True)
class ClusterSpec:
    name: str  # clusters.yaml name and profile slug
    context: str
    ingress_public_url: str
    display_name: str = ""


def profile_list(clusters: Sequence[ClusterSpec], home: str) -> list[dict[str, Any]]:
    """MultiClusterKubeSpawner's profiles: one per cluster, as the guide gives them."""
    return [
        {
            "display_name": c.display_name or c.name,
            "slug": c.name,
            "default": c.name == home,
            "spawner_override": {
                "kubernetes_context": c.context,
                "ingress_public_url": c.ingress_public_url,
            },
        }
        for c in clusters
    ]


def clusters_yaml(clusters: Sequence[ClusterSpec], home: str, kubeconfig: Path,
                  hosts: Sequence[str]) -> dict[str, Any]:
    """The service's clusters.yaml for the same clusters (the guide's mapping)."""
    return {
        "kubeconfig": str(kubeconfig),
        "home": home,
        "defaults": {"namespace": "jupyterhub", "gateway": "istio-system/jupyterhub-gateway",
                     "hosts": list(hosts), "clusterDomain": "cluster.local"},
        "clusters": [
            {"name": c.name, "context": c.context, "ingressPublicUrl": c.ingress_public_url,
             "userService": {"namespace": USER_NAMESPACE}}
            for c in clusters
        ],
    }


HUB_CONFIG = """\
# Written by federation/testing/mcks.py.
from federation.testing.hub_resolver import LoopbackResolver

c = get_config()  # noqa: F821

# -- as docs/operations.md gives it ----------------------------------------------------------
c.JupyterHub.spawner_class = "multicluster_kubespawner.MultiClusterKubeSpawner"
c.MultiClusterKubeSpawner.profile_list = {profiles!r}
c.MultiClusterKubeSpawner.image = {image!r}
c.ConfigurableHTTPProxy.should_start = False
c.ConfigurableHTTPProxy.api_url = {proxy_url!r}
c.ConfigurableHTTPProxy.auth_token = {proxy_token!r}
c.JupyterHub.cleanup_servers = False  # servers outlive a hub restart, as in z2jh
c.JupyterHub.allow_named_servers = True
c.Spawner.http_timeout = 20
# MCKS 0.2 applies user_options itself when a server starts (load_user_options: the profile, and
# a warning for any other key). JupyterHub >= 5.3 warns "Received unhandled user_options" on
# every spawn unless an apply_user_options hook takes them: this one leaves them to MCKS.
def _applied_by_mcks_at_start(spawner, user_options):
    pass
c.MultiClusterKubeSpawner.apply_user_options = _applied_by_mcks_at_start
# (no start_timeout: MCKS 0.2 fixes it at 300 s and ignores the setting, with a warning)

# -- this machine: loopback ports, a dummy login, a service token for the REST API -----------
# No proxy listens for the browser (the routes go to the service, whose objects live in
# emulated clusters): the hub's public URL is its own address, so that every page and redirect
# after a login answers. bind_url is where a proxy would listen; none is started.
c.JupyterHub.hub_bind_url = {hub_url!r}
c.JupyterHub.bind_url = {hub_url!r}
c.JupyterHub.public_url = {hub_url!r}
c.JupyterHub.db_url = {db_url!r}
c.JupyterHub.cookie_secret_file = {cookie_secret_file!r}
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.services = [{{"name": "driver", "api_token": {service_token!r}}}]
c.JupyterHub.load_roles = [{{
    "name": "driver",
    "scopes": ["admin:users", "admin:servers", "admin:server_state", "proxy"],
    "services": ["driver"],
}}]
# The ingress host names exist nowhere: the hub's HTTP client sends them to a loopback stand-in
# for the users' servers (it waits for each server at its URL before adding the route).
c.JupyterHubHTTPClient.connector_options = {{"resolver": LoopbackResolver({resolve!r})}}
"""


class ServerStandIn:
    """The users' servers as the hub sees them through each cluster's ingress: any path answers
    200 with jupyter-server's version header; every request is recorded (Host, path)."""

    def __init__(self, version: str) -> None:
        self.requests: list[tuple[str, str]] = []
        seen = self.requests

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                seen.append((self.headers.get("Host", ""), self.path))
                body = b"{}"
                self.send_response(200)
                self.send_header("X-JupyterHub-Version", version)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd, self.thread = serve_http(Handler)
        self.port = self.httpd.server_address[1]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def resolve_table(clusters: Sequence[ClusterSpec], port: int) -> dict[str, tuple[str, int]]:
    table = {}
    for c in clusters:
        url = urlsplit(c.ingress_public_url)
        default = 443 if url.scheme == "https" else 80
        table[f"{url.hostname}:{url.port or default}"] = ("127.0.0.1", port)
    return table


@dataclass
class HubProcess:
    """``jupyterhub -f <config>`` as a subprocess (kubectl on PATH, the hub's KUBECONFIG) and a
    client of its REST API."""

    directory: Path
    config_text: str
    token: str
    hub_port: int
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def __post_init__(self) -> None:
        self.url = f"http://127.0.0.1:{self.hub_port}"  # public URL: the hub's own address
        self.api = httpx.Client(base_url=f"{self.url}/hub/api",
                                headers={"Authorization": f"token {self.token}"}, timeout=60)

    @property
    def log_path(self) -> Path:
        return self.directory / f"jupyterhub-{self.starts}.log"

    def start(self, timeout: float = 90.0) -> None:
        config = self.directory / "jupyterhub_config.py"
        config.write_text(self.config_text, encoding="utf-8")
        self.starts += 1
        exe = Path(sys.executable).with_name("jupyterhub")
        command = [str(exe)] if exe.exists() else [sys.executable, "-m", "jupyterhub"]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([*command, "-f", str(config)], cwd=self.directory,
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while "JupyterHub is now running" not in self.log():
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyterhub exited with {self.proc.returncode}\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"jupyterhub did not start in {timeout:.0f}s\n{self.tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 30.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def close(self) -> None:
        self.stop()
        self.api.close()

    def log(self) -> str:
        path = self.log_path
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    # -- REST API --------------------------------------------------------------------------

    def user(self, name: str) -> dict[str, Any]:
        r = self.api.get(f"/users/{quote(name, safe='')}")
        r.raise_for_status()
        return dict(r.json())

    def create_user(self, name: str) -> None:
        r = self.api.post(f"/users/{quote(name, safe='')}")
        if r.status_code != 201:
            raise RuntimeError(f"creating user {name!r}: {r.status_code} {r.text}")

    def _server_path(self, name: str, server: str) -> str:
        user = quote(name, safe="")
        return f"/users/{user}/servers/{quote(server, safe='')}" if server else f"/users/{user}/server"

    def spawn(self, name: str, server: str = "", profile: str | None = None,
              timeout: float = 60.0) -> dict[str, Any]:
        """Start a server with the profile and wait until the hub says it is ready."""
        r = self.api.post(self._server_path(name, server),
                          json={"profile": profile} if profile else {})
        if r.status_code not in (201, 202):
            raise RuntimeError(f"spawning {name}/{server}: {r.status_code} {r.text}")
        return self._wait(lambda: (self.user(name)["servers"].get(server) or {}).get("ready"),
                          f"{name}'s server {server!r} to be ready", timeout)

    def stop_server(self, name: str, server: str = "", timeout: float = 60.0) -> None:
        r = self.api.delete(self._server_path(name, server))
        if r.status_code not in (202, 204):
            raise RuntimeError(f"stopping {name}/{server}: {r.status_code} {r.text}")
        self._wait(lambda: server not in self.user(name)["servers"],
                   f"{name}'s server {server!r} to stop", timeout)

    def _wait(self, predicate: Callable[[], Any], what: str, timeout: float) -> Any:
        try:
            return wait_for(predicate, what, timeout)
        except AssertionError as exc:
            raise RuntimeError(f"{exc}\n{self.tail()}") from None  # what the hub logged


def hub_env(directory: Path, kubeconfig: Path, kubectl: str) -> dict[str, str]:
    """The hub's environment: kubectl on PATH, its own kubeconfig, a HOME for kubectl's cache."""
    env = {k: v for k, v in os.environ.items() if k != "CONFIGPROXY_AUTH_TOKEN"}
    path = env.get("PATH", "")
    env["PATH"] = os.pathsep.join([str(Path(kubectl).parent), path]) if path else str(
        Path(kubectl).parent)
    env["KUBECONFIG"] = str(kubeconfig)
    env["HOME"] = str(directory)
    return env


def find_kubectl() -> str | None:
    return shutil.which("kubectl")


@dataclass
class Stack:
    """Everything started, for the caller to drive and read."""

    clusters: EmulatedClusters
    specs: list[ClusterSpec]
    config_path: Path
    hub_kubeconfig: Path
    servers: ServerStandIn
    hub: HubProcess
    service: Any  # the started service (url, settings)

    def cluster(self, name: str) -> Any:
        spec = next(s for s in self.specs if s.name == name)
        return self.clusters[spec.context]


def add_spawner_tokens(clusters: EmulatedClusters, specs: Sequence[ClusterSpec],
                       rules: Sequence[Rule] | None) -> dict[str, tuple[str, str, str]]:
    """A token of the hub's own account in every cluster; the hub's kubeconfig contexts."""
    contexts = {}
    for n, spec in enumerate(specs):
        server = clusters[spec.context]
        token = f"spawner-token-{n}-{os.urandom(6).hex()}"
        server.add_token(token, SPAWNER_USER, rules)
        contexts[spec.context] = (server.url, token, USER_NAMESPACE)
    return contexts


SERVICE_USER = "system:serviceaccount:jupyterhub:federation-proxy"


def service_kubeconfig(clusters: EmulatedClusters, specs: Sequence[ClusterSpec], path: Path,
                       rules: Mapping[str, Sequence[Rule]]) -> Path:
    """The service's own kubeconfig: a token per cluster, recorded, held to ``rules[name]``
    where given (the remote clusters' Role of docs/examples/remote-rbac.yaml)."""
    contexts = {}
    for n, spec in enumerate(specs):
        server = clusters[spec.context]
        token = f"service-token-{n}-{os.urandom(6).hex()}"
        server.add_token(token, SERVICE_USER, rules.get(spec.name))
        contexts[spec.context] = (server.url, token, "jupyterhub")
    return write_kubeconfig(path, contexts, ca_pem=clusters.tls.ca_pem if clusters.tls else None)


@contextlib.contextmanager
def running_stack(directory: Path, specs: Sequence[ClusterSpec], home: str, *,
                  kubectl: str, service: Callable[[Path], Any], hosts: Sequence[str],
                  crd_files: Sequence[Path] = (), spawner_rules: Sequence[Rule] | None = None,
                  service_rules: Mapping[str, Sequence[Rule]] | None = None,
                  pod_ready_delay: float = 0.2) -> Any:
    """Start clusters, the service (``service(config_path)`` returns a started ServiceThread-like
    object with ``url`` and a token in ``settings``), the stand-in and a hub; stop all on exit."""
    import jupyterhub

    from .harness import write_clusters_yaml

    specs = list(specs)
    with contextlib.ExitStack() as stack:
        clusters = stack.enter_context(EmulatedClusters(
            [s.context for s in specs], directory / "clusters", crd_files=crd_files, tls=True,
            namespaces=("jupyterhub", "default", "istio-system", USER_NAMESPACE),
            pod_ready_delay=pod_ready_delay))
        hub_kubeconfig = write_kubeconfig(
            directory / "hub" / "kubeconfig", add_spawner_tokens(clusters, specs, spawner_rules),
            ca_pem=clusters.tls.ca_pem if clusters.tls else None)
        kubeconfig = service_kubeconfig(clusters, specs, directory / "service" / "kubeconfig",
                                        service_rules or {})
        config_path = write_clusters_yaml(
            directory / "clusters.yaml", clusters_yaml(specs, home, kubeconfig, hosts))
        svc = stack.enter_context(service(config_path))
        servers = ServerStandIn(jupyterhub.__version__)
        stack.callback(servers.stop)
        hub_dir = directory / "hub"
        hub_port, token = free_port(), "driver-" + os.urandom(16).hex()
        text = HUB_CONFIG.format(
            profiles=profile_list(specs, home), image=SPAWNER_IMAGE, proxy_url=svc.url,
            proxy_token=svc.settings.token(), hub_url=f"http://127.0.0.1:{hub_port}/",
            db_url=f"sqlite:///{hub_dir / 'jupyterhub.sqlite'}",
            cookie_secret_file=str(hub_dir / "jupyterhub_cookie_secret"), service_token=token,
            resolve=resolve_table(specs, servers.port))
        hub = HubProcess(hub_dir, text, token, hub_port,
                         env=hub_env(hub_dir, hub_kubeconfig, kubectl))
        stack.callback(hub.close)
        yield Stack(clusters, specs, config_path, hub_kubeconfig, servers, hub, svc)


def mcks_state(user: Mapping[str, Any], server: str = "") -> dict[str, Any]:
    """The spawner state the hub saved for a server (needs the admin:server_state scope)."""
    return dict((user.get("servers") or {}).get(server, {}).get("state") or {})
