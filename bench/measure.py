"""Timed requests: the proxy API through httpx or JupyterHub's own client, and the bare
``kubernetes`` client on the same emulated API. All of it runs in the harness process."""

from __future__ import annotations

import asyncio
import copy
import json
import math
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from kubernetes import client as k8s

from federation.config import Registry
from federation.istio.layout import ShardKey
from federation.istio.objects import build_shard
from federation.mesh import GROUP, VERSION
from federation.model import LABEL_INSTANCE
from federation.plan import plan_route

from .clusters import NAMESPACE, Route
from .service import TOKEN
from .stats import percentile

AUTH = {"Authorization": f"token {TOKEN}"}
Request = tuple[str, dict[str, Any] | None]  # a route path and its body (None: no body)


@dataclass
class Timed:
    """Latencies (seconds) and response statuses of one batch; status 0 is a transport error."""

    seconds: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # transport errors (status 0) by type
    wall: float = 0.0

    def add(self, seconds: float, status: int, error: BaseException | None = None) -> None:
        self.seconds.append(seconds)
        self.statuses[status] += 1
        if error is not None:
            self.errors[type(error).__name__] += 1

    def p(self, q: float) -> float:
        return percentile(self.seconds, q)

    def unexpected(self, *ok: int) -> int:
        return sum(n for status, n in self.statuses.items() if status not in ok)

    @property
    def mean(self) -> float:
        return sum(self.seconds) / len(self.seconds) if self.seconds else math.nan

    @property
    def throughput(self) -> float:
        return len(self.seconds) / self.wall if self.wall else 0.0


def api_client(url: str, timeout: float = 120.0) -> httpx.Client:
    return httpx.Client(base_url=url, headers=AUTH, timeout=timeout)


def service_metrics(client: httpx.Client) -> dict[str, float]:
    """The service's own totals from /metrics: Kubernetes calls (count, seconds; the periodic
    version probe left out) and API request seconds by method. Deltas around a batch split a
    request's time between the API server and the service itself."""
    totals: dict[str, float] = defaultdict(float)
    for line in client.get("/metrics").text.splitlines():
        name, _, value = line.rpartition(" ")
        metric = name.split("{", 1)[0]
        if metric.startswith("federation_kube_call_seconds_") and 'verb="version"' not in name:
            totals["kube." + metric.rsplit("_", 1)[1]] += float(value)
        elif metric.startswith("federation_api_request_seconds_") and "/api/routes" in name:
            method = name.split('method="', 1)[1].split('"', 1)[0] if 'method="' in name else ""
            totals[f"api.{method}.{metric.rsplit('_', 1)[1]}"] += float(value)
    return dict(totals)


def sequential(client: httpx.Client, method: str, requests: Sequence[Request]) -> Timed:
    """One request at a time: the latency a single hub sees with nothing else in flight."""
    timed = Timed()
    start = time.perf_counter()
    for path, body in requests:
        t0 = time.perf_counter()
        error: httpx.HTTPError | None = None
        try:
            status = client.request(method, "/api/routes" + path, json=body).status_code
        except httpx.HTTPError as exc:
            status, error = 0, exc
        timed.add(time.perf_counter() - t0, status, error)
    timed.wall = time.perf_counter() - start
    return timed


async def _concurrent(url: str, method: str, requests: Sequence[Request], clients: int) -> Timed:
    timed = Timed()
    pending: Iterator[Request] = iter(requests)

    async def client(http: httpx.AsyncClient) -> None:
        # One client, one connection, sending its next request when the last one is done.
        for path, body in pending:
            t0 = time.perf_counter()
            error: httpx.HTTPError | None = None
            try:
                response = await http.request(method, "/api/routes" + path, json=body)
                status = response.status_code
            except httpx.HTTPError as exc:
                status, error = 0, exc
            timed.add(time.perf_counter() - t0, status, error)

    # Each client its own AsyncClient: one pool shared by 100 connections costs the harness
    # O(connections) CPU per request, which would be taken from the service on a small
    # machine. Made before the clock starts (each builds an SSL context: ~10 ms of CPU).
    https = [httpx.AsyncClient(base_url=url, headers=AUTH, timeout=120) for _ in range(clients)]
    try:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for http in https))
        timed.wall = time.perf_counter() - start
    finally:
        await asyncio.gather(*(http.aclose() for http in https))
    return timed


def concurrent(url: str, method: str, requests: Sequence[Request], clients: int) -> Timed:
    """``clients`` concurrent httpx clients working through ``requests``."""
    return asyncio.run(_concurrent(url, method, requests, clients))


