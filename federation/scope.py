"""Where a backend writes: the registry and its cluster, swapped as one on a reload."""

from __future__ import annotations

from dataclasses import dataclass

from .config import Cluster, Registry


@dataclass
class Scope:
    registry: Registry
    cluster: Cluster

    @property
    def instance(self) -> str:
        return self.registry.instance

    @property
    def name(self) -> str:
        return self.cluster.name
