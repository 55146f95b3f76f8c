"""Traffic activity: each route's ``last_activity`` from the mesh's own request counts.

configurable-http-proxy records when a route last carried a request, and the hub (then
jupyterhub-idle-culler) reads that. Here the traffic never passes through this service, but
every cluster's ingress gateway counts it: Istio's standard ``istio_requests_total``, labelled
with ``destination_service``, in the Prometheus the mesh reports to. Once per interval each
replica asks each cluster's Prometheus which destinations carried requests since its last look,
and moves ``last_activity`` of the routes that cluster owns with that destination. Nothing is
written to Kubernetes: every replica computes the same answer from Prometheus.

The pure parts (query, read window, response parsing) are functions tested without Prometheus;
:class:`ActivityMonitor` owns the polling and its per-cluster state. Route requests never wait on
any of it: they read the :class:`~federation.activity_book.ActivityBook` through the route
table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
import string
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

from . import metrics
from .backend import builders
from .config import Activity, Cluster, Registry
from .errors import InvalidRoute
from .model import Entry, entry_destination

if TYPE_CHECKING:
    from .settings import Settings
    from .table import RouteTable

log = logging.getLogger(__name__)

# Requests the cluster's ingress gateway forwarded (a gateway reports as "source"), per
# destination: a counter higher than one window (one read step) earlier. Comparing values rather
# than using increase() sees an increment even across a gap in scraping (up to Prometheus's
# 5-minute lookback). The second half is a destination's first request: its series is born
# already counting, so a series absent one window ago counts too, if its target was scraped
# then (otherwise a Prometheus restart would make every destination look new).
_REQUESTS = 'istio_requests_total{reporter="source", source_workload="${gateway_workload}"}'
DEFAULT_QUERY = (
    f"sum by (destination_service) (({_REQUESTS} - {_REQUESTS} offset ${{window}}) > 0) "
    f"or count by (destination_service) (({_REQUESTS} unless {_REQUESTS} offset ${{window}}) "
    "and on (job, instance) (up offset ${window}))"
)
MAX_POINTS = 10_000  # Prometheus refuses a range query of more than 11,000 points per series


class ActivityError(Exception):
    """A read that gave no usable answer; the message is safe to show (no credentials)."""


def iso(ts: float) -> str:
    """Epoch seconds in the route table's time format (sortable as a string)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# --------------------------------------------------------------------------------------------
# Pure parts


@dataclass(frozen=True)
class ReadPlan:
    """One range query: points at start, start + step, ..., end; each compares the counters
    with their values one step (the query's window) earlier."""

    start: float
    end: float
    step: float

    @property
    def window(self) -> float:
        return self.step


def plan_read(since: float | None, now: float, interval: float, recovery: float) -> ReadPlan:
    """The read covering (since, now]; a first read (``since`` None) covers ``recovery``.

    Points lie on a grid of the step, so every replica evaluates the same points and computes
    the same times. The previous read's last point is evaluated again: a sample Prometheus had
    not stored yet when it was read (a slow scrape, remote-write lag) is seen there.
    """
    earliest = now - max(recovery, interval)
    since = earliest if since is None else max(since, earliest)
    step = max(interval, (now - since) / (MAX_POINTS - 2))
    end = math.floor(now / step) * step
    count = max(1, math.ceil((end - since) / step - 1e-9)) + 1
    return ReadPlan(start=end - (count - 1) * step, end=end, step=step)


def duration(seconds: float) -> str:
    """A PromQL duration (whole milliseconds: every Prometheus-compatible server takes them)."""
    return f"{max(1, round(seconds * 1000))}ms"


def render_query(activity: Activity, cluster: str, window: float) -> str:
    template = string.Template(activity.query or DEFAULT_QUERY)
    return template.substitute(
        window=duration(window), cluster=cluster, gateway_workload=activity.gateway_workload
    )


def parse_response(body: Any) -> dict[str, float]:
    """destination_service -> the latest point (epoch seconds) at which it carried requests.

    Accepts a range (matrix) or instant (vector) answer; a point counts when its value is > 0.
    """
    if not isinstance(body, dict):
        raise ActivityError("the answer is not a JSON object")
    if body.get("status") != "success":
        raise ActivityError(f"query refused: {str(body.get('error') or body.get('status'))[:200]}")
    data = body.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    if kind not in ("matrix", "vector"):
        raise ActivityError(f"the query must return series, not {kind!r}")
    if not isinstance(result, list):
        raise ActivityError("the answer's result is not a list of series")
    seen: dict[str, float] = {}
    unlabelled = 0
    for series in result:
        if not isinstance(series, dict):
            continue
        dest = (series.get("metric") or {}).get("destination_service")
        points = series.get("values") if kind == "matrix" else [series.get("value")]
        if not dest:
            unlabelled += 1
            continue
        for ts in _active_times(points):
            if ts > seen.get(dest, -1.0):
                seen[dest] = ts
    if unlabelled and not seen and unlabelled == len(result):
        raise ActivityError("the query's series have no destination_service label: keep "
                            "'by (destination_service)' in it")
    return seen


