"""Probes and metrics: /healthz, /readyz (no auth) and /metrics (auth configurable)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .deps import FederationDep, check_token

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Every reachable cluster's cache has synced once")
async def readyz(federation: FederationDep) -> Response:
    conflicts = federation.claims.conflicts()
    if conflicts:
        # Another hub holds a host this one routes: writes there are refused until it is fixed.
        return JSONResponse({"status": "host-claimed-elsewhere", "clusters": sorted(
            {c.claim.cluster for c in conflicts}), "conflicts": [
            {"cluster": c.claim.cluster, **c.describe(federation.registry, federation.claims.config)}
            for c in conflicts]},
            status_code=503)
    if federation.ready():
        return JSONResponse({"status": "ready"})
    waiting = [n for n, s in federation.stores.items() if not s.synced]
    return JSONResponse({"status": "syncing", "waiting_for": waiting}, status_code=503)


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(
    federation: FederationDep, authorization: Annotated[str | None, Header()] = None
) -> Response:
    settings = federation.settings
    if settings.metrics_auth and not check_token(settings, authorization):
        raise HTTPException(status_code=403, detail="missing or wrong token")
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
