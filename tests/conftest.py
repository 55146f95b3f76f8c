"""Shared fixtures.

``../shared`` (beside the repository, or ``$FEDERATION_SHARED_DIR``) holds the upstream Istio and
Gateway API CRD files, read in place and never copied into the repository. Only tests marked
``upstream_schemas`` need them (they validate written objects against those schemas) and skip
with the reason when they are absent; tests/test_upstream_data.py lists them. Everything else
runs in a bare clone: the emulated clusters serve the kinds without schemas, and
MultiClusterKubeSpawner's names come from the installed spawner (tests/mcks_names.py)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FEDERATION_SHARED_DIR", REPO.parent / "shared"))
ISTIO_CRDS = SHARED / "istio"
GATEWAY_CRDS = SHARED / "gateway-api"


# Whole directories and modules of long runs (end-to-end, benchmark, property and fuzz runs):
# `-m "not slow"` leaves them out for a quick loop; single long tests carry the marker themselves.
SLOW_PATHS = ("e2e/", "bench/", "routing/test_properties.py", "routing/test_gateway_properties.py",
              "routing/test_interleavings.py", "api/test_fuzz.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests = Path(__file__).parent
    for item in items:
        where = item.path.relative_to(tests).as_posix() if item.path.is_relative_to(tests) else ""
        if where.startswith(SLOW_PATHS):
            item.add_marker(pytest.mark.slow)


# The upstream schema sets a test may validate against: ../shared/<key>, and what they are.
UPSTREAM_SCHEMAS = {
    "istio": "Istio's networking.istio.io CRDs",
    "gateway-api": "Gateway API's gateway.networking.k8s.io CRDs (bundle v1.6.1)",
}


def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("upstream_schemas")
    for key in marker.args if marker else ():
        path = SHARED / key
        if not path.is_dir():
            pytest.skip(
                f"{path} is absent: this test validates written objects against "
                f"{UPSTREAM_SCHEMAS[key]}, read from ../shared/{key} beside the clone and never "
                "copied into the repository (README.md, 'Tests that need the upstream schemas')"
            )


@pytest.fixture(scope="session")
def mcks_vectors() -> list[dict[str, Any]]:
    from .mcks_names import spawner_vectors

    return spawner_vectors()


CONTEXTS = {
    "hub": "hub",
    "east": "arn:aws:eks:us-east-1:123456789012:cluster/jupyter-east",
    "west": "gke_example_europe-west1_west",
}
TOKEN = "test-proxy-token-0123456789"
# Where the remote clusters' user Services are: MultiClusterKubeSpawner 0.2 writes into the
# namespace of the hub's context for the cluster (docs/operations.md, section 12).
USER_NAMESPACE = "jupyter-users"


def fast_settings(config: Path, **overrides: Any) -> Any:
    """Settings for tests: short timeouts, one retry, housekeeping only when a test asks."""
    from pydantic import SecretStr

    from federation.settings import Settings

    values: dict[str, Any] = {
        "config": config, "auth_token": SecretStr(TOKEN), "kube_retries": 1,
        "kube_backoff_initial": 0.05, "kube_backoff_max": 0.2, "kube_deadline": 3.0,
        "kube_connect_timeout": 1.0, "kube_read_timeout": 3.0, "probe_interval": 0.5,
        "reconcile_interval": 3600.0, "gc_grace": 0.0, "circuit_threshold": 3,
        "circuit_reset": 1.0, "reload_interval": 0.2,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def clusters(tmp_path: Path) -> Iterator[Any]:
    """Three emulated clusters (hub, east, west) behind one kubeconfig; the emulator also
    checks the Istio CRD schemas when ../shared is present (the tests pass either way)."""
    from federation.testing import EmulatedClusters

    crds = sorted(ISTIO_CRDS.glob("*-crd.yaml")) if ISTIO_CRDS.exists() else []
    with EmulatedClusters(list(CONTEXTS.values()), tmp_path, crd_files=crds) as emulated:
        yield emulated


@pytest.fixture
def config_path(tmp_path: Path, clusters: Any) -> Path:
    from federation.testing.harness import write_clusters_yaml

    return write_clusters_yaml(tmp_path / "clusters.yaml", base_config(str(clusters.kubeconfig)))


@pytest.fixture
def service(config_path: Path) -> Iterator[Any]:
    from federation.testing.harness import ServiceThread

    with ServiceThread(fast_settings(config_path)) as svc:
        yield svc


@contextlib.contextmanager
def running_replicas(config_path: Path, count: int, **overrides: Any) -> Iterator[list[Any]]:
    """``count`` replicas of the service on the same clusters, all ready."""
    from federation.testing.harness import ServiceThread

    services = [ServiceThread(fast_settings(config_path, **overrides)) for _ in range(count)]
    try:
        for svc in services:
            svc.start()
            svc.wait_ready()
        yield services
    finally:
        for svc in services:
            if svc.thread.is_alive():
                svc.stop()


@pytest.fixture
def api(service: Any) -> Iterator[Any]:
    import httpx

    with httpx.Client(base_url=service.url, headers={"Authorization": f"token {TOKEN}"},
                      timeout=20) as client:
        yield client


def objects_in(clusters: Any, name: str, plural: str = "virtualservices") -> list[dict[str, Any]]:
    return clusters.servers[CONTEXTS[name]].objects("networking.istio.io", "v1", plural, "jupyterhub")


def stored_routes(clusters: Any) -> dict[str, dict[str, Any]]:
    """Every route entry stored in every cluster: {cluster: {path: entry json}}."""
    from federation.model import decode_entries

    out: dict[str, dict[str, Any]] = {}
    for name in CONTEXTS:
        found: dict[str, Any] = {}
        for obj in objects_in(clusters, name):
            for path, entry in decode_entries(obj).items():
                assert path not in found, f"{path} stored twice in {name}"
                found[path] = entry.to_json()
        out[name] = found
    return out


def base_config(kubeconfig: str | None = None, **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "home": "hub",
        "defaults": {
            "namespace": "jupyterhub",
            "gateway": "istio-system/jupyterhub-gateway",
            "hosts": ["hub.example.org"],
            "clusterDomain": "cluster.local",
        },
        "clusters": [
            {"name": "hub", "context": CONTEXTS["hub"]},
            {"name": "east", "context": CONTEXTS["east"],
             "ingressPublicUrl": "https://east.hub.example.org",
             "userService": {"namespace": USER_NAMESPACE}},
            {"name": "west", "context": CONTEXTS["west"],
             "ingressPublicUrl": "http://west.hub.example.org:8080",
             "userService": {"namespace": USER_NAMESPACE}},
        ],
    }
    if kubeconfig:
        doc["kubeconfig"] = kubeconfig
    doc.update(overrides)
    return doc
