"""What the Services of the namespaces routes point to serve, per cluster, kept by list-then-watch
(the destination check reads it: federation.destinations).

:class:`NamespaceServices` alone owns one namespace's cache in one cluster, kept by the one
list-then-watch loop (:mod:`federation.listwatch`: paged lists, a watch from the list's
resourceVersion, resumed after a break, relisted after 410 Gone, its restarts paced by the
cluster's one retry schedule). A namespace the service may not list or watch (403) is retried rarely
(:data:`FORBIDDEN_RETRY`): its routes stay "unknown" meanwhile. Each watch has a connection
pool of its own (:meth:`~federation.kube.ClusterClient.side_watch_pool`), so it never takes a
connection the mirror's watches were sized for. :class:`ClusterServices` starts and stops one
per namespace the routes need.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from .errors import KubeError, NotFound
from .kube import ClusterClient, Resource
from .listwatch import ListWatch

log = logging.getLogger(__name__)

SERVICES = Resource("", "v1", "services")
PAGE = 500  # Services per list request
MAX_NAMESPACES = 64  # namespaces watched per cluster; routes beyond them stay "unknown"
FORBIDDEN_RETRY = 600.0  # s between tries of a namespace the service may not read
ABSENT_RETRY = 60.0  # s between lists of a namespace the API server says does not exist
# s a namespace's reads may keep failing (5xx, unreachable) before its routes are "unknown"
# rather than judged by its last list: a restart of the API server is shorter than this.
STALE_AFTER = 60.0
FIRST_READ_WAIT = 10.0  # s a pass waits for a newly needed namespace's first list
BEYOND = f"more than {MAX_NAMESPACES} namespaces to read in one cluster"  # why not read

# What a namespace's Services serve: {name: ports (None: any port, an ExternalName Service)}.
Served = dict[str, frozenset[int] | None]


def served_by(items: Iterable[dict[str, Any]]) -> Served:
    out: Served = {}
    for svc in items:
        spec = svc.get("spec") or {}
        name = (svc.get("metadata") or {}).get("name")
        if not isinstance(name, str):
            continue
        if spec.get("type") == "ExternalName":
            out[name] = None  # ports are optional there: the name alone resolves
        else:
            out[name] = frozenset(p.get("port") for p in spec.get("ports") or []
                                  if isinstance(p.get("port"), int))
    return out


def first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__


class NamespaceServices(ListWatch):
    """The Services of one namespace in one cluster, as recent as the watch has told."""

    namespace: str  # always a namespace here, and a pool of its own
    pool: str

    def __init__(self, cluster: str, client: ClusterClient, namespace: str,
                 timeout: int) -> None:
        super().__init__(cluster, client, SERVICES, "", timeout, PAGE, namespace=namespace,
                         pool=f"services/{namespace}")
        self._listing: Served = {}  # the list under way
        self._served: Served | None = None  # None: never read (or not allowed to)
        self.error: str | None = None  # why the namespace is not read now (403)
        self.generation = 0  # moves with every change a check would see
        # Names changed since the check last took them; None: anything may have (a relist, a
        # refusal), so every route there is judged again.
        self.changed: set[str] | None = None
        self.parsed = 0  # Services parsed, from lists and events: what the cache costs
        self.first_read = asyncio.Event()  # the first list is in (or was refused)
        self._failing_since: float | None = None  # when the current run of failures began

    def view(self) -> tuple[Served | None, str | None]:
        """(what the namespace serves, None when unknown; why it is unknown, if known)."""
        return self._served, self.error

    async def run(self) -> None:
        """The loop of :mod:`federation.listwatch`, through a connection pool of its own."""
        self.client.side_watch_pool(self.pool)
        await super().run()

    async def failed(self, exc: KubeError, failures: int) -> tuple[bool, float, int]:
        relist = exc.status in (403, 404, 410)
        wait = self._after_failure(exc, failures)
        return relist or self._stale(exc), wait, 1

    def _stale(self, exc: KubeError) -> bool:
        """Whether reads have failed for :data:`STALE_AFTER`: the namespace is then unknown
        (a list must bring it back), not judged by a list nothing keeps fresh."""
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._failing_since < STALE_AFTER or self._served is None:
            return False
        self._set(None, f"no read has succeeded for {now - self._failing_since:.0f} s: "
                        f"{first_line(exc)}")
        return True

    def _succeeded(self) -> None:
        self._failing_since = None

    def _after_failure(self, exc: KubeError, failures: int) -> float:
        """Record what a failure means for the checks; the seconds to wait before trying
        again."""
        if exc.status == 410:
            return 0.0  # expired: relist at once
        if exc.status == 403:
            # Refused (list or watch): the routes there are unknown until a try succeeds. The
            # destination check logs it once, naming cluster and namespace.
            self._set(None, first_line(exc))
            return FORBIDDEN_RETRY
        if isinstance(exc, NotFound):
            self._set({}, None)  # no such namespace: no Service (listed again later)
            return ABSENT_RETRY
        log.debug("cluster %s: watch of the Services in %s: %s", self.cluster, self.namespace,
                  exc, extra={"cluster": self.cluster, "namespace": self.namespace})
        return self.client.backoff.delay(failures, exc)

    def take_changes(self) -> set[str] | None:
        """The names changed since the last call (None: judge every route here again)."""
        changed, self.changed = self.changed, set()
        return changed

    def _set(self, served: Served | None, error: str | None) -> None:
        if served != self._served or error != self.error:
            self.generation += 1
            self.changed = None
        self._served, self.error = served, error
        self.first_read.set()

    # -- the steps of the loop (federation.listwatch) -----------------------------------------

    def on_relist(self) -> None:
        self._listing = {}

    def on_page(self, items: list[dict[str, Any]]) -> None:
        self.parsed += len(items)
        self._listing.update(served_by(items))

    def on_listed(self, list_rv: str) -> None:
        """Every Service of the namespace: the new truth once whole."""
        self._succeeded()
        served, self._listing = self._listing, {}
        self._set(served, None)

    def on_closed(self) -> None:
        self._succeeded()  # a watch that ran to its timeout: the API server answers

    def skip(self, line: str) -> str | None:
        self._succeeded()  # any line of a watch (a bookmark too): the API server answers
        return None

    def on_event(self, kind: str, obj: dict[str, Any]) -> None:
        self._succeeded()
        self.parsed += 1
        self._apply(kind, obj)

    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        served = self._served
        if served is None:
            return  # not read yet: the list brings it
        if kind == "DELETED":
            name = (obj.get("metadata") or {}).get("name")
            if isinstance(name, str) and served.pop(name, False) is not False:
                self._changed(name)
            return
        for name, ports in served_by([obj]).items():
            if name not in served or served[name] != ports:
                served[name] = ports
                self._changed(name)

    def _changed(self, name: str) -> None:
        self.generation += 1
        if self.changed is not None:
            self.changed.add(name)


class ClusterServices:
    """One cluster's namespace caches: one per namespace its routes point to (at most
    :data:`MAX_NAMESPACES`), started when a namespace is first needed, stopped when no route
    needs it any more."""

    def __init__(self, cluster: str, client: ClusterClient, timeout: int) -> None:
        self.cluster = cluster
        self.client = client
        self.timeout = timeout
        self.namespaces: dict[str, NamespaceServices] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.beyond: set[str] = set()  # needed, but past MAX_NAMESPACES

    async def want(self, namespaces: Iterable[str], wait: float = FIRST_READ_WAIT) -> None:
        """Watch exactly these namespaces (the first MAX_NAMESPACES of them, by name); a new
        one's first list is waited for up to ``wait`` seconds, so its routes are judged in the
        pass that first needs them."""
        ordered = sorted(set(namespaces))
        wanted, self.beyond = ordered[:MAX_NAMESPACES], set(ordered[MAX_NAMESPACES:])
        for ns in set(self.namespaces) - set(wanted):
            await self._stop(ns)
        new = [self._start(ns) for ns in wanted if ns not in self.namespaces]
        if new:
            waits = [asyncio.ensure_future(n.first_read.wait()) for n in new]
            _, pending = await asyncio.wait(waits, timeout=wait)
            for waiting in pending:  # still listing: its routes are "unknown" this pass
                waiting.cancel()

    def _start(self, namespace: str) -> NamespaceServices:
        held = self.namespaces[namespace] = NamespaceServices(self.cluster, self.client,
                                                              namespace, self.timeout)
        self._tasks[namespace] = asyncio.get_running_loop().create_task(held.run())
        return held

    async def _stop(self, namespace: str) -> None:
        held = self.namespaces.pop(namespace)
        task = self._tasks.pop(namespace)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await self.client.close_side_pool(held.pool)

    def cancel(self) -> None:
        """Stop every watch now (the cluster left; its client closes the pools)."""
        for task in self._tasks.values():
            task.cancel()

    async def stop(self) -> None:
        for ns in list(self.namespaces):
            await self._stop(ns)

    def view(self, namespace: str) -> tuple[Served | None, str | None]:
        """(what the namespace serves, None when unknown; why it is unknown, if known)."""
        if namespace in self.beyond:
            return None, BEYOND
        held = self.namespaces.get(namespace)
        return (None, None) if held is None else held.view()

    def generations(self) -> tuple[tuple[str, int], ...]:
        """What moves whenever anything a check reads of a watched namespace changes."""
        return tuple((ns, held.generation) for ns, held in sorted(self.namespaces.items()))

    def take_changes(self) -> dict[str, set[str] | None]:
        """Per watched namespace, the Service names changed since the last call (None: every
        route there is to be judged again)."""
        return {ns: held.take_changes() for ns, held in self.namespaces.items()}

    def parsed(self) -> int:
        return sum(held.parsed for held in self.namespaces.values())
