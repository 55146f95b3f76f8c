"""A real JupyterHub spawning with the real MultiClusterKubeSpawner (PyPI 0.2), which drives the
emulated clusters with the real kubectl, and this service as the hub's proxy.

Configured as docs/operations.md tells an operator (federation/testing/mcks.py): one profile per
cluster, MCKS's default object templates, the hub's own account per cluster with the Role of
docs/examples/spawner-rbac.yaml and the service's with remote-rbac.yaml's (in the remote
clusters), each enforced by the emulated API servers (a request its Role does not allow is
refused with 403, as RBAC would).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
import yaml

from federation.model import route_id
from federation.testing import EmulatedClusters
from federation.testing.harness import ServiceThread, wait_for, write_clusters_yaml
from federation.testing.kubeapi.rbac import rules_for
from federation.testing.mcks import (
    SERVICE_USER,
    SPAWNER_USER,
    USER_NAMESPACE,
    ClusterSpec,
    Stack,
    clusters_yaml,
    find_kubectl,
    mcks_state,
    running_stack,
)

from ..conftest import CONTEXTS, ISTIO_CRDS, REPO, TOKEN, fast_settings, objects_in, stored_routes

IN_CI = os.environ.get("CI", "").lower() == "true"


def _require(module: str, why: str) -> None:
    try:
        __import__(module)
    except ImportError:
        if IN_CI:
            pytest.fail(f"CI must run the MCKS end-to-end test: {why}")
        pytest.skip(why, allow_module_level=True)


_require("jupyterhub", "the real jupyterhub package is needed (pip install -e '.[test]')")
_require("multicluster_kubespawner",
         "jupyterhub-multicluster-kubespawner is needed (pip install -e '.[test]')")

pytestmark = pytest.mark.slow

SPECS = [
    ClusterSpec("hub", CONTEXTS["hub"], "http://hub-ingress.hub.example.org"),
    ClusterSpec("east", CONTEXTS["east"], "http://east.hub.example.org"),
    ClusterSpec("west", CONTEXTS["west"], "http://west.hub.example.org:8080"),
]
HIDEKI = "秀樹"
# (user, server name, profile) -> MCKS's key (escaped names, mcks-names.json's rule)
SPAWNS = [
    ("alice", "", "east", "jupyter-alice"),
    ("bob", "gpu", "west", "jupyter-bob--gpu"),
    (HIDEKI, "", "hub", "jupyter--e7-a7-80-e6-a8-b9"),
    ("carol", "gpu-1", "east", "jupyter-carol--gpu-2d1"),
]
KEY_LABEL = "mcks.hub.jupyter.org/key"
SPAWNER_RBAC = REPO / "docs" / "examples" / "spawner-rbac.yaml"
SERVICE_RBAC = REPO / "docs" / "examples" / "remote-rbac.yaml"


def kubectl() -> str:
    path = find_kubectl()
    if path is None:
        if IN_CI:
            pytest.fail("CI must run the MCKS end-to-end test: scripts/test.sh installs kubectl")
        pytest.skip("kubectl is not installed here (MCKS runs it; scripts/test.sh installs it in CI)")
    return path


def rules_of(manifest: Path, user: str) -> list[Any]:
    """The rules a manifest grants the ServiceAccount ``system:serviceaccount:<ns>:<name>``."""
    docs = list(yaml.safe_load_all(manifest.read_text(encoding="utf-8")))
    _, _, namespace, name = user.split(":")
    return rules_for(docs, name, namespace)


def spawner_rules() -> list[Any]:
    return rules_of(SPAWNER_RBAC, SPAWNER_USER)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    crds = sorted(ISTIO_CRDS.glob("*-crd.yaml")) if ISTIO_CRDS.exists() else []
    with running_stack(tmp_path, SPECS, "hub", kubectl=kubectl(),
                       service=lambda config: ServiceThread(fast_settings(config)),
                       hosts=["hub.example.org"], crd_files=crds,
                       spawner_rules=spawner_rules(),
                       service_rules={name: rules_of(SERVICE_RBAC, SERVICE_USER)
                                      for name in ("east", "west")}) as running:
        yield running


def user_objects(stack: Stack, cluster: str, key: str) -> dict[str, list[dict[str, Any]]]:
    """The objects labelled with MCKS's key in the cluster's user namespace, by kind."""
    server = stack.cluster(cluster)
    found = {}
    for group, plural in (("", "pods"), ("", "services"), ("", "serviceaccounts"),
                          ("networking.k8s.io", "ingresses")):
        found[plural] = [o for o in server.objects(group, "v1", plural, USER_NAMESPACE)
                         if (o["metadata"].get("labels") or {}).get(KEY_LABEL) == key]
    return found


def destination_of(clusters: Any, cluster: str, path: str) -> dict[str, Any]:
    """The destination of the rule serving ``path`` in the cluster's VirtualServices."""
    rules = [r for obj in objects_in(clusters, cluster) for r in obj["spec"].get("http") or []
             if r.get("name") == route_id(path)]
    assert len(rules) == 1, f"{len(rules)} rules for {path} in {cluster}"
    return dict(rules[0]["route"][0]["destination"])


