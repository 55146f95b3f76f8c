"""The Gateway API backend's route index: one entry per HTTPRoute, so no shard bookkeeping,
and the routes the gateway did not accept (from ``status.parents``, for /clusters).

Changed only by the cluster's mirror (see :class:`federation.mirror.RouteIndex`).
"""

from __future__ import annotations

from typing import Any

from ..mirror import RouteEntries
from ..model import ANN_SPEC, Entry, decode_entries

ROUTES = "httproutes"


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
    def __init__(self, entries: RouteEntries) -> None:
        self.entries = entries  # the cluster's route-entry index, which this one keeps
        # Route HTTPRoutes by name: the entry each holds (None: no readable route), which is
        # also its writer's state, read as data (federation.mirror.View.held).
        self.routes: dict[str, Entry | None] = {}
        self.specs: dict[str, str] = {}  # the hash of each as built (objects.spec_hash)
        # HTTPRoutes the gateway has not Accepted or whose refs it has not Resolved, by name:
        # (condition type, reason), from status.parents.
        self.problems: dict[str, tuple[str, str]] = {}
        # HTTPRoutes kept anew since the backend last took this set (its re-render looks
        # only at these, unless the configuration changed).
        self.changed: set[str] = set()

    # -- what the mirror's cache asks (federation.mirror.RouteIndex) -------------------------

    def put(self, plural: str, name: str, obj: dict[str, Any],
            decoded: dict[str, Entry] | None) -> bool:
        self._note_status(name, obj)
        held = self.routes.get(name)
        before = {held.path: held} if held is not None else None
        found = list((decoded if decoded is not None else decode_entries(obj, before)).values())
        ann = (obj.get("metadata") or {}).get("annotations") or {}
        self._put_route(name, found[0] if len(found) == 1 else None, ann.get(ANN_SPEC, ""))
        return True

    def drop(self, plural: str, name: str) -> None:
        self.problems.pop(name, None)
        self.specs.pop(name, None)
        old = self.routes.pop(name, None)
        if old is not None:
            self.entries.set(old.path, None)

    # -- the route index --------------------------------------------------------------------

    def _note_status(self, name: str, obj: dict[str, Any]) -> None:
        problem = route_problem(obj)
        if problem is None:
            self.problems.pop(name, None)
        else:
            self.problems[name] = problem

    def _put_route(self, name: str, entry: Entry | None, spec: str) -> None:
        old = self.routes.get(name)
        self.routes[name] = entry
        self.specs[name] = spec
        self.changed.add(name)
        if old is not None and (entry is None or entry.path != old.path):
            self.entries.set(old.path, None)
        if entry is not None:
            self.entries.set(entry.path, (name, entry))
