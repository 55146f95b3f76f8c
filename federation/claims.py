"""Host claims: which hub may route a gateway host on a cluster, decided before any rule.

A gateway merges every route bound to it for one host, whoever wrote it, so two hubs whose
routes answer for the same host on one cluster serve each other's users (see
:mod:`federation.sharing` for why no object shape keeps them apart on both backends). Each hub
therefore claims every host its plain routes use on a cluster (the hub's public hosts, and on
a remote cluster the ``ingressPublicUrl`` host the edge hop addresses) with a
``coordination.k8s.io/v1`` Lease, *before* it writes a rule there:

* one Lease per (cluster, host), named from the host (:func:`claim_name`), the host itself in
  an annotation; in the cluster's ``claimNamespace``, by default the gateway's namespace: the
  one namespace every hub bound to that gateway knows, whatever namespace its own objects are
  in (one z2jh release per namespace);
* created with create-only semantics: of two hubs creating it at once, the API server accepts
  one and answers the other 409 AlreadyExists;
* ``holderIdentity`` is ``<namespace>/<instance>`` (:func:`holder_identity`): the instance name
  alone is not unique across namespaces (every z2jh release defaults to ``jupyterhub``); the
  replicas of one hub share it, so each of them holds what any of them took;
* renewed by housekeeping (``renewTime``); never taken over on expiry, because a hub that is
  merely down still has its rules on the gateway: only ``federation claims take --from`` hands
  an expired claim over, and ``federation claims release`` removes a hub's claims.

Host routes (JupyterHub's ``subdomain_host``) are not claimed: each hub's user hosts are under
its own domain, and a Lease per user host would cost a write per route.

Pure: names, bodies and judgements; the I/O is :mod:`federation.claimer`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .config import Cluster, Registry
from .kube import Resource
from .model import (
    ANN_HOST,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_ROLE,
    MANAGED_BY,
    dns_label,
    short_hash,
)
from .sharing import claimed_hosts

LEASES = Resource("coordination.k8s.io", "v1", "leases")
ROLE = "host-claim"
LABEL_HOLDER_NAMESPACE = "federation.jupyter.org/holder-namespace"
ANN_GATEWAY = "federation.jupyter.org/gateway"
MIN_DURATION = 60  # seconds: a lease outlives a few missed renewals


@dataclass(frozen=True, order=True)
class Claim:
    """One host of one cluster that a hub's plain routes answer for. Ordered as every hub
    takes its claims (host first: two hubs name their clusters as they like, a host they
    contest is spelled alike), so that of two hubs starting together one wins them all."""

    host: str
    namespace: str  # the Lease's
    cluster: str  # this hub's name for the cluster
    ingress: bool  # the cluster's ingressPublicUrl host (else one of the hub's hosts)

    @property
    def name(self) -> str:
        return claim_name(self.host)

    @property
    def key(self) -> tuple[str, str]:
        return (self.cluster, self.host)


def claim_name(host: str) -> str:
    """The Lease's name: readable, DNS-safe, and unique per host (a hash of the exact host:
    ``a-b.c`` and ``a.b-c`` read alike once made a label)."""
    return dns_label("federation-host", host.replace("*", "wildcard"), short_hash(host))


def holder_identity(registry: Registry, cluster: Cluster) -> str:
    """Who holds a claim: the hub's namespace on that cluster and its instance name."""
    return f"{cluster.namespace}/{registry.instance}"


def claims_of(registry: Registry, cluster: Cluster) -> list[Claim]:
    return sorted(Claim(host, cluster.claim_namespace, cluster.name, ingress)
                  for host, ingress in claimed_hosts(registry, cluster).items())


def wanted_claims(registry: Registry, names: list[str] | None = None) -> list[Claim]:
    """Every claim the hub needs, in the order every hub takes them."""
    return sorted(c for name, cluster in registry.clusters.items()
                  if names is None or name in names for c in claims_of(registry, cluster))


def duration(reconcile_interval: float) -> int:
    """How long a claim counts as renewed: four housekeeping passes, at least a minute."""
    return max(MIN_DURATION, int(4 * reconcile_interval) + 1)