def cluster_rows(svc_url: str) -> dict[str, dict[str, Any]]:
    r = httpx.get(f"{svc_url}/clusters", headers={"Authorization": f"token {TOKEN}"}, timeout=10)
    r.raise_for_status()
    return {row["name"]: row for row in r.json()["clusters"]}


def route_counts(stack: Stack, svc_url: str) -> dict[str, int]:
    return {name: row["routes"] for name, row in cluster_rows(svc_url).items()}


def check_destinations(stack: Stack, expected_ok: dict[str, int]) -> None:
    """One housekeeping pass reads the Services the routes point to: every user's route ends
    at a Service MCKS created (none missing, none unknown: the service's Role may read them)."""
    stack.service.run(stack.service.federation.reconcile())
    rows = cluster_rows(stack.service.url)
    found = {name: (row["destinations"]["ok"], row["destinations"]["missing"],
                    row["destinations"]["no_port"], row["destinations"]["unknown"])
             for name, row in rows.items()}
    assert found == {name: (ok, 0, 0, 0) for name, ok in expected_ok.items()}, rows


def delete_by_hand(stack: Stack, cluster: str, path: str) -> None:
    """What an operator's kubectl delete (or an eviction) does, with the cluster's admin token."""
    server = stack.cluster(cluster)
    tls = stack.clusters.tls
    with httpx.Client(base_url=server.url, verify=tls.client_context() if tls else True,
                      headers={"Authorization": f"Bearer {server.token}"}, timeout=10) as http:
        http.delete(path).raise_for_status()
    kind = path.rsplit("/", 2)[-2]
    name = path.rsplit("/", 1)[-1]
    wait_for(lambda: not any(o["metadata"]["name"] == name
                             for o in server.objects("", "v1", kind, USER_NAMESPACE)),
             f"{path} gone", timeout=10)


def path_of(user: str, server: str) -> str:
    return f"/user/{user}" + (f"/{server}" if server else "")


def check_spawned(stack: Stack, user: str, server: str, cluster: str, key: str) -> None:
    """The route is in the cluster MCKS used, to the Service MCKS created there."""
    objects = user_objects(stack, cluster, key)
    assert [len(objects[k]) for k in ("pods", "services", "serviceaccounts", "ingresses")] == [
        1, 1, 1, 1], objects
    pod, service = objects["pods"][0], objects["services"][0]
    assert pod["status"]["phase"] == "Running" and pod["status"]["podIP"]
    for other in (s.name for s in SPECS if s.name != cluster):
        assert user_objects(stack, other, key)["pods"] == []
    path = path_of(user, server)
    stored = stored_routes(stack.clusters)
    spec = next(s for s in SPECS if s.name == cluster)
    assert stored[cluster][path]["owner"] == cluster
    assert stored[cluster][path]["target"].startswith(spec.ingress_public_url)
    destination = destination_of(stack.clusters, cluster, path)
    meta = service["metadata"]
    assert destination["host"] == f"{meta['name']}.{meta['namespace']}.svc.cluster.local"
    assert destination["port"]["number"] == service["spec"]["ports"][0]["port"]
    assert service["spec"]["selector"] == {KEY_LABEL: key} == {
        k: v for k, v in pod["metadata"]["labels"].items() if k == KEY_LABEL}


