"""The core cycle against a real cluster: set FEDERATION_E2E_KUBECONFIG (and optionally
FEDERATION_E2E_CONTEXT, FEDERATION_E2E_NAMESPACE). The cluster needs Istio's CRDs and the
namespace; the test writes and removes objects labelled with a throwaway instance name."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import httpx
import pytest
import yaml

from federation.model import decode_entries, selector
from federation.testing.harness import ServiceThread

from ..conftest import TOKEN, fast_settings

KUBECONFIG = os.environ.get("FEDERATION_E2E_KUBECONFIG")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not KUBECONFIG, reason="set FEDERATION_E2E_KUBECONFIG to run against a real cluster"),
]


def test_core_cycle_on_a_real_cluster(tmp_path: Path) -> None:
    from kubernetes import config as k8s_config
    from kubernetes.client import CustomObjectsApi

    assert KUBECONFIG is not None
    contexts, active = k8s_config.list_kube_config_contexts(config_file=KUBECONFIG)
    context = os.environ.get("FEDERATION_E2E_CONTEXT") or active["name"]
    namespace = os.environ.get("FEDERATION_E2E_NAMESPACE", "federation-e2e")
    instance = f"e2e-{secrets.token_hex(3)}"
    config = tmp_path / "clusters.yaml"
    config.write_text(yaml.safe_dump({
        "kubeconfig": KUBECONFIG, "instance": instance, "home": "real",
        "defaults": {"namespace": namespace, "gateway": "istio-system/jupyterhub-gateway",
                     "hosts": ["e2e.example.org"]},
        "clusters": [{"name": "real", "context": context}],
    }))
    api = CustomObjectsApi(k8s_config.new_client_from_config(config_file=KUBECONFIG, context=context))

    def stored() -> dict[str, str]:
        items = api.list_namespaced_custom_object(
            "networking.istio.io", "v1", namespace, "virtualservices",
            label_selector=selector(instance))["items"]
        return {p: e.target for o in items for p, e in decode_entries(o).items()}

    headers = {"Authorization": f"token {TOKEN}"}
    with ServiceThread(fast_settings(config, kube_deadline=10, kube_read_timeout=10)) as svc, \
            httpx.Client(base_url=svc.url, headers=headers, timeout=30) as http:
        try:
            assert http.post("/api/routes/user/e2e", json={"target": "http://10.0.0.1:8888"}).status_code == 201
            assert stored() == {"/user/e2e": "http://10.0.0.1:8888"}
            assert http.post("/api/routes/user/e2e", json={"target": "http://e2e-svc:8888"}).status_code == 201
            assert stored() == {"/user/e2e": "http://e2e-svc:8888"}
            assert http.get("/api/routes").json()["/user/e2e"]["target"] == "http://e2e-svc:8888"
            assert http.delete("/api/routes/user/e2e").status_code == 204
            assert stored() == {}
        finally:
            http.delete("/api/routes/user/e2e")
            svc.run(svc.federation.reconcile(grace=0))
            time.sleep(0.5)
            svc.run(svc.federation.reconcile(grace=0))
    for plural in ("virtualservices", "serviceentries", "destinationrules"):
        left = api.list_namespaced_custom_object("networking.istio.io", "v1", namespace, plural,
                                                 label_selector=selector(instance))["items"]
        for obj in left:  # anything left behind is a bug; remove it so the cluster stays clean
            api.delete_namespaced_custom_object("networking.istio.io", "v1", namespace, plural,
                                                obj["metadata"]["name"])
        assert [o["metadata"]["name"] for o in left if plural != "virtualservices"] == []
