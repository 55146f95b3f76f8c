"""The one place a cluster's backend is chosen (clusters.yaml ``backend``): the factory, above
the backends. What a backend is (the protocols every backend implements) is the low floor
below them, :mod:`federation.seam`; nothing outside a backend's own package imports it but this.
"""

from __future__ import annotations

from .config import Cluster
from .gateway.backend import GatewayBackend
from .gateway.builders import GatewayBuilders
from .istio.backend import IstioBackend
from .istio.builders import IstioBuilders
from .mirror import RouteEntries
from .scope import Scope
from .seam import Backend, Builders, Check, Pace

__all__ = ["Backend", "Builders", "Check", "Pace", "builders", "make_backend"]


def builders(cluster: Cluster) -> Builders:
    """The pure side of the cluster's backend."""
    return GatewayBuilders() if cluster.backend == "gateway-api" else IstioBuilders()


def make_backend(scope: Scope, entries: RouteEntries, capacity: int) -> Backend:
    """The backend of the scope's cluster, keeping the cluster's route-entry index."""
    if scope.cluster.backend == "gateway-api":
        return GatewayBackend(scope, entries)
    return IstioBackend(scope, entries, capacity)