def _active_times(points: Any) -> Iterable[float]:
    for point in points or []:
        try:
            ts, value = float(point[0]), float(point[1])
        except (TypeError, ValueError, IndexError):
            continue
        if value > 0:  # NaN compares false too
            yield ts


class Destinations:
    """Which routes a cluster owns, by destination host (memoised per entry object: the table
    keeps unchanged entries as the same objects)."""

    def __init__(self) -> None:
        self._memo: dict[str, tuple[Entry, Cluster, str | None]] = {}

    def host(self, registry: Registry, cluster: Cluster, entry: Entry) -> str | None:
        held = self._memo.get(entry.path)
        if held is not None and held[0] is entry and held[1] is cluster:
            return held[2]
        try:
            host: str | None = builders(cluster).mesh_host(
                registry, cluster, entry_destination(registry, cluster, entry))
        except (KeyError, InvalidRoute, ValueError):
            host = None  # a route this configuration cannot place: it has no destination here
        self._memo[entry.path] = (entry, cluster, host)
        return host

    async def of(self, registry: Registry, cluster: Cluster, table: RouteTable) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for i, (path, entry) in enumerate(table.routes()):
            if i % 500 == 499:
                await asyncio.sleep(0)  # a big table must not hold the event loop for long
            if entry.owner != cluster.name or entry.edge:
                continue
            host = self.host(registry, cluster, entry)
            if host is not None:
                out.setdefault(host, []).append(path)
        return out

    def retain(self, paths: set[str]) -> None:
        for path in [p for p in self._memo if p not in paths]:
            del self._memo[path]


# --------------------------------------------------------------------------------------------
# One cluster's source


