"""Upgrading and rolling back: the previous release (releases.json, taken from the repository's
history with ``git archive``) runs beside the current code on the same emulated clusters, as
during a rolling update of the Deployment, then alone again, as after a rollback.

Both run as ``python -m federation serve`` processes, each with its own source tree on
PYTHONPATH (the dependencies are the same). Only behaviour is compared: the route table each
answers over the REST API, and where the objects in the clusters send requests (the Istio and
Gateway API evaluators, through both hops), never the objects' internals, which a release may
change as long as both can read them.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from federation import __version__
from federation.testing import EmulatedClusters
from federation.testing.harness import free_port, wait_for, wait_until_ready, write_clusters_yaml

from .conftest import CONTEXTS, GATEWAY_CRDS, ISTIO_CRDS, REPO, TOKEN, USER_NAMESPACE, base_config
from .routing.evaluator import route
from .routing.gateway_evaluator import route_gateway

pytestmark = pytest.mark.slow

GATEWAY = "istio-system/jupyterhub-gateway"
HUB_HOST = "hub.example.org"
HUB_TARGET = "http://hub:8081"
INGRESS = {"east": "https://east.hub.example.org", "west": "http://west.hub.example.org:8080"}
USERS = ("alice", "bob", "carol", "dan", "erin", "fay", "gus")
# Short housekeeping and grace periods, so that both releases' housekeeping passes run (and
# could remove what they do not understand) while the test watches.
SETTINGS = {
    "CONFIGPROXY_AUTH_TOKEN": TOKEN, "FEDERATION_PROBE_INTERVAL": "0.5",
    "FEDERATION_RECONCILE_INTERVAL": "1", "FEDERATION_GC_GRACE": "1",
    "FEDERATION_LOG_LEVEL": "warning", "FEDERATION_ACCESS_LOG": "false",
}
HOUSEKEEPING_PASSES = 3.0  # seconds: three housekeeping intervals


def previous_release() -> dict[str, str]:
    """The newest release in releases.json older than this code."""
    releases = json.loads((REPO / "releases.json").read_text())["releases"]
    older = [r for r in releases if _key(r["version"]) < _key(__version__)]
    assert older, f"releases.json lists no release before {__version__}"
    return max(older, key=lambda r: _key(r["version"]))


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _no_history(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must run the upgrade test (a full clone): {reason}")
    pytest.skip(f"the previous release cannot be taken from git history here: {reason}")


def extract_release(commit: str, into: Path) -> Path:
    """The release's ``federation`` package, as committed, under ``into``."""
    if not (REPO / ".git").exists():
        _no_history(f"{REPO} is not a git checkout")
    try:
        found = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{commit}^{{commit}}"],
                               capture_output=True, timeout=30)
    except FileNotFoundError:
        _no_history("git is not installed")
    if found.returncode != 0:
        _no_history(f"commit {commit} is not in this clone (shallow? git fetch --unshallow)")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", commit,
                              "federation"], capture_output=True, check=True, timeout=60)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into


