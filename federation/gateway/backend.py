"""The Gateway API backend: one HTTPRoute per route.

No shards, so no splits and no roots: a put is a mutation of that route's HTTPRoute (create or
replace, keeping the rule that a newer write of a route wins), a remove deletes it. Host
defaults (``/`` on a host-routed host) and support objects (Services, EndpointSlices,
BackendTLSPolicies, ReferenceGrants) are ensured as built by the mirror. Its own tidy-up:
HTTPRoutes built from an older configuration are rendered again; host defaults are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config import Cluster
from ..errors import InvalidRoute, KubeError, Rejected
from ..kube import Resource
from ..mirror import Body, Mirror, Mutation, ObjectWriter, View
from ..model import ANN_SPEC, Entry, Rank, decode_entries, loses_to, newest
from ..placement import Destination
from ..routespec import RouteKey
from ..scope import Scope
from ..seam import Kinds, Pace
from .check import ROUTE
from .index import ROUTES, RouteObjectIndex
from .objects import (
    KINDS,
    build_host_default,
    build_route,
    host_default_hosts,
    route_name,
    support_objects,
    with_spec_hash,
)

RESOURCES = {plural: Resource(group, version, plural) for plural, (group, version, _) in KINDS.items()}


def kinds_for(cluster: Cluster) -> Kinds:
    """The kinds this cluster's configuration writes in the service's namespace, watched.
    ReferenceGrants live in users' namespaces: written, never watched (a namespaced watch
    cannot see them, and a cluster-wide one would need cluster-wide rights)."""
    watched = ["httproutes", "services", "endpointslices"]
    if cluster.external_backend == "istioHostname":
        watched += ["serviceentries", "destinationrules"]
    else:
        watched.append("backendtlspolicies")
    # Needed only for https edges and external targets; a cluster may lack their CRDs.
    optional = frozenset({"backendtlspolicies", "serviceentries", "destinationrules"})
    return Kinds(resources=RESOURCES, names={kind: p for p, (_, _, kind) in KINDS.items()},
                 watched=tuple(watched), route=ROUTE, optional=optional)


class GatewayBackend:
    def __init__(self, scope: Scope, mirror: Mirror, index: RouteObjectIndex) -> None:
        """With the cluster's mirror (made from :func:`kinds_for` and ``index``). Nothing
        rendered is kept (HTTPRoutes are rendered at each write); every HTTPRoute is compared
        with a new configuration at the next pass (told by ``scope.generation``)."""
        self.scope = scope
        self.mirror = mirror
        self.index = index
        self.view = RouteView(scope, index)
        # The configuration the last re-render of every HTTPRoute compared them with (None:
        # none yet, a start).
        self._compared: int | None = None

    # -- route entries ----------------------------------------------------------------------

    async def put(self, entry: Entry, still: Callable[[], bool] | None = None) -> None:
        """Write the route's HTTPRoute unless a newer write of the route is there."""
        def put(held: RouteWrite | None) -> RouteWrite | None:
            if still is not None and not still():
                return held
            result = newest(_entry(held), entry)
            return held if result is _entry(held) else result  # a pending Rewrite stays

        await self._writer(route_name(self.scope.instance, entry.path)).submit(put)
        await self._ensure_host_defaults(entry)

    async def remove(self, path: str, older_than: Rank | None = None) -> None:
        """Delete the route's HTTPRoute; with ``older_than`` only when it loses to that write."""
        def drop(held: RouteWrite | None) -> RouteWrite | None:
            entry = _entry(held)
            if entry is None or entry.path != path or not loses_to(entry, older_than):
                return held
            return None

        await self._writer(route_name(self.scope.instance, path)).submit(drop)

    async def refresh(self, path: str) -> None:
        """Read the route's HTTPRoute (written through another replica, not heard of yet)."""
        with contextlib.suppress(Rejected):  # unreachable (ClusterUnavailable) goes to the caller
            await self.mirror.reread(ROUTES, route_name(self.scope.instance, path))

    def _writer(self, name: str) -> ObjectWriter[RouteWrite]:
        return self.mirror.writer(ROUTES, name, self.view)

    # -- host defaults and support objects --------------------------------------------------

    def _host_defaults(self) -> list[dict[str, Any]]:
        root = self.index.entries.get("/")
        if root is None:
            return []
        entries = {p: e for p, (_, e) in self.index.entries.items()}
        return [with_spec_hash(build_host_default(self.scope.registry, self.scope.cluster, h,
                                                  root[1]))
                for h in sorted(host_default_hosts(self.scope.cluster, entries))]

    async def _ensure_host_defaults(self, entry: Entry) -> None:
        """``/`` of a new host-routed host; all of them when ``/`` itself changed."""
        root = self.index.entries.get("/")
        key = RouteKey.parse(entry.path)
        if root is None:
            return
        if entry.path == "/":
            wanted = self._host_defaults()
        elif key.host and key.host not in self.scope.cluster.hosts:
            wanted = [with_spec_hash(build_host_default(
                self.scope.registry, self.scope.cluster, key.host, root[1]))]
        else:
            return
        await asyncio.gather(*(self.mirror.ensure(obj) for obj in wanted))

    def support_objects(self, dest: Destination) -> list[dict[str, Any]]:
        """What makes ``dest`` a Service a backendRef can name (hashed as built)."""
        return [with_spec_hash(o) for o in support_objects(self.scope.registry,
                                                           self.scope.cluster, dest)]

    # -- its own tidy-up --------------------------------------------------------------------

    async def tidy(self, grace: float, pace: Pace) -> list[dict[str, Any]]:
        """Render again what an older configuration built; the host defaults to keep."""
        await self._rerender(pace)
        return self._host_defaults()

    async def _rerender(self, pace: Pace) -> None:
        """Rewrite HTTPRoutes built from an older configuration (gateway, hosts, http options
        changed by a reload), by a mutation of each: a concurrent write wins. After the
        first pass only those kept anew since the last (another replica's writes among them)
        until the configuration changes: the rest were compared with it already."""
        generation = self.scope.generation
        everything = self._compared != generation
        for name in list(self.index.routes if everything else self.index.changed):
            await pace()
            self.index.changed.discard(name)  # as visited: a pass cut short leaves the rest
            entry = self.index.routes.get(name)
            if entry is None:
                continue
            if entry.edge and not self.scope.claimed(entry.owner):
                # An edge rule sends traffic to its owner's hosts: not re-pointed at a host
                # this hub does not hold there (another hub's users answer for it). Looked at
                # again every pass, so the claim's return re-points it.
                self.index.changed.add(name)
                continue
            try:
                body = with_spec_hash(build_route(self.scope.registry, self.scope.cluster,
                                                  entry))
            except (KeyError, InvalidRoute, ValueError):
                continue  # its cluster left the registry: kept as it is, so the table stays whole
            if body["metadata"]["annotations"][ANN_SPEC] == self.index.specs.get(name, ""):
                continue
            try:
                await self._writer(name).submit(_rewrite(entry))
            except KubeError:
                self.index.changed.add(name)  # unreachable, or written meanwhile: next pass
        if everything:
            self._compared = generation

    # -- what it shows ----------------------------------------------------------------------

    def status(self, examples: int = 5) -> dict[str, Any] | None:
        """What /clusters shows: HTTPRoutes not Accepted, or with refs not Resolved, and a few
        of their names with the reason."""
        problems = sorted(self.index.problems.items())
        return {
            "not_accepted": sum(1 for _, (kind, _) in problems if kind == "Accepted"),
            "unresolved_refs": sum(1 for _, (kind, _) in problems if kind == "ResolvedRefs"),
            "examples": [f"{name}: {kind} {reason}".rstrip()
                         for name, (kind, reason) in problems[:examples]],
        }


