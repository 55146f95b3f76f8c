"""A real JupyterHub process driving ``federation serve`` over three emulated clusters.

What is real: the ``jupyterhub`` package (its proxy client, spawn and stop flow, restart
recovery and periodic ``check_routes``), the service, the Kubernetes REST traffic (to loopback
emulated API servers) and the hub's HTTP requests to the user servers.

What stands in (all on loopback, in this process):

* the ingress gateways of the remote clusters: ``https://east.hub.example.org`` (TLS, a
  certificate from a test CA the hub trusts) and ``http://west.hub.example.org:8080``. The hub
  resolves those names to them (``tests/e2e/spawner.py:StandInResolver``). They route each request
  through the cluster's stored VirtualServices with the Istio model of ``tests/routing/evaluator``:
  404 without a route (what a gateway answers before the route exists), else the user's server;
* the home cluster's user pod, at a pod-IP style URL (``127.12.3.4`` when that loopback address
  can be bound).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from federation.model import LABEL_ROLE, decode_entries, route_id
from federation.testing.harness import ServiceThread, free_port, serve_http, wait_for

from ..conftest import (
    CONTEXTS,
    REPO,
    TOKEN,
    USER_NAMESPACE,
    fast_settings,
    objects_in,
    stored_routes,
)
from ..routing.evaluator import Decision, route
from .hub_config import HubConfig

jupyterhub = pytest.importorskip(
    "jupyterhub",
    reason="the end-to-end test runs the real jupyterhub package (pip install jupyterhub)",
)
pytest.importorskip("cryptography", reason="needed for the test CA (a jupyterhub dependency)")

GATEWAY = "istio-system/jupyterhub-gateway"  # base_config's defaults.gateway
HUB_HOST = "hub.example.org"  # base_config's defaults.hosts
EAST_URL = "https://east.hub.example.org"  # base_config's ingressPublicUrl of east
WEST_URL = "http://west.hub.example.org:8080"  # ... and of west
EAST_HOST, WEST_HOST = "east.hub.example.org", "west.hub.example.org"
HIDEKI = "秀樹"
HIDEKI_URL = quote(HIDEKI, safe="")  # %E7%A7%80%E6%A8%B9, as the hub writes it in URLs
# MultiClusterKubeSpawner's names: escapism with lower-case letters and digits safe, "-" escape.
BOB_SVC = "jupyter--42ob.jupyter-users.svc.cluster.local"
HIDEKI_NS = "jupyter--e7-a7-80-e6-a8-b9"
HIDEKI_SVC = f"{HIDEKI_NS}.{USER_NAMESPACE}.svc.cluster.local"
HIDEKI_GPU_SVC = f"{HIDEKI_NS}--gpu.{USER_NAMESPACE}.svc.cluster.local"
WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")


# --------------------------------------------------------------------------------------------
# Small helpers




def pod_ip() -> str:
    """A pod-IP style loopback address other than the hub's, when the system allows one."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.12.3.4", 0))
        except OSError:
            return "127.0.0.1"
    return "127.12.3.4"


