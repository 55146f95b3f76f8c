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
