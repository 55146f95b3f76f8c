"""HTTPS emulated clusters: the run's CA is in the kubeconfig, and only it is trusted."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest

from federation.testing import EmulatedClusters


def test_https_servers_trust_only_the_runs_ca(tmp_path: Path) -> None:
    with EmulatedClusters(["a", "b"], tmp_path, tls=True) as clusters:
        assert clusters.tls is not None
        kubeconfig = json.loads(clusters.kubeconfig.read_text())
        for entry in kubeconfig["clusters"]:
            assert entry["cluster"]["server"].startswith("https://127.0.0.1:")
            ca = base64.b64decode(entry["cluster"]["certificate-authority-data"])
            assert ca == clusters.tls.ca_pem
        server = clusters["a"]
        headers = {"Authorization": f"Bearer {server.token}"}
        answer = httpx.get(server.url + "/version", headers=headers,
                           verify=clusters.tls.client_context())
        assert answer.status_code == 200 and answer.json()["gitVersion"]
        with pytest.raises(httpx.ConnectError):
            httpx.get(server.url + "/version", headers=headers)  # system CAs: refused
        # a failed handshake costs that client only: the server keeps answering
        assert httpx.get(server.url + "/version", headers=headers,
                         verify=clusters.tls.client_context()).status_code == 200


def test_plain_http_stays_the_default(tmp_path: Path) -> None:
    with EmulatedClusters(["a"], tmp_path) as clusters:
        assert clusters.tls is None and clusters["a"].url.startswith("http://")
        entry = json.loads(clusters.kubeconfig.read_text())["clusters"][0]["cluster"]
        assert "certificate-authority-data" not in entry


def test_watch_streams_over_https_to_an_async_client(tmp_path: Path) -> None:
    """Chunked JSON lines over TLS, read by async httpx as the service reads them."""
    import asyncio

    async def watch_one(url: str, token: str, verify: object) -> dict:
        async with httpx.AsyncClient(verify=verify, timeout=10) as client:  # type: ignore[arg-type]
            path = "/apis/networking.istio.io/v1/namespaces/jupyterhub/virtualservices"
            async with client.stream("GET", url + path, params={"watch": "1", "resourceVersion": "0"},
                                     headers={"Authorization": f"Bearer {token}"}) as answer:
                async for line in answer.aiter_lines():
                    if line:
                        return json.loads(line)
        raise AssertionError("the stream ended with no event")

    with EmulatedClusters(["a"], tmp_path, tls=True) as clusters:
        server = clusters["a"]
        verify = clusters.tls.client_context()  # type: ignore[union-attr]
        body = {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                "metadata": {"name": "vs"}, "spec": {}}
        httpx.post(server.url + "/apis/networking.istio.io/v1/namespaces/jupyterhub/virtualservices",
                   json=body, headers={"Authorization": f"Bearer {server.token}"},
                   verify=verify).raise_for_status()
        event = asyncio.run(watch_one(server.url, server.token, verify))
    assert event["type"] == "ADDED" and event["object"]["metadata"]["name"] == "vs"