class Release:
    """One ``federation serve`` process of a source tree, on a port of its own."""

    def __init__(self, name: str, tree: Path, config: Path, workdir: Path) -> None:
        self.name = name
        self.tree = tree
        self.config = config
        self.workdir = workdir  # the cwd: no package of that name in it
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"{name}-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        return {**os.environ, **SETTINGS, "PYTHONPATH": str(self.tree)}

    def version(self) -> str:
        out = subprocess.run([sys.executable, "-m", "federation", "--version"], env=self.env(),
                             cwd=self.workdir, capture_output=True, text=True, timeout=60)
        return out.stdout.strip().removeprefix("federation ")

    def start(self) -> Release:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "federation", "serve", "--config", str(self.config),
                 "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env(), cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_ready(self.url, timeout=60)
        except RuntimeError:
            self.stop()
            raise AssertionError(f"{self.name} did not become ready:\n{self.output()}") from None
        return self

    def stop(self) -> None:
        """SIGTERM, as Kubernetes stops a pod; the process must end cleanly."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"{self.name} did not stop on SIGTERM:\n{self.output()}") from None
        assert code == 0, f"{self.name} exited {code}:\n{self.output()}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> int:
        resp = httpx.request(method, self.url + "/api/routes" + path, json=body, timeout=30,
                             headers={"Authorization": f"token {TOKEN}"})
        assert resp.status_code < 300, (self.name, method, path, resp.status_code, resp.text)
        return resp.status_code

    def table(self) -> dict[str, dict[str, Any]]:
        resp = httpx.get(self.url + "/api/routes", timeout=30,
                         headers={"Authorization": f"token {TOKEN}"})
        resp.raise_for_status()
        # last_activity is each replica's own knowledge (write times it saw): not compared
        return {path: {k: v for k, v in entry.items() if k != "last_activity"}
                for path, entry in resp.json().items()}


# ------------------------------------------------------------------- the routes and the oracle


def user_route(user: str, cluster: str, server: str = "") -> tuple[str, dict[str, Any]]:
    path = f"/user/{user}" + (f"/{server}" if server else "")
    return path, {"target": INGRESS[cluster], "user": user, "server_name": server}


def expected_hops(table: dict[str, dict[str, Any]], probe: str) -> tuple[Any, ...]:
    """Where configurable-http-proxy's rule (the longest matching prefix) sends ``probe``:
    the hub's Service at home, or the remote ingress (addressed by its own name) and there the
    user's Service as MultiClusterKubeSpawner names it, in clusters.yaml's userService namespace."""
    matches = [p for p in table if p == "/" or probe == p or probe.startswith(p + "/")]
    if not matches:
        return ("404",)
    data = table[max(matches, key=len)]
    if data["target"] == HUB_TARGET:
        return (("hub.jupyterhub.svc.cluster.local", 8081),)
    ingress = urlsplit(data["target"])
    port = ingress.port or (443 if ingress.scheme == "https" else 80)
    key = f"jupyter-{data['user']}" + (f"--{data['server_name']}" if data["server_name"] else "")
    return ((ingress.hostname, port, ingress.hostname),
            (f"{key}.{USER_NAMESPACE}.svc.cluster.local",))


def objects_of(clusters: EmulatedClusters, name: str, backend: str) -> list[dict[str, Any]]:
    server = clusters[CONTEXTS[name]]
    if backend == "istio":
        return server.objects("networking.istio.io", "v1", "virtualservices", "jupyterhub")
    kinds = [("gateway.networking.k8s.io", "v1", "httproutes"), ("", "v1", "services"),
             ("discovery.k8s.io", "v1", "endpointslices"),
             ("gateway.networking.k8s.io", "v1beta1", "referencegrants")]
    return [o for group, version, plural in kinds for o in server.objects(group, version, plural)]


def hop(backend: str, objects: list[dict[str, Any]], host: str, probe: str) -> tuple[Any, ...]:
    """(destination host, port, authority sent on) of one gateway, or ("404",)."""
    if backend == "istio":
        got = route(objects, gateway=GATEWAY, host=host, path=probe)
        if not got.matched:
            return ("404",)
        return (got.destination_host, got.destination_port,
                _istio_authority(objects, got.virtual_service, got.rule_name) or host)
    decided = route_gateway(objects, gateway=GATEWAY, host=host, path=probe)
    if decided.route is None:
        return ("404",)
    return (decided.backend, decided.port, decided.host)


def _istio_authority(objects: list[dict[str, Any]], owner: str | None,
                     rule_name: str | None) -> str | None:
    for obj in objects:
        if f"{obj['metadata']['namespace']}/{obj['metadata']['name']}" == owner:
            for rule in obj["spec"].get("http") or []:
                if rule.get("name") == rule_name:
                    return (rule.get("rewrite") or {}).get("authority")
    return None


def routed_hops(clusters: EmulatedClusters, backend: str, probe: str) -> tuple[Any, ...]:
    """Where the clusters' objects send a request for ``probe`` on the hub's host."""
    first = hop(backend, objects_of(clusters, "hub", backend), HUB_HOST, probe)
    if first == ("404",):
        return first
    if first[0] == "hub.jupyterhub.svc.cluster.local":
        return (first[:2],)
    remote = next(name for name, url in INGRESS.items() if urlsplit(url).hostname == first[0])
    second = hop(backend, objects_of(clusters, remote, backend), first[2], probe)
    return first, second[:1]


def probes() -> list[str]:
    return ["/hub/home"] + [f"/user/{u}{s}/lab" for u in USERS for s in ("", "/gpu")]


def check_routing(clusters: EmulatedClusters, backend: str, table: dict[str, dict[str, Any]],
                  when: str) -> None:
    wrong = {}
    for probe in probes():
        want, got = expected_hops(table, probe), routed_hops(clusters, backend, probe)
        if got != want:
            wrong[probe] = (want, got)
    assert not wrong, f"{when}: routed differently from the table: {wrong}"


def converged(releases: list[Release], table: dict[str, dict[str, Any]], when: str) -> None:
    for release in releases:
        wait_for(lambda r=release: r.table() == table,  # type: ignore[misc]
                 f"{release.name} to answer the whole table ({when})", timeout=30)


# ------------------------------------------------------------------------------------ the test


@pytest.fixture(scope="module")
def old_tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], Path]:
    release = previous_release()
    return release, extract_release(release["commit"], tmp_path_factory.mktemp("previous"))


@pytest.fixture
def emulated(tmp_path: Path) -> Iterator[EmulatedClusters]:
    # The emulator serves both backends' kinds without their CRDs; with ../shared beside the
    # clone it also checks every write against the upstream schemas.
    crds = sorted(ISTIO_CRDS.glob("*-crd.yaml")) + sorted(GATEWAY_CRDS.glob("*-crd.yaml"))
    # the users' namespace exists, as the spawner's (ReferenceGrants go there)
    namespaces = ("jupyterhub", "default", "istio-system", USER_NAMESPACE)
    with EmulatedClusters(list(CONTEXTS.values()), tmp_path, crd_files=crds,
                          namespaces=namespaces) as clusters:
        yield clusters


@pytest.mark.parametrize("backend", ["istio", "gateway-api"])
def test_rolling_update_and_rollback(backend: str, old_tree: tuple[dict[str, str], Path],
                                     emulated: EmulatedClusters, tmp_path: Path) -> None:
    release, tree = old_tree
    doc = base_config(str(emulated.kubeconfig))
    doc["defaults"]["backend"] = backend
    config = write_clusters_yaml(tmp_path / "clusters.yaml", doc)
    workdir = tmp_path / "run"
    workdir.mkdir()
    old = Release(f"release {release['version']}", tree, config, workdir)
    new = Release(f"current {__version__}", REPO, config, workdir)
    assert old.version() == release["version"] != new.version() == __version__

    table: dict[str, dict[str, Any]] = {}

    def write(via: Release, path: str, body: dict[str, Any] | None) -> None:
        if body is None:
            via.call("DELETE", path)
            table.pop(path)
        else:
            via.call("POST", path, body)
            table[path] = body

    running: list[Release] = []
    try:
        # 1. the previous release alone, as installed
        running.append(old.start())
        write(old, "/", {"target": HUB_TARGET})
        for path, body in (user_route("alice", "east"), user_route("bob", "west"),
                           user_route("carol", "east", "gpu"), user_route("dan", "west")):
            write(old, path, body)
        converged(running, table, "previous release alone")
        check_routing(emulated, backend, table, "previous release alone")

        # 2. rolling update: the new replica starts beside the old one; the hub's requests
        # reach either
        running.append(new.start())
        converged(running, table, "current code started beside the previous release")
        write(new, *user_route("erin", "east"))
        write(old, *user_route("fay", "west", "gpu"))
        write(new, *user_route("alice", "west"))  # a move of a route the old one wrote
        write(new, "/user/bob", None)  # written by the old one
        write(old, "/user/erin", None)  # written by the new one
        converged(running, table, "both running")
        check_routing(emulated, backend, table, "both running")

        # 3. the old replica stopped: the new one alone, through its housekeeping
        running.remove(old)
        old.stop()
        write(new, *user_route("gus", "east"))
        time.sleep(HOUSEKEEPING_PASSES)
        converged(running, table, "current code alone")
        check_routing(emulated, backend, table, "current code alone")

        # 4. rollback: the previous release starts again beside the new one, then alone
        old = Release(old.name, tree, config, workdir)
        running.append(old.start())
        converged(running, table, "previous release started again")
        write(old, *user_route("bob", "east", "gpu"))
        write(new, *user_route("carol", "west", "gpu"))  # a move of what the old one wrote
        write(old, "/user/gus", None)  # written by the new one
        converged(running, table, "both running after the rollback began")
        running.remove(new)
        new.stop()
        time.sleep(HOUSEKEEPING_PASSES)
        converged(running, table, "previous release alone after the rollback")
        check_routing(emulated, backend, table, "previous release alone after the rollback")
    finally:
        for proc in running:
            proc.stop()
