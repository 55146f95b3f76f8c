"""The watch-fed cache: what the service needs of every object it owns, per cluster, and the
route table derived from them. GET /api/routes is answered from here, never by listing.

Only :class:`federation.store.ClusterStore` mutates a cluster's cache (from its watches and its
own write results), on the event loop; so the cache needs no locks. It keeps lean states, not
whole objects: a shard's entries (its rules are rebuilt from them when it is written), a root's
delegates, a support object's spec.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from . import _json, metrics
from .activity import ActivityBook
from .layout import ShardKey
from .objects import (
    ANN_HOST,
    ANN_ROUTES,
    KINDS,
    LABEL_ROLE,
    Entry,
    decode_entries,
    is_split_marker,
    root_delegates,
    shard_key_of,
)

log = logging.getLogger(__name__)


def _rv(obj: dict[str, Any] | None) -> int:
    try:
        return int((obj or {}).get("metadata", {}).get("resourceVersion") or 0)
    except (TypeError, ValueError):
        return 0


class RouteTable:
    """The hub's view: every route owned by some cluster, one answer per path.

    Each route's JSON is kept rendered, so a GET after a write joins strings instead of
    serialising the whole table again (the hub polls it, and big hubs have many routes).
    """

    def __init__(self) -> None:
        self.owned: dict[str, dict[str, Entry]] = {}
        self.fragments: dict[str, str] = {}
        self.version = 0
        self._rendered: tuple[int, bytes] | None = None
        self.activity = ActivityBook()  # traffic activity overlaid on write times (activity.py)

    def update(self, cluster: str, path: str, entry: Entry | None) -> None:
        owners = self.owned.get(path)
        if entry is None:
            if owners and owners.pop(cluster, None) is not None:
                if not owners:
                    del self.owned[path]
                self._changed(path)
            return
        if owners is None:
            owners = self.owned[path] = {}
        if owners.get(cluster) != entry:
            owners[cluster] = entry
            self._changed(path)

    def _changed(self, path: str) -> None:
        self.version += 1
        entry = self.get(path)
        if entry is None:
            self.fragments.pop(path, None)
        else:
            self.fragments[path] = _dumps(path) + ":" + _dumps(self.public(entry))

    def get(self, path: str) -> Entry | None:
        owners = self.owned.get(path)
        if not owners:
            return None
        # A route briefly owned twice (a move whose old side is unreachable) resolves to the
        # newest write; the reconciler removes the stale copy.
        return max(owners.values(), key=lambda e: (e.last_activity, e.owner))

    def duplicates(self) -> list[tuple[str, list[Entry]]]:
        return [(p, list(o.values())) for p, o in self.owned.items() if len(o) > 1]

    def __len__(self) -> int:
        return len(self.owned)

    def public(self, entry: Entry) -> dict[str, Any]:
        route = dict(entry.data)
        route["target"] = entry.target
        last_activity = self.activity.last_activity(entry)
        if last_activity:
            route["last_activity"] = last_activity
        return route

    def render(self) -> bytes:
        """The whole table as JSON, cached until the next change."""
        if self._rendered is None or self._rendered[0] != self.version:
            body = ("{" + ",".join(self.fragments.values()) + "}").encode("utf-8")
            self._rendered = (self.version, body)
        return self._rendered[1]

    def filtered(self, inactive_since: str) -> bytes:
        table = {}
        for path in self.owned:
            entry = self.get(path)
            last_activity = None if entry is None else self.activity.last_activity(entry)
            if entry is not None and last_activity and last_activity < inactive_since:
                table[path] = self.public(entry)
        return _dumps(table).encode("utf-8")

    # -- traffic activity (federation/activity.py) -------------------------------------------

    def routes(self) -> Iterator[tuple[str, Entry]]:
        """Every route and the entry that answers for it."""
        for path in list(self.owned):
            entry = self.get(path)
            if entry is not None:
                yield path, entry

    def note_activity(self, seen: dict[str, str]) -> int:
        """Newer activity times (path -> ISO time); the routes they move are rendered again."""
        moved = [p for p in self.activity.merge(seen) if p in self.owned]
        for path in moved:
            self._changed(path)
        return len(moved)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass
class ShardState:
    name: str
    rv: str
    key: ShardKey
    split: bool  # a split marker: its routes live in its children
    entries: dict[str, Entry]
    size: int = 0  # characters of its routes annotation: what splits a shard of big routes


@dataclass
class RootState:
    name: str
    rv: str
    host_key: str
    delegates: tuple[str, ...]
    delegate_set: frozenset[str] = frozenset()  # the same, for the membership tests of writes

    def __post_init__(self) -> None:
        self.delegate_set = frozenset(self.delegates)


@dataclass
class SupportState:
    name: str
    rv: str
    spec: bytes  # canonical JSON (sorted keys): compared, never read, and small to keep


def canonical(spec: dict[str, Any]) -> bytes:
    return _json.dumps_sorted(spec)


@dataclass
class Health:
    """What /clusters shows of a cluster's watches."""

    state: str = "starting"  # starting | synced | resyncing | failing
    synced: dict[str, bool] = field(default_factory=lambda: {p: False for p in KINDS})
    ever_synced: bool = False
    last_sync: float | None = None
    last_event: float | None = None
    last_error: str | None = None
    watch_restarts: int = 0


