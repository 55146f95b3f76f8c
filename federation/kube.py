"""Kubernetes access: one async HTTP client per cluster, with timeouts, bounded retries, a
circuit breaker and metrics. Every call, watches included, goes through :class:`ClusterClient`,
which turns transport errors and error statuses into :mod:`federation.errors` (cause chained).

Requests and responses are raw JSON (no generated model layer). Credentials: static ones
(client certificates, CA, bearer tokens, token files, the pod's service account) are read by
:mod:`federation.kubeconfig`; users with an exec plugin or an auth-provider are loaded by the
``kubernetes`` package, which refreshes their credentials (the token is asked for on every
request, so a refreshed one is used at once).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, stop_after_delay

from . import _json, kubeconfig, logs, metrics
from .config import Cluster, Registry, kubeconfig_paths
from .errors import (
    CircuitOpen,
    ClusterUnavailable,
    ConfigError,
    Conflict,
    KubeError,
    NotFound,
    Rejected,
)
from .neterrors import why_unreachable
from .settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Resource:
    """A namespaced resource kind (group "" is the core API): where its objects live."""

    group: str
    version: str
    plural: str

    def path(self, namespace: str, name: str | None = None) -> str:
        api = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        base = f"{api}/namespaces/{namespace}/{self.plural}"
        return base if name is None else f"{base}/{name}"


class Circuit:
    """Opens after ``threshold`` consecutive failures; lets one trial through after ``reset``."""

    def __init__(self, threshold: int, reset: float) -> None:
        self.threshold = threshold
        self.reset = reset
        self.failures = 0
        self.opened_at: float | None = None
        self._trial = False
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def before(self, cluster: str) -> None:
        with self._lock:
            if self.opened_at is None:
                return
            if time.monotonic() - self.opened_at < self.reset or self._trial:
                raise CircuitOpen(
                    f"cluster {cluster!r} is unavailable (circuit open after {self.failures} failures)",
                    cluster=cluster,
                    status=503,
                )
            self._trial = True  # half-open: this one call decides

    def success(self) -> bool:
        """Record a success; True when this closed an open circuit."""
        with self._lock:
            was_open = self.opened_at is not None
            self.failures = 0
            self.opened_at = None
            self._trial = False
            return was_open

    def failure(self) -> bool:
        """Record a failure; True when this opened the circuit."""
        with self._lock:
            self.failures += 1
            self._trial = False
            if self.failures >= self.threshold:
                opened = self.opened_at is None
                self.opened_at = time.monotonic()
                return opened
            return False


def _status_message(body: bytes, reason: str) -> str:
    try:
        return str(_json.loads(body).get("message") or reason)
    except (ValueError, AttributeError):
        return reason


def _retry_after(headers: httpx.Headers) -> float | None:
    try:
        value = headers.get("retry-after")
        return float(value) if value is not None else None
    except ValueError:
        return None


def status_error(cluster: str, verb: str, status: int, body: bytes, headers: httpx.Headers,
                 reason: str = "") -> KubeError:
    """An error status of the API server, in our tree (message and status only: no credentials)."""
    msg = f"{verb} on cluster {cluster!r}: {status} {_status_message(body, reason)}"
    if status == 404:
        return NotFound(msg, cluster=cluster, verb=verb, status=status)
    if status == 409:
        return Conflict(msg, cluster=cluster, verb=verb, status=status)
    if status == 429 or status >= 500:
        return ClusterUnavailable(msg, cluster=cluster, verb=verb, status=status,
                                  retry_after=_retry_after(headers))
    return Rejected(msg, cluster=cluster, verb=verb, status=status)


def transport_error(exc: BaseException, cluster: str, verb: str) -> KubeError:
    if isinstance(exc, KubeError):
        return exc
    return ClusterUnavailable(
        f"{verb} on cluster {cluster!r}: cannot reach the API server ({why_unreachable(exc)})",
        cluster=cluster,
        verb=verb,
    )


class Backoff:
    """The delays of the one retry schedule: exponential with full jitter, at most
    ``maximum`` (doubled for a 429's Retry-After, never shorter than it). Also paces the watches'
    restarts and a split's start-overs."""

    DOUBLINGS = 30  # past this the delay is ``maximum`` anyway (and 2**n stays a float)

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = maximum

    def delay(self, attempt: int, exc: BaseException | None = None) -> float:
        base = min(self.maximum, self.initial * (2 ** min(attempt, self.DOUBLINGS)))
        wait = base + random.uniform(0, self.initial)
        if isinstance(exc, KubeError) and exc.retry_after:
            wait = max(wait, min(exc.retry_after, self.maximum * 2))
        return wait


_RESOURCE_VERSION = re.compile(rb'"resourceVersion":"(\d+)"')


def resource_version_of(raw: bytes | str) -> str | None:
    """The object's resourceVersion, read without parsing the whole object: the first
    ``"resourceVersion":"N"`` in the text is metadata's (the only other JSON the objects carry,
    the routes annotation, is a string, where every quote is escaped)."""
    data = raw.encode() if isinstance(raw, str) else raw
    m = _RESOURCE_VERSION.search(data)
    return m.group(1).decode() if m else None


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, ClusterUnavailable) and not isinstance(exc, CircuitOpen)


