"""The Gateway API backend's pure side (:class:`federation.seam.Builders`): what plans, docs,
activity and ``federation check`` need of it without a cluster."""

from __future__ import annotations

from typing import Any

from ..config import Cluster, Registry
from ..model import Entry
from ..placement import Destination
from . import check, objects


class GatewayBuilders:
    gateway_findings = staticmethod(check.gateway_findings)

    @staticmethod
    def check_route(registry: Registry, cluster: Cluster, entry: Entry) -> None:
        objects.check_route(registry, cluster, entry)

    @staticmethod
    def render_cluster(registry: Registry, cluster: Cluster, entries: list[Entry],
                       capacity: int | None = None) -> list[dict[str, Any]]:
        return objects.render_cluster(registry, cluster, entries)  # no shards: no capacity

    @staticmethod
    def mesh_host(registry: Registry, cluster: Cluster, dest: Destination) -> str:
        return objects.mesh_host(registry, cluster, dest)
