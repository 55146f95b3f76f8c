"""``federation claims``: list this hub's host claims, release them when the hub is removed,
or take over those of a hub that is gone (federation/claims.py says what a claim is).

Taking over is never automatic: a hub whose claim expired may merely be down, with its rules
still on the gateway, and a silent take-over would mix the two hubs' users the moment it came
back. So ``take --from`` names the hub, and hands over only claims it has stopped renewing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

from .backend import route_kind
from .claimer import now
from .claims import (
    LEASES,
    Claim,
    HeldElsewhere,
    build_lease,
    expired,
    expires_at,
    holder_identity,
    holder_of,
    micro_time,
    taken_over,
    wanted_claims,
)
from .claims import duration as lease_duration
from .config import Registry
from .errors import Conflict, KubeError, NotFound
from .kube import ClusterClient, build_clients
from .model import selector
from .settings import Settings

Line = tuple[bool, str]  # (fine, what to print)


async def _lease(client: ClusterClient, claim: Claim) -> dict[str, Any] | None:
    try:
        return await client.get(LEASES, claim.name, namespace=claim.namespace)
    except NotFound:
        return None


def _until(lease: dict[str, Any]) -> str:
    until = expires_at(lease)
    return "never renewed" if until is None else f"renewed until {micro_time(until)}"


async def list_claims(registry: Registry, clients: dict[str, ClusterClient]) -> list[Line]:
    lines = []
    for claim in wanted_claims(registry):
        where = f"{claim.cluster} {claim.host} (Lease {claim.namespace}/{claim.name})"
        lease = await _lease(clients[claim.cluster], claim)
        if lease is None:
            lines.append((True, f"{where}: not claimed"))
            continue
        holder = holder_of(lease)
        mine = holder == holder_identity(registry, registry.clusters[claim.cluster])
        lines.append((mine, f"{where}: held by {'this hub' if mine else 'hub'} {holder!r}, "
                            f"{_until(lease)}"))
    return lines


async def claims_finding(registry: Registry, name: str,
                         client: ClusterClient) -> tuple[bool | None, str]:
    """`federation check`: (ok, detail) of the cluster's host claims: free or this hub's, or
    held by another hub (with the fix); None when the Leases cannot be read."""
    cluster = registry.clusters[name]
    me = holder_identity(registry, cluster)
    claims = wanted_claims(registry, [name])
    try:
        leases = [(c, await _lease(client, c)) for c in claims]
    except KubeError as exc:
        return None, (f"cannot read Leases in namespace {cluster.claim_namespace} ({exc}); "
                      "grant get/create/update/delete on leases there (remote-rbac.yaml)")
    others = [HeldElsewhere(c, holder_of(lease)) for c, lease in leases
              if lease is not None and holder_of(lease) != me]
    if others:
        return False, "; ".join(o.reason(registry, str(registry.path or "clusters.yaml"))
                                for o in others)
    held = sum(1 for _, lease in leases if lease is not None)
    return True, (f"{held} of {len(claims)} hosts claimed by this hub, none by another "
                  f"(namespace {cluster.claim_namespace})")


async def _own_objects_left(registry: Registry, client: ClusterClient, cluster: str) -> bool:
    res = route_kind(registry.clusters[cluster]).resource
    page = await client.list(res, selector(registry.instance), limit=1)
    return bool(page.get("items"))


async def release_claims(registry: Registry, clients: dict[str, ClusterClient]) -> list[Line]:
    """Delete this hub's claims, on each cluster once its routing objects are gone (a claim
    given up while its rules still answer would let another hub mix its users with them)."""
    lines: list[Line] = []
    left: dict[str, bool] = {}
    for claim in wanted_claims(registry):
        client = clients[claim.cluster]
        where = f"{claim.cluster} {claim.host}"
        lease = await _lease(client, claim)
        me = holder_identity(registry, registry.clusters[claim.cluster])
        if lease is None or holder_of(lease) != me:
            lines.append((True, f"{where}: not held by this hub, left alone"))
            continue
        if claim.cluster not in left:
            left[claim.cluster] = await _own_objects_left(registry, client, claim.cluster)
        if left[claim.cluster]:
            lines.append((False, f"{where}: kept: this hub's routing objects are still on "
                                 f"cluster {claim.cluster!r}; delete them first "
                                 "(docs/operations.md section 9)"))
            continue
        version = (lease.get("metadata") or {}).get("resourceVersion")
        await client.delete(LEASES, claim.name, version, namespace=claim.namespace)
        lines.append((True, f"{where}: released"))
    return lines


def _is(holder: str, named: str) -> bool:
    """``named`` is ``<namespace>/<instance>`` as errors print it, or the instance alone."""
    return holder == named or ("/" not in named and holder.endswith("/" + named))


async def take_claims(registry: Registry, clients: dict[str, ClusterClient], other: str,
                      seconds: int, clock: Callable[[], datetime] = now) -> list[Line]:
    """Hand this hub the claims ``other`` holds and no longer renews."""
    lines: list[Line] = []
    for claim in wanted_claims(registry):
        client = clients[claim.cluster]
        cluster = registry.clusters[claim.cluster]
        where = f"{claim.cluster} {claim.host}"
        lease = await _lease(client, claim)
        if lease is None:
            await client.create(LEASES, build_lease(registry, cluster, claim, seconds, clock()),
                                namespace=claim.namespace)
            lines.append((True, f"{where}: was not claimed; claimed"))
            continue
        holder = holder_of(lease)
        if not _is(holder, other):
            mine = holder == holder_identity(registry, cluster)
            lines.append((True, f"{where}: held by {'this hub' if mine else repr(holder)}, "
                                "left alone"))
            continue
        if not expired(lease, clock()):
            lines.append((False, f"{where}: {holder!r} still renews it ({_until(lease)}): it "
                                 "is running; stop it and delete its objects first, then "
                                 "try again once the claim has expired"))
            continue
        try:
            await client.replace(LEASES, taken_over(lease, registry, cluster, seconds, clock()),
                                 name=claim.name, namespace=claim.namespace)
        except Conflict:
            lines.append((False, f"{where}: the claim changed meanwhile; try again"))
            continue
        lines.append((True, f"{where}: taken over from {holder!r}"))
    return lines


async def run_claims(registry: Registry, settings: Settings, action: str,
                     other: str | None = None) -> int:
    """Print one line per claim; exit 1 when any needs the operator, 2 on a cluster error."""
    clients = build_clients(registry, settings)
    seconds = lease_duration(settings.reconcile_interval)
    try:
        if action == "list":
            lines = await list_claims(registry, clients)
        elif action == "release":
            lines = await release_claims(registry, clients)
        else:
            assert other is not None
            lines = await take_claims(registry, clients, other, seconds)
    except KubeError as exc:
        print(f"federation claims {action}: cluster {exc.cluster!r}: {exc}")
        return 2
    finally:
        await asyncio.gather(*(c.close() for c in clients.values()))
    for fine, text in lines:
        print(("ok   " if fine else "FAIL ") + text if action != "list" else text)
    return 0 if action == "list" or all(fine for fine, _ in lines) else 1
