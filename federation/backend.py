"""The one place a cluster's backend is chosen (clusters.yaml ``backend``): the factory, above
the backends. What a backend is (the protocols every backend implements) is the low floor
below them, :mod:`federation.seam`; nothing outside a backend's own package imports it but this.
"""

from __future__ import annotations

from collections.abc import Callable

from .config import Cluster
from .gateway import check as gateway_check
from .gateway.backend import GatewayBackend, kinds_for
from .gateway.builders import GatewayBuilders
from .gateway.index import RouteObjectIndex
from .istio import check as istio_check
from .istio.backend import KIND_SET, IstioBackend
from .istio.builders import IstioBuilders
from .istio.index import ShardIndex
from .mirror import Mirror, RouteEntries
from .scope import Scope
from .seam import Backend, Builders, Check, Kinds, Pace, RouteIndex, RouteKind

__all__ = ["Backend", "Builders", "Check", "MirrorOf", "Pace", "builders", "make_backend",
           "route_kind"]

# Makes a cluster's mirror from its backend's kinds and index (the store knows the rest).
MirrorOf = Callable[[Kinds, RouteIndex], Mirror]


def _gateway_api(cluster: Cluster) -> bool:
    return cluster.backend == "gateway-api"


def builders(cluster: Cluster) -> Builders:
    """The pure side of the cluster's backend."""
    return GatewayBuilders() if _gateway_api(cluster) else IstioBuilders()


def route_kind(cluster: Cluster) -> RouteKind:
    """The route-holding kind of the cluster's backend."""
    return gateway_check.ROUTE if _gateway_api(cluster) else istio_check.ROUTE


def make_backend(scope: Scope, entries: RouteEntries, capacity: int,
                 mirror_of: MirrorOf) -> tuple[Mirror, Backend]:
    """The scope's cluster's mirror and backend: the backend's index (keeping the cluster's
    route-entry index) and its kinds make the mirror first, which the backend is made with."""
    if _gateway_api(scope.cluster):
        routes = RouteObjectIndex(entries)
        mirror = mirror_of(kinds_for(scope.cluster), routes)
        return mirror, GatewayBackend(scope, mirror, routes)
    shards = ShardIndex(scope.instance, entries)
    mirror = mirror_of(KIND_SET, shards)
    return mirror, IstioBackend(scope, mirror, shards, capacity)
