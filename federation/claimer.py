"""The host claims one process holds: taken at start (and on reload), renewed by housekeeping,
consulted by the write path from memory (see :mod:`federation.claims` for what a claim is).

:class:`HostClaims` is the one owner of that state; the service holds one. A hub alone on its
clusters pays one create per claim at start and one renewal per claim per housekeeping pass;
a route write only looks at :meth:`HostClaims.holds`, a set lookup, unless its cluster's claims
could not be taken yet (the cluster was down), when it takes them first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from . import metrics
from .claims import (
    LEASES,
    Claim,
    HeldElsewhere,
    build_lease,
    claims_of,
    duration,
    holder_identity,
    holder_of,
    renewed,
    wanted_claims,
)
from .config import Registry
from .errors import (
    ClusterUnavailable,
    ConfigError,
    Conflict,
    HostClaimed,
    KubeError,
    NotFound,
    Rejected,
)
from .kube import Resource

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (cluster, host)


class LeaseClient(Protocol):
    """What claims need of a cluster's client (federation.kube.ClusterClient)."""

    async def create(self, res: Resource, body: dict[str, Any] | bytes, name: str | None = None,
                     namespace: str | None = None) -> dict[str, Any]: ...

    async def get(self, res: Resource, name: str,
                  namespace: str | None = None) -> dict[str, Any]: ...

    async def replace(self, res: Resource, body: dict[str, Any] | bytes, name: str | None = None,
                      namespace: str | None = None) -> dict[str, Any]: ...

    async def delete(self, res: Resource, name: str, resource_version: str | None = None,
                     namespace: str | None = None) -> None: ...


Clients = Mapping[str, LeaseClient]


def now() -> datetime:
    return datetime.now(UTC)


def _reached(registry: Registry, name: str) -> tuple[object, ...] | None:
    """Which API server a cluster name stands for (its namespace or backend may change and the
    claims stay: they are the same cluster's)."""
    cluster = registry.clusters.get(name)
    return None if cluster is None else (cluster.context, cluster.in_cluster, registry.kubeconfig)


