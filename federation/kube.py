"""Kubernetes access: one API client per kubeconfig context, with timeouts, bounded retries,
a circuit breaker and metrics. Every call goes through :meth:`ClusterClient.call`, which turns
the client's exceptions into :mod:`federation.errors` (cause chained).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_random,
)
from tenacity.wait import wait_base

from . import metrics
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
from .objects import GROUP, VERSION
from .settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


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

    def success(self) -> None:
        with self._lock:
            self.failures = 0
            self.opened_at = None
            self._trial = False

    def failure(self) -> None:
        with self._lock:
            self.failures += 1
            self._trial = False
            if self.failures >= self.threshold:
                self.opened_at = time.monotonic()


def _retry_after(exc: ApiException) -> float | None:
    headers = exc.headers or {}
    value = headers.get("Retry-After") or headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _status_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "")
        return str(body.get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)


def translate(exc: BaseException, cluster: str, verb: str) -> KubeError:
    """Map a client exception to our tree; never includes credentials (only status and message)."""
    if isinstance(exc, KubeError):
        return exc
    if isinstance(exc, ApiException):
        status = exc.status or 0
        msg = f"{verb} on cluster {cluster!r}: {status} {_status_message(exc)}"
        if status == 404:
            return NotFound(msg, cluster=cluster, verb=verb, status=status)
        if status == 409:
            return Conflict(msg, cluster=cluster, verb=verb, status=status)
        if status == 429 or status >= 500 or status == 0:
            return ClusterUnavailable(
                msg, cluster=cluster, verb=verb, status=status, retry_after=_retry_after(exc)
            )
        return Rejected(msg, cluster=cluster, verb=verb, status=status)
    name = type(exc).__name__
    return ClusterUnavailable(
        f"{verb} on cluster {cluster!r}: cannot reach the API server ({name})",
        cluster=cluster,
        verb=verb,
    )


class _WaitRetryAfter(wait_base):
    """Exponential backoff with jitter, but at least what a 429's Retry-After asks for."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.backoff = wait_exponential(multiplier=initial, max=maximum) + wait_random(0, initial)
        self.initial = initial
        self.maximum = maximum

    def first(self, exc: BaseException) -> float:
        """The wait before the first retry."""
        wait = self.initial + random.uniform(0, self.initial)
        if isinstance(exc, KubeError) and exc.retry_after:
            wait = max(wait, min(exc.retry_after, self.maximum * 2))
        return wait

    def __call__(self, retry_state: Any) -> float:
        wait = float(self.backoff(retry_state))
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, KubeError) and exc.retry_after:
            wait = max(wait, min(exc.retry_after, self.maximum * 2))
        return wait


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, ClusterUnavailable) and not isinstance(exc, CircuitOpen)