def make_tls(directory: Path, hostname: str) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for ``hostname``: (ca.pem, cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    valid = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "federation e2e test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


# --------------------------------------------------------------------------------------------
# Stand-ins: ingress gateways and a pod


Answer = tuple[int, dict[str, str], bytes]


class StandIn:
    """A loopback HTTP(S) server that records every request it answers."""

    def __init__(
        self,
        answer: Callable[[str, str], Answer],
        host: str = "127.0.0.1",
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.requests: list[dict[str, Any]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                host_header = self.headers.get("Host", "")
                status, headers, body = answer(host_header, self.path)
                stand_in.requests.append(
                    {"host": host_header, "path": self.path, "status": status, **headers}
                )
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd, self.thread = serve_http(Handler, host, tls)
        self.host, self.port = host, self.httpd.server_address[1]

    def seen(self, path: str, since: int = 0) -> list[dict[str, Any]]:
        return [r for r in list(self.requests)[since:] if r["path"] == path]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def server_headers() -> dict[str, str]:
    # What jupyter-server sends, and what the hub checks after waiting for a server.
    return {"X-JupyterHub-Version": jupyterhub.__version__}


def gateway(clusters: Any, cluster: str) -> Callable[[str, str], Answer]:
    """An ingress gateway of ``cluster``: routes over the VirtualServices stored there now."""

    def answer(host_header: str, path: str) -> Answer:
        host = host_header.rsplit(":", 1)[0] if ":" in host_header else host_header
        decision = route(objects_in(clusters, cluster), gateway=GATEWAY, host=host, path=path)
        if decision.destination_host is None:
            return 404, {}, b'{"gateway": "no route"}'
        served_by = f"{decision.destination_host}:{decision.destination_port}"
        return 200, {**server_headers(), "X-Served-By": served_by}, b"{}"

    return answer


def hop(clusters: Any, cluster: str, host: str, path: str) -> tuple[str | None, int | None]:
    decision: Decision = route(objects_in(clusters, cluster), gateway=GATEWAY, host=host, path=path)
    return decision.destination_host, decision.destination_port


def through_hub_cluster(clusters: Any, path: str) -> list[tuple[str | None, int | None]]:
    """Where a request for ``path`` at the hub's public host goes: one hop, or two when the
    home cluster forwards it to a remote cluster's ingress."""
    first = hop(clusters, "hub", HUB_HOST, path)
    for name, host in (("east", EAST_HOST), ("west", WEST_HOST)):
        if first[0] == host:
            return [first, hop(clusters, name, host, path)]
    return [first]


def support(clusters: Any, cluster: str, plural: str) -> list[dict[str, Any]]:
    return [o["spec"] for o in objects_in(clusters, cluster, plural)]


def rule_for(clusters: Any, cluster: str, path: str) -> dict[str, Any]:
    """The http rule serving ``path`` in ``cluster`` (on the one shard storing it)."""
    shards = [o for o in objects_in(clusters, cluster) if path in decode_entries(o)]
    assert len(shards) == 1, f"{path} is on {len(shards)} shards in {cluster}"
    rules = [r for r in shards[0]["spec"]["http"] if r["name"] == route_id(path)]
    assert len(rules) == 1, f"no rule for {path} on {shards[0]['metadata']['name']}"
    return rules[0]


# --------------------------------------------------------------------------------------------
# The hub process


class Hub:
    """``jupyterhub -f <config>`` as a subprocess, and a client of its REST API."""

    def __init__(self, config: HubConfig, token: str) -> None:
        self.config = config
        self.token = token
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self.starts = 0
        self.api = httpx.Client(
            base_url=config.hub_api, headers={"Authorization": f"token {token}"}, timeout=30
        )

    @staticmethod
    def command(config_file: Path) -> list[str]:
        exe = Path(sys.executable).with_name("jupyterhub")
        if exe.exists():
            return [str(exe), "-f", str(config_file)]
        return [sys.executable, "-m", "jupyterhub", "-f", str(config_file)]

    def start(self, timeout: float = 60.0) -> None:
        config_file = self.config.write()
        self.starts += 1
        self.log_path = self.config.directory / f"jupyterhub-{self.starts}.log"
        env = {k: v for k, v in os.environ.items() if k != "CONFIGPROXY_AUTH_TOKEN"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.command(config_file),
                cwd=self.config.directory,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        # Logged at the end of JupyterHub.start(), after its first check_routes.
        while "JupyterHub is now running" not in self.log():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"jupyterhub exited with {self.proc.returncode}\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"jupyterhub did not start in {timeout:.0f}s\n{self.tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 20.0) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            raise AssertionError(
                f"jupyterhub ignored SIGTERM for {timeout:.0f}s\n{self.tail()}"
            ) from None

    def log(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def errors(self) -> list[str]:
        """ERROR and CRITICAL lines of this hub process's log (SIGTERM's notice excepted)."""
        return [
            line
            for line in self.log().splitlines()
            if line.startswith(("[E ", "[C ")) and "Received signal SIGTERM" not in line
        ]

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    # -- REST API ----------------------------------------------------------------------------

    def create_user(self, name: str) -> None:
        r = self.api.post(f"/users/{quote(name, safe='')}")
        assert r.status_code == 201, (r.status_code, r.text)
        assert r.json()["name"] == name, r.json()

    def servers(self, name: str) -> dict[str, Any]:
        r = self.api.get(f"/users/{quote(name, safe='')}")
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()["servers"]

    def _server_url(self, name: str, server: str) -> str:
        user = quote(name, safe="")
        return (
            f"/users/{user}/servers/{quote(server, safe='')}" if server else f"/users/{user}/server"
        )

    def start_server(self, name: str, server: str = "", profile: str | None = None) -> None:
        options = {"profile": profile} if profile else {}
        r = self.api.post(self._server_url(name, server), json=options)
        assert r.status_code in (201, 202), (r.status_code, r.text, self.tail())
        wait_for(
            lambda: (self.servers(name).get(server) or {}).get("ready"),
            f"{name}'s server {server!r} to be ready\n{self.tail()}",
        )

    def stop_server(self, name: str, server: str = "") -> None:
        r = self.api.delete(self._server_url(name, server))
        assert r.status_code in (202, 204), (r.status_code, r.text)
        wait_for(lambda: server not in self.servers(name), f"{name}'s server {server!r} to stop")

    def proxy_table(self) -> dict[str, dict[str, Any]]:
        r = self.api.get("/proxy")
        assert r.status_code == 200, (r.status_code, r.text)
        return {
            spec: {
                "target": v["target"],
                **{k: x for k, x in v["data"].items() if k != "last_activity"},
            }
            for spec, v in r.json().items()
        }

    def check_routes(self) -> None:
        """POST /hub/api/proxy: the hub runs check_routes and answers when it is done."""
        r = self.api.post("/proxy")
        assert r.status_code == 200, (r.status_code, r.text)


# --------------------------------------------------------------------------------------------
# Counting what the service is asked to do


class Calls:
    """Every request the service receives, as (method, decoded path)."""

    def __init__(self, svc: ServiceThread) -> None:
        self.seen: list[tuple[str, str]] = []

        @svc.app.middleware("http")
        async def record(request: Any, call_next: Any) -> Any:
            self.seen.append((request.method, request.url.path))
            return await call_next(request)

    def count(self, *methods: str, path: str | None = None) -> int:
        return sum(
            1
            for m, p in list(self.seen)
            if m in methods and p.startswith("/api/routes") and (path is None or p == path)
        )


def kube_writes(clusters: Any) -> dict[str, dict[str, int]]:
    return {
        name: {verb: server.request_counts.get(verb, 0) for verb in WRITE_VERBS}
        for name, server in clusters.servers.items()
    }


def delete_by_hand(clusters: Any, cluster: str, name: str) -> None:
    """What an operator's ``kubectl delete virtualservice`` does, through the kubernetes client."""
    from kubernetes import client, config

    api = config.new_client_from_config(
        config_file=str(clusters.kubeconfig), context=CONTEXTS[cluster]
    )
    try:
        client.CustomObjectsApi(api).delete_namespaced_custom_object(
            "networking.istio.io", "v1", "jupyterhub", "virtualservices", name
        )
    finally:
        api.close()


# --------------------------------------------------------------------------------------------
# The test


@pytest.fixture
def stack(clusters: Any, config_path: Path, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The service (in-process, with a request counter), the stand-ins, and a stopped hub."""
    with contextlib.ExitStack() as stack:
        svc = ServiceThread(fast_settings(config_path))
        calls = Calls(svc)
        stack.enter_context(svc)

        ca, cert, key = make_tls(tmp_path, EAST_HOST)
        east = StandIn(gateway(clusters, "east"), tls=(cert, key))
        stack.callback(east.stop)
        west = StandIn(gateway(clusters, "west"))
        stack.callback(west.stop)
        pod = StandIn(lambda host, path: (200, server_headers(), b"{}"), host=pod_ip())
        stack.callback(pod.stop)

        config = HubConfig(
            directory=tmp_path / "hub",
            hub_port=free_port(),
            public_port=free_port(),
            proxy_url=svc.url,
            proxy_token=TOKEN,
            service_token="e2e-" + secrets.token_hex(16),
            ca_file=ca,
            home_pod_url=f"http://{pod.host}:{pod.port}",
            ingress_urls={"east": EAST_URL, "west": WEST_URL},
            resolve={
                f"{EAST_HOST}:443": ("127.0.0.1", east.port),
                f"{WEST_HOST}:8080": ("127.0.0.1", west.port),
            },
        )
        hub = Hub(config, config.service_token)
        stack.callback(hub.api.close)
        stack.callback(hub.stop)
        yield {"svc": svc, "calls": calls, "hub": hub, "east": east, "west": west, "pod": pod}


def test_real_hub_routes_through_federation(stack: dict[str, Any], clusters: Any) -> None:
    """Spawn on every profile, stop, restart the hub, lose a VirtualService, stop everything."""
    svc: ServiceThread = stack["svc"]
    calls: Calls = stack["calls"]
    hub: Hub = stack["hub"]
    east: StandIn = stack["east"]
    west: StandIn = stack["west"]
    pod: StandIn = stack["pod"]
    hub_target = f"http://127.0.0.1:{hub.config.hub_port}"
    pod_target = f"http://{pod.host}:{pod.port}"
    timings: dict[str, float] = {}
    t0 = time.monotonic()

    def lap(name: str) -> None:
        timings[name] = round(time.monotonic() - t0 - sum(timings.values()), 2)

    try:
        hub.start()
        lap("hub start")

        # -- 1. servers on every profile, a named server, names that need escaping -----------
        for name in ("alice", "Bob", HIDEKI):
            hub.create_user(name)
        hub.start_server("alice")  # the default profile: the hub's own cluster
        hub.start_server("Bob", profile="east")
        hub.start_server(HIDEKI, profile="west")
        hub.start_server(HIDEKI, "gpu", profile="east")
        lap("4 spawns")

        # The hub waited for each server at its URL: the pod directly, the remote ones at their
        # cluster's ingress, which had no route for them yet (the proxy route comes after).
        assert [r["status"] for r in pod.seen("/user/alice/api")] == [200]
        assert [(r["host"], r["status"]) for r in east.seen("/user/Bob/api")] == [(EAST_HOST, 404)]
        assert [r["status"] for r in east.seen(f"/user/{HIDEKI_URL}/gpu/api")] == [404]
        assert [(r["host"], r["status"]) for r in west.seen(f"/user/{HIDEKI_URL}/api")] == [
            (f"{WEST_HOST}:8080", 404)
        ]

        stored = stored_routes(clusters)
        assert set(stored["east"]) == {"/user/Bob", f"/user/{HIDEKI}/gpu"}
        assert set(stored["west"]) == {f"/user/{HIDEKI}"}
        assert set(stored["hub"]) == {
            "/",
            "/user/alice",
            "/user/Bob",
            f"/user/{HIDEKI}",
            f"/user/{HIDEKI}/gpu",
        }
        bob = stored["east"]["/user/Bob"]
        assert (bob["target"], bob["owner"]) == (f"{EAST_URL}:443", "east")
        # The data as the hub POSTed it ("jupyterhub" marks the hub's own routes).
        assert bob["data"] == {"user": "Bob", "server_name": "", "jupyterhub": True}
        gpu = stored["east"][f"/user/{HIDEKI}/gpu"]
        assert gpu["data"] == {"user": HIDEKI, "server_name": "gpu", "jupyterhub": True}
        assert stored["west"][f"/user/{HIDEKI}"]["target"] == WEST_URL
        assert stored["hub"]["/"]["target"] == hub_target
        assert stored["hub"]["/"]["data"] == {"hub": True, "jupyterhub": True}
        assert (stored["hub"]["/user/alice"]["target"], stored["hub"]["/user/alice"]["owner"]) == (
            pod_target,
            "hub",
        )
        for path, owner in (
            ("/user/Bob", "east"),
            (f"/user/{HIDEKI}", "west"),
            (f"/user/{HIDEKI}/gpu", "east"),
        ):
            assert stored["hub"][path].get("edge") is True, (path, stored["hub"][path])
            assert stored["hub"][path]["owner"] == owner

        # The rule in east's shard sends Bob to his Service, named as the spawner names it.
        assert rule_for(clusters, "east", "/user/Bob")["route"] == [
            {"destination": {"host": BOB_SVC, "port": {"number": 8888}}}
        ]
        # And a request at the hub's public host gets there, one or two hops away.
        assert through_hub_cluster(clusters, "/user/Bob/lab") == [(EAST_HOST, 443), (BOB_SVC, 8888)]
        assert through_hub_cluster(clusters, f"/user/{HIDEKI_URL}/api") == [
            (WEST_HOST, 8080),
            (HIDEKI_SVC, 8888),
        ]
        assert through_hub_cluster(clusters, f"/user/{HIDEKI_URL}/gpu/tree") == [
            (EAST_HOST, 443),
            (HIDEKI_GPU_SVC, 8888),
        ]
        alice_host, alice_port = hop(clusters, "hub", HUB_HOST, "/user/alice/api")
        hub_host, hub_port = hop(clusters, "hub", HUB_HOST, "/hub/api")
        assert hop(clusters, "hub", HUB_HOST, "/user/Bo/api") == (hub_host, hub_port)
        entries = {s["hosts"][0]: s for s in support(clusters, "hub", "serviceentries")}
        assert entries[alice_host]["endpoints"] == [{"address": pod.host}]
        assert alice_port == pod.port and entries[alice_host]["resolution"] == "STATIC"
        assert entries[hub_host]["endpoints"] == [{"address": "127.0.0.1"}]
        assert hub_port == hub.config.hub_port
        assert entries[EAST_HOST]["ports"][0]["number"] == 443
        assert entries[WEST_HOST]["ports"][0]["number"] == 8080
        rules = support(clusters, "hub", "destinationrules")
        assert [
            (d["host"], d["trafficPolicy"]["portLevelSettings"][0]["tls"]["mode"]) for d in rules
        ] == [(EAST_HOST, "SIMPLE")]
        lap("checks")

        # -- 2. stopping a server removes its objects -----------------------------------------
        hub.stop_server(HIDEKI, "gpu")
        stored = stored_routes(clusters)
        assert set(stored["east"]) == {"/user/Bob"}
        assert f"/user/{HIDEKI}/gpu" not in stored["hub"]
        # Now the user's default server (in west) is the longest prefix, as in the hub's proxy.
        assert through_hub_cluster(clusters, f"/user/{HIDEKI_URL}/gpu/tree") == [
            (WEST_HOST, 8080),
            (HIDEKI_SVC, 8888),
        ]
        lap("stop one")

        # -- 3. a hub restart finds the table intact: no route written, none deleted -----------
        running = {
            "/": {"target": hub_target, "hub": True},
            "/user/alice/": {"target": pod_target, "user": "alice", "server_name": ""},
            "/user/Bob/": {"target": f"{EAST_URL}:443", "user": "Bob", "server_name": ""},
            f"/user/{HIDEKI_URL}/": {"target": WEST_URL, "user": HIDEKI, "server_name": ""},
        }
        assert hub.proxy_table() == running
        writes, route_writes = kube_writes(clusters), calls.count("POST", "DELETE")
        seen = {"pod": len(pod.requests), "east": len(east.requests), "west": len(west.requests)}
        assert hub.errors() == []
        assert hub.stop() == 0, hub.tail()
        reads_before = calls.count("GET")
        hub.start()
        hub.check_routes()
        # The restarted hub's own checks too (after init_spawners, after each activity update).
        wait_for(lambda: calls.count("GET") >= reads_before + 5, "the restarted hub's checks")
        assert calls.count("POST", "DELETE") == route_writes, calls.seen[-20:]
        assert kube_writes(clusters) == writes
        assert "Adding missing route" not in hub.log() and "Deleting stale route" not in hub.log()
        assert hub.proxy_table() == running
        for name, server in (("alice", ""), ("Bob", ""), (HIDEKI, "")):
            assert hub.servers(name)[server]["ready"], name
        # On restart the hub checked each server at its URL again, through the routes this time.
        assert [r["status"] for r in pod.seen("/user/alice/api", seen["pod"])] == [200]
        assert [
            (r["status"], r["X-Served-By"]) for r in east.seen("/user/Bob/api", seen["east"])
        ] == [(200, f"{BOB_SVC}:8888")]
        assert [
            (r["status"], r["X-Served-By"])
            for r in west.seen(f"/user/{HIDEKI_URL}/api", seen["west"])
        ] == [(200, f"{HIDEKI_SVC}:8888")]
        lap("hub restart")

        # -- 4. a VirtualService deleted by hand: the hub's periodic check puts the route back -
        shards = [o for o in objects_in(clusters, "east") if "/user/Bob" in decode_entries(o)]
        assert len(shards) == 1 and set(decode_entries(shards[0])) == {"/user/Bob"}
        shard = shards[0]["metadata"]["name"]
        re_adds = calls.count("POST", path="/api/routes/user/Bob")
        delete_by_hand(clusters, "east", shard)
        assert shard not in {o["metadata"]["name"] for o in objects_in(clusters, "east")}
        wait_for(
            lambda: calls.count("POST", path="/api/routes/user/Bob") > re_adds,
            f"the hub to re-add /user/Bob\n{hub.tail()}",
        )
        wait_for(lambda: "/user/Bob" in stored_routes(clusters)["east"], "/user/Bob back in east")
        assert "Adding missing route for /user/Bob/" in hub.log()
        assert shard in {o["metadata"]["name"] for o in objects_in(clusters, "east")}
        assert rule_for(clusters, "east", "/user/Bob")["route"] == [
            {"destination": {"host": BOB_SVC, "port": {"number": 8888}}}
        ]
        assert through_hub_cluster(clusters, "/user/Bob/lab") == [(EAST_HOST, 443), (BOB_SVC, 8888)]
        assert json.loads(svc_get(svc, "/api/routes/user/Bob"))["target"] == f"{EAST_URL}:443"
        assert hub.proxy_table() == running
        lap("repair")

        # -- 5. everything stopped: only the hub's route and its support object remain ---------
        hub.stop_server("alice")
        hub.stop_server("Bob")
        hub.stop_server(HIDEKI)
        stored = stored_routes(clusters)
        assert (set(stored["hub"]), stored["east"], stored["west"]) == ({"/"}, {}, {})
        assert hub.proxy_table() == {"/": running["/"]}
        # The service's housekeeping removes what no route uses any more.
        svc.run(svc.federation.reconcile(grace=0))
        assert [s["endpoints"] for s in support(clusters, "hub", "serviceentries")] == [
            [{"address": "127.0.0.1"}]
        ]
        for name in CONTEXTS:
            assert support(clusters, name, "destinationrules") == [], name
            if name != "hub":
                assert support(clusters, name, "serviceentries") == [], name
            roles: dict[str, list[dict[str, Any]]] = {}
            for obj in objects_in(clusters, name):
                roles.setdefault(obj["metadata"]["labels"][LABEL_ROLE], []).append(obj)
            shards = roles.get("shard", [])
            assert [set(decode_entries(o)) for o in shards] == ([{"/"}] if name == "hub" else []), (
                name
            )
            delegates = [
                r["delegate"]["name"] for o in roles.get("root", []) for r in o["spec"]["http"]
            ]
            assert delegates == [o["metadata"]["name"] for o in shards], name
        assert hub.errors() == []
        lap("stop all")
    except BaseException:
        print(f"--- jupyterhub log (start {hub.starts}) ---\n{hub.tail(200)}")
        raise
    finally:
        print(f"timings (s): {timings}")


def svc_get(svc: ServiceThread, path: str) -> str:
    r = httpx.get(svc.url + path, headers={"Authorization": f"token {TOKEN}"}, timeout=10)
    assert r.status_code == 200, (r.status_code, r.text)
    return r.text
