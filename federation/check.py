"""``federation check``: what works and what does not, per cluster, before going live."""

from __future__ import annotations

import secrets
import sys
from dataclasses import dataclass
from typing import Any

from .activity import probe as probe_activity
from .config import Cluster, Registry
from .errors import ConfigError, KubeError
from .kube import Resource, build_clients
from .mesh import API_VERSION
from .model import LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_ROLE, MANAGED_BY, selector
from .settings import Settings
from .sharing import find_shared_hosts

VIRTUAL_SERVICES = Resource("networking.istio.io", "v1", "virtualservices")
GATEWAYS = Resource("networking.istio.io", "v1", "gateways")
HTTP_ROUTES = Resource("gateway.networking.k8s.io", "v1", "httproutes")
API_GATEWAYS = Resource("gateway.networking.k8s.io", "v1", "gateways")


@dataclass
class Finding:
    cluster: str
    check: str
    ok: bool | None  # None: could not tell (e.g. not allowed to look)
    detail: str

    def line(self) -> str:
        mark = {True: "ok  ", False: "FAIL", None: "??  "}[self.ok]
        return f"  {mark} {self.check}: {self.detail}"


async def _check_cluster(name: str, client, registry: Registry) -> list[Finding]:  # type: ignore[no-untyped-def]
    out: list[Finding] = []
    cluster = registry.clusters[name]
    try:
        version = await client.version()
        out.append(Finding(name, "reachable", True, f"{client.server_url} (Kubernetes {version})"))
    except KubeError as exc:
        # The URL tried, so that a wrong server or port in the kubeconfig shows.
        out.append(Finding(name, "reachable", False, f"{client.server_url}: {exc}"))
        return out
    gateway_api = cluster.backend == "gateway-api"
    kind, res = ("HTTPRoutes", HTTP_ROUTES) if gateway_api else ("VirtualServices", VIRTUAL_SERVICES)
    try:
        await client.list(res, selector(registry.instance))
        out.append(Finding(name, f"auth and list {kind}", True, f"namespace {cluster.namespace}"))
    except KubeError as exc:
        hint = " (namespace missing, or the Gateway API CRDs?)" if exc.status == 404 else ""
        out.append(Finding(name, f"auth and list {kind}", False, f"{exc}{hint}"))
        return out
    out.append(await shared_host_finding(name, client, registry))
    try:
        await client.read(f"/api/v1/namespaces/{cluster.namespace}")
        out.append(Finding(name, "namespace exists", True, cluster.namespace))
    except KubeError as exc:
        ok = False if exc.status == 404 else None
        out.append(Finding(name, "namespace exists", ok, str(exc)))
    probe = f"{registry.instance}-check-{secrets.token_hex(4)}"
    meta = {"name": probe, "namespace": cluster.namespace, "labels": {
        LABEL_MANAGED_BY: MANAGED_BY, LABEL_INSTANCE: registry.instance, LABEL_ROLE: "check"}}
    body = ({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": meta,
             "spec": {}} if gateway_api else
            {"apiVersion": API_VERSION, "kind": "VirtualService", "metadata": meta,
             "spec": {"http": []}})
    try:
        await client.create(res, body)
        await client.delete(res, probe)
        out.append(Finding(name, f"create and delete {kind}", True, "allowed"))
    except KubeError as exc:
        out.append(Finding(name, f"create and delete {kind}", False, str(exc)))
    if gateway_api:
        return out + await gateway_findings(name, client, cluster)
    gw_ns, gw_name = cluster.gateway.split("/", 1)
    try:
        await client.read(GATEWAYS.path(gw_ns, gw_name))
        out.append(Finding(name, "gateway exists", True, cluster.gateway))
    except KubeError as exc:
        ok = False if exc.status == 404 else None
        out.append(Finding(name, "gateway exists", ok, f"{cluster.gateway}: {exc}"))
    return out


async def shared_host_finding(name: str, client: Any, registry: Registry) -> Finding:
    """No other hub's routes claim this instance's hosts on the cluster (see sharing)."""
    check = "no other hub on our hosts"
    try:
        found = await find_shared_hosts(registry, registry.clusters[name], client)
    except KubeError as exc:
        return Finding(name, check, None, str(exc))
    if not found:
        return Finding(name, check, True, f"none in namespace {registry.clusters[name].namespace}")
    return Finding(name, check, False, "; ".join(s.reason(registry) for s in found))


async def gateway_findings(name: str, client: Any, cluster: Cluster) -> list[Finding]:
    """The Gateway exists, is Programmed, and its listeners admit routes from our namespace."""
    gw_ns, gw_name = cluster.gateway.split("/", 1)
    try:
        gateway = await client.read(API_GATEWAYS.path(gw_ns, gw_name))
    except KubeError as exc:
        ok = False if exc.status == 404 else None
        return [Finding(name, "Gateway exists", ok, f"{cluster.gateway}: {exc}")]
    out = [Finding(name, "Gateway exists", True, cluster.gateway)]
    conditions = {c.get("type"): c for c in (gateway.get("status") or {}).get("conditions") or []}
    programmed = conditions.get("Programmed") or {}
    out.append(Finding(name, "Gateway Programmed", programmed.get("status") == "True",
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
    out.append(Finding(name, "Gateway admits our routes", ok, detail))
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


async def run_check(registry: Registry, settings: Settings) -> int:
    try:
        clients = build_clients(registry, settings)
    except ConfigError as exc:
        print(f"federation: {exc}", file=sys.stderr)
        return 2
    failed = False
    try:
        for name, client in clients.items():
            findings = await _check_cluster(name, client, registry)
            activity = registry.clusters[name].activity
            if activity is not None:
                ok, detail = await probe_activity(name, activity, settings.activity_interval)
                findings.append(Finding(name, "activity from Prometheus", ok, detail))
            role = " (home)" if name == registry.home else ""
            print(f"{name}{role}: context {registry.clusters[name].context or '(in-cluster)'}")
            for finding in findings:
                print(finding.line())
                failed |= finding.ok is False
    finally:
        for client in clients.values():
            await client.close()
    print("some checks FAILED" if failed else "all checks passed")
    return 1 if failed else 0
