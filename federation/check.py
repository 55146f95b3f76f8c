"""``federation check``: what works and what does not, per cluster, before going live."""

from __future__ import annotations

import secrets
import sys
from dataclasses import dataclass

from .activity import probe as probe_activity
from .config import Registry
from .errors import ConfigError, KubeError
from .kube import Resource, build_clients
from .objects import API_VERSION, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_ROLE, MANAGED_BY, selector
from .settings import Settings

VIRTUAL_SERVICES = Resource("networking.istio.io", "v1", "virtualservices")
GATEWAYS = Resource("networking.istio.io", "v1", "gateways")


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
        out.append(Finding(name, "reachable", False, str(exc)))
        return out
    try:
        await client.list(VIRTUAL_SERVICES, selector(registry.instance))
        out.append(Finding(name, "auth and list VirtualServices", True, f"namespace {cluster.namespace}"))
    except KubeError as exc:
        hint = " (namespace missing?)" if exc.status == 404 else ""
        out.append(Finding(name, "auth and list VirtualServices", False, f"{exc}{hint}"))
        return out
    try:
        await client.read(f"/api/v1/namespaces/{cluster.namespace}")
        out.append(Finding(name, "namespace exists", True, cluster.namespace))
    except KubeError as exc:
        ok = False if exc.status == 404 else None
        out.append(Finding(name, "namespace exists", ok, str(exc)))
    probe = f"{registry.instance}-check-{secrets.token_hex(4)}"
    body = {
        "apiVersion": API_VERSION, "kind": "VirtualService",
        "metadata": {"name": probe, "namespace": cluster.namespace, "labels": {
            LABEL_MANAGED_BY: MANAGED_BY, LABEL_INSTANCE: registry.instance, LABEL_ROLE: "check"}},
        "spec": {"http": []},
    }
    try:
        await client.create(VIRTUAL_SERVICES, body)
        await client.delete(VIRTUAL_SERVICES, probe)
        out.append(Finding(name, "create and delete VirtualServices", True, "allowed"))
    except KubeError as exc:
        out.append(Finding(name, "create and delete VirtualServices", False, str(exc)))
    gw_ns, gw_name = cluster.gateway.split("/", 1)
    try:
        await client.read(GATEWAYS.path(gw_ns, gw_name))
        out.append(Finding(name, "gateway exists", True, cluster.gateway))
    except KubeError as exc:
        ok = False if exc.status == 404 else None
        out.append(Finding(name, "gateway exists", ok, f"{cluster.gateway}: {exc}"))
    return out


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
