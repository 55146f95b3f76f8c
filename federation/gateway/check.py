"""``federation check`` for a gateway-api cluster: its Gateway exists, is Programmed, and a
listener admits HTTPRoutes from the service's namespace (pure parts tested without a cluster)."""

from __future__ import annotations

from typing import Any

from ..config import Cluster
from ..errors import KubeError
from ..kube import ClusterClient, Resource
from ..seam import Check, RouteKind

HTTP_ROUTES = Resource("gateway.networking.k8s.io", "v1", "httproutes")
API_GATEWAYS = Resource("gateway.networking.k8s.io", "v1", "gateways")
# Host defaults are HTTPRoutes too, but support objects (kept by fingerprint): the index keeps
# the routes'. Every plain HTTPRoute lists the hosts of the cluster.
ROUTE = RouteKind("HTTPRoutes", HTTP_ROUTES, "HTTPRoute", claim_role="route",
                  roles=frozenset({"route"}))


async def gateway_findings(client: ClusterClient, cluster: Cluster) -> list[Check]:
    """The Gateway exists, is Programmed, and its listeners admit routes from our namespace."""
    gw_ns, gw_name = cluster.gateway.split("/", 1)
    try:
        gateway = await client.read(API_GATEWAYS.path(gw_ns, gw_name))
    except KubeError as exc:
        ok = False if exc.status == 404 else None
        return [("Gateway exists", ok, f"{cluster.gateway}: {exc}")]
    out: list[Check] = [("Gateway exists", True, cluster.gateway)]
    conditions = {c.get("type"): c for c in (gateway.get("status") or {}).get("conditions") or []}
    programmed = conditions.get("Programmed") or {}
    out.append(("Gateway Programmed", programmed.get("status") == "True",
                programmed.get("message") or programmed.get("reason")
                or "no Programmed condition yet (is a controller running for its class?)"))
    labels: dict[str, str] | None = None
    try:
        ns = await client.read(f"/api/v1/namespaces/{cluster.namespace}")
        labels = (ns.get("metadata") or {}).get("labels") or {}
    except KubeError:
        pass
    listeners = [lst for lst in (gateway.get("spec") or {}).get("listeners") or []
                 if cluster.section_name in (None, lst.get("name"))]
    verdicts = [admits(lst, gw_ns, cluster.namespace, labels) for lst in listeners]
    ok = True if True in verdicts else (None if None in verdicts else False)
    where = f"listener {cluster.section_name}" if cluster.section_name else "any listener"
    detail = (f"{where} admits HTTPRoutes from namespace {cluster.namespace}" if ok else
              f"no listener ({where}) admits HTTPRoutes from namespace {cluster.namespace}: "
              "set allowedRoutes.namespaces on the Gateway" if ok is False else
              f"cannot tell whether {where} admits namespace {cluster.namespace} (its labels "
              "could not be read)")
    out.append(("Gateway admits our routes", ok, detail))
    return out


def admits(listener: dict[str, Any], gateway_ns: str, namespace: str,
           labels: dict[str, str] | None) -> bool | None:
    """Whether a listener's allowedRoutes let HTTPRoutes of ``namespace`` attach."""
    allowed = listener.get("allowedRoutes") or {}
    kinds = allowed.get("kinds")
    if kinds and not any(k.get("kind") == "HTTPRoute" for k in kinds):
        return False
    if listener.get("protocol") not in (None, "HTTP", "HTTPS") and not kinds:
        return False
    spec = allowed.get("namespaces") or {}
    frm = spec.get("from", "Same")
    if frm == "All":
        return True
    if frm == "Same":
        return namespace == gateway_ns
    selector_ = spec.get("selector") or {}
    if labels is None or selector_.get("matchExpressions"):
        return None  # not read, or expressions: left to the operator
    wanted = selector_.get("matchLabels") or {}
    return all(labels.get(k) == v for k, v in wanted.items())
