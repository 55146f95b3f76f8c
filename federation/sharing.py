"""Hubs that share clusters: which gateway hosts another instance's routes claim too.

Each instance (one hub) writes its own objects, labelled with its name, so listing, deleting
and housekeeping never touch another hub's. Routing is another matter: the gateway merges
every route bound to it for one host, whoever wrote it. Two hubs whose routes claim the same
host on one cluster (most often a remote cluster's ingress host, where the edge hop sends
plain routes) serve each other's users: ``/user/alice`` of the second hub reaches the first
hub's alice, as the older object wins. Istio could keep them apart by a header the edge sets,
but the Gateway API ranks the longest path before any header match and has no match on the
host within a route, so no object shape keeps both backends exactly configurable-http-proxy's
while one host carries two hubs. The set-up is refused instead, naming the fix.

What is read: another instance's plain roots (Istio) or plain HTTPRoutes (Gateway API) in the
cluster's namespace; they list the hosts its routes claim there. Hubs writing into another
namespace are out of reach of the service's RBAC and are not seen.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from .backend import route_kind
from .config import Cluster, Registry
from .errors import ConfigError, KubeError
from .kube import Resource
from .model import ANN_HOST, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_ROLE, MANAGED_BY

log = logging.getLogger(__name__)

# Every plain object of one instance claims the same hosts, so one of each instance is enough;
# a page is what it takes to meet one among host routes.
PAGE = 100


class Lister(Protocol):
    async def list(self, res: Resource, label_selector: str, limit: int | None = None,
                   continue_token: str | None = None) -> dict[str, Any]: ...


@dataclass(frozen=True)
class SharedHost:
    """A host this instance's routes claim on ``cluster`` that instance ``other``'s claim too."""

    cluster: str
    host: str
    other: str
    ingress: bool  # the cluster's ingressPublicUrl host (else one of the hub's hosts)

    def reason(self, registry: Registry) -> str:
        cluster = registry.clusters[self.cluster]
        if self.ingress:
            what = (f"the ingress host {self.host} of cluster {self.cluster!r} "
                    f"(ingressPublicUrl {cluster.ingress_public_url})")
            fix = (f"give each hub its own ingressPublicUrl host for {self.cluster!r} (another "
                   "DNS name for the same ingress gateway, accepted by its Gateway and "
                   "certificate)")
        else:
            what = f"the host {self.host} on cluster {self.cluster!r}"
            fix = "give each hub its own public host (`hosts`)"
        return (f"instance {registry.instance!r} and instance {self.other!r} both route "
                f"{what} on gateway {cluster.gateway} (namespace {cluster.namespace}): the "
                f"gateway would mix their users' routes. Fix: {fix}; if {self.other!r} is "
                f"gone, delete its objects (label {LABEL_INSTANCE}={self.other})")


def claimed_hosts(registry: Registry, cluster: Cluster) -> dict[str, bool]:
    """The hosts this instance's plain routes claim on ``cluster``: host -> is the ingress's."""
    hosts = {h: False for h in cluster.hosts}
    if cluster.name != registry.home and cluster.ingress_origin is not None:
        # Edge traffic from the home cluster arrives addressed to this cluster's ingress host.
        hosts[cluster.ingress_origin[1]] = True
    return hosts


def plain_claim(obj: dict[str, Any]) -> tuple[str, list[str]] | None:
    """(instance, hosts) of a plain root or HTTPRoute; None for anything else (a host route
    claims a host of its own, which two hubs do not share)."""
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    if labels.get(LABEL_MANAGED_BY) != MANAGED_BY or ANN_HOST in (meta.get("annotations") or {}):
        return None
    spec = obj.get("spec") or {}
    if labels.get(LABEL_ROLE) == "root":
        hosts = spec.get("hosts")
    elif labels.get(LABEL_ROLE) == "route":
        hosts = spec.get("hostnames")
    else:
        return None
    instance = labels.get(LABEL_INSTANCE)
    if not instance or not isinstance(hosts, list):
        return None
    return instance, [h for h in hosts if isinstance(h, str)]


def shared_hosts(registry: Registry, cluster: Cluster,
                 objects: Iterable[dict[str, Any]]) -> list[SharedHost]:
    """The hosts of ``cluster`` that other instances' objects claim too."""
    mine = claimed_hosts(registry, cluster)
    found: dict[tuple[str, str], SharedHost] = {}
    for obj in objects:
        claim = plain_claim(obj)
        if claim is None or claim[0] == registry.instance:
            continue
        for host in claim[1]:
            if host in mine:
                found[(claim[0], host)] = SharedHost(cluster.name, host, claim[0], mine[host])
    return [found[k] for k in sorted(found)]


def _others_selector(cluster: Cluster, judged: set[str]) -> str:
    role = route_kind(cluster).claim_role
    return (f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_ROLE}={role},"
            f"{LABEL_INSTANCE} notin ({','.join(sorted(judged))})")


async def find_shared_hosts(registry: Registry, cluster: Cluster,
                            client: Lister) -> list[SharedHost]:
    """Read ``cluster``'s namespace for other instances claiming our hosts. One plain object
    per instance is read at most once: a query leaves out the instances already judged."""
    res = route_kind(cluster).resource
    judged = {registry.instance}
    found: list[SharedHost] = []
    token: str | None = None
    while True:
        page = await client.list(res, _others_selector(cluster, judged), limit=PAGE,
                                 continue_token=token)
        fresh = False
        for obj in page.get("items") or []:
            claim = plain_claim(obj)
            if claim is None or claim[0] in judged:
                continue
            judged.add(claim[0])
            fresh = True
            found += shared_hosts(registry, cluster, [obj])
        # Asking again without the instances just judged skips the rest of their objects.
        token = None if fresh else (page.get("metadata") or {}).get("continue")
        if not fresh and not token:
            return found


async def _look(registry: Registry, name: str, client: Lister) -> list[SharedHost]:
    try:
        return await find_shared_hosts(registry, registry.clusters[name], client)
    except KubeError as exc:
        # A down cluster must not keep the hub's proxy down; check and the next start judge it.
        log.warning("cluster %s: could not look for other hubs sharing its hosts: %s",
                    name, exc, extra={"cluster": name, "event": "shared-hosts-unknown"})
        return []


async def refuse_shared_hosts(registry: Registry, clients: dict[str, Lister]) -> None:
    """ConfigError naming every host another instance claims too, each also logged with its
    cluster. A cluster that cannot be read is logged and passed over."""
    names = list(clients)
    results = await asyncio.gather(*(_look(registry, n, clients[n]) for n in names))
    reasons = []
    for name, found in zip(names, results, strict=True):
        for shared in found:
            log.error("cluster %s: %s", name, shared.reason(registry),
                      extra={"cluster": name, "event": "shared-host"})
            reasons.append(shared.reason(registry))
    if reasons:
        raise ConfigError("refusing to start: " + "; ".join(reasons))
