"""The federation: one store per cluster, and the operations behind the API.

:class:`Federation` is what the HTTP layer calls. It keeps no state of its own beyond the
stores' caches: every route lives on the Kubernetes objects, so any number of replicas agree.
The request path is API → :class:`Federation` → :func:`federation.plan.plan_route` →
:class:`federation.store.ClusterStore` → Kubernetes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from . import heap, housekeeping, logs, metrics
from .activity import ActivityMonitor
from .claimer import HostClaims
from .config import Registry, kubeconfig_paths, load_registry
from .destinations import DestinationChecks
from .errors import ClusterUnavailable, ConfigError, KubeError
from .kube import ClusterClient, build_clients
from .model import ROUTE_HEADER, Entry, route_id
from .plan import plan_route
from .routespec import RouteKey, normalize_path, wire_forms
from .settings import Settings
from .sharing import refuse_shared_hosts
from .store import ClusterStore as Store
from .table import RouteTable


def make_store(registry: Registry, name: str, client: ClusterClient, table: RouteTable,
               settings: Settings) -> Store:
    """The store of a cluster (its backend is chosen inside: federation.backend)."""
    return Store(registry, registry.clusters[name], client, table, settings)


log = logging.getLogger(__name__)


def now_iso(offset: float = 0.0) -> str:
    """Now (plus ``offset`` seconds) as route write times are kept: ISO 8601, milliseconds."""
    when = datetime.now(UTC) + timedelta(seconds=offset)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def _move_routes(old: Store, new: Store) -> None:
    """Write every route (and edge rule) the old backend's store holds into the new one, with
    its support objects, before the swap: the table loses none of them on the way."""
    entries = [e for e in (old.entry(p) for p in old.paths()) if e is not None]
    for i in range(0, len(entries), 200):
        await asyncio.gather(*(_write(new, e) for e in entries[i:i + 200]))
    log.info("cluster %s: %d routes moved to the %s backend", new.name, len(entries),
             new.cluster.backend, extra={"cluster": new.name, "event": "backend-switched"})


async def _write(store: Store, entry: Entry) -> None:
    """A route's entry and the support objects it needs, together."""
    await asyncio.gather(*(store.mirror.ensure(obj) for obj in store.support_for(entry)),
                         store.backend.put(entry))


