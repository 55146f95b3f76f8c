"""The Gateway API backend's store: one HTTPRoute per route, the same public surface as
:class:`federation.store.ClusterStore` (the service and housekeeping cannot tell them apart).

No shards, so no splits and no roots: a put is a create-or-replace of that route's HTTPRoute,
guarded by its resourceVersion (:mod:`federation._batch`), keeping the rule that a newer write of
a route wins (written-at, then owner). Host defaults (``/`` on a host-routed host) and support
objects (Services, EndpointSlices, BackendTLSPolicies, ReferenceGrants) are ensured as built.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .. import _json
from .._batch import Codec, ObjectWriter
from ..cache import RouteTable
from ..config import Cluster, Registry
from ..errors import Conflict, InvalidRoute, KubeError, NotFound, Rejected
from ..kube import ClusterClient, Resource
from ..objects import Entry, entry_destination
from ..routespec import RouteKey
from ..settings import Settings
from ..store import Pacer, Rank, StoreBase, purge
from .cache import ROUTES, GatewayCache
from .objects import (
    ANN_SPEC,
    KINDS,
    build_host_default,
    build_route,
    host_default_hosts,
    plural_of,
    route_name,
    support_objects,
    with_spec_hash,
)

log = logging.getLogger(__name__)
RESOURCES = {plural: Resource(group, version, plural) for plural, (group, version, _) in KINDS.items()}


def watched(cluster: Cluster) -> dict[str, Resource]:
    """The kinds this cluster's configuration writes in the service's namespace. ReferenceGrants
    live in users' namespaces: written, never watched (a namespaced watch cannot see them, and
    a cluster-wide one would need cluster-wide rights)."""
    plurals = ["httproutes", "services", "endpointslices"]
    if cluster.external_backend == "istioHostname":
        plurals += ["serviceentries", "destinationrules"]
    else:
        plurals.append("backendtlspolicies")
    return {p: RESOURCES[p] for p in plurals}


def _rank(entry: Entry) -> Rank:
    return (entry.last_activity, entry.owner)


class GatewayStore(StoreBase):
    # Needed only for https edges and external targets; a cluster may lack their CRDs.
    optional = frozenset({"backendtlspolicies", "serviceentries", "destinationrules"})

    def __init__(self, registry: Registry, cluster: Cluster, client: ClusterClient,
                 table: RouteTable, settings: Settings) -> None:
        self._init_base(registry, cluster, client, settings)
        self.resources = watched(cluster)
        self.cache = GatewayCache(cluster.name, table, list(self.resources))
        self._writers: dict[str, ObjectWriter[Any]] = {}
        self._support_memo: dict[str, tuple[Entry, list[dict[str, Any]]]] = {}
        self._granted: set[tuple[str, str]] = set()  # ReferenceGrants known to exist

    def reconfigure(self, registry: Registry, cluster: Cluster) -> None:
        self.registry = registry
        self.cluster = cluster
        self._support_memo.clear()

    @property
    def _inst(self) -> str:
        return self.registry.instance

    # -- route entries ----------------------------------------------------------------------

    async def put_entry(self, entry: Entry) -> None:
        """Write the route's HTTPRoute unless a newer write of the route is there."""
        def put(held: Entry | None) -> Entry | None:
            return entry if held is None or _rank(held) <= _rank(entry) else held

        await self._writer(route_name(self._inst, entry.path)).submit(put)
        await self._ensure_host_defaults(entry)

    async def remove_entry(self, path: str, older_than: Rank | None = None) -> None:
        """Delete the route's HTTPRoute; with ``older_than`` only when it loses to that write."""
        def drop(held: Entry | None) -> Entry | None:
            if held is None or held.path != path:
                return held
            if older_than is not None and _rank(held) >= older_than:
                return held
            return None

        await self._writer(route_name(self._inst, path)).submit(drop)

    async def refresh(self, path: str) -> None:
        """Read the route's HTTPRoute (written through another replica, not heard of yet)."""
        try:
            obj = await self.client.get(RESOURCES[ROUTES], route_name(self._inst, path))
        except (NotFound, Rejected):
            return  # absent; unreachable (ClusterUnavailable) goes to the caller
        self.cache.apply(ROUTES, "MODIFIED", obj)

    def _writer(self, name: str) -> ObjectWriter[Any]:
        writer = self._writers.get(name)
        if writer is None:
            writer = self._writers[name] = ObjectWriter(self.name, name, self._codec(name))
        return writer

    def _codec(self, name: str) -> Codec[Entry]:
        res = RESOURCES[ROUTES]

        def cached() -> tuple[Entry | None, str | None]:
            held = self.cache.routes.get(name)
            return (None, None) if held is None else (held.entry, held.rv)

        def render(entry: Entry | None, rv: str | None) -> bytes:
            if entry is None:
                return (rv or "").encode()  # a delete: its precondition is all it sends
            body = with_spec_hash(build_route(self.registry, self.cluster, entry))
            if rv is not None:
                body["metadata"]["resourceVersion"] = rv
            return _json.dumps(body)

        async def store(entry: Entry | None, body: bytes, exists: bool) -> None:
            if entry is None:
                await self.client.delete(res, name, body.decode() or None)
                self.cache.forget(ROUTES, name)
                return
            stored = await (self.client.replace(res, body, name) if exists
                            else self.client.create(res, body, name))
            self.cache.apply(ROUTES, "MODIFIED", stored)

        async def reread() -> tuple[Entry | None, str | None]:
            try:
                self.cache.apply(ROUTES, "MODIFIED", await self.client.get(res, name))
            except NotFound:
                self.cache.forget(ROUTES, name)
            return cached()

        return Codec(cached=cached, render=render, store=store, reread=reread,
                     copy=lambda entry: entry)

    # -- host defaults ----------------------------------------------------------------------

    def needed_host_defaults(self) -> list[dict[str, Any]]:
        root = self.entry("/")
        if root is None:
            return []
        entries = {p: e for p, (_, e) in self.cache.entries.items()}
        return [build_host_default(self.registry, self.cluster, host, root)
                for host in sorted(host_default_hosts(self.cluster, entries))]

    async def _ensure_host_defaults(self, entry: Entry) -> None:
        """``/`` of a new host-routed host; all of them when ``/`` itself changed."""
        root = self.entry("/")
        key = RouteKey.parse(entry.path)
        if root is None:
            return
        if entry.path == "/":
            wanted = self.needed_host_defaults()
        elif key.host and key.host not in self.cluster.hosts:
            wanted = [build_host_default(self.registry, self.cluster, key.host, root)]
        else:
            return
        await asyncio.gather(*(self.ensure_object(obj) for obj in wanted))

    # -- support objects -------------------------------------------------------------------

    async def ensure_object(self, obj: dict[str, Any]) -> None:
        """Create or update an object as built (compared by the hash of what was built)."""
        if ANN_SPEC not in obj["metadata"].get("annotations", {}):
            obj = with_spec_hash(obj)
        plural, meta = plural_of(obj), obj["metadata"]
        if meta["namespace"] != self.cluster.namespace:
            await self._ensure_elsewhere(plural, obj)
            return
        held = self.cache.support[plural].get(meta["name"])
        if held is not None and held.spec == meta["annotations"][ANN_SPEC].encode():
            return
        res = RESOURCES[plural]
        try:
            if held is None:
                stored = await self.client.create(res, obj)
            else:
                stored = await self.client.replace(
                    res, {**obj, "metadata": {**meta, "resourceVersion": held.rv}})
        except Conflict:
            stored = await self.client.get(res, meta["name"])  # another replica's is as good
        self.cache.apply(plural, "MODIFIED", stored)

    async def _ensure_elsewhere(self, plural: str, obj: dict[str, Any]) -> None:
        """A ReferenceGrant in a user's namespace: created once, and kept (it grants only
        this service's routes the right to name Services there)."""
        where = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        if where in self._granted:
            return
        try:
            await self.client.create(RESOURCES[plural], obj, namespace=where[0])
        except Conflict:
            pass  # it exists
        except NotFound:
            # The user's namespace is not there (yet): the route is stored all the same, and
            # housekeeping creates the grant once the spawner has made the namespace.
            log.info("cluster %s: namespace %s not found for ReferenceGrant %s; will retry",
                     self.name, where[0], where[1], extra={"cluster": self.name})
            return
        self._granted.add(where)

    def support_for(self, entry: Entry) -> list[dict[str, Any]]:
        held = self._support_memo.get(entry.path)
        if held is not None and held[0] is entry:
            return held[1]
        try:
            objs = [with_spec_hash(o) for o in support_objects(
                self.registry, self.cluster, entry_destination(self.registry, self.cluster, entry))]
        except (KeyError, InvalidRoute, ValueError):
            objs = []  # its cluster left the registry: nothing to route to
        self._support_memo[entry.path] = (entry, objs)
        return objs

    def route_status(self, examples: int = 5) -> dict[str, Any]:
        """What /clusters shows: HTTPRoutes not Accepted, or with refs not Resolved, and a few
        of their names with the reason."""
        problems = sorted(self.cache.problems.items())
        return {
            "not_accepted": sum(1 for _, (kind, _) in problems if kind == "Accepted"),
            "unresolved_refs": sum(1 for _, (kind, _) in problems if kind == "ResolvedRefs"),
            "examples": [f"{name}: {kind} {reason}".rstrip()
                         for name, (kind, reason) in problems[:examples]],
        }

    async def settle_splits(self) -> None:
        """Nothing splits here: one object per route."""

    # -- housekeeping of its own objects ----------------------------------------------------

    async def tidy(self, grace: float) -> None:
        """Restore missing support objects and host defaults; delete the unused ones after
        ``grace`` seconds (guarded by resourceVersion, so a concurrent write wins)."""
        pace = Pacer()
        await self._rerender(pace)
        needed: dict[tuple[str, str], dict[str, Any]] = {}
        for _, entry in list(self.cache.entries.values()):
            await pace()
            for obj in self.support_for(entry):
                needed[(plural_of(obj), obj["metadata"]["name"])] = obj
        for obj in self.needed_host_defaults():
            needed[(ROUTES, obj["metadata"]["name"])] = obj
        for obj in needed.values():
            try:
                await self.ensure_object(obj)
            except KubeError as exc:
                log.warning("cluster %s: cannot restore %s %s: %s", self.name, obj["kind"],
                            obj["metadata"]["name"], exc, extra={"cluster": self.name})
        await self._delete_unused(needed, grace, pace)

    async def _rerender(self, pace: Pacer) -> None:
        """Rewrite HTTPRoutes built from an older configuration (gateway, hosts, http options
        changed by a reload), guarded by resourceVersion: a concurrent write wins."""
        for name, state in list(self.cache.routes.items()):
            await pace()
            if state.entry is None:
                continue
            try:
                body = with_spec_hash(build_route(self.registry, self.cluster, state.entry))
            except (KeyError, InvalidRoute, ValueError):
                continue  # its cluster left the registry: kept as it is, so the table stays whole
            if body["metadata"]["annotations"][ANN_SPEC] == state.spec:
                continue
            async with self._writer(name).lock:
                body["metadata"]["resourceVersion"] = state.rv
                try:
                    stored = await self.client.replace(RESOURCES[ROUTES], body)
                except KubeError:
                    continue  # written or removed meanwhile: the next pass looks again
                self.cache.apply(ROUTES, "MODIFIED", stored)

    async def purge(self) -> None:
        """Delete every object of this store (its cluster moved to the other backend)."""
        names = [(ROUTES, n) for n in self.cache.routes]
        names += [(p, n) for p, held in self.cache.support.items() for n in held]
        await purge(self.client, [(RESOURCES[p], n) for p, n in names])