def _transport_errors() -> tuple[type[BaseException], ...]:
    """What a failed request raises: httpx's errors, and those of aiohttp that its transport
    for httpx leaves unmapped (it maps the common ones to httpx's)."""
    try:
        import aiohttp
    except ImportError:
        return (httpx.HTTPError,)
    return (httpx.HTTPError, aiohttp.ClientError)


_TRANSPORT_ERRORS = _transport_errors()


def _transport(credentials: Credentials, limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    """aiohttp under httpx where it is installed: httpcore's connection pool costs more CPU
    per request than the request itself (an expiry check of every pooled connection, anyio
    streams and cancel scopes); else httpx's own transport."""
    try:
        from httpx_aiohttp import AiohttpTransport
    except ImportError:
        return httpx.AsyncHTTPTransport(verify=credentials.verify, limits=limits)
    return AiohttpTransport(verify=credentials.verify, limits=limits, trust_env=False)


@dataclass(frozen=True)
class Credentials:
    """What a request to one API server needs, loaded from a kubeconfig or the service account."""

    server: str
    verify: ssl.SSLContext | bool
    token: Callable[[], str | None]  # the Authorization header value, refreshed by the loader


class ClusterClient:
    """Access to one cluster's objects in the service's namespace."""

    def __init__(self, cluster: Cluster, credentials: Credentials, settings: Settings) -> None:
        self.cluster = cluster
        self.name = cluster.name
        self.namespace = cluster.namespace
        self.settings = settings
        self.server_url = credentials.server
        self.circuit = Circuit(settings.circuit_threshold, settings.circuit_reset)
        self.failed_calls = 0
        self.state: str | None = None  # logs.REACHABLE | FAILING | CIRCUIT_OPEN, once known
        self.backoff = Backoff(settings.kube_backoff_initial, settings.kube_backoff_max)
        self._token = credentials.token
        self._timeout = httpx.Timeout(settings.kube_read_timeout,
                                      connect=settings.kube_connect_timeout)
        limits = httpx.Limits(max_connections=settings.kube_workers,
                              max_keepalive_connections=settings.kube_workers)
        # Requests go to the transport directly (see _send); the client only closes it.
        self._transport = _transport(credentials, limits)
        self.http = httpx.AsyncClient(transport=self._transport)
        self._static_headers = {"Accept": "application/json",
                                "Accept-Encoding": "gzip, deflate",
                                "User-Agent": "jupyterhub-federation-proxy"}
        self._extensions = {"timeout": self._timeout.as_dict()}
        # Watches hold their connection for minutes: a pool of their own keeps them from
        # taking the request pool's connections. Sized by the mirror, from the kinds it
        # watches (watch_pool), before its first watch.
        self._credentials = credentials
        self._watch_http: httpx.AsyncClient | None = None
        # Watches that are not the mirror's (the destination check's Services, one namespace
        # each): a pool of their own per watch, so none of them takes a mirror watch's place.
        self._side_pools: dict[str, httpx.AsyncClient] = {}
        # At most one request per pooled connection in flight: httpcore scans its whole queue
        # for every request, which costs more than the request itself when thousands wait.
        self._slots = asyncio.Semaphore(settings.kube_workers)

    def watch_pool(self, watches: int) -> None:
        """Make the watch connection pool: one connection per watch held open, and one more
        for a watch reopening while its old connection closes. Once per client (a client
        serves one mirror; a cluster whose kinds change gets a new client)."""
        if self._watch_http is not None:
            raise RuntimeError(f"cluster {self.name!r}: the watch pool is made already")
        self._watch_http = self._http_client(self._credentials, watches + 1)

    def side_watch_pool(self, key: str) -> None:
        """A pool of its own for one watch beside the mirror's (``key`` names it in
        :meth:`watch`): one connection held open and one for reopening, so the mirror's pool,
        sized from its kinds, is never shared. Made once per key; closed with the client."""
        if key not in self._side_pools:
            self._side_pools[key] = self._http_client(self._credentials, 2)

    async def close_side_pool(self, key: str) -> None:
        pool = self._side_pools.pop(key, None)
        if pool is not None:
            await pool.aclose()

    @staticmethod
    def _http_client(credentials: Credentials, connections: int) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        return httpx.AsyncClient(
            base_url=credentials.server,
            timeout=httpx.Timeout(30.0),  # each call passes its own timeouts
            transport=_transport(credentials, limits),
            headers={"Accept": "application/json", "User-Agent": "jupyterhub-federation-proxy"},
        )

    async def close(self) -> None:
        await self.http.aclose()
        if self._watch_http is not None:
            await self._watch_http.aclose()
        for key in list(self._side_pools):
            await self.close_side_pool(key)

    def _headers(self, body: bool = False) -> dict[str, str]:
        headers = {"Content-Type": "application/json"} if body else {}
        token = self._token()
        if token:
            headers["Authorization"] = token
        return headers

    # -- one request, and the retry schedule around it ---------------------------------------

    def _record(self, verb: str, outcome: str, started: float, advisory: bool = False) -> None:
        if outcome != "ok" and not advisory:
            self.failed_calls += 1  # housekeeping passes again after any failure
        metrics.KUBE_CALLS.labels(self.name, verb, outcome).inc()
        metrics.KUBE_LATENCY.labels(self.name, verb).observe(time.perf_counter() - started)

    def _failed(self, err: KubeError) -> None:
        """Count a failure towards the circuit; a transport error or 5xx makes the cluster
        failing, and enough of them open its circuit (each change logged once)."""
        if not isinstance(err, ClusterUnavailable):
            self._succeeded()  # the API server answered: it is reachable
            return
        opened = self.circuit.failure()
        self._set_state(logs.CIRCUIT_OPEN if opened else
                        self.state if self.state == logs.CIRCUIT_OPEN else logs.FAILING,
                        str(err))

    def _succeeded(self) -> None:
        self.circuit.success()
        self._set_state(logs.REACHABLE, None)

    def _set_state(self, state: str, error: str | None) -> None:
        if state != self.state:
            previous, self.state = self.state, state
            for known in (logs.REACHABLE, logs.FAILING, logs.CIRCUIT_OPEN):
                metrics.CLUSTER_STATE.labels(self.name, known).set(1 if known == state else 0)
            logs.cluster_state(self.name, previous, state,
                               error=None if error is None else error.splitlines()[0][:300])

    async def _once(self, verb: str, method: str, url: str, *, content: bytes | None = None,
                    params: dict[str, str] | None = None) -> bytes:
        started = time.perf_counter()
        try:
            self.circuit.before(self.name)
        except CircuitOpen:
            self._record(verb, "CircuitOpen", started)
            raise
        try:
            async with self._slots:
                resp, body = await self._send(method, url, content, params)
        except _TRANSPORT_ERRORS as exc:
            err = transport_error(exc, self.name, verb)
            self._failed(err)
            self._record(verb, type(err).__name__, started)
            raise err from exc
        if resp.status_code >= 400:
            err = status_error(self.name, verb, resp.status_code, body, resp.headers,
                               resp.reason_phrase)
            self._failed(err)
            self._record(verb, type(err).__name__, started)
            raise err
        self._succeeded()
        self._record(verb, "ok", started)
        return body

    async def _send(self, method: str, url: str, content: bytes | None,
                    params: dict[str, str] | None) -> tuple[httpx.Response, bytes]:
        """One request straight to the client's transport: an httpx Request and Response, but
        none of the client's per-request work this service never needs (URL merging, cookie
        jar, auth flow, redirects, event hooks): a fifth of the CPU of a route write."""
        request = httpx.Request(method, self.server_url + url, params=params, content=content,
                                headers={**self._static_headers,
                                         **self._headers(content is not None)},
                                extensions=self._extensions)
        resp = await self._transport.handle_async_request(request)
        try:
            return resp, await resp.aread()
        finally:
            await resp.aclose()

    async def retrying(self, verb: str, attempt: Callable[[], Awaitable[T]], retry: bool = True,
                       what: tuple[str, str] | None = None) -> T:
        """Run ``attempt`` with this cluster's one retry schedule: bounded in count and time.

        The first try goes straight out; the retry policy is built only on a failure (nearly
        every call succeeds, and building it costs more than the call). ``what``, (kind, name)
        of a written object, makes each failure of a write leave a log line."""
        try:
            return await attempt()
        except KubeError as exc:
            if not retry or not _retryable(exc) or self.settings.kube_retries == 0:
                self._log_failure(verb, what, exc, 1, False)
                raise
            self._log_failure(verb, what, exc, 1, True)
        policy = AsyncRetrying(
            stop=stop_after_attempt(self.settings.kube_retries)
            | stop_after_delay(self.settings.kube_deadline),
            wait=self._wait,
            retry=retry_if_exception(_retryable),
            before_sleep=lambda state: self._log_failure(
                verb, what, state.outcome.exception() if state.outcome else None,
                state.attempt_number + 1, True),
            reraise=True,
        )
        try:
            await asyncio.sleep(self.backoff.delay(0))
            async for step in policy:
                with step:
                    return await attempt()
        except KubeError as exc:
            self._log_failure(verb, what, exc, policy.statistics.get("attempt_number", 0) + 1,
                              False)
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, state: Any) -> float:
        exc = state.outcome.exception() if state.outcome else None
        return self.backoff.delay(state.attempt_number, exc)

    def _log_failure(self, verb: str, what: tuple[str, str] | None, exc: BaseException | None,
                     attempt: int, retry: bool) -> None:
        if not isinstance(exc, KubeError):
            return
        if isinstance(exc, Conflict | NotFound):
            # Another writer was first: the caller re-reads and applies its change again (the
            # optimistic concurrency every write uses), so nothing for an operator to act on.
            log.debug("cluster %s: %s %s: %s", self.name, verb, what, exc,
                      extra={"cluster": self.name, "verb": verb, "status": exc.status})
            return
        if what is not None:
            logs.write_failed(self.name, what[0], what[1], status=exc.status, attempt=attempt,
                              retry=retry, error=str(exc))
        elif retry:
            log.info("cluster %s: %s failed (attempt %d), retrying: %s", self.name, verb,
                     attempt, exc, extra={"cluster": self.name, "verb": verb,
                                          "attempt": attempt, "retry": True,
                                          "status": exc.status})

    async def write_raw(self, res: Resource, body: bytes, name: str, exists: bool) -> bytes:
        """Create or replace an object from its JSON text; the API server's answer, unparsed
        (a caller that knows what it wrote needs only the new resourceVersion)."""
        if exists:
            verb, method, url = "update", "PUT", res.path(self.namespace, name)
        else:
            verb, method, url = "create", "POST", res.path(self.namespace)
        return await self.retrying(
            verb, lambda: self._once(verb, method, url, content=body), True, (res.plural, name))

    async def _json(self, verb: str, method: str, url: str,
                    body: dict[str, Any] | bytes | None = None,
                    params: dict[str, str] | None = None, retry: bool = True,
                    what: tuple[str, str] | None = None) -> dict[str, Any]:
        content = body if body is None or isinstance(body, bytes) else _json.dumps(body)
        raw = await self.retrying(
            verb, lambda: self._once(verb, method, url, content=content, params=params), retry,
            what,
        )
        result: dict[str, Any] = _json.loads(raw) if raw else {}
        return result

    async def list(self, res: Resource, label_selector: str, limit: int | None = None,
                   continue_token: str | None = None, namespace: str | None = None
                   ) -> dict[str, Any]:
        """One page of a list in the service's namespace, or in ``namespace``."""
        params = {"labelSelector": label_selector} if label_selector else {}
        if limit:
            params["limit"] = str(limit)
        if continue_token:
            params["continue"] = continue_token
        return await self._json("list", "GET", res.path(namespace or self.namespace),
                                params=params)

    async def get(self, res: Resource, name: str, namespace: str | None = None) -> dict[str, Any]:
        return await self._json("get", "GET", res.path(namespace or self.namespace, name))

    async def create(self, res: Resource, body: dict[str, Any] | bytes,
                     name: str | None = None, namespace: str | None = None) -> dict[str, Any]:
        """Create in the service's namespace, or in ``namespace`` (a ReferenceGrant in a user's)."""
        if name is None and isinstance(body, dict):
            name = body["metadata"]["name"]
        return await self._json("create", "POST", res.path(namespace or self.namespace), body,
                                what=(res.plural, name or "(new)"))

    async def replace(self, res: Resource, body: dict[str, Any] | bytes,
                      name: str | None = None, namespace: str | None = None) -> dict[str, Any]:
        """Replace an object; ``name`` is required with a body already serialised."""
        if name is None:
            assert isinstance(body, dict)
            name = body["metadata"]["name"]
        return await self._json("update", "PUT", res.path(namespace or self.namespace, name),
                                body, what=(res.plural, name))

    async def delete(self, res: Resource, name: str, resource_version: str | None = None,
                     namespace: str | None = None) -> None:
        options: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if resource_version:
            options["preconditions"] = {"resourceVersion": resource_version}
        await self._json("delete", "DELETE", res.path(namespace or self.namespace, name), options,
                         what=(res.plural, name))

    async def read(self, path: str) -> dict[str, Any]:
        """GET any API path (``federation check`` reads namespaces and gateways)."""
        return await self._json("get", "GET", path, retry=False)

    async def version(self) -> str:
        info = await self._json("version", "GET", "/version", retry=False)
        return str(info.get("gitVersion", "unknown"))

    async def watch(self, res: Resource, label_selector: str, resource_version: str,
                    timeout: int, *, namespace: str | None = None,
                    pool: str | None = None) -> AsyncIterator[str]:
        """The events of one watch request, one JSON line each (the caller parses what it needs:
        the echo of its own write it can skip by its resourceVersion). Opening the stream goes
        through the circuit, metrics and error translation like any call; the caller owns
        retries. In the service's namespace through the mirror's pool by default; elsewhere
        through a side pool (``pool``, made by :meth:`side_watch_pool`). A side pool's watches
        are advisory (the destination checks' Services): they neither count towards the
        circuit nor close it, since a restarting API server breaks many of them at once, and
        the circuit is there to tell whether route writes can reach the cluster."""
        http = self._watch_http if pool is None else self._side_pools.get(pool)
        advisory = pool is not None
        if http is None:
            raise RuntimeError(f"cluster {self.name!r}: watch before its pool is made")
        started = time.perf_counter()
        self.circuit.before(self.name)
        params = {"watch": "true", "allowWatchBookmarks": "true",
                  "resourceVersion": resource_version, "timeoutSeconds": str(timeout)}
        if label_selector:
            params["labelSelector"] = label_selector
        request_timeout = httpx.Timeout(timeout + 30, connect=self.settings.kube_connect_timeout)
        try:
            async with http.stream("GET", res.path(namespace or self.namespace), params=params,
                                    headers=self._headers(), timeout=request_timeout) as resp:
                if resp.status_code >= 400:
                    err = status_error(self.name, "watch", resp.status_code, await resp.aread(),
                                       resp.headers, resp.reason_phrase)
                    if not advisory:
                        self._failed(err)
                    self._record("watch", type(err).__name__, started, advisory)
                    raise err
                if not advisory:
                    self._succeeded()
                self._record("watch", "ok", started, advisory)
                async for line in resp.aiter_lines():
                    if line.strip():
                        yield line
        except _TRANSPORT_ERRORS as exc:
            err = transport_error(exc, self.name, "watch")
            if not advisory:
                self._failed(err)
            raise err from exc


