"""A second hub on the same clusters: refused at start and by ``federation check`` while it
shares the remote ingress hosts with the first hub, accepted with ingress hosts of its own."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from federation.check import run_check
from federation.config import load_registry
from federation.testing.harness import ServiceThread, write_clusters_yaml

from .conftest import CONTEXTS, TOKEN, base_config, fast_settings


def second_hub(kubeconfig: str, own_ingress: bool) -> dict[str, Any]:
    doc = base_config(kubeconfig, instance="hubb")
    doc["defaults"]["hosts"] = ["hubb.example.org"]
    for cluster in doc["clusters"]:
        if own_ingress and cluster.get("ingressPublicUrl"):
            cluster["ingressPublicUrl"] = cluster["ingressPublicUrl"].replace("://", "://hubb-", 1)
    return doc


def instance_objects(clusters: Any, instance: str) -> list[str]:
    out = []
    for name, context in CONTEXTS.items():
        for obj in clusters.servers[context].objects("networking.istio.io", "v1",
                                                     "virtualservices", "jupyterhub"):
            if obj["metadata"]["labels"].get("federation.jupyter.org/instance") == instance:
                out.append(f"{name}/{obj['metadata']['name']}")
    return out


@pytest.fixture
def first_hub_with_a_remote_user(config_path: Path) -> None:
    with ServiceThread(fast_settings(config_path)) as svc, httpx.Client(
            base_url=svc.url, headers={"Authorization": f"token {TOKEN}"}) as api:
        resp = api.post("/api/routes/user/alice", json={
            "target": "https://east.hub.example.org", "user": "alice", "server_name": ""})
        assert resp.status_code == 201, resp.text


@pytest.mark.usefixtures("first_hub_with_a_remote_user")
# uvicorn ends its thread with SystemExit when the start-up fails, as it ends the process.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_second_hub_sharing_the_ingress_hosts_is_refused(
        tmp_path: Path, clusters: Any, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    config = write_clusters_yaml(tmp_path / "hubb.yaml",
                                 second_hub(str(clusters.kubeconfig), own_ingress=False))
    caplog.set_level(logging.ERROR, logger="federation")
    svc = ServiceThread(fast_settings(config))
    with pytest.raises(RuntimeError, match="did not start"):
        svc.start()
    svc.stop()
    assert instance_objects(clusters, "hubb") == []  # refused before writing anything
    shared = [r for r in caplog.records if getattr(r, "cluster", None) == "east"]
    assert shared and "east.hub.example.org" in shared[0].getMessage()
    # Refused by the first hub's claim (a Lease) on the shared ingress host.
    assert "claimed by hub 'jupyterhub/jupyterhub'" in shared[0].getMessage()
    assert "federation claims take --from jupyterhub/jupyterhub" in shared[0].getMessage()

    code = asyncio.run(run_check(load_registry(config), fast_settings(config)))
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL no other hub on our hosts: instance 'hubb' and instance 'jupyterhub'" in out
    assert "ingressPublicUrl https://east.hub.example.org" in out
    # ...and by the first hub's claim on the host.
    assert "FAIL our hosts not claimed by another hub: the ingress host east.hub.example.org" in out
    assert "claimed by hub 'jupyterhub/jupyterhub'" in out


@pytest.mark.usefixtures("first_hub_with_a_remote_user")
def test_a_second_hub_with_its_own_ingress_hosts_starts(tmp_path: Path, clusters: Any) -> None:
    config = write_clusters_yaml(tmp_path / "hubb.yaml",
                                 second_hub(str(clusters.kubeconfig), own_ingress=True))
    with ServiceThread(fast_settings(config)) as svc, httpx.Client(
            base_url=svc.url, headers={"Authorization": f"token {TOKEN}"}) as api:
        resp = api.post("/api/routes/user/alice", json={
            "target": "https://hubb-east.hub.example.org", "user": "alice", "server_name": ""})
        assert resp.status_code == 201, resp.text
        assert list(api.get("/api/routes").json()) == ["/user/alice"]
    assert "east/hubb-root" in instance_objects(clusters, "hubb")
