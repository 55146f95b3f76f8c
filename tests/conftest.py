"""Shared fixtures. ``../shared`` (beside the repo) holds other projects' data: read in place,
skipped with a reason when absent (a user's own clone); CI always has it."""

from __future__ import annotations

import contextlib
import json
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


def shared_file(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: ../shared (reference data) is not beside this clone")
    return path


@pytest.fixture(scope="session")
def mcks_vectors() -> list[dict[str, Any]]:
    return json.loads(shared_file("reference", "mcks-names.json").read_text())["vectors"]


@pytest.fixture(scope="session")
def istio_crd_files() -> list[Path]:
    shared_file("istio")
    return sorted(ISTIO_CRDS.glob("*-crd.yaml"))


CONTEXTS = {
    "hub": "hub",
    "east": "arn:aws:eks:us-east-1:123456789012:cluster/jupyter-east",
    "west": "gke_example_europe-west1_west",
}
TOKEN = "test-proxy-token-0123456789"


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
    """Three emulated clusters (hub, east, west) behind one kubeconfig; Istio CRD validation
    on when ../shared is present."""
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
             "ingressPublicUrl": "https://east.hub.example.org"},
            {"name": "west", "context": CONTEXTS["west"],
             "ingressPublicUrl": "http://west.hub.example.org:8080"},
        ],
    }
    if kubeconfig:
        doc["kubeconfig"] = kubeconfig
    doc.update(overrides)
    return doc
