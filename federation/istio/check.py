"""``federation check`` for an istio cluster: the Istio Gateway its roots bind to exists."""

from __future__ import annotations

from typing import Any

from ..config import Cluster
from ..errors import KubeError
from ..kube import ClusterClient, Resource
from ..mesh import API_VERSION
from ..seam import Check

VIRTUAL_SERVICES = Resource("networking.istio.io", "v1", "virtualservices")
GATEWAYS = Resource("networking.istio.io", "v1", "gateways")
ROUTE_KIND = ("VirtualServices", VIRTUAL_SERVICES)


def probe_object(meta: dict[str, Any]) -> dict[str, Any]:
    """A VirtualService that routes nothing: what `check` creates and deletes to test its rights."""
    return {"apiVersion": API_VERSION, "kind": "VirtualService", "metadata": meta,
            "spec": {"http": []}}


async def gateway_findings(client: ClusterClient, cluster: Cluster) -> list[Check]:
    gw_ns, gw_name = cluster.gateway.split("/", 1)
    try:
        await client.read(GATEWAYS.path(gw_ns, gw_name))
    except KubeError as exc:
        return [("gateway exists", False if exc.status == 404 else None,
                 f"{cluster.gateway}: {exc}")]
    return [("gateway exists", True, cluster.gateway)]