class ActivitySource:
    """One cluster's Prometheus: its client, what it covered, and its health for /clusters."""

    def __init__(self, cluster: str, activity: Activity) -> None:
        self.cluster = cluster
        self.activity = activity
        self._http: httpx.AsyncClient | None = None  # made at the first read (see _client)
        self.url = activity.prometheus_url.rstrip("/") + "/api/v1/query_range"
        self.covered_until: float | None = None  # end of the last successful read
        self.state = "starting"  # starting | ok | failing
        self.last_success: float | None = None
        self.last_attempt: float | None = None
        self.last_error: str | None = None
        self.latency: float | None = None
        self.active_destinations = 0  # destinations with requests in the last read
        self.routes_moved = 0  # routes whose last_activity the last read moved

    def _headers(self) -> dict[str, str]:
        headers = dict(self.activity.headers)
        path = self.activity.bearer_token_file
        if path is not None:
            try:
                # Read each time: a mounted token is rotated in place.
                with open(path, encoding="utf-8") as handle:
                    token = handle.read().strip()
            except OSError as exc:
                raise ActivityError(f"cannot read bearerTokenFile {path}: {exc.strerror}") from None
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def read(self, now: float, interval: float, recovery: float) -> dict[str, float]:
        """destination -> latest active point since the last successful read."""
        plan = plan_read(self.covered_until, now, interval, recovery)
        form = {
            "query": render_query(self.activity, self.cluster, plan.window),
            "start": f"{plan.start:.3f}",
            "end": f"{plan.end:.3f}",
            "step": f"{plan.step:.3f}",
        }
        try:
            resp = await self._client().post(self.url, data=form, headers=self._headers())
        except httpx.TimeoutException:
            raise ActivityError(f"no answer in {self.activity.timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise ActivityError(f"{type(exc).__name__}: {exc}"[:300]) from None
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code != 200 and not (isinstance(body, dict) and body.get("error")):
            raise ActivityError(f"HTTP {resp.status_code} from {self.url}")
        seen = parse_response(body)
        self.covered_until = plan.end
        return seen

    def succeeded(self, when: float, latency: float) -> None:
        if self.state == "failing":
            log.info("activity of %s readable again from %s", self.cluster, self.activity.prometheus_url)
        self.state, self.last_error = "ok", None
        self.last_success, self.latency = when, latency

    def failed(self, error: str, latency: float) -> None:
        if self.state != "failing" or error != self.last_error:
            log.warning("cannot read the activity of %s from %s: %s (routes keep their last "
                        "known activity)", self.cluster, self.activity.prometheus_url, error)
        self.state, self.last_error, self.latency = "failing", error, latency

    def describe(self) -> dict[str, Any]:
        def at(ts: float | None) -> str | None:
            return None if ts is None else iso(ts)

        return {
            "state": self.state,
            "prometheus": self.activity.prometheus_url,
            "last_success": at(self.last_success),
            "last_attempt": at(self.last_attempt),
            "covered_until": at(self.covered_until),
            "latency_ms": None if self.latency is None else round(self.latency * 1000, 1),
            "active_destinations": self.active_destinations,
            "routes_moved": self.routes_moved,
            "last_error": self.last_error,
        }

    def _client(self) -> httpx.AsyncClient:
        # Made here rather than at start, so that a CA file gone bad after the config was
        # loaded is this source's failure, shown at /clusters, not an error of the poller.
        if self._http is None:
            verify: ssl.SSLContext | bool = True
            if self.activity.ca_file is not None:
                try:
                    verify = ssl.create_default_context(cafile=self.activity.ca_file)
                except (OSError, ssl.SSLError):
                    raise ActivityError(f"cannot load caFile {self.activity.ca_file}") from None
            self._http = httpx.AsyncClient(timeout=self.activity.timeout, verify=verify)
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()


async def probe(
    cluster: str, activity: Activity, interval: float, span: float = 300.0
) -> tuple[bool | None, str]:
    """One read of the last ``span`` seconds, as a starting replica reads them, for
    ``federation check``: (ok, what it found)."""
    source = ActivitySource(cluster, activity)
    try:
        seen = await source.read(time.time(), interval, span)
    except ActivityError as exc:
        return False, f"{activity.prometheus_url}: {exc}"
    finally:
        await source.close()
    if not seen:
        # Readable, but nothing went through this gateway lately: fine on a quiet hub, or a
        # gatewayWorkload that is not the gateway's source_workload label.
        return None, (f"{activity.prometheus_url}: no gateway requests in the last {span:g}s "
                      f"(source_workload {activity.gateway_workload!r})")
    return True, f"{activity.prometheus_url}: {len(seen)} destinations with requests in the last {span:g}s"


# --------------------------------------------------------------------------------------------
# The poller


class ActivityMonitor:
    """Reads every configured cluster's activity once per interval and applies it to the table.

    ``registry`` is called each round, so a reloaded clusters.yaml takes effect at the next read.
    """

    def __init__(self, registry: Callable[[], Registry], table: RouteTable, settings: Settings,
                 ready: Callable[[], bool] = lambda: True):
        self.registry = registry
        self.table = table
        self.ready = ready
        self.interval = settings.activity_interval
        self.recovery = settings.activity_recovery
        self.sources: dict[str, ActivitySource] = {}
        self.destinations = Destinations()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for source in self.sources.values():
            await source.close()
        self.sources.clear()

    def describe(self, cluster: str) -> dict[str, Any] | None:
        source = self.sources.get(cluster)
        return None if source is None else source.describe()

    async def _run(self) -> None:
        # The first read recovers the recent past, which only lands on routes the table holds:
        # wait until the caches have listed them.
        while not self.ready():
            await asyncio.sleep(0.05)
        while True:
            started = time.monotonic()
            try:
                await self.round()
            except Exception:  # noqa: BLE001 - activity must never stop, nor stop anything else
                log.exception("activity round failed")
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    async def round(self) -> None:
        """One read of every source (concurrently), then forget routes that are gone."""
        registry = self.registry()
        await self._sync(registry)
        if not self.sources and not self.table.activity.times:
            return  # no activity configured: nothing to read, nothing to forget
        await asyncio.gather(*(self._read(registry, s) for s in list(self.sources.values())))
        paths = {path for path, _ in self.table.routes()}
        self.table.activity.retain(paths)
        self.destinations.retain(paths)

    async def _sync(self, registry: Registry) -> None:
        """Sources follow the registry: new, changed and removed clusters."""
        for name, source in list(self.sources.items()):
            cluster = registry.clusters.get(name)
            if cluster is None or cluster.activity != source.activity:
                await source.close()
                del self.sources[name]
        for name, cluster in registry.clusters.items():
            if cluster.activity is not None and name not in self.sources:
                self.sources[name] = ActivitySource(name, cluster.activity)

    async def _read(self, registry: Registry, source: ActivitySource) -> None:
        name = source.cluster
        now = time.time()
        source.last_attempt = now
        started = time.perf_counter()
        metrics.ACTIVITY_READS.labels(name).inc()
        try:
            seen = await source.read(now, self.interval, self.recovery)
        except Exception as exc:  # noqa: BLE001 - a failed read is the source's state, no more
            latency = time.perf_counter() - started
            metrics.ACTIVITY_FAILURES.labels(name).inc()
            metrics.ACTIVITY_LATENCY.labels(name).observe(latency)
            message = str(exc) if isinstance(exc, ActivityError) else f"unusable answer: {type(exc).__name__}"
            source.failed(message, latency)
            return
        latency = time.perf_counter() - started
        metrics.ACTIVITY_LATENCY.labels(name).observe(latency)
        metrics.ACTIVITY_LAST_SUCCESS.labels(name).set(now)
        source.succeeded(now, latency)
        source.active_destinations = len(seen)
        cluster = registry.clusters.get(name)
        if cluster is not None and seen:
            source.routes_moved = await self._apply(registry, cluster, seen)
        else:
            source.routes_moved = 0

    async def _apply(self, registry: Registry, cluster: Cluster, seen: dict[str, float]) -> int:
        by_host = await self.destinations.of(registry, cluster, self.table)
        times: dict[str, str] = {}
        for host, ts in seen.items():
            for path in by_host.get(host, ()):
                times[path] = iso(ts)
        return self.table.note_activity(times)
