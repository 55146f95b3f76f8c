"""GET /clusters: each cluster's health, for people (text) and scripts (JSON)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from ..service import Federation, Store
from .deps import Authorized, FederationDep

router = APIRouter(prefix="/clusters", dependencies=[Authorized], tags=["clusters"])


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def describe(rt: Store, home: str) -> dict[str, Any]:
    health, probe = rt.health, rt.probe
    circuit = rt.client.circuit
    last_error = health.last_error if probe.reachable is not False else (probe.error or health.last_error)
    return {
        "name": rt.cluster.name,
        "home": rt.cluster.name == home,
        "context": rt.cluster.context or "(in-cluster)",
        "server": rt.client.server_url,
        "namespace": rt.cluster.namespace,
        "reachable": probe.reachable,
        "latency_ms": None if probe.latency is None else round(probe.latency * 1000, 1),
        "kubernetes_version": probe.version,
        "routes": rt.route_count(),
        "last_sync": _iso(health.last_sync),
        "last_probe": _iso(probe.last_probe),
        "watch": health.state,
        "watch_restarts": health.watch_restarts,
        "cache_age_s": None if health.last_event is None else round(time.time() - health.last_event, 1),
        "last_error": None if last_error is None else last_error.splitlines()[0][:300],
        "circuit_open": circuit.is_open,
        "backend": rt.cluster.backend,
        # gateway-api: HTTPRoutes the Gateway did not accept or whose backends do not resolve
        "route_status": rt.status(),
    }


def _row(rt: Store, federation: Federation) -> dict[str, Any]:
    row = describe(rt, federation.registry.home)
    # The cluster's traffic activity source (null when clusters.yaml configures none).
    row["activity"] = federation.activity.describe(rt.cluster.name)
    # The gateway hosts this hub claims there, and any another hub holds (federation/claims.py).
    row["host_claims"] = federation.claims.describe(rt.cluster.name)
    # Whether the routes' Services exist there (null until the first housekeeping pass).
    row["destinations"] = federation.destinations.describe(rt.cluster.name)
    return row


def _text(rows: list[dict[str, Any]]) -> str:
    cols = ["name", "reachable", "latency_ms", "kubernetes_version", "routes", "watch",
            "circuit_open", "last_sync", "activity", "destinations", "last_error"]

    def cell(row: dict[str, Any], col: str) -> str:
        value = row[col]
        if col == "activity":
            return "-" if value is None else value["state"]
        if col == "destinations":
            return "-" if value is None else destinations_cell(value)
        return "" if value is None else str(value)

    table = [cols] + [[cell(r, c) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
                     for row in table) + "\n"


def destinations_cell(value: dict[str, Any]) -> str:
    """"ok", "unknown", or how many routes' Services are missing or lack the port."""
    if value["state"] != "problems":
        return str(value["state"])
    return f"{value['missing']} missing, {value['no_port']} no port"


def _wants_text(request: Request) -> bool:
    fmt = request.query_params.get("format")
    return fmt == "text" or (fmt is None and "text/plain" in request.headers.get("accept", ""))


@router.get("", summary="Health of every cluster")
async def list_clusters(request: Request, federation: FederationDep) -> Response:
    rows = [_row(rt, federation) for rt in federation.stores.values()]
    if _wants_text(request):
        return PlainTextResponse(_text(rows))
    return JSONResponse({"clusters": rows})


@router.get("/{name}", summary="Health of one cluster")
async def get_cluster(name: str, request: Request, federation: FederationDep) -> Response:
    rt = federation.stores.get(name)
    if rt is None:
        raise HTTPException(404, detail=f"no cluster named {name!r}")
    row = _row(rt, federation)
    if _wants_text(request):
        return PlainTextResponse(_text([row]))
    return JSONResponse(row)
