"""What one route becomes: the entries to store, per cluster (pure; the service executes it)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .backend import builders
from .config import Cluster, Registry
from .errors import InvalidRoute
from .model import Entry
from .placement import destination_in, place
from .routespec import RouteKey, has_surrogate, normalize_path, validate_key, validate_target

MAX_ENTRY_BYTES = 16 * 1024
MAX_DATA_DEPTH = 64  # deeper JSON would near Python's recursion limit when (de)serialised


@dataclass(frozen=True)
class RoutePlan:
    key: RouteKey
    owner: Cluster
    writes: list[tuple[str, Entry]]  # (cluster name, entry), the owner first


def plan_route(registry: Registry, raw_path: str, body: Mapping[str, Any], now: str) -> RoutePlan:
    """Validate a POSTed route and decide where it is stored; raises InvalidRoute.

    Everything the objects need is checked here, before anything is queued: a route that
    reaches a shard write renders a rule the API server accepts, so it cannot fail the other
    routes batched into the same write.
    """
    key = validate_key(RouteKey.parse(normalize_path(raw_path)))
    target = validate_target(body.get("target"))
    data = {k: v for k, v in body.items() if k not in ("target", "last_activity")}
    check_data(data)
    owner = place(registry, target, data).cluster
    destination_in(owner, target, data, registry.instance)
    entry = Entry(key.path, target, owner.name, data, now)
    check_storable(entry)
    writes = [(owner.name, entry)]
    if owner.name != registry.home and owner.edge:
        writes.append((registry.home, Entry(key.path, target, owner.name, {}, now, edge=True)))
    for name, written in writes:
        cluster = registry.clusters[name]
        builders(cluster).check_route(registry, cluster, written)
    return RoutePlan(key, owner, writes)


def check_data(data: Mapping[str, Any]) -> None:
    """Route data is any JSON value configurable-http-proxy would keep, within limits that let
    it be stored and served back exactly (walked without recursion: depth is what it checks)."""
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DATA_DEPTH:
            raise InvalidRoute(f"route data is nested deeper than {MAX_DATA_DEPTH} levels")
        if isinstance(value, dict):
            if not all(isinstance(k, str) for k in value):
                raise InvalidRoute("route data keys must be strings")
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
        elif isinstance(value, float) and not math.isfinite(value):
            raise InvalidRoute("route data holds NaN or an infinity, which JSON cannot carry")
        elif value is not None and not isinstance(value, str | int | float):
            raise InvalidRoute(f"route data holds a {type(value).__name__}, not a JSON value")


def check_storable(entry: Entry) -> None:
    """The entry fits on a Kubernetes object as UTF-8 text."""
    text = json.dumps(entry.to_json(), ensure_ascii=False)
    if has_surrogate(text):
        raise InvalidRoute("route data holds a lone UTF-16 surrogate (\\ud800-\\udfff), "
                           "which has no UTF-8 form and cannot be stored")
    if len(text.encode()) > MAX_ENTRY_BYTES:
        raise InvalidRoute(
            f"route data is larger than {MAX_ENTRY_BYTES // 1024} KiB and cannot be stored "
            "on a Kubernetes object"
        )


def render_cluster(
    registry: Registry, cluster: Cluster, entries: Iterable[Entry], capacity: int | None = None
) -> list[dict[str, Any]]:
    """Every object one cluster should hold for these entries (docs, tests, preloading), in
    its backend's layout (Istio: as reached by splitting shards of ``capacity`` routes; None:
    the backend's default)."""
    return builders(cluster).render_cluster(registry, cluster, list(entries), capacity)


def render_table(
    registry: Registry,
    table: Mapping[str, Mapping[str, Any]],
    now: str = "2026-01-01T00:00:00.000Z",
    capacity: int | None = None,
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