# -- credentials ------------------------------------------------------------------------------


def _ssl_context(cfg: Any) -> ssl.SSLContext | bool:
    if not cfg.verify_ssl:
        return False
    ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
    if cfg.cert_file:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file or None)
    return ctx


def _credentials(registry: Registry, cluster: Cluster) -> Credentials:
    """Static credentials are read by :mod:`federation.kubeconfig`; the rest (exec plugins,
    auth-providers) by the ``kubernetes`` package, which refreshes them."""
    if cluster.in_cluster:
        static = kubeconfig.in_cluster()
    else:
        paths = kubeconfig_paths(registry.kubeconfig)
        if not paths:
            raise ConfigError("no kubeconfig found ($KUBECONFIG, ~/.kube/config)")
        static_or_none = kubeconfig.from_kubeconfig(paths, cluster.context)
        if static_or_none is None:
            return _package_credentials(paths, cluster.context)
        static = static_or_none
    return Credentials(server=static.server, verify=static.verify, token=static.token)


def _package_credentials(paths: list[Path], context: str | None) -> Credentials:
    # Imported here: requests, oauthlib and the client configuration, only for such users.
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    cfg = k8s.Configuration()
    kwargs = {"context": context, "client_configuration": cfg}
    if len(paths) == 1:
        k8s_config.load_kube_config(config_file=str(paths[0]), **kwargs)
    else:
        merged = k8s_config.kube_config.KubeConfigMerger(":".join(str(p) for p in paths)).config
        k8s_config.load_kube_config_from_dict(merged.value, **kwargs)

    def token() -> str | None:
        # Calls the loader's refresh hook (exec plugins refresh expired credentials).
        value = cfg.get_api_key_with_prefix("BearerToken", alias="authorization")
        if value:
            return str(value)
        if cfg.username and cfg.password:
            return str(cfg.get_basic_auth_token())
        return None

    return Credentials(server=str(cfg.host).rstrip("/"), verify=_ssl_context(cfg), token=token)


def build_clients(
    registry: Registry, settings: Settings, names: list[str] | None = None
) -> dict[str, ClusterClient]:
    """One client per cluster, built once. Errors name the cluster, never its credentials."""
    clients: dict[str, ClusterClient] = {}
    for cluster in registry.clusters.values():
        if names is not None and cluster.name not in names:
            continue
        try:
            creds = _credentials(registry, cluster)
        except ConfigError as exc:
            raise ConfigError(f"cluster {cluster.name!r}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - the loader raises many types
            where = "in-cluster credentials" if cluster.in_cluster else f"context {cluster.context!r}"
            raise ConfigError(
                f"cluster {cluster.name!r}: cannot load {where}: {type(exc).__name__}"
            ) from None
        clients[cluster.name] = ClusterClient(cluster, creds, settings)
    return clients
