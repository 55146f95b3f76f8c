"""What one route becomes: the entries to store, per cluster (pure; the service executes it)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .config import Cluster, Registry
from .errors import InvalidRoute
from .layout import DEFAULT_CAPACITY, grow
from .objects import (
    Entry,
    build_root,
    build_shard,
    build_split_marker,
    entry_destination,
    plural_of,
    root_host_key,
    roots_for_shard,
    support_objects,
)
from .placement import destination_in, place
from .routespec import RouteKey, normalize_path, validate_target

MAX_ENTRY_BYTES = 16 * 1024


@dataclass(frozen=True)
class RoutePlan:
    key: RouteKey
    owner: Cluster
    writes: list[tuple[str, Entry]]  # (cluster name, entry), the owner first


def plan_route(registry: Registry, raw_path: str, body: Mapping[str, Any], now: str) -> RoutePlan:
    """Validate a POSTed route and decide where it is stored; raises InvalidRoute."""
    key = RouteKey.parse(normalize_path(raw_path))
    target = validate_target(body.get("target"))
    data = {k: v for k, v in body.items() if k not in ("target", "last_activity")}
    owner = place(registry, target, data).cluster
    # Everything the rule needs is checked now, so a bad route is refused before any write.
    destination_in(owner, target, data, registry.instance)
    entry = Entry(key.path, target, owner.name, data, now)
    if len(json.dumps(entry.to_json(), ensure_ascii=False).encode()) > MAX_ENTRY_BYTES:
        raise InvalidRoute(
            f"route data is larger than {MAX_ENTRY_BYTES // 1024} KiB and cannot be stored "
            "on a Kubernetes object"
        )
    writes = [(owner.name, entry)]
    if owner.name != registry.home and owner.edge:
        writes.append((registry.home, Entry(key.path, target, owner.name, {}, now, edge=True)))
    return RoutePlan(key, owner, writes)


def render_cluster(
    registry: Registry, cluster: Cluster, entries: Iterable[Entry], capacity: int = DEFAULT_CAPACITY
) -> list[dict[str, Any]]:
    """Every object one cluster should hold for these entries (docs, tests, preloading), in
    the layout the service reaches by splitting shards of ``capacity`` routes."""
    entries = list(entries)
    leaves, markers = grow(((RouteKey.parse(e.path), e) for e in entries), capacity)
    objects = [build_shard(registry, cluster, k, leaves[k]) for k in sorted(leaves)]
    objects += [build_split_marker(registry, cluster, k) for k in markers]
    host_roots = {root_host_key(cluster, k.host) for k in leaves} - {""}
    roots: dict[str, list[str]] = {}
    for k in leaves:
        for host_key in roots_for_shard(cluster, k.host, k.depth, host_roots):
            roots.setdefault(host_key, []).append(k.name(registry.instance))
    objects += [build_root(registry, cluster, hk, names) for hk, names in sorted(roots.items())]
    support: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in entries:
        for obj in support_objects(registry, cluster, entry_destination(registry, cluster, entry)):
            support[(plural_of(obj), obj["metadata"]["name"])] = obj
    return objects + [support[k] for k in sorted(support)]


def render_table(
    registry: Registry,
    table: Mapping[str, Mapping[str, Any]],
    now: str = "2026-01-01T00:00:00.000Z",
    capacity: int = DEFAULT_CAPACITY,
) -> dict[str, list[dict[str, Any]]]:
    """The objects of every cluster for a whole route table (as if POSTed in one go)."""
    per_cluster: dict[str, list[Entry]] = {name: [] for name in registry.clusters}
    for path, body in table.items():
        for cluster, entry in plan_route(registry, path, body, now).writes:
            per_cluster[cluster].append(entry)
    return {
        name: render_cluster(registry, registry.clusters[name], entries, capacity)
        for name, entries in per_cluster.items()
    }
