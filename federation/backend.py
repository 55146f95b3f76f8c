"""The seam between the service and a routing backend, and the one place a backend is chosen.

A backend is what differs between Istio VirtualServices and Gateway API HTTPRoutes: which kinds
it writes, how its route-holding objects hold route entries (its :class:`RouteIndex`), a
route's put and remove as writer mutations, the support objects an entry needs, its own tidy-up
and what ``/clusters`` shows for it. Everything else — list and watch, the object cache, the
re-read rule, writers, support objects, grace clocks, probe state — is the cluster's
:class:`~federation.mirror.Mirror`, the same for every backend. docs/design.md, "Adding a
backend", walks through it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .config import Cluster, Registry
from .gateway import check as gateway_check
from .gateway import objects as gateway_objects
from .gateway.backend import GatewayBackend
from .istio import check as istio_check
from .istio import objects as istio_objects
from .istio.backend import IstioBackend
from .kube import Resource
from .mirror import Kinds, Mirror, RouteIndex
from .model import Entry, Rank
from .placement import Destination
from .scope import Scope
from .table import RouteTable

Pace = Callable[[], Awaitable[None]]


class Backend(Protocol):
    """One cluster's backend, as its store uses it."""

    kinds: Kinds  # what it writes, and what the mirror watches

    @property
    def index(self) -> RouteIndex:
        """Its route-holding objects and the routes they hold (the mirror's cache feeds it)."""

    def bind(self, mirror: Mirror) -> None:
        """Take the cluster's mirror (made from ``kinds`` and ``index``): its writers, reads."""

    def reconfigured(self) -> None:
        """The scope's registry or cluster changed: drop what was rendered from the old."""

    def fingerprint(self, obj: dict[str, Any]) -> bytes:
        """What makes two support objects the same (built, or as the API server stores it)."""

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

    def objects(self) -> list[tuple[str, str]]:
        """Its route-holding objects (plural, name), in the order to delete them."""


Check = tuple[str, bool | None, str]  # a `federation check` line: (what, ok, detail)


class Builders(Protocol):
    """A backend's pure side (what plans, docs and activity need without a cluster), and what
    `federation check` asks of a cluster for it."""

    route_kind: tuple[str, Resource]  # the route-holding kind: (name to show, where it lives)
    claim_role: str  # the role of the objects that list the hosts an instance claims

    def check_route(self, registry: Registry, cluster: Cluster, entry: Entry) -> None:
        """Raise InvalidRoute for an entry this backend cannot write."""

    def render_cluster(self, registry: Registry, cluster: Cluster, entries: list[Entry],
                       capacity: int) -> list[dict[str, Any]]:
        """Every object the cluster holds for these entries (docs, tests, preloading)."""

    def mesh_host(self, registry: Registry, cluster: Cluster, dest: Destination) -> str:
        """The host the mesh's metrics name as ``destination_service`` for ``dest``."""

    def probe_object(self, meta: dict[str, Any]) -> dict[str, Any]:
        """An empty route-holding object: `check` creates and deletes it to test its rights."""

    async def gateway_findings(self, client: Any, cluster: Cluster) -> list[Check]:
        """The cluster's gateway is there and takes our routes."""


class _IstioBuilders:
    route_kind = istio_check.ROUTE_KIND
    claim_role = "root"  # a plain root lists every host the cluster's plain routes answer
    probe_object = staticmethod(istio_check.probe_object)
    gateway_findings = staticmethod(istio_check.gateway_findings)

    @staticmethod
    def check_route(registry: Registry, cluster: Cluster, entry: Entry) -> None:
        return None  # every entry the plan accepts renders a rule Istio accepts

    @staticmethod
    def render_cluster(registry: Registry, cluster: Cluster, entries: list[Entry],
                       capacity: int) -> list[dict[str, Any]]:
        return istio_objects.render_cluster(registry, cluster, entries, capacity)

    @staticmethod
    def mesh_host(registry: Registry, cluster: Cluster, dest: Destination) -> str:
        return dest.host


class _GatewayBuilders:
    route_kind = gateway_check.ROUTE_KIND
    claim_role = "route"  # every plain HTTPRoute lists the hosts of the cluster
    probe_object = staticmethod(gateway_check.probe_object)
    gateway_findings = staticmethod(gateway_check.gateway_findings)

    @staticmethod
    def check_route(registry: Registry, cluster: Cluster, entry: Entry) -> None:
        gateway_objects.check_route(registry, cluster, entry)

    @staticmethod
    def render_cluster(registry: Registry, cluster: Cluster, entries: list[Entry],
                       capacity: int) -> list[dict[str, Any]]:
        return gateway_objects.render_cluster(registry, cluster, entries)

    @staticmethod
    def mesh_host(registry: Registry, cluster: Cluster, dest: Destination) -> str:
        return gateway_objects.mesh_host(registry, cluster, dest)


def builders(cluster: Cluster) -> Builders:
    """The pure side of the cluster's backend (clusters.yaml ``backend``)."""
    return _GatewayBuilders() if cluster.backend == "gateway-api" else _IstioBuilders()


def make_backend(scope: Scope, table: RouteTable, capacity: int) -> Backend:
    """The backend of the scope's cluster (clusters.yaml ``backend``): the one place it is
    chosen."""
    if scope.cluster.backend == "gateway-api":
        return GatewayBackend(scope, table)
    return IstioBackend(scope, table, capacity)