class Federation:
    def __init__(
        self,
        registry: Registry,
        settings: Settings,
        clients: dict[str, ClusterClient] | None = None,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.table = RouteTable()
        clients = clients if clients is not None else build_clients(registry, settings)
        self.stores: dict[str, Store] = {
            name: make_store(registry, name, client, self.table, settings)
            for name, client in clients.items()
        }
        self.tasks: list[asyncio.Task[None]] = []
        self.last_reload_error: str | None = None
        self.orphans: dict[str, float] = {}  # edge rules without a route, since when
        self.activity = ActivityMonitor(lambda: self.registry, self.table, settings, self.ready)
        # Which gateway hosts this hub holds on each cluster (federation/claims.py).
        self.claims = HostClaims(registry, settings.reconcile_interval,
                                 str(settings.config or "clusters.yaml"))
        # Each route's Service, judged every pass from Services caches kept by watches.
        self.destinations = DestinationChecks(settings.watch_timeout)
        for store in self.stores.values():
            store.scope.claimed = self.may_write

    # -- lifecycle ---------------------------------------------------------------------------

    def clients(self) -> dict[str, ClusterClient]:
        return {n: s.client for n, s in self.stores.items()}

    async def refuse_shared_hosts(self) -> None:
        """ConfigError when another hub holds a host this one routes on a cluster (its claims
        taken before anything is written: federation.claims), or when a hub that takes no
        claims (an older release) has routes there (federation.sharing)."""
        clients = self.clients()
        await self.claims.start(clients)
        try:
            await refuse_shared_hosts(self.registry, dict(clients))
        except ConfigError:
            await self.claims.give_back_all(clients)
            raise

    async def start(self) -> None:
        for store in self.stores.values():
            store.start()
        self.tasks.append(asyncio.create_task(self._probe_loop()))
        self.tasks.append(asyncio.create_task(self._reconcile_loop()))
        # The cycle collector kept off the cache as the table fills and grows (heap.py).
        self.tasks.append(asyncio.create_task(heap.keep_settled(lambda: len(self.table),
                                                                self.ready)))
        self.activity.start()

    async def stop(self) -> None:
        await self.activity.stop()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        await self.destinations.stop()
        await asyncio.gather(*(store.stop() for store in self.stores.values()))

    async def reload_file(self, path: Path) -> bool:
        """Load clusters.yaml and apply it; a broken file keeps the running config. The one
        place a reload happens (file change or SIGHUP)."""
        before = list(self.registry.clusters)
        try:
            registry = await asyncio.to_thread(load_registry, path)
            # A new kubeconfig may bring new credentials: the log guard must know them first.
            logs.register_kubeconfig_secrets(kubeconfig_paths(registry.kubeconfig))
            await self.reload(registry)
        except ConfigError as exc:
            # The message names the key and the file, never a credential (load_registry's contract).
            log.error("config %s reload refused, keeping the running config: %s", path, exc,
                      extra={"event": "reload-refused"})
            self.last_reload_error = str(exc)
            return False
        self.last_reload_error = None
        added = [n for n in registry.clusters if n not in before]
        removed = [n for n in before if n not in registry.clusters]
        log.info("config %s reloaded: clusters %s (added: %s; removed: %s)", path,
                 ", ".join(registry.clusters), ", ".join(added) or "none",
                 ", ".join(removed) or "none",
                 extra={"event": "reload-accepted", "clusters": list(registry.clusters),
                        "added": added, "removed": removed})
        return True

    async def reload(self, registry: Registry) -> None:
        """Apply a new registry: add, remove or re-point clusters; leave the others untouched.

        A cluster whose connection (context, namespace, kubeconfig) is unchanged keeps its
        store and only takes the new settings. A re-pointed or new cluster gets a new store
        whose cache syncs (into a private table) before it replaces the old one, so the table
        never loses routes on the way. Raises ConfigError, before changing anything, when a
        client cannot be built.
        """
        old = self.registry

        def connection(reg: Registry, name: str) -> tuple[object, ...]:
            c = reg.clusters[name]
            return (c.context, c.in_cluster, c.namespace, reg.kubeconfig, reg.instance, c.backend,
                    c.external_backend)

        repointed = [n for n in registry.clusters
                     if n not in old.clusters or connection(registry, n) != connection(old, n)]
        removed = [n for n in old.clusters if n not in registry.clusters]
        clients = build_clients(registry, self.settings, repointed)
        try:
            # The new configuration's hosts claimed before any of it is applied.
            await self.claims.prepare(registry, {**self.clients(), **clients})
        except (ConfigError, KubeError):
            await asyncio.gather(*(c.close() for c in clients.values()))
            raise
        fresh = {n: make_store(registry, n, clients[n], RouteTable(), self.settings)
                 for n in repointed}
        for store in fresh.values():
            store.scope.claimed = self.may_write
        for store in fresh.values():
            store.start()
        deadline = time.monotonic() + self.settings.kube_deadline
        while not all(s.synced for s in fresh.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        switched = [n for n in repointed if n in old.clusters
                    and old.clusters[n].backend != registry.clusters[n].backend]
        try:
            await asyncio.gather(*(_move_routes(self.stores[n], fresh[n]) for n in switched))
        except KubeError as exc:
            # Nothing swapped yet: the running stores keep serving, the next reload retries.
            await asyncio.gather(*(store.stop() for store in fresh.values()))
            raise ConfigError(f"cannot move the routes of {', '.join(switched)} to the new "
                              f"backend yet ({exc}); keeping the running config") from None
        # The swap: no await until it is done, so no request sees half of it.
        retired = [self.stores.pop(n) for n in removed + repointed if n in self.stores]
        for store in retired:
            store.withdraw()
        self.registry = registry
        self.claims.adopt(registry)
        for store in self.stores.values():
            store.reconfigure(registry, registry.clusters[store.name])
        for name, store in fresh.items():
            store.adopt_table(self.table)
            self.stores[name] = store
        # A switched cluster's old objects go once the new ones answer for its routes.
        await asyncio.gather(*(s.purge() for s in retired if s.name in switched),
                             return_exceptions=True)
        await asyncio.gather(*(store.stop() for store in retired))
        await asyncio.gather(*(self.probe(store) for store in fresh.values()))

    def ready(self) -> bool:
        """Every cluster that answers has synced once; a down cluster does not hold us back."""
        synced_any = False
        for store in self.stores.values():
            if store.synced:
                synced_any = True
            elif store.probe.reachable is not False:
                return False
        return synced_any

    # -- the proxy API -----------------------------------------------------------------------

    def routes_json(self, inactive_since: str | None = None) -> bytes:
        if inactive_since is None:
            return self.table.render()
        return self.table.filtered(inactive_since)

    def get_route(self, raw_path: str) -> dict[str, Any] | None:
        entry = self.table.get(normalize_path(raw_path))
        return None if entry is None else self.table.public(entry)

    def holders(self, path: str) -> list[Store]:
        return [s for s in self.stores.values() if s.holds(path)]

    async def add_route(self, raw_path: str, body: dict[str, Any]) -> None:
        plan = plan_route(self.registry, raw_path, body, now_iso())
        path = plan.key.path
        written = {name for name, _ in plan.writes}
        for name in written:  # a set lookup each, unless a cluster's claims are not taken yet
            if not self.claims.holds(name):
                await self.claims.require(name, self._store_of(name).client)
        # The owner's rule, the home cluster's edge rule and their support objects go out
        # together: the hub is told only once all are stored (a failure answers 503 and the hub
        # retries; housekeeping restores a missing support object), so nobody is sent there early.
        await asyncio.gather(*(self._write_claimed(self._store_of(name), entry)
                               for name, entry in plan.writes))
        stale = [s for s in self.holders(path) if s.name not in written]
        ours = plan.writes[0][1].rank
        results = await asyncio.gather(*(s.backend.remove(path, older_than=ours) for s in stale),
                                       return_exceptions=True)
        for store, result in zip(stale, results, strict=True):
            if isinstance(result, Exception):
                # The new copy is the newest write and wins; the reconciler removes the old one.
                log.warning("cluster %s: route %s moved away, but its old copy stays for now: %s",
                            store.name, path, result, extra={"cluster": store.name})
        if self.settings.warmup:
            await self._warmup(plan.writes[-1][0], plan.key)  # home, for an edge route

    def may_write(self, cluster: str) -> bool:
        """Whether this hub holds every host claim of ``cluster`` (federation/claimer.py)."""
        return self.claims.holds(cluster)

    def _store_of(self, name: str) -> Store:
        """The store of a cluster a write was planned for; a reload may have removed it while
        the write waited for claims (503: the hub tries again with the running configuration)."""
        store = self.stores.get(name)
        if store is None:
            raise ClusterUnavailable(f"cluster {name!r} was removed by a reload meanwhile; try "
                                     "again", cluster=name, verb="write")
        return store

    async def _write_claimed(self, store: Store, entry: Entry) -> None:
        """A route write: a claim lost since it was checked (another hub took it meanwhile)
        refuses the write (HostClaimed, 409) rather than leaving this cluster out of it."""
        if not self.claims.holds(store.name):
            await self.claims.require(store.name, store.client)
        await _write(store, entry)

    async def write_entry(self, store: Store, entry: Entry) -> None:
        if not self.claims.holds(store.name):
            # Housekeeping's writes wait for the cluster's claims (the conflict is reported
            # by /readyz, /clusters and the metric; add_route took them or refused before).
            return
        await _write(store, entry)

    async def delete_route(self, raw_path: str) -> bool:
        """Remove a route from every cluster that holds it; False when none does (404).

        A copy written through another replica that this one has not heard of (a route not
        seen yet, or one that moved between clusters just now) would otherwise stay, and answer
        for the route once this one went: so the clusters not known to hold it are read first
        (all at once) while the route's last known write is recent (two housekeeping intervals:
        by then every replica's housekeeping has removed the older copies a move left) or a
        watch is not synced. Not covered: a route known here by an old write that another
        replica moved within this replica's watch lag; JupyterHub's route check deletes such a
        leftover on its next pass."""
        path = normalize_path(raw_path)
        entry = self.table.get(path)
        known = entry is not None
        stores = list(self.stores.values())
        holders = {s.name for s in stores if s.holds(path)}
        settled = now_iso(-2 * self.settings.reconcile_interval)
        results = await asyncio.gather(
            *(self._remove_from(s, path, look=entry is None or entry.last_activity >= settled
                                or s.health.state != "synced") for s in stores),
            return_exceptions=True)
        removed = any(r is True for r in results)
        for store, result in zip(stores, results, strict=True):
            if not isinstance(result, BaseException):
                continue
            if store.name in holders or not (known or removed):
                # A holder failed, or a cluster that could not be read may hold the route:
                # 503, so the hub asks again, rather than a 404 it would believe.
                raise result
            # The route is gone from the clusters known to hold it; one that cannot be read
            # now may still keep a copy written through another replica.
            log.warning("cluster %s: route %s deleted elsewhere, but this cluster could not be "
                        "read for a copy of it: %s", store.name, path, result,
                        extra={"cluster": store.name})
        return known or removed

    @staticmethod
    async def _remove_from(store: Store, path: str, look: bool) -> bool:
        """Remove the route's entry from one cluster (with ``look``, read first where not
        known to be there); True when the cluster held it."""
        if not store.holds(path):
            if not look:
                return False
            await store.backend.refresh(path)
            if not store.holds(path):
                return False
        await store.backend.remove(path)
        return True

    async def _warmup(self, cluster: str, key: RouteKey) -> bool:
        """Poll the gateway until it serves the new route (the rule's response header), or
        give up at the deadline and answer anyway: a slow mesh must not block the hub."""
        import httpx

        base = self.settings.warmup_urls.get(cluster)
        if not base:
            return False
        host = key.host or self.registry.clusters[cluster].hosts[0]
        url = base.rstrip("/") + wire_forms(key.rest)[0]
        want = route_id(key.path)
        deadline = time.monotonic() + self.settings.warmup_timeout
        async with httpx.AsyncClient(timeout=2.0, follow_redirects=False) as http:
            while time.monotonic() < deadline:
                try:
                    resp = await http.get(url, headers={"Host": host})
                    if resp.headers.get(ROUTE_HEADER) == want:
                        return True
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        metrics.WARMUP_TIMEOUTS.labels(cluster).inc()
        log.info("route %s not yet served by %s's gateway after %.1fs; answering anyway",
                 key.path, cluster, self.settings.warmup_timeout, extra={"cluster": cluster})
        return False

    # -- housekeeping ------------------------------------------------------------------------

    async def probe(self, store: Store) -> None:
        start = time.perf_counter()
        probe = store.probe
        try:
            probe.version = await asyncio.wait_for(
                store.client.version(), timeout=self.settings.kube_connect_timeout + 1
            )
            probe.reachable = True
            probe.error = None
        except (KubeError, TimeoutError) as exc:
            probe.reachable = False
            probe.error = str(exc) or "timed out"
        probe.latency = time.perf_counter() - start
        probe.last_probe = time.time()
        if store.health.last_event:
            metrics.CACHE_AGE.labels(store.name).set(time.time() - store.health.last_event)

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.gather(*(self.probe(s) for s in list(self.stores.values())))
            await asyncio.sleep(self.settings.probe_interval)

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reconcile_interval)
            try:
                await self.reconcile()
            except Exception:  # noqa: BLE001 - housekeeping must never stop
                log.exception("reconcile failed")

    async def reconcile(self, grace: float | None = None) -> None:
        """Renew the host claims (and take those still missing), then repair and tidy: stale
        duplicates, edge rules, each store's own objects; then read the Services the routes
        point to (federation.destinations)."""
        await self.claims.keep(self.clients())
        await housekeeping.reconcile(self, self.settings.gc_grace if grace is None else grace)
        await self.destinations.run(self.registry, list(self.stores.values()))
