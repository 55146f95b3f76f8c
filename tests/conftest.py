"""Shared fixtures. ``../shared`` (beside the repo) holds other projects' data: read in place,
skipped with a reason when absent (a user's own clone); CI always has it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FEDERATION_SHARED_DIR", REPO.parent / "shared"))
ISTIO_CRDS = SHARED / "istio"


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
            {"name": "hub", "context": "hub"},
            {"name": "east", "context": "arn:aws:eks:us-east-1:123456789012:cluster/jupyter-east",
             "ingressPublicUrl": "https://east.hub.example.org"},
            {"name": "west", "context": "gke_example_europe-west1_west",
             "ingressPublicUrl": "http://west.hub.example.org:8080"},
        ],
    }
    if kubeconfig:
        doc["kubeconfig"] = kubeconfig
    doc.update(overrides)
    return doc
