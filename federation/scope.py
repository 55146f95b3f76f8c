"""Where a backend writes: the registry and its cluster, swapped as one on a reload."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .config import Cluster, Registry


def _every_cluster(name: str) -> bool:
    return True


@dataclass
class Scope:
    registry: Registry
    cluster: Cluster
    # Whether this hub holds the host claims of a cluster (by name), so that a rule sending
    # traffic to that cluster's hosts may be rendered again (the service sets it: claimer.py).
    claimed: Callable[[str], bool] = field(default=_every_cluster)

    @property
    def instance(self) -> str:
        return self.registry.instance

    @property
    def name(self) -> str:
        return self.cluster.name
