"""The federation: cluster clients, caches and writers, and the operations behind the API.

:class:`Federation` is what the HTTP layer calls. It keeps no state of its own beyond the
caches: every route lives on the Kubernetes objects, so any number of replicas agree.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

from . import metrics
from .activity import ActivityMonitor
from .cache import ClusterCache, RouteTable, Watcher
from .config import Cluster, Registry
from .errors import InvalidRoute, KubeError, NotFound
from .kube import ClusterClient, build_clients
from .objects import (
    KINDS,
    LABEL_ROLE,
    ROUTE_HEADER,
    Entry,
    ShardKey,
    entry_destination,
    root_delegates,
    root_name,
    roots_for_shard,
    route_id,
    shard_key,
    shard_key_of,
    support_objects,
)
from .plan import plan_route
from .routespec import RouteKey, normalize_path, wire_forms
from .settings import Settings
from .writer import ClusterWriter

log = logging.getLogger(__name__)


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class ClusterRuntime:
    """Everything the service holds for one cluster."""

    def __init__(self, registry: Registry, cluster: Cluster, client: ClusterClient, table: RouteTable):
        self.cluster = cluster
        self.client = client
        self.cache = ClusterCache(client, registry.instance, table)
        self.writer = ClusterWriter(registry, cluster, client, self.cache)
        self.watchers: list[Watcher] = []
        self.reachable: bool | None = None
        self.latency: float | None = None
        self.version: str | None = None
        self.last_probe: float | None = None
        self.probe_error: str | None = None
        self.unused_since: dict[tuple[str, str], float] = {}

    def start(self, loop: asyncio.AbstractEventLoop, watch_timeout: int) -> None:
        for plural in KINDS:
            watcher = Watcher(self.cache, plural, loop, watch_timeout)
            watcher.start()
            self.watchers.append(watcher)

    def stop(self) -> None:
        for watcher in self.watchers:
            watcher.stop()
        self.client.close()


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
        self.clusters: dict[str, ClusterRuntime] = {
            name: ClusterRuntime(registry, registry.clusters[name], client, self.table)
            for name, client in clients.items()
        }
        self.tasks: list[asyncio.Task[None]] = []
        self.activity = ActivityMonitor(lambda: self.registry, self.table, settings)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for runtime in self.clusters.values():
            runtime.start(loop, self.settings.watch_timeout)
        self.tasks.append(asyncio.create_task(self._probe_loop()))
        self.tasks.append(asyncio.create_task(self._reconcile_loop()))
        self.activity.start()

    async def stop(self) -> None:
        await self.activity.stop()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        for runtime in self.clusters.values():
            runtime.stop()

    async def reload(self, registry: Registry) -> None:
        """Apply a new registry: add, remove or re-point clusters; leave the others untouched.

        A cluster whose connection (context, namespace, kubeconfig) is unchanged keeps its
        client and cache and only takes the new settings. A re-pointed or new cluster gets a
        new client whose cache syncs before it replaces the old one, so the table never loses
        routes on the way. Raises ConfigError, before changing anything, when a client cannot
        be built.
        """
        old = self.registry

        def connection(reg: Registry, name: str) -> tuple[object, ...]:
            c = reg.clusters[name]
            return (c.context, c.in_cluster, c.namespace, reg.kubeconfig, reg.instance)

        repointed = [
            n for n in registry.clusters
            if n not in old.clusters or connection(registry, n) != connection(old, n)
        ]
        removed = [n for n in old.clusters if n not in registry.clusters]
        clients = build_clients(registry, self.settings, repointed)
        loop = asyncio.get_running_loop()
        fresh = {
            n: ClusterRuntime(registry, registry.clusters[n], clients[n], self.table)
            for n in repointed
        }
        for rt in fresh.values():
            rt.cache.table = RouteTable()  # fill a private table until the swap
            rt.start(loop, self.settings.watch_timeout)
        deadline = time.monotonic() + self.settings.kube_deadline
        while not all(rt.cache.ever_synced for rt in fresh.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        # The swap: no await from here to the end of the loop, so no request sees half of it.
        retired = [self.clusters.pop(n) for n in removed + [n for n in repointed if n in self.clusters]]
        for rt in retired:
            for path in list(rt.cache.entries):
                self.table.update(rt.cluster.name, path, None)
        self.registry = registry
        for rt in self.clusters.values():
            rt.cluster = registry.clusters[rt.cluster.name]
            rt.writer.reconfigure(registry, rt.cluster)
        for name, rt in fresh.items():
            rt.cache.table = self.table
            for path, (_, entry) in rt.cache.entries.items():
                if entry.owner == name and not entry.edge:
                    self.table.update(name, path, entry)
            self.clusters[name] = rt
        for rt in retired:
            rt.stop()
        await asyncio.gather(*(self.probe(rt) for rt in fresh.values()))

    def ready(self) -> bool:
        """Every cluster that answers has synced once; a down cluster does not hold us back."""
        synced_any = False
        for rt in self.clusters.values():
            if rt.cache.ever_synced:
                synced_any = True
            elif rt.reachable is not False:
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

    def _holders(self, path: str) -> list[ClusterRuntime]:
        return [rt for rt in self.clusters.values() if path in rt.cache.entries]

    async def add_route(self, raw_path: str, body: dict[str, Any]) -> None:
        plan = plan_route(self.registry, raw_path, body, now_iso())
        path, key = plan.key.path, plan.key
        written = {name for name, _ in plan.writes}
        # The owner's rule, the home cluster's edge rule and their support objects go out
        # together: the hub is told only once all are stored (a failure answers 503 and the hub
        # retries; housekeeping restores a missing support object), so nobody is sent there early.
        await asyncio.gather(
            *(self._write_entry(self.clusters[name], key, entry) for name, entry in plan.writes)
        )
        stale = [rt for rt in self._holders(path) if rt.cluster.name not in written]
        ours = (plan.writes[0][1].last_activity, plan.writes[0][1].owner)
        results = await asyncio.gather(
            *(self._remove_entry(rt, key, older_than=ours) for rt in stale), return_exceptions=True
        )
        for rt, result in zip(stale, results, strict=True):
            if isinstance(result, Exception):
                # The new copy is the newest write and wins; the reconciler removes the old one.
                log.warning("route %s moved, but the old copy in %s stays for now: %s",
                            path, rt.cluster.name, result)
        if self.settings.warmup:
            entry_cluster = plan.writes[-1][0]  # home for an edge route: where users come in
            await self._warmup(entry_cluster, key)

    async def _warmup(self, cluster: str, key: RouteKey) -> bool:
        """Poll the gateway until it serves the new route (the rule's response header), or
        give up at the deadline and answer anyway: a slow mesh must not block the hub."""
        import httpx

        base = self.settings.warmup_urls.get(cluster)
        if not base:
            return False
        c = self.registry.clusters[cluster]
        host = key.host or c.hosts[0]
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
                 key.path, cluster, self.settings.warmup_timeout)
        return False

    async def _write_entry(self, rt: ClusterRuntime, key: RouteKey, entry: Entry) -> None:
        dest = entry_destination(self.registry, rt.cluster, entry)
        await asyncio.gather(
            *(self._ensure_object(rt, obj) for obj in support_objects(self.registry, rt.cluster, dest)),
            rt.writer.set_entry(shard_key(key, rt.cluster.shards), entry),
        )

    def _shard_of(self, rt: ClusterRuntime, key: RouteKey) -> ShardKey:
        """Where the route is stored in this cluster: where the cache saw it (it may have been
        written under another shard count), else where it would go."""
        held = rt.cache.entries.get(key.path)
        if held is not None:
            obj = rt.cache.objects["virtualservices"].get(held[0])
            stored = shard_key_of(obj) if obj is not None else None
            if stored is not None:
                return stored
        return shard_key(key, rt.cluster.shards)

    async def _remove_entry(
        self, rt: ClusterRuntime, key: RouteKey, older_than: tuple[str, str] | None = None
    ) -> None:
        await rt.writer.remove_entry(self._shard_of(rt, key), key.path, older_than)

    async def delete_route(self, raw_path: str) -> bool:
        path = normalize_path(raw_path)
        key = RouteKey.parse(path)
        if self.table.get(path) is None:
            # Not in this replica's cache, but maybe just written through another replica and
            # not yet seen here: read the shards it would be in before answering 404.
            await self._refresh_shards_of(key)
            if self.table.get(path) is None:
                return False
        holders = self._holders(path)
        results = await asyncio.gather(
            *(self._remove_entry(rt, key) for rt in holders), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return True

    async def _refresh_shards_of(self, key: RouteKey) -> None:
        async def one(rt: ClusterRuntime) -> None:
            name = shard_key(key, rt.cluster.shards).name(self.registry.instance)
            try:
                rt.cache.apply("virtualservices", "MODIFIED", await rt.client.get("virtualservices", name))
            except KubeError:
                pass  # absent, or the cluster is unreachable: nothing more to learn there

        await asyncio.gather(*(one(rt) for rt in self.clusters.values()))

    async def _ensure_object(self, rt: ClusterRuntime, obj: dict[str, Any]) -> None:
        plural = {v: k for k, v in KINDS.items()}[obj["kind"]]
        name = obj["metadata"]["name"]
        cached = rt.cache.objects[plural].get(name)
        if cached is not None and cached.get("spec") == obj["spec"]:
            return
        try:
            if cached is None:
                stored = await rt.client.create(plural, obj)
            else:
                obj = {**obj, "metadata": {**obj["metadata"],
                                            "resourceVersion": cached["metadata"]["resourceVersion"]}}
                stored = await rt.client.replace(plural, obj)
        except KubeError as exc:
            if exc.status != 409:
                raise
            stored = await rt.client.get(plural, name)  # another replica made it
        rt.cache.apply(plural, "MODIFIED", stored)

    # -- housekeeping ------------------------------------------------------------------------

    async def probe(self, rt: ClusterRuntime) -> None:
        start = time.perf_counter()
        try:
            rt.version = await asyncio.wait_for(
                rt.client.version(), timeout=self.settings.kube_connect_timeout + 1
            )
            rt.reachable = True
            rt.probe_error = None
        except (KubeError, TimeoutError) as exc:
            rt.reachable = False
            rt.probe_error = str(exc) or "timed out"
        rt.latency = time.perf_counter() - start
        rt.last_probe = time.time()
        if rt.cache.last_event:
            metrics.CACHE_AGE.labels(rt.cluster.name).set(time.time() - rt.cache.last_event)

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.gather(*(self.probe(rt) for rt in self.clusters.values()))
            await asyncio.sleep(self.settings.probe_interval)

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reconcile_interval)
            try:
                await self.reconcile()
            except Exception:  # noqa: BLE001 - housekeeping must never stop
                log.exception("reconcile failed")

    async def reconcile(self, grace: float | None = None) -> None:
        """Repair and tidy: stale duplicates, missing root delegates, unused objects."""
        grace = self.settings.gc_grace if grace is None else grace
        for path, entries in self.table.duplicates():
            winner = self.table.get(path)
            for entry in entries:
                if winner is not None and entry is not winner:
                    rt = self.clusters.get(entry.owner)
                    if rt is not None and not rt.client.circuit.is_open:
                        try:
                            await self._remove_entry(
                                rt, RouteKey.parse(path), (winner.last_activity, winner.owner)
                            )
                        except KubeError as exc:
                            log.info("cannot remove stale %s from %s yet: %s", path, entry.owner, exc)
        await self._repair_edges(grace)
        await asyncio.gather(
            *(self._tidy(rt, grace) for rt in self.clusters.values() if rt.cache.ever_synced),
            return_exceptions=True,
        )

    async def _repair_edges(self, grace: float) -> None:
        """The home cluster's edge rules follow the table: right owner, no orphans."""
        home = self.clusters.get(self.registry.home)
        if home is None or not home.cache.ever_synced or home.client.circuit.is_open:
            return
        for i, (path, (_, held)) in enumerate(list(home.cache.entries.items())):
            if i % 500 == 499:
                await asyncio.sleep(0)  # a big table must not hold the event loop for long
            winner = self.table.get(path)
            key = RouteKey.parse(path)
            try:
                if winner is None and held.edge:
                    # An edge rule with no route behind it: removed once it has stayed orphaned
                    # for the grace period (another replica's owner write may be in flight).
                    owner_rt = self.clusters.get(held.owner)
                    first = home.unused_since.setdefault(("orphan", path), time.monotonic())
                    if (owner_rt is not None and owner_rt.cache.ever_synced
                            and time.monotonic() - first >= grace):
                        await self._remove_entry(home, key)
                        home.unused_since.pop(("orphan", path), None)
                    continue
                home.unused_since.pop(("orphan", path), None)
                if winner is not None and winner.owner != home.cluster.name and (
                    not held.edge or held.owner != winner.owner or held.target != winner.target
                ):
                    owner = self.registry.clusters.get(winner.owner)
                    if owner is not None and owner.edge:
                        edge = Entry(path, winner.target, winner.owner, {}, winner.last_activity, edge=True)
                        await self._write_entry(home, key, edge)
            except KubeError as exc:
                log.info("cannot repair the edge rule of %s yet: %s", path, exc)
        for i, path in enumerate(list(self.table.owned)):
            if i % 500 == 499:
                await asyncio.sleep(0)
            winner = self.table.get(path)
            if winner is None or winner.owner == home.cluster.name or path in home.cache.entries:
                continue
            owner = self.registry.clusters.get(winner.owner)
            if owner is not None and owner.edge:
                edge = Entry(path, winner.target, winner.owner, {}, winner.last_activity, edge=True)
                try:
                    await self._write_entry(home, RouteKey.parse(path), edge)
                except KubeError as exc:
                    log.info("cannot restore the edge rule of %s yet: %s", path, exc)

    async def _tidy(self, rt: ClusterRuntime, grace: float) -> None:
        now = time.monotonic()
        inst = self.registry.instance
        vs = rt.cache.objects["virtualservices"]
        # 1. every shard with routes is reachable from its roots; empty ones go after a grace
        for name, obj in list(vs.items()):
            key = shard_key_of(obj)
            if key is None:
                continue
            if rt.cache.shard_entries(name):
                rt.unused_since.pop(("shard", name), None)
                await rt.writer.ensure_in_roots(key)
                continue
            if now - rt.unused_since.setdefault(("shard", name), now) < grace:
                continue
            rt.unused_since.pop(("shard", name), None)
            for host_key in roots_for_shard(rt.cluster, key.host, key.depth, rt.writer.host_roots()):
                await rt.writer.remove_from_root(host_key, name)
            try:
                await rt.client.delete("virtualservices", name, obj["metadata"]["resourceVersion"])
                rt.cache.forget("virtualservices", name)
            except NotFound:
                rt.cache.forget("virtualservices", name)
            except KubeError:
                # Written to meanwhile (the precondition failed): it stays, so back in its roots.
                await rt.writer.ensure_in_roots(key)
        # 2. roots delegate only to shards that exist; empty roots go
        for name, obj in list(vs.items()):
            if (obj["metadata"].get("labels") or {}).get(LABEL_ROLE) != "root":
                continue
            missing = [s for s in root_delegates(obj) if s not in vs]
            host = (obj["metadata"].get("annotations") or {}).get("federation.jupyter.org/host", "")
            for shard in missing:
                if now - rt.unused_since.setdefault(("delegate", shard), now) >= grace:
                    await rt.writer.remove_from_root(host, shard)
                    rt.unused_since.pop(("delegate", shard), None)
            if not root_delegates(obj) and name != root_name(inst, ""):
                if now - rt.unused_since.setdefault(("root", name), now) >= grace:
                    try:
                        await rt.client.delete("virtualservices", name, obj["metadata"]["resourceVersion"])
                        rt.cache.forget("virtualservices", name)
                    except KubeError:
                        pass
                    rt.unused_since.pop(("root", name), None)
        # 3. support objects: create what entries need, remove what nothing uses
        needed: dict[tuple[str, str], dict[str, Any]] = {}
        for i, (_, entry) in enumerate(list(rt.cache.entries.values())):
            if i % 500 == 499:
                await asyncio.sleep(0)
            try:
                dest = entry_destination(self.registry, rt.cluster, entry)
            except (KeyError, InvalidRoute, ValueError):
                continue
            for obj in support_objects(self.registry, rt.cluster, dest):
                needed[({v: k for k, v in KINDS.items()}[obj["kind"]], obj["metadata"]["name"])] = obj
        for obj in needed.values():
            try:
                await self._ensure_object(rt, obj)
            except KubeError as exc:
                log.info("cannot restore %s in %s: %s", obj["metadata"]["name"], rt.cluster.name, exc)
        for plural in ("serviceentries", "destinationrules"):
            for name, obj in list(rt.cache.objects[plural].items()):
                if (plural, name) in needed:
                    rt.unused_since.pop((plural, name), None)
                    continue
                if now - rt.unused_since.setdefault((plural, name), now) >= grace:
                    try:
                        await rt.client.delete(plural, name, obj["metadata"]["resourceVersion"])
                        rt.cache.forget(plural, name)
                    except KubeError:
                        pass
                    rt.unused_since.pop((plural, name), None)