class ClusterCache:
    """What one cluster holds, kept current by its store; the route index derived from it.

    A route may be held by more than one shard for a moment (a split copying it to a child, a
    move out of a legacy shard): the index answers with the copy in a *live* shard (one whose
    parent is a split marker, or a top or legacy one), newest write first.
    """

    def __init__(self, name: str, instance: str, table: RouteTable) -> None:
        self.name = name
        self.instance = instance
        self.table = table
        self.shards: dict[str, ShardState] = {}
        self.roots: dict[str, RootState] = {}
        self.support: dict[str, dict[str, SupportState]] = {
            p: {} for p in KINDS if p != "virtualservices"
        }
        self.tombstones: dict[tuple[str, str], int] = {}
        self.holders: dict[str, dict[str, Entry]] = {}  # path -> shard name -> entry
        self.entries: dict[str, tuple[str, Entry]] = {}  # path -> (shard name, entry): the index
        self.owned = 0  # entries this cluster owns (not edge rules): its route count
        # Kept as shards and roots come and go, so that a write never scans them all.
        self.shard_hosts: Counter[str] = Counter()  # host keys of shards that hold routes
        self.root_hosts: set[str] = set()  # host keys of host roots
        self.plain_tops: set[str] = set()  # plain depth-0 shards: "/" serves every host
        self.health = Health()
        self._routes_metric = metrics.ROUTES.labels(name)

    # -- applying state --------------------------------------------------------------------

    def rv_of(self, plural: str, name: str) -> int:
        held: ShardState | RootState | SupportState | None
        if plural == "virtualservices":
            held = self.shards.get(name) or self.roots.get(name)
        else:
            held = self.support[plural].get(name)
        return int(held.rv) if held is not None else 0

    def apply(self, plural: str, kind: str, obj: dict[str, Any],
              decoded: dict[str, Entry] | None = None) -> None:
        """Apply one watch event or one of our own write results, ignoring stale ones.

        ``decoded``: the entries of a shard we just wrote, so they need not be parsed again.
        """
        meta = obj.get("metadata") or {}
        name = meta.get("name")
        if not name:
            return
        rv = _rv(obj)
        newest = max(self.rv_of(plural, name), self.tombstones.get((plural, name), 0))
        if rv and rv <= newest:
            return
        if kind == "DELETED":
            self.forget(plural, name, rv)
            return
        self.tombstones.pop((plural, name), None)
        if plural != "virtualservices":
            self.support[plural][name] = SupportState(name, str(rv), canonical(obj.get("spec") or {}))
            return
        role = (meta.get("labels") or {}).get(LABEL_ROLE)
        if role == "root":
            host = (meta.get("annotations") or {}).get(ANN_HOST, "")
            self.roots[name] = RootState(name, str(rv), host, tuple(root_delegates(obj)))
            if host:
                self.root_hosts.add(host)
        elif role == "shard":
            key = shard_key_of(obj)
            if key is not None:
                split = is_split_marker(obj)
                entries = {} if split else (decoded if decoded is not None else decode_entries(obj))
                size = len((meta.get("annotations") or {}).get(ANN_ROUTES) or "")
                self._put_shard(ShardState(name, str(rv), key, split, entries, size))

    def put_written_shard(self, name: str, rv: str, key: ShardKey, entries: dict[str, Entry],
                          size: int) -> None:
        """Our own write of a shard, known without reading the answer back (only its
        resourceVersion): the same as applying the stored object."""
        if int(rv) <= max(self.rv_of("virtualservices", name),
                          self.tombstones.get(("virtualservices", name), 0)):
            return
        self.tombstones.pop(("virtualservices", name), None)
        self._put_shard(ShardState(name, rv, key, False, entries, size))

    def forget(self, plural: str, name: str, rv: int = 0) -> None:
        """A deletion (a watch event or our own delete)."""
        self.tombstones[(plural, name)] = max(rv, self.rv_of(plural, name) + 1)
        if plural != "virtualservices":
            self.support[plural].pop(name, None)
        else:
            root = self.roots.pop(name, None)
            if root is not None:
                self.root_hosts.discard(root.host_key)
            elif name in self.shards:
                self._drop_shard(name)

    def replace_all(self, plural: str, items: list[dict[str, Any]], list_rv: int) -> None:
        """A fresh list in one piece (see :meth:`apply_page` and :meth:`end_relist`)."""
        self.apply_page(plural, items)
        self.end_relist(plural, {i["metadata"]["name"] for i in items}, list_rv)

    def apply_page(self, plural: str, items: list[dict[str, Any]]) -> None:
        """One page of a list: applied as it arrives, so a big list is never held whole."""
        for obj in items:
            self.apply(plural, "ADDED", obj)

    def end_relist(self, plural: str, listed: set[str], list_rv: int) -> None:
        """The list is the new truth, except objects we know are newer than it."""
        for name in self._names(plural):
            if name not in listed and self.rv_of(plural, name) <= list_rv:
                self.forget(plural, name, list_rv)
        self.tombstones = {
            k: rv for k, rv in self.tombstones.items() if k[0] != plural or rv > list_rv
        }
        health = self.health
        health.synced[plural] = True
        health.last_sync = health.last_event = time.time()
        if all(health.synced.values()):
            health.ever_synced = True
            health.state = "synced"

    def _names(self, plural: str) -> list[str]:
        if plural == "virtualservices":
            return list(self.shards) + list(self.roots)
        return list(self.support[plural])

    # -- the route index --------------------------------------------------------------------

    def _count(self, state: ShardState, sign: int) -> None:
        if state.split:
            return
        if state.key.host:
            self.shard_hosts[state.key.host] += sign
            if self.shard_hosts[state.key.host] <= 0:
                del self.shard_hosts[state.key.host]
        elif state.key.depth == 0:
            (self.plain_tops.add if sign > 0 else self.plain_tops.discard)(state.name)

    def _put_shard(self, new: ShardState) -> None:
        old = self.shards.get(new.name)
        if old is not None:
            self._count(old, -1)
        self._count(new, +1)
        self.shards[new.name] = new
        old_entries = old.entries if old is not None else {}
        touched = [p for p in old_entries if p not in new.entries]
        for path in touched:
            self._unhold(path, new.name)
        for path, entry in new.entries.items():
            held = self.holders.setdefault(path, {})
            # Unchanged entries are the very same objects when we wrote the shard ourselves.
            if held.get(new.name) is not entry:
                held[new.name] = entry
                touched.append(path)
        if old is None or old.split != new.split:
            touched += self._child_paths(new.key)
        for path in touched:
            self._refresh(path)
        self._routes_metric.set(self.owned)

    def _drop_shard(self, name: str) -> None:
        old = self.shards.pop(name)
        self._count(old, -1)
        for path in old.entries:
            self._unhold(path, name)
            self._refresh(path)
        for path in self._child_paths(old.key):
            self._refresh(path)
        self._routes_metric.set(self.owned)

    def _unhold(self, path: str, shard: str) -> None:
        held = self.holders.get(path)
        if held is not None:
            held.pop(shard, None)
            if not held:
                del self.holders[path]

    def _child_paths(self, key: ShardKey) -> list[str]:
        if key.legacy:
            return []
        paths: list[str] = []
        for child in key.children():
            state = self.shards.get(child.name(self.instance))
            if state is not None:
                paths += state.entries
        return paths

    def live(self, state: ShardState) -> bool:
        """Whether a shard's entries count: not a marker, and not a child of a split in flight."""
        if state.split:
            return False
        parent = state.key.parent()
        if parent is None:
            return True
        held = self.shards.get(parent.name(self.instance))
        return held is not None and held.split

    def _refresh(self, path: str) -> None:
        best: tuple[tuple[str, str, bool], str, Entry] | None = None
        for shard, entry in (self.holders.get(path) or {}).items():
            state = self.shards.get(shard)
            if state is None or not self.live(state):
                continue
            rank = (entry.last_activity, entry.owner, not state.key.legacy)
            if best is None or rank > best[0]:
                best = (rank, shard, entry)
        self._set(path, None if best is None else (best[1], best[2]))

    def _set(self, path: str, value: tuple[str, Entry] | None) -> None:
        old = self.entries.pop(path, None)
        if old is not None and self._is_owned(old[1]):
            self.owned -= 1
        if value is not None:
            self.entries[path] = value
            if self._is_owned(value[1]):
                self.owned += 1
        owned = value is not None and self._is_owned(value[1])
        self.table.update(self.name, path, value[1] if owned and value is not None else None)

    def _is_owned(self, entry: Entry) -> bool:
        return entry.owner == self.name and not entry.edge

    # -- queries ----------------------------------------------------------------------------

    def route_count(self) -> int:
        return self.owned

    def is_split(self, key: ShardKey) -> bool:
        held = self.shards.get(key.name(self.instance))
        return held is not None and held.split

    def copies(self, path: str) -> dict[str, Entry]:
        """Every shard holding an entry for ``path`` (live or not), by shard name."""
        return dict(self.holders.get(path) or {})
