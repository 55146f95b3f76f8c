"""Istio mesh objects that both backends write: a ServiceEntry (and a DestinationRule for https)
that makes a destination outside the cluster's Services routable (the Istio backend for every
pod IP, remote ingress and external host; the Gateway API backend with ``externalBackend:
istioHostname``). Pure builders, and the metadata every object of ours carries.
"""

from __future__ import annotations

from typing import Any

from .config import Cluster, Registry
from .model import dns_label, labels, short_hash
from .placement import Destination

GROUP = "networking.istio.io"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"
KINDS = {
    "virtualservices": "VirtualService",
    "serviceentries": "ServiceEntry",
    "destinationrules": "DestinationRule",
}


def metadata(name: str, namespace: str, instance: str, role: str) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": labels(instance, role),
            "annotations": {}}


def plural_of(obj: dict[str, Any]) -> str:
    kind = obj["kind"]
    for plural, k in KINDS.items():
        if k == kind:
            return plural
    raise KeyError(kind)


def _support(kind: str, name: str, cluster: Cluster, inst: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": metadata(name, cluster.namespace, inst, "support"),
        "spec": spec,
    }


def support_objects(registry: Registry, cluster: Cluster, dest: Destination) -> list[dict[str, Any]]:
    """Objects that make ``dest`` routable in ``cluster`` through the mesh (none for a plain
    Service).

    No ``exportTo``: the ingress gateway runs in its own namespace and must see them.
    """
    inst = registry.instance
    if dest.kind == "service":
        return []
    if dest.kind == "ip":
        name = dns_label(inst, "ip", short_hash(f"{dest.address}:{dest.port}", 10))
        proto = "HTTPS" if dest.tls else "HTTP"
        return [_support("ServiceEntry", name, cluster, inst, {
            "hosts": [dest.host],
            "location": "MESH_INTERNAL",
            "resolution": "STATIC",
            "ports": [{"number": dest.port, "name": f"{proto.lower()}-{dest.port}", "protocol": proto}],
            "endpoints": [{"address": dest.address}],
        })]
    # "edge" (a remote ingress) or "external": a DNS host outside the mesh.
    name = dns_label(inst, dest.kind, short_hash(f"{dest.host}:{dest.port}", 10))
    out = [_support("ServiceEntry", name, cluster, inst, {
        "hosts": [dest.host],
        "location": "MESH_EXTERNAL",
        "resolution": "DNS",
        # Plain HTTP on the wire to the port; TLS is originated by the DestinationRule.
        "ports": [{"number": dest.port, "name": f"http-{dest.port}", "protocol": "HTTP"}],
    })]
    if dest.tls:
        out.append(_support("DestinationRule", name, cluster, inst, {
            "host": dest.host,
            "trafficPolicy": {
                "portLevelSettings": [
                    {"port": {"number": dest.port}, "tls": {"mode": "SIMPLE", "sni": dest.host}}
                ]
            },
        }))
    return out