class HostClaims:
    def __init__(self, registry: Registry, reconcile_interval: float,
                 config: str = "clusters.yaml") -> None:
        self.registry = registry
        self.config = config  # named in the fix each refusal gives
        self.seconds = duration(reconcile_interval)
        self.held: dict[Key, dict[str, Any]] = {}  # the Lease as last written or read
        self.elsewhere: dict[Key, HeldElsewhere] = {}
        self.ready: set[str] = set()  # clusters whose every claim is held
        # This hub's holder identities per cluster (a reload may change a cluster's namespace:
        # its claims stay this hub's). Per cluster: this hub's name on one cluster may be
        # another hub's on another (its namespace differs per cluster).
        self.identities: dict[str, set[str]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.fresh: list[Claim] = []  # created by this start: given back if it is refused
        # Leases of API servers a reload being prepared no longer reaches: dropped by adopt.
        self._superseded: set[Key] = set()
        self._gauged: set[str] = set()  # clusters the conflicts gauge has a value for

    # -- what the write path and the status pages ask -----------------------------------------

    def holds(self, cluster: str) -> bool:
        return cluster in self.ready

    def conflicts(self, cluster: str | None = None) -> list[HeldElsewhere]:
        return [c for k, c in sorted(self.elsewhere.items()) if cluster in (None, k[0])]

    def describe(self, cluster: str) -> dict[str, Any]:
        """What /clusters shows: the hosts held, those another hub holds, those not yet taken."""
        c = self.registry.clusters.get(cluster)
        hosts = [claim.host for claim in claims_of(self.registry, c)] if c else []
        return {"held": [h for h in hosts if (cluster, h) in self.held],
                "held_elsewhere": [x.describe(self.registry, self.config)
                                   for x in self.conflicts(cluster)],
                "not_yet_claimed": [h for h in hosts if (cluster, h) not in self.held
                                    and (cluster, h) not in self.elsewhere]}

    # -- taking ---------------------------------------------------------------------------------

    async def take(self, registry: Registry, client: LeaseClient,
                   claim: Claim) -> tuple[HeldElsewhere | None, bool]:
        """Take one claim: (None, created) when this hub holds it now, else who does."""
        cluster = registry.clusters[claim.cluster]
        mine = self.identities.setdefault(claim.cluster, set())
        mine.add(holder_identity(registry, cluster))
        for _ in range(3):
            try:
                lease = await client.create(LEASES, build_lease(registry, cluster, claim,
                                                                self.seconds, now()),
                                            namespace=claim.namespace)
                self._hold(claim, lease)
                log.info("cluster %s: claimed host %s (Lease %s/%s)", claim.cluster, claim.host,
                         claim.namespace, claim.name,
                         extra={"cluster": claim.cluster, "event": "host-claimed"})
                return None, True
            except Conflict:
                pass  # it exists: whose is it?
            except NotFound:
                # The namespace is missing (a real gateway's namespace exists): say which key.
                raise Rejected(
                    f"cluster {claim.cluster!r}: cannot claim host {claim.host}: namespace "
                    f"{claim.namespace} not found; set the cluster's claimNamespace (default: "
                    "the gateway's namespace) to a namespace that exists",
                    cluster=claim.cluster, verb="create") from None
            try:
                lease = await client.get(LEASES, claim.name, namespace=claim.namespace)
            except NotFound:
                continue  # released in between: create it again
            holder = holder_of(lease)
            if holder in mine:
                self._hold(claim, lease)  # ours: taken before (a restart, another replica)
                return None, False
            found = HeldElsewhere(claim, holder)
            self._elsewhere(registry, found)
            return found, False
        raise Conflict(f"the Lease {claim.namespace}/{claim.name} keeps changing; try again",
                       cluster=claim.cluster, verb="create", status=409)

    async def take_all(self, registry: Registry, clients: Clients,
                       fresh: Callable[[Claim], bool] | None = None,
                       ) -> tuple[list[HeldElsewhere], list[Claim]]:
        """Take every claim not held yet, one at a time in the order every hub uses, stopping
        at the first one another hub holds: of two hubs starting together, the one that wins
        the first claim they contest goes on to win them all, the other stops. A cluster that
        cannot be reached is logged and passed over (the write path and housekeeping take its
        claims later). ``fresh``: which claims to take (default: those not held).
        Returns (the claim held elsewhere, if any; the claims created)."""
        created: list[Claim] = []
        for claim in wanted_claims(registry):
            client = clients.get(claim.cluster)
            wanted = fresh(claim) if fresh is not None else claim.key not in self.held
            if not wanted or client is None:
                continue
            try:
                found, new = await self.take(registry, client, claim)
            except KubeError as exc:
                log.warning("cluster %s: cannot claim host %s yet (routes there wait for it): %s",
                            claim.cluster, claim.host, exc,
                            extra={"cluster": claim.cluster, "event": "host-claim-unknown"})
                continue
            if new:
                created.append(claim)
            if found is not None:
                return [found], created
        return [], created

    async def start(self, clients: Clients) -> None:
        """Take every claim before anything is written; ConfigError (and what was just taken
        given back) when another hub holds one."""
        found, self.fresh = await self.take_all(self.registry, clients)
        self._settle()
        if found:
            await self.give_back_all(clients)
            raise ConfigError("refusing to start: " + "; ".join(
                f.reason(self.registry, self.config) for f in found))

    async def give_back_all(self, clients: Clients) -> None:
        """The start is refused after all: what it created goes (a hub that never wrote a
        rule must not keep another from its hosts)."""
        fresh, self.fresh = self.fresh, []
        await self._give_back(fresh, clients)

    async def prepare(self, registry: Registry, clients: Clients) -> None:
        """A reload: take the claims the new configuration adds (new hosts, and every claim of
        a cluster it adds or reaches anew) before it is applied; ConfigError (the running
        configuration kept, what was just taken given back) when another hub holds one. A
        conflict the running configuration already has stays with housekeeping: it does not
        block unrelated reloads."""
        self._superseded = set()
        before = {c.key for c in wanted_claims(self.registry)}
        moved = {n for n in registry.clusters if _reached(registry, n) != _reached(self.registry, n)}

        def fresh(claim: Claim) -> bool:
            return claim.key not in before or claim.cluster in moved

        # What is held on a cluster that now reaches another API server was read from the old
        # one: it counts only once taken again on the new one.
        before_held = {k: v for k, v in self.held.items() if k[0] in moved}
        found, created = await self.take_all(registry, clients, fresh)
        if found:
            await self._give_back(created, clients)
            self.held.update(before_held)  # the running configuration still uses the old one
            for f in found:
                self.elsewhere.pop(f.claim.key, None)  # judged for a configuration not applied
            self._settle()
            raise ConfigError("; ".join(f.reason(registry, self.config) for f in found))
        self._superseded = {k for k, v in before_held.items() if self.held.get(k) is v}

    def adopt(self, registry: Registry) -> None:
        """The reload is applied: claims of hosts or clusters no longer used stay in place
        (this hub's rules may still be there) but are no longer renewed."""
        wanted = {c.key for c in wanted_claims(registry)}
        for key in self._superseded:
            # Held on the API server this cluster name reached before, not taken yet on the
            # one it reaches now (out of reach during the reload): its writes wait for it.
            self.held.pop(key, None)
        self._superseded = set()
        for key in [k for k in self.held if k not in wanted]:
            log.info("cluster %s: host %s is no longer routed by this hub; its claim is left to "
                     "expire (`federation claims release` removes it)", key[0], key[1],
                     extra={"cluster": key[0], "event": "host-claim-dropped"})
            del self.held[key]
        for key in [k for k in self.elsewhere if k not in wanted]:
            del self.elsewhere[key]
        self.registry = registry
        self._settle()

    async def require(self, cluster: str, client: LeaseClient) -> None:
        """Before a route is written to ``cluster``: its claims held (taken now if the cluster
        could not be reached before), else HostClaimed naming the other hub."""
        if cluster in self.ready:
            return
        lock = self._locks.setdefault(cluster, asyncio.Lock())
        async with lock:
            known = self.registry.clusters.get(cluster)
            if known is not None and cluster not in self.ready and not self.conflicts(cluster):
                for claim in claims_of(self.registry, known):
                    if claim.key not in self.held:
                        found, _ = await self.take(self.registry, client, claim)
                        if found is not None:
                            break
                self._settle()
        if cluster in self.ready:
            return
        if not self.conflicts(cluster):
            # A reload removed the cluster while this write waited (or swapped its claims):
            # nothing written; the hub tries again with the configuration now running.
            raise ClusterUnavailable(f"cluster {cluster!r}: its host claims are not held (the "
                                     "configuration changed meanwhile); try again",
                                     cluster=cluster, verb="claim")
        conflict = self.conflicts(cluster)[0]
        metrics.HOST_CLAIM_REFUSALS.labels(cluster).inc()
        raise HostClaimed("refused, nothing written: " + conflict.reason(self.registry,
                                                                          self.config),
                          cluster=cluster, holder=conflict.holder)

    # -- housekeeping ---------------------------------------------------------------------------

    async def keep(self, clients: Clients) -> None:
        """Renew what is held; try again what is not (another hub may have released it, a
        cluster may be back). One write per held claim."""
        registry = self.registry
        for key in list(self.held):
            client = clients.get(key[0])
            if client is not None:
                await self._renew(registry, client, key)
        for claim in wanted_claims(registry):
            client = clients.get(claim.cluster)
            if claim.key in self.held or client is None:
                continue
            try:
                await self.take(registry, client, claim)
            except KubeError as exc:
                log.info("cluster %s: cannot claim host %s yet: %s", claim.cluster, claim.host,
                         exc, extra={"cluster": claim.cluster})
        self._settle()

    async def _renew(self, registry: Registry, client: LeaseClient, key: Key) -> None:
        lease = self.held[key]
        meta = lease.get("metadata") or {}
        name, namespace = str(meta.get("name")), str(meta.get("namespace"))
        try:
            try:
                body = renewed(lease, self.seconds, now())
                cluster = registry.clusters.get(key[0])
                if cluster is not None:  # a reload may have moved the hub's namespace
                    body["spec"]["holderIdentity"] = holder_identity(registry, cluster)
                    self.identities.setdefault(key[0], set()).add(holder_identity(registry,
                                                                                  cluster))
                self.held[key] = await client.replace(LEASES, body, name=name,
                                                      namespace=namespace)
                return
            except Conflict:
                current = await client.get(LEASES, name, namespace=namespace)
            if holder_of(current) in self.identities.get(key[0], set()):  # another replica
                self.held[key] = current
                return
            del self.held[key]
            claim = next((c for c in wanted_claims(registry) if c.key == key), None)
            if claim is not None:
                self._elsewhere(registry, HeldElsewhere(claim, holder_of(current)))
        except NotFound:
            # Deleted by hand: this hub's rules are still there, so it claims the host again.
            del self.held[key]
            log.warning("cluster %s: the claim of host %s was deleted; claiming it again",
                        key[0], key[1], extra={"cluster": key[0], "event": "host-claim-lost"})
        except KubeError as exc:
            log.info("cluster %s: cannot renew the claim of host %s yet: %s", key[0], key[1],
                     exc, extra={"cluster": key[0]})

    # -- bookkeeping ----------------------------------------------------------------------------

    def _hold(self, claim: Claim, lease: dict[str, Any]) -> None:
        self.held[claim.key] = lease
        if self.elsewhere.pop(claim.key, None) is not None:
            log.info("cluster %s: host %s is no longer claimed by another hub; this hub holds it",
                     claim.cluster, claim.host,
                     extra={"cluster": claim.cluster, "event": "host-claim-resolved"})

    def _elsewhere(self, registry: Registry, found: HeldElsewhere) -> None:
        known = self.elsewhere.get(found.claim.key)
        self.elsewhere[found.claim.key] = found
        if known is None or known.holder != found.holder:
            log.error("cluster %s: %s", found.claim.cluster, found.reason(registry, self.config),
                      extra={"cluster": found.claim.cluster, "event": "host-claimed-elsewhere",
                             "host": found.claim.host, "holder": found.holder})

    def _settle(self) -> None:
        """Which clusters are ready for writes, and the conflicts gauge."""
        self.ready = {name for name, cluster in self.registry.clusters.items()
                      if all(c.key in self.held for c in claims_of(self.registry, cluster))}
        for name in self.registry.clusters:
            metrics.HOST_CLAIM_CONFLICTS.labels(name).set(len(self.conflicts(name)))
        for name in self._gauged - set(self.registry.clusters):
            # A cluster a reload removed (perhaps to end a conflict): no stale alert.
            with contextlib.suppress(KeyError):
                metrics.HOST_CLAIM_CONFLICTS.remove(name)
        self._gauged = set(self.registry.clusters)

    async def _give_back(self, claims: list[Claim], clients: Clients) -> None:
        """Delete claims this process created just now (a refused start or reload)."""
        for claim in claims:
            lease = self.held.pop(claim.key, None)
            client = clients.get(claim.cluster)
            if lease is None or client is None:
                continue
            version = (lease.get("metadata") or {}).get("resourceVersion")
            try:
                await client.delete(LEASES, claim.name, version, namespace=claim.namespace)
            except KubeError as exc:
                log.warning("cluster %s: could not give back the claim of host %s: %s",
                            claim.cluster, claim.host, exc, extra={"cluster": claim.cluster})
        self._settle()