def micro_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_micro_time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def build_lease(registry: Registry, cluster: Cluster, claim: Claim, seconds: int,
                now: datetime) -> dict[str, Any]:
    """A new Lease for ``claim``, held by this hub."""
    holder = holder_identity(registry, cluster)
    stamp = micro_time(now)
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": claim.name,
            "namespace": claim.namespace,
            "labels": _labels(registry, cluster),
            "annotations": {ANN_HOST: claim.host, ANN_GATEWAY: cluster.gateway},
        },
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": seconds,
                 "acquireTime": stamp, "renewTime": stamp, "leaseTransitions": 0},
    }


def _labels(registry: Registry, cluster: Cluster) -> dict[str, str]:
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_ROLE: ROLE, LABEL_INSTANCE: registry.instance,
            LABEL_HOLDER_NAMESPACE: cluster.namespace}


def holder_of(lease: dict[str, Any]) -> str:
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


def renewed(lease: dict[str, Any], seconds: int, now: datetime) -> dict[str, Any]:
    """The Lease as this hub's renewal writes it (its resourceVersion kept: a replace that
    loses to another writer gets 409)."""
    spec = {**(lease.get("spec") or {}), "renewTime": micro_time(now),
            "leaseDurationSeconds": seconds}
    return {**lease, "spec": spec}


def taken_over(lease: dict[str, Any], registry: Registry, cluster: Cluster, seconds: int,
               now: datetime) -> dict[str, Any]:
    """The Lease handed to this hub (``federation claims take``)."""
    meta = lease.get("metadata") or {}
    spec = lease.get("spec") or {}
    stamp = micro_time(now)
    return {**lease,
            "metadata": {**meta, "labels": {**(meta.get("labels") or {}),
                                            **_labels(registry, cluster)}},
            "spec": {**spec, "holderIdentity": holder_identity(registry, cluster),
                     "leaseDurationSeconds": seconds, "acquireTime": stamp, "renewTime": stamp,
                     "leaseTransitions": int(spec.get("leaseTransitions") or 0) + 1}}


def expires_at(lease: dict[str, Any]) -> datetime | None:
    """When the holder's last renewal runs out (None: never renewed, counts as expired)."""
    spec = lease.get("spec") or {}
    renew = parse_micro_time(spec.get("renewTime") or spec.get("acquireTime"))
    if renew is None:
        return None
    return renew + timedelta(seconds=int(spec.get("leaseDurationSeconds") or 0))


def expired(lease: dict[str, Any], now: datetime) -> bool:
    until = expires_at(lease)
    return until is None or until <= now


@dataclass(frozen=True)
class HeldElsewhere:
    """A claim this hub needs that another hub holds."""

    claim: Claim
    holder: str  # "<namespace>/<instance>"

    def reason(self, registry: Registry, config: str = "clusters.yaml") -> str:
        claim = self.claim
        cluster = registry.clusters.get(claim.cluster)
        if claim.ingress and cluster is not None:
            what = (f"the ingress host {claim.host} of cluster {claim.cluster!r} "
                    f"(ingressPublicUrl {cluster.ingress_public_url})")
            fix = (f"give each hub its own ingressPublicUrl host for {claim.cluster!r} (another "
                   "DNS name for the same ingress gateway, accepted by its Gateway and "
                   "certificate)")
        else:
            what = f"the host {claim.host} on cluster {claim.cluster!r}"
            fix = "give each hub its own public host (`hosts`)"
        gateway = f" on gateway {cluster.gateway}" if cluster is not None else ""
        return (f"{what}{gateway} is claimed by hub {self.holder!r} (Lease {claim.namespace}/"
                f"{claim.name}); this hub ({registry.instance!r}) must not route it too: the "
                f"gateway would mix their users' routes. Fix: {fix}; if {self.holder!r} is "
                f"gone for good, delete its objects and run `federation claims take --from "
                f"{self.holder} --config {config}`")

    def describe(self, registry: Registry, config: str = "clusters.yaml") -> dict[str, Any]:
        return {"host": self.claim.host, "holder": self.holder,
                "lease": f"{self.claim.namespace}/{self.claim.name}",
                "reason": self.reason(registry, config)}
