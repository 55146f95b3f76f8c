"""One cluster's store: its mirror and its backend, side by side, behind the surface the service
and housekeeping use. Nothing here depends on the backend: it is chosen once
(:func:`federation.backend.make_backend`) and held, as a :class:`~federation.seam.Backend`.

* ``backend.put`` / ``backend.remove`` / ``backend.refresh``: a route's entry (the backend's
  mutations, called on it directly);
* ``support_for``: the support objects an entry needs (``mirror.ensure`` writes them);
* ``entry``, ``holds``, ``paths``, ``route_count``, ``health``, ``probe``, ``status``;
* ``tidy``: the backend's own repairs, then support objects restored or removed;
* ``adopt_table`` / ``withdraw`` / ``purge``: a reload swapping stores.
"""

from __future__ import annotations

import logging
from typing import Any

from .backend import make_backend
from .config import Cluster, Registry
from .errors import InvalidRoute, KubeError
from .kube import ClusterClient
from .mirror import Health, Mirror, Pacer, ProbeState, RouteEntries
from .model import Entry, entry_destination, selector
from .placement import Destination
from .scope import Scope
from .seam import Backend, Pace
from .settings import Settings
from .table import RouteTable

log = logging.getLogger(__name__)

# Housekeeping passes over a cluster where nothing changed before one looks at everything
# again anyway (10 minutes at the default 15 s interval): a bound on what a missed change
# could leave, and on the CPU an idle hub pays for it.
FULL_PASS_EVERY = 40


