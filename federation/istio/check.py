"""``federation check`` for an istio cluster: the Istio Gateway its roots bind to exists."""

from __future__ import annotations

from ..config import Cluster
from ..errors import KubeError
from ..kube import ClusterClient, Resource
from ..seam import Check, RouteKind

VIRTUAL_SERVICES = Resource("networking.istio.io", "v1", "virtualservices")
GATEWAYS = Resource("networking.istio.io", "v1", "gateways")
# Every VirtualService of ours goes to the index (which keeps shards and roots, and ignores
# any other); a plain root lists every host the cluster's plain routes answer.
ROUTE = RouteKind("VirtualServices", VIRTUAL_SERVICES, "VirtualService", claim_role="root",
                  probe_spec={"http": []})


async def gateway_findings(client: ClusterClient, cluster: Cluster) -> list[Check]:
    gw_ns, gw_name = cluster.gateway.split("/", 1)
    try:
        await client.read(GATEWAYS.path(gw_ns, gw_name))
    except KubeError as exc:
        return [("gateway exists", False if exc.status == 404 else None,
                 f"{cluster.gateway}: {exc}")]
    return [("gateway exists", True, cluster.gateway)]
