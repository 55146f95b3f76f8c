"""The configurable-http-proxy route API: /api/routes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response

from ..errors import InvalidRoute
from .deps import Authorized, FederationDep

router = APIRouter(prefix="/api/routes", dependencies=[Authorized], tags=["routes"])

JSON = "application/json"


def _inactive_since(request: Request) -> str | None:
    raw = request.query_params.get("inactive_since") or request.query_params.get("inactiveSince")
    if raw is None:
        return None
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRoute(f"inactive_since {raw!r} is not an ISO 8601 date") from None
    if when.tzinfo is not None:
        when = _as_naive_utc(when)
    # Stored times are UTC strings of this exact shape, so comparing strings compares times
    # (isoformat pads the year to four digits; strftime's %Y does not for years before 1000).
    return when.isoformat(timespec="milliseconds") + "Z"


def _as_naive_utc(when: datetime) -> datetime:
    try:
        return when.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:  # an offset pushes year 1 or 9999 out of range: clamp
        return datetime.min if when.year == 1 else datetime.max


@router.get("", include_in_schema=False)
@router.get("/", summary="The whole route table")
async def list_routes(request: Request, federation: FederationDep) -> Response:
    body = federation.routes_json(_inactive_since(request))
    return Response(content=body, media_type=JSON)


@router.get("/{path:path}", summary="One route")
async def get_route(path: str, federation: FederationDep) -> Response:
    route = federation.get_route(path)
    if route is None:
        return Response(status_code=404)
    return Response(content=json.dumps(route, ensure_ascii=False), media_type=JSON)


def _not_json(name: str) -> None:
    # Python's parser takes NaN and Infinity, which are not JSON: the table could not be served.
    raise ValueError(f"{name} is not JSON")


async def _json_object(request: Request) -> dict[str, Any]:
    limit = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise InvalidRoute(f"request body is larger than {limit} bytes", status_code=413)
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise InvalidRoute(f"request body is larger than {limit} bytes", status_code=413)
    try:
        body = json.loads(raw, parse_constant=_not_json) if raw else None
    except (ValueError, UnicodeDecodeError):
        raise InvalidRoute("request body is not valid JSON") from None
    except RecursionError:
        raise InvalidRoute("request body is nested too deeply") from None
    if body is None:
        body = {}  # as configurable-http-proxy: null becomes {} and then lacks a target
    if not isinstance(body, dict):
        raise InvalidRoute("request body must be a JSON object")
    if "target" not in body:
        raise InvalidRoute("request body must have a 'target'")
    return body


@router.post("", include_in_schema=False, status_code=201)
@router.post(
    "/{path:path}",
    summary="Add or replace a route",
    status_code=201,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {
                "type": "object",
                "required": ["target"],
                "properties": {"target": {"type": "string"}, "cluster": {"type": "string"}},
                "additionalProperties": True,
            }}},
        }
    },
)
async def add_route(request: Request, federation: FederationDep, path: str = "/") -> Response:
    body = await _json_object(request)
    await federation.add_route(path, body)
    return Response(status_code=201)


@router.delete("", include_in_schema=False, status_code=204)
@router.delete("/{path:path}", summary="Remove a route", status_code=204)
async def delete_route(federation: FederationDep, path: str = "/") -> Response:
    if not await federation.delete_route(path):
        return Response(status_code=404)
    return Response(status_code=204)
