"""``federation demo``: three emulated clusters, the service on :8001, sample routes, and a
printout of which cluster holds which object. Nothing to install, nothing to configure."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import httpx
from pydantic import SecretStr

from .objects import ANN_ROUTES, GROUP, VERSION
from .settings import Settings
from .testing.harness import ServiceThread, write_clusters_yaml
from .testing.kubeapi import EmulatedClusters

TOKEN = "demo-token"

SAMPLE_ROUTES = [
    ("/", {"target": "http://hub:8081", "hub": True, "jupyterhub": True}),
    ("/user/alice", {"target": "https://east.demo.example.org", "user": "alice",
                     "server_name": "", "jupyterhub": True}),
    ("/user/bob/gpu", {"target": "http://west.demo.example.org:8080", "user": "bob",
                       "server_name": "gpu", "jupyterhub": True}),
    ("/user/carol", {"target": "http://10.12.3.4:8888", "user": "carol", "server_name": "",
                     "jupyterhub": True}),
    ("/services/announce", {"target": "http://announce.jhub:8000", "service": "announce",
                            "jupyterhub": True}),
]


def demo_config(kubeconfig: Path) -> dict[str, object]:
    return {
        "kubeconfig": str(kubeconfig),
        "home": "hub",
        "defaults": {
            "namespace": "jupyterhub",
            "gateway": "istio-system/jupyterhub-gateway",
            "hosts": ["hub.demo.example.org"],
            "clusterDomain": "cluster.local",
        },
        "clusters": [
            {"name": "hub", "context": "hub"},
            {"name": "east", "context": "east", "ingressPublicUrl": "https://east.demo.example.org"},
            {"name": "west", "context": "west", "ingressPublicUrl": "http://west.demo.example.org:8080"},
        ],
    }


def describe_objects(clusters: EmulatedClusters) -> str:
    lines = []
    for name, server in clusters.servers.items():
        lines.append(f"cluster {name} ({server.url}):")
        for plural in ("virtualservices", "serviceentries", "destinationrules"):
            for obj in server.objects(GROUP, VERSION, plural, "jupyterhub"):
                meta = obj["metadata"]
                role = meta["labels"].get("federation.jupyter.org/role")
                extra = ""
                if plural == "virtualservices" and role == "root":
                    extra = f" hosts={obj['spec']['hosts']} delegates=" + ",".join(
                        r["delegate"]["name"] for r in obj["spec"]["http"])
                elif plural == "virtualservices":
                    routes = json.loads(meta["annotations"].get(ANN_ROUTES, "{}"))
                    extra = " " + ", ".join(
                        f"{p} -> {r['route'][0]['destination']['host']}:"
                        f"{r['route'][0]['destination']['port']['number']}"
                        + (" (edge)" if routes[p].get("edge") else "")
                        for p, r in zip(sorted(routes), obj["spec"]["http"], strict=False))
                else:
                    extra = f" hosts={obj['spec'].get('hosts', obj['spec'].get('host'))}"
                kind = obj["kind"]
                lines.append(f"  {kind:<16} {meta['name']:<28} {role}{extra}")
    return "\n".join(lines)


def run_demo(port: int = 8001, host: str = "127.0.0.1", once: bool = False) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="federation-demo-"))
    with EmulatedClusters(["hub", "east", "west"], workdir) as clusters:
        config = write_clusters_yaml(workdir / "clusters.yaml", demo_config(clusters.kubeconfig))
        settings = Settings(config=config, auth_token=SecretStr(TOKEN), reconcile_interval=5, gc_grace=10)
        with ServiceThread(settings, host=host, port=port) as service:
            headers = {"Authorization": f"token {TOKEN}"}
            with httpx.Client(base_url=service.url, headers=headers, timeout=10) as http:
                for path, body in SAMPLE_ROUTES:
                    http.post("/api/routes" + path, json=body).raise_for_status()
                table = http.get("/api/routes").json()
                health = http.get("/clusters", params={"format": "text"}).text
            print(f"federation proxy API on {service.url} (token: {TOKEN}); config {config}\n")
            print("route table (GET /api/routes):")
            for path, route in table.items():
                print(f"  {path:<20} -> {route['target']}")
            print("\nobjects written, per cluster:")
            print(describe_objects(clusters))
            print("\nclusters (GET /clusters?format=text):")
            print(health)
            if once:
                return 0
            print(f"try: curl -H 'Authorization: token {TOKEN}' {service.url}/api/routes")
            print("press Ctrl-C to stop")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                print("stopping")
    return 0
