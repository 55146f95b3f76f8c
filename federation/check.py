"""``federation check``: what works and what does not, per cluster, before going live."""

from __future__ import annotations

import secrets
import sys
from dataclasses import dataclass
from typing import Any

from .activity import probe as probe_activity
from .backend import builders, route_kind
from .claims_cli import claims_finding
from .config import Registry
from .destinations import check_finding
from .errors import ConfigError, KubeError
from .kube import build_clients
from .model import labels, selector
from .settings import Settings
from .sharing import find_shared_hosts


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
    side = builders(cluster)
    route = route_kind(cluster)
    kind, res = route.shown, route.resource
    try:
        await client.list(res, selector(registry.instance))
        out.append(Finding(name, f"auth and list {kind}", True, f"namespace {cluster.namespace}"))
    except KubeError as exc:
        hint = " (namespace missing, or the CRDs?)" if exc.status == 404 else ""
        out.append(Finding(name, f"auth and list {kind}", False, f"{exc}{hint}"))
        return out
    out.append(await shared_host_finding(name, client, registry))
    ok, detail = await claims_finding(registry, name, client)
    out.append(Finding(name, "our hosts not claimed by another hub", ok, detail))
    try:
        await client.read(f"/api/v1/namespaces/{cluster.namespace}")
        out.append(Finding(name, "namespace exists", True, cluster.namespace))
    except KubeError as exc:
        ok = False if exc.status == 404 else None
        out.append(Finding(name, "namespace exists", ok, str(exc)))
    probe = f"{registry.instance}-check-{secrets.token_hex(4)}"
    meta = {"name": probe, "namespace": cluster.namespace, "labels": labels(registry.instance, "check")}
    try:
        await client.create(res, route.probe_object(meta))
        await client.delete(res, probe)
        out.append(Finding(name, f"create and delete {kind}", True, "allowed"))
    except KubeError as exc:
        out.append(Finding(name, f"create and delete {kind}", False, str(exc)))
    out += [Finding(name, check, ok, detail)
            for check, ok, detail in await side.gateway_findings(client, cluster)]
    out.append(Finding(name, *await check_finding(registry, cluster, client, res)))
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
