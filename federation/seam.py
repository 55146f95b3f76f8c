"""The seam between the service and a routing backend: what a backend is, as the rest of the
service uses it. The low floor: it imports no backend, and every backend imports it.

A backend is what differs between Istio VirtualServices and Gateway API HTTPRoutes: which kinds
it writes (data: :class:`Kinds`, :class:`RouteKind`), how its route-holding objects hold route
entries (its :class:`RouteIndex`), a route's put and remove as writer mutations, the support
objects an entry needs, its own tidy-up and what ``/clusters`` shows for it. Everything else (list and watch, the object cache, the
re-read rule, writers, support objects, grace clocks, probe state) is the cluster's
:class:`~federation.mirror.Mirror`, the same for every backend. The one place a backend is
chosen is :mod:`federation.backend`. docs/design.md, "Adding a backend", walks through it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .config import Cluster, Registry
from .kube import ClusterClient, Resource
from .model import Entry, Rank, role_of
from .placement import Destination

# Called between the steps of a long pass: lets other work run on the event loop.
Pace = Callable[[], Awaitable[None]]
Check = tuple[str, bool | None, str]  # a `federation check` line: (what, ok, detail); ok None: could not tell


@dataclass(frozen=True)
class RouteKind:
    """A backend's route-holding kind, as data: what ``federation check``, the shared-host
    check and the mirror's cache need of it."""

    shown: str  # its name as ``federation check`` shows it ("VirtualServices")
    resource: Resource  # where its objects live
    kind: str  # an object's "kind"
    claim_role: str  # the role of the objects that list the hosts an instance claims
    # The roles of the objects the backend's index keeps (empty: every object of the kind);
    # the kind's other objects are support objects, kept by fingerprint.
    roles: frozenset[str] = frozenset()
    probe_spec: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def holds(self, plural: str, obj: dict[str, Any]) -> bool:
        """Whether ``obj`` goes to the backend's index (not a support object)."""
        return plural == self.resource.plural and (not self.roles or role_of(obj) in self.roles)

    def probe_object(self, meta: dict[str, Any]) -> dict[str, Any]:
        """An object that routes nothing: ``federation check`` creates and deletes it to test
        its rights."""
        res = self.resource
        return {"apiVersion": f"{res.group}/{res.version}", "kind": self.kind,
                "metadata": meta, "spec": dict(self.probe_spec)}


@dataclass(frozen=True)
class Kinds:
    """What a backend writes in a cluster, and how the mirror watches it."""

    resources: dict[str, Resource]  # every kind it writes, by plural
    names: dict[str, str]  # plural by kind name (an object's "kind")
    watched: tuple[str, ...]  # the kinds listed and watched (in the service's namespace)
    route: RouteKind  # the route-holding kind (its objects go to the backend's index)
    optional: frozenset[str] = frozenset()  # kinds a cluster may not serve (CRD not installed)
    pages: tuple[tuple[str, int], ...] = ()  # objects per list page, where not the default

    def plural_of(self, obj: dict[str, Any]) -> str:
        return self.names[obj["kind"]]


class RouteIndex(Protocol):
    """A backend's lean view of its route-holding objects (shards and roots; HTTPRoutes): from
    each object, the entries that answer for routes (into the cluster's
    :class:`~federation.mirror.RouteEntries`). The cache decides what is stale and which
    objects are the index's (:meth:`RouteKind.holds`); the index only keeps."""

    def put(self, plural: str, name: str, obj: dict[str, Any],
            decoded: dict[str, Entry] | None) -> bool:
        """Keep the object's state (``decoded``: its entries, known without parsing); False
        when it holds nothing the index keeps (left as it was)."""

    def drop(self, plural: str, name: str) -> None:
        """Forget a kept object."""


class Backend(Protocol):
    """One cluster's backend, as its store uses it. The factory makes it with the cluster's
    mirror (made first, from the backend's kinds and index) and its scope; what was rendered
    from an older configuration it tells by the scope's generation."""

    async def put(self, entry: Entry, still: Callable[[], bool] | None = None) -> None:
        """Store the entry unless a newer write of its route is there (``still``: checked
        when the write is made; False leaves everything as it is)."""

    async def remove(self, path: str, older_than: Rank | None = None) -> None:
        """Remove the route's entry (with ``older_than``: only a copy that loses to it)."""

    async def refresh(self, path: str) -> None:
        """Read where the route would be stored (written through another replica, unseen)."""

    def support_objects(self, dest: Destination) -> list[dict[str, Any]]:
        """The support objects a destination needs in this cluster (pure)."""

    async def tidy(self, grace: float, pace: Pace) -> list[dict[str, Any]]:
        """Its own repairs; returns further objects to keep as support objects."""

    def status(self) -> dict[str, Any] | None:
        """What /clusters shows for it beyond the watches (``route_status``)."""


class Builders(Protocol):
    """A backend's pure side (what plans, docs and activity need without a cluster), and what
    `federation check` asks of a cluster for it."""

    def check_route(self, registry: Registry, cluster: Cluster, entry: Entry) -> None:
        """Raise InvalidRoute for an entry this backend cannot write."""

    def render_cluster(self, registry: Registry, cluster: Cluster, entries: list[Entry],
                       capacity: int | None = None) -> list[dict[str, Any]]:
        """Every object the cluster holds for these entries (docs, tests, preloading);
        ``capacity``: routes per shard where the backend shards (None: its default)."""

    def mesh_host(self, registry: Registry, cluster: Cluster, dest: Destination) -> str:
        """The host the mesh's metrics name as ``destination_service`` for ``dest``."""

    async def gateway_findings(self, client: ClusterClient, cluster: Cluster) -> list[Check]:
        """The cluster's gateway is there and takes our routes."""