def test_mcks_spawns_route_stop_and_restart(stack: Stack, tmp_path: Path) -> None:
    hub = stack.hub
    svc_url = stack.service.url
    hub.start()
    for user in sorted({u for u, *_ in SPAWNS}):
        hub.create_user(user)
    for user, server, profile, _ in SPAWNS:
        hub.spawn(user, server, profile)

    # the hub waited for each server at the ingress URL of the cluster MCKS used
    hosts = {(h, p) for h, p in stack.servers.requests}
    assert ("east.hub.example.org", "/user/alice/api") in hosts
    assert ("west.hub.example.org:8080", "/user/bob/gpu/api") in hosts
    for user, server, cluster, key in SPAWNS:
        check_spawned(stack, user, server, cluster, key)
    stored = stored_routes(stack.clusters)
    counts = route_counts(stack, svc_url)
    # /clusters counts the routes each cluster owns (the home cluster's edge rules are not its)
    owned = {name: sum(1 for e in routes.values() if e["owner"] == name)
             for name, routes in stored.items()}
    assert counts == owned == {"hub": 2, "east": 2, "west": 1}  # hub: "/" and 秀樹
    check_destinations(stack, {"hub": 1, "east": 2, "west": 1})  # the hub's "/" is a pod IP

    # MCKS 0.2 saves its URL under "ingress_public_url " (trailing space) and reads it back
    # under "ingress_public_url": after a restart its own value is lost (see the guide)
    state = mcks_state(hub.user("alice"))
    assert state["kubernetes_context"] == CONTEXTS["east"] and state["key"] == "jupyter-alice"
    assert state.get("ingress_public_url ") == "http://east.hub.example.org"
    assert "ingress_public_url" not in state

    # a hub restart keeps the table: the hub's database has the URL, MCKS's poll (kubectl wait)
    # finds every pod Ready, and check_routes finds every route in place
    before = stored_routes(stack.clusters)
    hub.stop()
    hub.start()
    for user, server, _, _ in SPAWNS:
        assert hub.user(user)["servers"][server]["ready"], hub.tail()
    assert stored_routes(stack.clusters) == before
    proxy = hub.api.get("/proxy").json()
    assert {unquote(p).rstrip("/") for p in proxy} >= {path_of(u, s) for u, s, *_ in SPAWNS}

    # stop (after the restart: MCKS deletes what its saved state lists) removes the route
    alice_objects = mcks_state(hub.user("alice"))["created_resources"]
    for user, server, cluster, key in SPAWNS[:2]:
        hub.stop_server(user, server)
        assert all(v == [] for v in user_objects(stack, cluster, key).values())
        after = stored_routes(stack.clusters)
        assert path_of(user, server) not in after[cluster]
        assert path_of(user, server) not in after["hub"]
    assert route_counts(stack, svc_url)["west"] == 0

    # a pod that vanishes (evicted, deleted by hand): stopping finds it gone, so the hub drops
    # the route without calling MCKS's stop, and the Service, account and Ingress stay behind;
    # the next spawn applies over them (unchanged: nothing to patch) and the route comes back
    carol, server, _, key = SPAWNS[3]
    delete_by_hand(stack, "east", f"/api/v1/namespaces/{USER_NAMESPACE}/pods/{key}")
    hub.stop_server(carol, server)
    assert path_of(carol, server) not in stored_routes(stack.clusters)["east"]
    left = user_objects(stack, "east", key)
    assert [len(left[k]) for k in ("pods", "services", "serviceaccounts", "ingresses")] == [
        0, 1, 1, 1]
    hub.spawn(carol, server, "east")
    check_spawned(stack, carol, server, "east", key)

    # a spawn that finds its objects left over and different (here: created without kubectl
    # apply's annotation): kubectl apply patches them, and the route comes back to the Service
    leftover = subprocess.run(
        [kubectl(), "create", "-f", "-", f"--context={CONTEXTS['east']}", "-n", USER_NAMESPACE],
        input=alice_objects, text=True, capture_output=True, timeout=60,
        env={**os.environ, "KUBECONFIG": str(stack.clusters.kubeconfig), "HOME": str(tmp_path)})
    assert leftover.returncode == 0, leftover.stderr
    hub.spawn("alice", "", "east")
    check_spawned(stack, "alice", "", "east", "jupyter-alice")

    # The hub's account did nothing but what the example Role allows (the servers answer 403
    # otherwise), and needed all of it. kubectl apply also reads the namespace (cluster scope,
    # outside any Role): refused, it carries on, as against a real cluster.
    granted = {(verb, rule_group, resource) for rule in spawner_rules()
               for verb in rule.verbs for rule_group in rule.groups for resource in rule.resources}
    used: set[tuple[str, str, str]] = set()
    for spec in SPECS:
        server = stack.cluster(spec.name)
        assert server.accesses(SPAWNER_USER, allowed=False) <= {("get", "", "namespaces", "")}
        mine = server.accesses(SPAWNER_USER)
        assert {ns for *_, ns in mine} == {USER_NAMESPACE}, mine
        used |= {(verb, group, resource) for verb, group, resource, _ in mine}
    assert used == granted, (sorted(granted - used), sorted(used - granted))
    # and the service's account in the remote clusters stayed within remote-rbac.yaml's Role
    for name in ("east", "west"):
        server = stack.cluster(name)
        assert server.accesses(SERVICE_USER, allowed=False) == set()
        assert {(verb, resource) for verb, _, resource, _ in server.accesses(SERVICE_USER)} >= {
            ("create", "virtualservices"), ("watch", "virtualservices")}
    errors = [line for line in hub.log().splitlines() if line.startswith(("[E ", "[C "))]
    assert errors == [], errors



def test_the_guides_config_without_user_service_is_refused(tmp_path: Path) -> None:
    """clusters.yaml as the guide maps MCKS's profiles, but without userService: the service
    refuses to start, naming the key and MCKS 0.2's behaviour, for every cluster whose routes
    target its ingress (a default namespace would send every user to a Service that does not
    exist: MCKS 0.2 writes into the hub context's namespace)."""
    with EmulatedClusters([s.context for s in SPECS], tmp_path / "clusters") as clusters:
        doc = clusters_yaml(SPECS, "hub", clusters.kubeconfig, ["hub.example.org"])
        for cluster in doc["clusters"]:
            cluster.pop("userService")
        config = write_clusters_yaml(tmp_path / "clusters.yaml", doc)
        env = {**os.environ, "CONFIGPROXY_AUTH_TOKEN": TOKEN}
        result = subprocess.run([sys.executable, "-m", "federation", "serve", "--config",
                                 str(config)], capture_output=True, text=True, env=env,
                                timeout=60)
    assert result.returncode == 2, result.stderr
    for spec in SPECS:
        assert f"clusters[{spec.name}].userService.namespace: missing" in result.stderr
    assert "MultiClusterKubeSpawner 0.2" in result.stderr
    assert "namespace of the hub's kubeconfig context" in result.stderr
