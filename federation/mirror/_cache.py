"""The object cache of one cluster: resourceVersions, tombstones, relists, the health of the
watches, support objects by fingerprint; route-holding objects handed to the backend's index.

Only the cluster's :class:`~federation.mirror.Mirror` changes it (from its watches and from the
results of its own writes), on the event loop, so it needs no locks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..model import Entry
from ..seam import RouteIndex


@dataclass
class SupportState:
    name: str
    rv: str
    spec: bytes  # the object's fingerprint (federation.mirror.fingerprint): compared, never read


@dataclass
class Health:
    """What /clusters shows of a cluster's watches."""

    state: str = "starting"  # starting | synced | resyncing | failing
    synced: dict[str, bool] = field(default_factory=dict)
    ever_synced: bool = False
    last_sync: float | None = None
    last_event: float | None = None
    last_error: str | None = None
    watch_restarts: int = 0

    def kind_synced(self, plural: str) -> None:
        self.synced[plural] = True
        self.last_sync = self.last_event = time.time()
        if all(self.synced.values()):
            self.ever_synced = True
            self.state = "synced"


def resource_version(obj: dict[str, Any] | None) -> int:
    try:
        return int((obj or {}).get("metadata", {}).get("resourceVersion") or 0)
    except (TypeError, ValueError):
        return 0


class CachedIndex(RouteIndex, Protocol):
    """The backend's index with the rule for which objects are its (the route kind's)."""

    def takes(self, plural: str, obj: dict[str, Any]) -> bool: ...


class ObjectCache:
    """Every object of ours in one cluster, as recent as what we have heard of it."""

    def __init__(self, index: CachedIndex, kinds: Iterable[str], watched: Iterable[str],
                 fingerprint: Callable[[dict[str, Any]], bytes]) -> None:
        self.index = index
        self.support: dict[str, dict[str, SupportState]] = {p: {} for p in kinds}
        # resourceVersions of the objects the index keeps (their state is the index's)
        self.held: dict[str, dict[str, int]] = {p: {} for p in kinds}
        self.tombstones: dict[tuple[str, str], int] = {}
        self.health = Health(synced={p: False for p in watched})
        self._fingerprint = fingerprint
        # Counts every change kept (events, reads, our writes): housekeeping compares it to
        # pass over a cluster only when something changed there.
        self.changes = 0

    def rv_of(self, plural: str, name: str) -> int:
        held = self.held.get(plural, {}).get(name)
        if held:
            return held
        state = self.support.get(plural, {}).get(name)
        return int(state.rv) if state is not None else 0

    def version(self, plural: str, name: str) -> str | None:
        """The resourceVersion a write of the object replaces (None: not held, so created)."""
        rv = self.rv_of(plural, name)
        return str(rv) if rv else None

    def newer(self, plural: str, name: str, rv: int) -> bool:
        """Whether ``rv`` is newer than everything known of the object (deletions included)."""
        return rv > max(self.rv_of(plural, name), self.tombstones.get((plural, name), 0))

    def apply(self, plural: str, kind: str, obj: dict[str, Any],
              decoded: dict[str, Entry] | None = None) -> None:
        """Apply one watch event, one read or one of our own write results; stale ones are
        ignored. ``decoded``: the entries of an object we just wrote, not parsed again."""
        name = (obj.get("metadata") or {}).get("name")
        if not name:
            return
        rv = resource_version(obj)
        if rv and not self.newer(plural, name, rv):
            return
        if kind == "DELETED":
            self.forget(plural, name, rv)
            return
        self.tombstones.pop((plural, name), None)
        self.changes += 1
        if self.index.takes(plural, obj):
            if self.index.put(plural, name, obj, decoded):
                self.held[plural][name] = rv
        else:
            self.support[plural][name] = SupportState(name, str(rv), self._fingerprint(obj))

    def admit(self, plural: str, name: str, rv: str) -> bool:
        """Before the index keeps one of our writes known by its resourceVersion alone:
        False when something newer is known already."""
        if not self.newer(plural, name, int(rv)):
            return False
        self.tombstones.pop((plural, name), None)
        self.held[plural][name] = int(rv)
        self.changes += 1
        return True

    def forget(self, plural: str, name: str, rv: int = 0) -> None:
        """A deletion (a watch event, or our own delete)."""
        self.changes += 1
        self.tombstones[(plural, name)] = max(rv, self.rv_of(plural, name) + 1)
        if self.support.get(plural, {}).pop(name, None) is None and \
                self.held.get(plural, {}).pop(name, None) is not None:
            self.index.drop(plural, name)

    def apply_page(self, plural: str, items: list[dict[str, Any]]) -> None:
        """One page of a list: applied as it arrives, so a big list is never held whole."""
        for obj in items:
            self.apply(plural, "ADDED", obj)

    def end_relist(self, plural: str, listed: set[str], list_rv: int) -> None:
        """The list is the new truth, except objects we know are newer than it."""
        names = list(self.support.get(plural, {})) + list(self.held.get(plural, {}))
        for name in names:
            if name not in listed and self.rv_of(plural, name) <= list_rv:
                self.forget(plural, name, list_rv)
        self.tombstones = {k: rv for k, rv in self.tombstones.items()
                           if k[0] != plural or rv > list_rv}
        self.health.kind_synced(plural)

    def fingerprint(self, obj: dict[str, Any]) -> bytes:
        return self._fingerprint(obj)