class ClusterClient:
    """Access to one cluster's Istio objects in the service's namespace."""

    def __init__(self, cluster: Cluster, api_client: k8s.ApiClient, settings: Settings) -> None:
        self.cluster = cluster
        self.name = cluster.name
        self.namespace = cluster.namespace
        self.api_client = api_client
        self.custom = k8s.CustomObjectsApi(api_client)
        self.settings = settings
        self.server_url = str(api_client.configuration.host)
        self.circuit = Circuit(settings.circuit_threshold, settings.circuit_reset)
        self.executor = ThreadPoolExecutor(
            max_workers=settings.kube_workers, thread_name_prefix=f"kube-{cluster.name}"
        )
        self.timeout = (settings.kube_connect_timeout, settings.kube_read_timeout)
        self._wait = _WaitRetryAfter(settings.kube_backoff_initial, settings.kube_backoff_max)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        try:
            self.api_client.close()
        except Exception:  # noqa: BLE001 - closing is best effort at shutdown
            pass

    def _timed(self, verb: str, fn: Callable[[], T]) -> T:
        start = time.perf_counter()
        outcome = "ok"
        try:
            self.circuit.before(self.name)
            try:
                result = fn()
            except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
                err = translate(exc, self.name, verb)
                outcome = type(err).__name__
                if isinstance(err, ClusterUnavailable):
                    self.circuit.failure()
                else:
                    self.circuit.success()
                raise err from exc
            self.circuit.success()
            return result
        except CircuitOpen:
            outcome = "CircuitOpen"
            raise
        finally:
            metrics.KUBE_CALLS.labels(self.name, verb, outcome).inc()
            metrics.KUBE_LATENCY.labels(self.name, verb).observe(time.perf_counter() - start)

    async def call(self, verb: str, fn: Callable[[], T], *, retry: bool = True) -> T:
        """Run one blocking client call in this cluster's threads, with bounded retries."""
        loop = asyncio.get_running_loop()
        job = functools.partial(self._timed, verb, fn)
        started = time.monotonic()
        try:
            # The first try goes straight out: building a retry policy per call costs more CPU
            # than the call itself, and nearly every call succeeds.
            return await loop.run_in_executor(self.executor, job)
        except ClusterUnavailable as exc:
            if not retry or self.settings.kube_retries == 0 or not _retryable(exc):
                raise
            first_failure = exc
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.settings.kube_retries)
            | stop_after_delay(max(0.0, self.settings.kube_deadline - (time.monotonic() - started))),
            wait=self._wait,
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        await asyncio.sleep(self._wait.first(first_failure))
        async for attempt in retrying:
            with attempt:
                return await loop.run_in_executor(self.executor, job)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- the verbs the service uses ---------------------------------------------------------

    async def _dict_call(self, verb: str, fn: Callable[[], object]) -> dict[str, Any]:
        result = await self.call(verb, fn)
        return cast(dict[str, Any], result)

    async def list(self, plural: str, label_selector: str) -> dict[str, Any]:
        return await self._dict_call(
            "list",
            lambda: self.custom.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, plural,
                label_selector=label_selector, _request_timeout=self.timeout,
            ),
        )

    async def get(self, plural: str, name: str) -> dict[str, Any]:
        return await self._dict_call(
            "get",
            lambda: self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, plural, name, _request_timeout=self.timeout
            ),
        )

    async def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._dict_call(
            "create",
            lambda: self.custom.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, plural, body, _request_timeout=self.timeout
            ),
        )

    async def replace(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        return await self._dict_call(
            "update",
            lambda: self.custom.replace_namespaced_custom_object(
                GROUP, VERSION, self.namespace, plural, name, body, _request_timeout=self.timeout
            ),
        )

    async def delete(self, plural: str, name: str, resource_version: str | None = None) -> None:
        options = k8s.V1DeleteOptions(
            preconditions=k8s.V1Preconditions(resource_version=resource_version)
            if resource_version
            else None
        )
        await self.call(
            "delete",
            lambda: self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, self.namespace, plural, name, body=options,
                _request_timeout=self.timeout,
            ),
        )

    async def version(self) -> str:
        info = await self.call(
            "version",
            lambda: k8s.VersionApi(self.api_client).get_code(_request_timeout=self.timeout),
            retry=False,
        )
        return str(info.git_version)


def _api_client(registry: Registry, cluster: Cluster, settings: Settings) -> k8s.ApiClient:
    configuration = k8s.Configuration()
    if cluster.in_cluster:
        k8s_config.load_incluster_config(client_configuration=configuration)
    else:
        paths = kubeconfig_paths(registry.kubeconfig)
        if not paths:
            raise ConfigError("no kubeconfig found ($KUBECONFIG, ~/.kube/config)")
        loader_kwargs = {"context": cluster.context, "client_configuration": configuration}
        if len(paths) == 1:
            k8s_config.load_kube_config(config_file=str(paths[0]), **loader_kwargs)
        else:
            merged = k8s_config.kube_config.KubeConfigMerger(
                ":".join(str(p) for p in paths)
            ).config
            k8s_config.load_kube_config_from_dict(merged.value, **loader_kwargs)
    # Our own retries (with backoff and a circuit) replace urllib3's silent ones.
    configuration.retries = False
    configuration.connection_pool_maxsize = settings.kube_workers + 4
    return k8s.ApiClient(configuration)


def build_clients(
    registry: Registry, settings: Settings, names: list[str] | None = None
) -> dict[str, ClusterClient]:
    """One client per cluster, built once. Errors name the cluster, never its credentials."""
    clients: dict[str, ClusterClient] = {}
    for cluster in registry.clusters.values():
        if names is not None and cluster.name not in names:
            continue
        try:
            api = _api_client(registry, cluster, settings)
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - the loader raises many types
            where = "in-cluster credentials" if cluster.in_cluster else f"context {cluster.context!r}"
            raise ConfigError(
                f"cluster {cluster.name!r}: cannot load {where}: {type(exc).__name__}"
            ) from None
        clients[cluster.name] = ClusterClient(cluster, api, settings)
    return clients
