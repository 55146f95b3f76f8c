"""The route-entry index of one cluster: which object's entry answers for each route, and the
routes the cluster owns, published into the route table. The same for every backend: a
backend's index only says which copy answers (:meth:`RouteEntries.set`), from the objects its
mirror's cache hands it; the store reads it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from .. import metrics
from ..model import Entry
from ..table import RouteTable

Held = tuple[str, Entry]  # (the name of the object holding it, the entry)


class RouteEntries(Mapping[str, Held]):
    """path -> (object name, entry): what answers for each route in one cluster."""

    def __init__(self, cluster: str, table: RouteTable) -> None:
        self.cluster = cluster
        self.table = table  # where the routes this cluster owns are published
        self._held: dict[str, Held] = {}
        self.owned = 0  # entries this cluster owns (not edge rules): its route count
        self.changes = 0  # moves with every set: readers tell an unchanged index by it
        self._metric = metrics.ROUTES.labels(cluster)

    def __getitem__(self, path: str) -> Held:
        return self._held[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self._held)

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, path: object) -> bool:
        return path in self._held

    def get(self, path: str, default: Held | None = None) -> Held | None:  # type: ignore[override]
        return self._held.get(path, default)

    def entry(self, path: str) -> Entry | None:
        held = self._held.get(path)
        return None if held is None else held[1]

    def set(self, path: str, value: Held | None) -> None:
        """The copy that answers for ``path`` now (None: none), published if the cluster owns it."""
        self.changes += 1
        old = self._held.pop(path, None)
        if old is not None and self._owns(old[1]):
            self.owned -= 1
        owned = value is not None and self._owns(value[1])
        if value is not None:
            self._held[path] = value
            self.owned += owned
        self.table.update(self.cluster, path, value[1] if value is not None and owned else None)
        self._metric.set(self.owned)

    def route_count(self) -> int:
        return self.owned

    def adopt(self, table: RouteTable) -> None:
        """Publish into ``table`` from now on, starting with every route owned here (a reload
        swapping this cluster's new store in)."""
        self.table = table
        for path, (_, entry) in self._held.items():
            if self._owns(entry):
                table.update(self.cluster, path, entry)

    def withdraw(self) -> None:
        """Take this cluster's routes out of the table, and publish nowhere from now on (a
        reload retiring its store: its watches run until it stops, and what they hear must
        not reach the table its successor fills)."""
        for path in list(self._held):
            self.table.update(self.cluster, path, None)
        self.table = RouteTable()

    def _owns(self, entry: Entry) -> bool:
        return entry.owner == self.cluster and not entry.edge