async def _jupyterhub_adds(url: str, requests: Sequence[Route]) -> Timed:
    from jupyterhub.proxy import ConfigurableHTTPProxy

    proxy = ConfigurableHTTPProxy(api_url=url, auth_token=TOKEN, should_start=False)
    timed = Timed()

    async def add(path: str, body: dict[str, Any]) -> None:
        data = {k: v for k, v in body.items() if k not in ("target", "jupyterhub")}
        t0 = time.perf_counter()
        try:
            # The hub's routespec ends in "/"; its client strips it again (and retries 5xx).
            await proxy.add_route(path + "/", body["target"], data)
            status = 201
        except Exception:  # noqa: BLE001 - any failure of the hub's client counts as one
            status = 0
        timed.add(time.perf_counter() - t0, status)

    start = time.perf_counter()
    await asyncio.gather(*(add(path, body) for path, body in requests))
    timed.wall = time.perf_counter() - start
    return timed


def jupyterhub_adds(url: str, requests: Sequence[Route]) -> Timed:
    """The hub's own client, all adds gathered at once (its semaphore allows 10 in flight)."""
    return asyncio.run(_jupyterhub_adds(url, requests))


def table_reads(client: httpx.Client, count: int) -> tuple[Timed, int, int]:
    """GET /api/routes ``count`` times: the timings, the body size and the number of routes."""
    timed = Timed()
    body = b""
    for _ in range(count):
        t0 = time.perf_counter()
        response = client.get("/api/routes")
        timed.add(time.perf_counter() - t0, response.status_code)
        body = response.content
    routes = len(json.loads(body)) if body else 0
    return timed, len(body), routes


# -- the bare kubernetes client ---------------------------------------------------------------


def comparable_virtualservice(registry: Registry, name: str, route: Route) -> dict[str, Any]:
    """The VirtualService the service would store for this one route, alone in its shard."""
    path, body = route
    plan = plan_route(registry, path, body, "2026-01-01T00:00:00.000Z")
    owner, entry = plan.writes[0]
    obj = build_shard(registry, registry.clusters[owner], ShardKey("", 2, 0, 0), {path: entry})
    return _foreign(obj, name)


def _foreign(obj: dict[str, Any], name: str) -> dict[str, Any]:
    """The object under another name and outside the service's label selector: of the same
    size, but the service must not see it (its watch would index the copied routes)."""
    meta = obj["metadata"]
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k != LABEL_INSTANCE}
    obj["metadata"] = {"name": name, "labels": {**labels, LABEL_INSTANCE: "bench-bare"},
                       "annotations": dict(meta.get("annotations") or {})}
    return obj


def bare_create_delete(
    api: k8s.CustomObjectsApi, registry: Registry, routes: Sequence[Route], prefix: str
) -> tuple[Timed, Timed]:
    """One create, then one delete, of a comparable VirtualService per route."""
    objects = [
        comparable_virtualservice(registry, f"{prefix}-{i}", route) for i, route in enumerate(routes)
    ]
    creates, deletes = Timed(), Timed()
    for obj in objects:
        t0 = time.perf_counter()
        api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "virtualservices", obj)
        creates.add(time.perf_counter() - t0, 201)
    for obj in objects:
        t0 = time.perf_counter()
        api.delete_namespaced_custom_object(
            GROUP, VERSION, NAMESPACE, "virtualservices", obj["metadata"]["name"]
        )
        deletes.add(time.perf_counter() - t0, 200)
    return creates, deletes


def bare_replace(
    api: k8s.CustomObjectsApi, template: dict[str, Any], name: str, count: int
) -> Timed:
    """Replace (PUT) a copy of a stored route object ``count`` times, changing it each time: the
    API cost of the service's data model (one whole shard, or one HTTPRoute, per route write),
    without the service."""
    obj = _foreign(copy.deepcopy(template), name)
    group, version = obj["apiVersion"].split("/")
    plural = obj["kind"].lower() + "s"  # VirtualService or HTTPRoute
    stored: Any = api.create_namespaced_custom_object(group, version, NAMESPACE, plural, obj)
    timed = Timed()
    for i in range(count):
        obj["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"]
        obj["metadata"]["annotations"]["bench/toggle"] = str(i)  # a real change, not a no-op
        t0 = time.perf_counter()
        stored = api.replace_namespaced_custom_object(group, version, NAMESPACE, plural, name,
                                                      obj)
        timed.add(time.perf_counter() - t0, 200)
    api.delete_namespaced_custom_object(group, version, NAMESPACE, plural, name)
    return timed
