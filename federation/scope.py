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
    # Moves with every change of the registry or cluster: what a backend rendered from an
    # older configuration (memos, a pass that compared everything) it tells by this.
    generation: int = 0

    def change(self, registry: Registry, cluster: Cluster) -> None:
        """A reload: the new registry and cluster, as one."""
        self.registry = registry
        self.cluster = cluster
        self.generation += 1

    @property
    def instance(self) -> str:
        return self.registry.instance

    @property
    def name(self) -> str:
        return self.cluster.name
