"""The Gateway API backend's route index: one entry per HTTPRoute, so no shard bookkeeping,
and the routes the gateway did not accept (from ``status.parents``, for /clusters).

Changed only by the cluster's mirror (see :class:`federation.mirror.RouteIndex`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .. import metrics
from ..model import Entry, decode_entries, role_of
from ..table import RouteTable
from .objects import ANN_SPEC

ROUTES = "httproutes"


@dataclass
class RouteState:
    name: str
    rv: str
    entry: Entry | None  # None: an HTTPRoute of ours that holds no readable route
    spec: str = ""  # the hash of the object as built (objects.spec_hash)


def route_problem(obj: dict[str, Any]) -> tuple[str, str] | None:
    """The first condition of ``status.parents`` that is not True (None: no status yet, or
    all well): (condition type, reason)."""
    for parent in (obj.get("status") or {}).get("parents") or []:
        for condition in parent.get("conditions") or []:
            if condition.get("type") in ("Accepted", "ResolvedRefs") and \
                    condition.get("status") != "True":
                return str(condition["type"]), str(condition.get("reason") or "")
    return None


class RouteObjectIndex:
    def __init__(self, cluster: str, table: RouteTable) -> None:
        self.name = cluster
        self.table = table
        self.routes: dict[str, RouteState] = {}  # route HTTPRoutes by name
        self.entries: dict[str, tuple[str, Entry]] = {}
        self.owned = 0
        # HTTPRoutes the gateway has not Accepted or whose refs it has not Resolved, by name:
        # (condition type, reason), from status.parents.
        self.problems: dict[str, tuple[str, str]] = {}
        # HTTPRoutes kept anew since the backend last took this set (its re-render looks
        # only at these, unless the configuration changed).
        self.changed: set[str] = set()
        self._routes_metric = metrics.ROUTES.labels(cluster)

    # -- what the mirror's cache asks (federation.mirror.RouteIndex) -------------------------

    def takes(self, plural: str, obj: dict[str, Any]) -> bool:
        # Host defaults are HTTPRoutes too, but support objects: kept by fingerprint.
        return plural == ROUTES and role_of(obj) == "route"

    def rv_of(self, plural: str, name: str) -> int:
        held = self.routes.get(name) if plural == ROUTES else None
        return int(held.rv) if held is not None else 0

    def put(self, plural: str, name: str, rv: str, obj: dict[str, Any],
            decoded: dict[str, Entry] | None) -> None:
        self._note_status(name, obj)
        found = list((decoded if decoded is not None else decode_entries(obj)).values())
        ann = (obj.get("metadata") or {}).get("annotations") or {}
        self._put_route(RouteState(name, rv, found[0] if len(found) == 1 else None,
                                   ann.get(ANN_SPEC, "")))

    def drop(self, plural: str, name: str) -> bool:
        self.problems.pop(name, None)
        old = self.routes.pop(name, None) if plural == ROUTES else None
        if old is None:
            return False
        if old.entry is not None:
            self._set(old.entry.path, None)
        return True

    def names(self, plural: str) -> Iterable[str]:
        return list(self.routes) if plural == ROUTES else []

    def route_count(self) -> int:
        return self.owned

    # -- the route index --------------------------------------------------------------------

    def _note_status(self, name: str, obj: dict[str, Any]) -> None:
        problem = route_problem(obj)
        if problem is None:
            self.problems.pop(name, None)
        else:
            self.problems[name] = problem

    def _put_route(self, new: RouteState) -> None:
        old = self.routes.get(new.name)
        self.routes[new.name] = new
        self.changed.add(new.name)
        if old is not None and old.entry is not None and (
                new.entry is None or new.entry.path != old.entry.path):
            self._set(old.entry.path, None)
        if new.entry is not None:
            self._set(new.entry.path, (new.name, new.entry))

    def _set(self, path: str, value: tuple[str, Entry] | None) -> None:
        old = self.entries.pop(path, None)
        if old is not None and self._is_owned(old[1]):
            self.owned -= 1
        owned = value is not None and self._is_owned(value[1])
        if value is not None:
            self.entries[path] = value
            self.owned += owned
        self.table.update(self.name, path, value[1] if value is not None and owned else None)
        self._routes_metric.set(self.owned)

    def _is_owned(self, entry: Entry) -> bool:
        return entry.owner == self.name and not entry.edge
