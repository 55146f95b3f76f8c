"""What one route write costs on each backend, from the service's own builders (no I/O).

A POST of a remote user's route writes the owner cluster's object holding the route and the
home cluster's object holding its edge rule: on Istio, two shards (each re-sent whole, with the
other routes they hold); on the Gateway API, that route's two HTTPRoutes. The figure is the
JSON bytes the API servers receive and store per write, and every watching replica receives."""

from __future__ import annotations

import json
import statistics
from typing import Any

from federation.config import parse_registry
from federation.model import decode_entries
from federation.plan import render_table

from .clusters import HOME, cluster_names, clusters_document, routes

BACKENDS = ("istio", "gateway-api")


def _holders(objects: list[dict[str, Any]]) -> dict[str, int]:
    """Route path -> size in bytes of the object that holds it (shards hold many)."""
    out: dict[str, int] = {}
    for obj in objects:
        size = len(json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode())
        for path in decode_entries(obj):
            out[path] = size
    return out


def write_cost(count: int, clusters: int = 4, samples: int = 50) -> dict[str, dict[str, float]]:
    """Per backend: objects written and bytes per POST of a remote user's route (median over
    ``samples`` routes of a ``count``-route table spread over ``clusters`` clusters)."""
    from pathlib import Path

    names = cluster_names(clusters)
    table = dict(routes(0, count, names))
    remote = [p for p, body in table.items() if body["target"].startswith("https://")][:samples]
    out: dict[str, dict[str, float]] = {}
    for backend in BACKENDS:
        doc = clusters_document(names, Path("/nonexistent"))
        doc["defaults"]["backend"] = backend
        registry = parse_registry(doc, check_kubeconfig=False)
        rendered = render_table(registry, table)
        holders = {name: _holders(objs) for name, objs in rendered.items()}
        costs = []
        for path in remote:
            owner = next(n for n in names[1:] if path in holders[n])
            costs.append(holders[owner][path] + holders[HOME][path])
        out[backend] = {"objects": 2.0, "bytes": float(statistics.median(costs))}
    return out