@dataclass(eq=False)
class Rewrite:
    """The same entry, to be written again (built from a newer configuration): never equal to
    what is stored, so the writer writes it."""

    entry: Entry


RouteWrite = Entry | Rewrite  # an HTTPRoute's state, as its writer sees it


class RouteView(View[RouteWrite]):
    """A route's HTTPRoute: its entry, held in the index (read as data), built from the
    configuration."""

    def __init__(self, scope: Scope, index: RouteObjectIndex) -> None:
        self.scope = scope
        self.held = index.routes

    def decode(self, obj: dict[str, Any]) -> RouteWrite | None:
        found = list(decode_entries(obj).values())
        return found[0] if len(found) == 1 else None  # no readable route: replaced by a put

    def build(self, name: str, state: RouteWrite) -> Body:
        entry = state.entry if isinstance(state, Rewrite) else state
        return with_spec_hash(build_route(self.scope.registry, self.scope.cluster, entry))


def _entry(state: RouteWrite | None) -> Entry | None:
    return state.entry if isinstance(state, Rewrite) else state


def _rewrite(seen: Entry) -> Mutation[RouteWrite]:
    """A mutation that writes the entry again, only if it is still the one seen."""
    def mutation(held: RouteWrite | None) -> RouteWrite | None:
        return Rewrite(seen) if held == seen else held
    return mutation
