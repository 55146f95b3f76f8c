"""Every kind a cluster's mirror watches has an open watch, and a change of each kind made by
someone else (written straight to the API server) reaches the mirror: per backend, and per
option that changes what is watched (Gateway API with ``externalBackend: istioHostname``
watches Istio's ServiceEntries and DestinationRules too)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from federation.backend import builders
from federation.model import Entry
from federation.testing import EmulatedClusters
from federation.testing.harness import ServiceThread, wait_for, write_clusters_yaml

from .conftest import CONTEXTS, GATEWAY_CRDS, ISTIO_CRDS, base_config, fast_settings

# One cluster per option: its backend, and what clusters.yaml says beyond it.
OPTIONS = {
    "istio": ("hub", {}),
    "gateway-api": ("east", {"backend": "gateway-api"}),
    "gateway-api/istioHostname": ("west", {"backend": "gateway-api",
                                           "externalBackend": "istioHostname"}),
}
# Targets whose objects cover every watched kind: a pod IP and an external https server.
TARGETS = ("http://10.0.0.1:8888", "https://ext.example.com")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServiceThread, Any]]:
    # The emulator serves both backends' kinds without their CRDs; with ../shared beside the
    # clone it also checks every write against the upstream schemas.
    crds = sorted(ISTIO_CRDS.glob("*-crd.yaml")) + sorted(GATEWAY_CRDS.glob("*-crd.yaml"))
    tmp = tmp_path_factory.mktemp("watches")
    with EmulatedClusters(list(CONTEXTS.values()), tmp, crd_files=crds) as clusters:
        doc = base_config(str(clusters.kubeconfig))
        for entry in doc["clusters"]:
            for name, extra in OPTIONS.values():
                if entry["name"] == name:
                    entry.update(extra)
        config = write_clusters_yaml(Path(tmp) / "clusters.yaml", doc)
        with ServiceThread(fast_settings(config)) as svc:
            yield svc, clusters


def one_object_per_kind(svc: ServiceThread, name: str) -> dict[str, dict[str, Any]]:
    """Objects this cluster's backend would write, one of each kind it watches."""
    registry = svc.federation.registry
    cluster = registry.clusters[name]
    entries = [Entry(f"/user/oob{i}", target, name, {}, "2026-01-01T00:00:00.000Z")
               for i, target in enumerate(TARGETS)]
    store = svc.federation.stores[name]
    out: dict[str, dict[str, Any]] = {}
    for obj in builders(cluster).render_cluster(registry, cluster, entries, 100):
        out.setdefault(store.mirror.kinds.plural_of(obj), obj)
    return out


@pytest.mark.parametrize("option", list(OPTIONS))
def test_every_watched_kind_is_watched_and_heard(service: tuple[ServiceThread, Any],
                                                option: str) -> None:
    svc, clusters = service
    name = OPTIONS[option][0]
    store = svc.federation.stores[name]
    kinds = store.mirror.kinds
    server = clusters.servers[CONTEXTS[name]]
    objects = one_object_per_kind(svc, name)
    assert set(kinds.watched) <= set(objects), "the sample objects miss a watched kind"

    wait_for(lambda: set(kinds.watched) <= server.watched_kinds(),
             f"a watch of each of {kinds.watched} on {name}", timeout=10)

    cache = store.mirror.cache
    headers = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=10) as api:
        for plural in kinds.watched:
            obj = objects[plural]
            obj_name = obj["metadata"]["name"]
            where = kinds.resources[plural].path(obj["metadata"]["namespace"])
            created = api.post(where, json=obj)
            assert created.status_code == 201, created.text
            rv = int(created.json()["metadata"]["resourceVersion"])
            wait_for(lambda p=plural, n=obj_name, rv=rv: cache.rv_of(p, n) == rv,
                     f"{plural} {obj_name} created on {name} to reach the mirror", timeout=10)
            assert api.delete(f"{where}/{obj_name}").status_code == 200
            wait_for(lambda p=plural, n=obj_name: cache.rv_of(p, n) == 0,
                     f"{plural} {obj_name} deleted on {name} to reach the mirror", timeout=10)