class ClusterStore:
    def __init__(self, registry: Registry, cluster: Cluster, client: ClusterClient,
                 table: RouteTable, settings: Settings) -> None:
        self.scope = Scope(registry, cluster)
        self.client = client
        self.settings = settings
        self.entries = RouteEntries(cluster.name, table)
        self.mirror: Mirror
        self.backend: Backend
        self.mirror, self.backend = make_backend(
            self.scope, self.entries, settings.shard_routes,
            lambda kinds, index: Mirror(cluster.name, client, kinds, index,
                                        selector(registry.instance), settings.watch_timeout))
        self._support_memo: dict[str, tuple[Entry, list[dict[str, Any]]]] = {}
        # The objects built per destination, shared by every entry that routes there (the
        # edge rules of one remote cluster all do): one copy each, not one per route.
        self._support_built: dict[Destination, list[dict[str, Any]]] = {}
        # What the last pass that settled everything saw: (cache changes, failed calls); None
        # when the next pass must look at everything (a start, a new configuration).
        self._settled: tuple[int, int, int, tuple[bool, ...]] | None = None
        self._quiet_passes = 0

    @property
    def name(self) -> str:
        return self.scope.name

    @property
    def cluster(self) -> Cluster:
        return self.scope.cluster

    @property
    def registry(self) -> Registry:
        return self.scope.registry

    def reconfigure(self, registry: Registry, cluster: Cluster) -> None:
        self.scope.change(registry, cluster)  # the backend renders anew from its generation
        self._support_memo.clear()
        self._support_built.clear()
        self._settled = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self.mirror.start()

    async def stop_watching(self) -> None:
        await self.mirror.stop_watching()

    async def stop(self) -> None:
        await self.mirror.stop()

    def adopt_table(self, table: RouteTable) -> None:
        """Publish this store's routes into ``table`` (a reload swapping a new store in)."""
        self.entries.adopt(table)

    def withdraw(self) -> None:
        """Take this store's routes out of the table (a reload retiring it)."""
        self.entries.withdraw()

    async def purge(self) -> None:
        """Delete every object of this store (its cluster moved to the other backend): the
        route-holding ones first, and of those first the ones no route answers from (Istio's
        roots, which name the shards: no root then names a missing shard that holds routes),
        then the support objects."""
        cache = self.mirror.cache
        plural = self.mirror.kinds.route.resource.plural
        answering = {name for name, _ in self.entries.values()}
        held = list(cache.held.get(plural, {}))
        routes = ([n for n in held if n not in answering] + [n for n in held if n in answering])
        support = [(p, n) for p, kept in cache.support.items() for n in kept]
        await self.mirror.purge([(plural, n) for n in routes] + support)

    # -- what it holds ------------------------------------------------------------------------

    @property
    def health(self) -> Health:
        return self.mirror.health

    @property
    def probe(self) -> ProbeState:
        return self.mirror.probe

    @property
    def synced(self) -> bool:
        return self.mirror.health.ever_synced

    def entry(self, path: str) -> Entry | None:
        return self.entries.entry(path)

    def holds(self, path: str) -> bool:
        return path in self.entries

    def paths(self) -> list[str]:
        return list(self.entries)

    def route_count(self) -> int:
        return self.entries.route_count()

    def status(self) -> dict[str, Any] | None:
        return self.backend.status()

    # -- support objects ----------------------------------------------------------------------

    def support_for(self, entry: Entry) -> list[dict[str, Any]]:
        """The support objects an entry needs here (memoised: housekeeping asks for all)."""
        held = self._support_memo.get(entry.path)
        if held is not None and held[0] is entry:
            return held[1]
        try:
            dest = entry_destination(self.scope.registry, self.scope.cluster, entry)
        except (KeyError, InvalidRoute, ValueError):
            objs: list[dict[str, Any]] = []  # its cluster left the registry: nothing there
        else:
            built = self._support_built.get(dest)
            objs = built if built is not None else self._support_built.setdefault(
                dest, self.backend.support_objects(dest))
        self._support_memo[entry.path] = (entry, objs)
        return objs

    async def _support_needed(self, pace: Pace,
                              generation: int) -> list[dict[str, Any]] | None:
        """Every held entry's support objects, each shared list taken once; the memos keep
        only what routes held now need. Paced throughout: at 50,000 routes a pass that built
        the memos anew and then walked every entry's objects again held the loop for 100 ms
        and more at a time (an idle /healthz waited behind it). None, with the memos left as
        they are, when the configuration changed since ``generation`` (a reload emptied them:
        what this pass built is the old configuration's)."""
        wanted: list[dict[str, Any]] = []
        # Lists are shared per destination: those taken, by id (held, so that no id is
        # reused by a list made meanwhile, whose objects would be left out).
        taken: dict[int, list[dict[str, Any]]] = {}
        memo: dict[str, tuple[Entry, list[dict[str, Any]]]] = {}
        for _, entry in list(self.entries.values()):
            await pace()  # the first pass builds every entry's objects: thousands of them
            objs = self.support_for(entry)
            # The pair support_for keeps, not a new one: unchanged, it is long lived, frozen
            # out of the collector's walk (heap.py), and a copy would be walked until the next
            # freeze by every full collection.
            memo[entry.path] = self._support_memo.get(entry.path) or (entry, objs)
            if id(objs) not in taken:
                taken[id(objs)] = objs
                wanted += objs
        if self.scope.generation != generation:
            return None
        # Written meanwhile: a memo entry missed here is built again when asked for.
        self._support_memo = memo
        self._support_built = {d: objs for d, objs in self._support_built.items()
                               if id(objs) in taken}
        return wanted

    # -- housekeeping -------------------------------------------------------------------------

    def _marks(self) -> tuple[int, int, int, tuple[bool, ...]]:
        # The host claims held: a claim coming back lets the backend re-point edge rules it
        # held back, so it ends a quiet spell too. The configuration's generation: a pass
        # that a reload overtook worked from the old one, and settles nothing.
        claims = tuple(self.scope.claimed(name) for name in self.scope.registry.clusters)
        return (self.mirror.cache.changes, self.client.failed_calls, self.scope.generation,
                claims)

    async def tidy(self, grace: float) -> None:
        """Repair and tidy this cluster's objects; yields to the event loop as it goes. A pass
        with nothing to do is skipped: the last one changed nothing, failed nothing and left
        no grace clock running, and nothing changed in the cluster since (its watches and our
        writes change the cache); every FULL_PASS_EVERY passes it looks anyway."""
        if (self._settled == self._marks() and not self.mirror.clocks_running
                and self._quiet_passes < FULL_PASS_EVERY):
            self._quiet_passes += 1
            return
        before = self._marks()
        await self._tidy(grace)
        after = self._marks()
        self._settled = after if after == before else None
        self._quiet_passes = 0

    def _plural(self, obj: dict[str, Any]) -> str:
        """The kind of a support object (each one the walk below looks at)."""
        return self.mirror.kinds.plural_of(obj)

    async def _tidy(self, grace: float) -> None:
        pace = Pacer()
        generation = self.scope.generation
        keep = await self.backend.tidy(grace, pace)
        support = await self._support_needed(pace, generation)
        if support is None:
            return  # reloaded meanwhile: these objects are the old configuration's
        # Keyed by namespace too: a ReferenceGrant has one name in every user's namespace.
        needed: dict[tuple[str, str | None, str], dict[str, Any]] = {}
        for obj in list(keep) + support:
            await pace()  # a pod-IP route has objects of its own: one per route
            meta = obj["metadata"]
            needed[(self._plural(obj), meta.get("namespace"), meta["name"])] = obj
        for (_, _, name), obj in needed.items():
            await pace()
            try:
                await self.mirror.ensure(obj)
            except KubeError as exc:
                log.warning("cluster %s: cannot restore %s %s: %s", self.name, obj["kind"],
                            name, exc, extra={"cluster": self.name, "kind": obj["kind"],
                                              "object": name, "status": exc.status})
        await self.mirror.remove_unused({(p, n) for p, _, n in needed}, grace, pace)
