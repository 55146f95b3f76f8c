"""The Gateway API store's watch-fed cache: one entry per HTTPRoute, so no shard bookkeeping.

Same contract as :class:`federation.cache.ClusterCache` where the shared store code reads it:
``entries`` (path -> (object name, entry)), ``health``, ``route_count``, ``apply``,
``apply_page``, ``end_relist``, ``forget``; events older than what is known are ignored.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .. import metrics
from ..cache import Health, RouteTable, SupportState, _rv
from ..objects import LABEL_ROLE, Entry, decode_entries
from .objects import ANN_SPEC, KINDS

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


class GatewayCache:
    def __init__(self, name: str, table: RouteTable, watched: list[str]) -> None:
        self.name = name
        self.table = table
        self.routes: dict[str, RouteState] = {}  # route HTTPRoutes by name
        # Everything else we write, by kind then name; host defaults are "httproutes" here.
        self.support: dict[str, dict[str, SupportState]] = {p: {} for p in KINDS}
        self.entries: dict[str, tuple[str, Entry]] = {}
        self.owned = 0
        self.tombstones: dict[tuple[str, str], int] = {}
        # HTTPRoutes the gateway has not Accepted or whose refs it has not Resolved, by name:
        # (condition type, reason), from status.parents.
        self.problems: dict[str, tuple[str, str]] = {}
        self.health = Health(synced={p: False for p in watched})
        self._routes_metric = metrics.ROUTES.labels(name)

    def rv_of(self, plural: str, name: str) -> int:
        held: RouteState | SupportState | None = self.support[plural].get(name)
        if plural == ROUTES and held is None:
            held = self.routes.get(name)
        return int(held.rv) if held is not None else 0

    def apply(self, plural: str, kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        name = meta.get("name")
        if not name:
            return
        rv = _rv(obj)
        if rv and rv <= max(self.rv_of(plural, name), self.tombstones.get((plural, name), 0)):
            return
        if kind == "DELETED":
            self.forget(plural, name, rv)
            return
        self.tombstones.pop((plural, name), None)
        ann = meta.get("annotations") or {}
        if plural == ROUTES and (meta.get("labels") or {}).get(LABEL_ROLE) == "route":
            self._note_status(name, obj)
            found = list(decode_entries(obj).values())
            self._put_route(RouteState(name, str(rv), found[0] if len(found) == 1 else None,
                                       ann.get(ANN_SPEC, "")))
            return
        # The hash of what we built, not the object as stored: the API server adds defaults.
        self.support[plural][name] = SupportState(name, str(rv), ann.get(ANN_SPEC, "").encode())

    def _note_status(self, name: str, obj: dict[str, Any]) -> None:
        problem = route_problem(obj)
        if problem is None:
            self.problems.pop(name, None)
        else:
            self.problems[name] = problem

    def forget(self, plural: str, name: str, rv: int = 0) -> None:
        self.problems.pop(name, None)
        self.tombstones[(plural, name)] = max(rv, self.rv_of(plural, name) + 1)
        if self.support[plural].pop(name, None) is not None:
            return
        if plural == ROUTES and name in self.routes:
            old = self.routes.pop(name)
            if old.entry is not None:
                self._set(old.entry.path, None)

    def _put_route(self, new: RouteState) -> None:
        old = self.routes.get(new.name)
        self.routes[new.name] = new
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

    def apply_page(self, plural: str, items: list[dict[str, Any]]) -> None:
        for obj in items:
            self.apply(plural, "ADDED", obj)

    def end_relist(self, plural: str, listed: set[str], list_rv: int) -> None:
        names = list(self.support[plural]) + (list(self.routes) if plural == ROUTES else [])
        for name in names:
            if name not in listed and self.rv_of(plural, name) <= list_rv:
                self.forget(plural, name, list_rv)
        self.tombstones = {k: v for k, v in self.tombstones.items()
                           if k[0] != plural or v > list_rv}
        health = self.health
        health.synced[plural] = True
        health.last_sync = health.last_event = time.time()
        if all(health.synced.values()):
            health.ever_synced = True
            health.state = "synced"

    def route_count(self) -> int:
        return self.owned
