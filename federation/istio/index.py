"""The Istio backend's route index: shards and roots as lean states (a shard's entries, a
root's delegates; rules are rebuilt from entries when written), and the routes they hold.

A route may be held by more than one shard for a moment (a split copying it to a child, a move
out of a legacy shard): the index answers with the copy in a *live* shard (one whose parent is
a split marker, or a top or legacy one), newest write first. Changed only by the cluster's
mirror (see :class:`federation.mirror.RouteIndex`), on the event loop.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from ..mirror import RouteEntries
from ..model import ANN_HOST, ANN_ROUTES, ANN_SPEC, Entry, decode_entries, newest_copy, role_of
from .layout import ShardKey
from .objects import is_split_marker, root_delegates, shard_key_of, stored_spec_hash


class SplitMarker:
    """The state of a shard that split: no routes of its own; look in its children."""

    def __repr__(self) -> str:
        return "SPLIT"


SPLIT = SplitMarker()
Shard = dict[str, Entry] | SplitMarker  # a shard's state, as its writer sees it


@dataclass
class ShardState:
    name: str
    key: ShardKey
    split: bool  # a split marker: its routes live in its children
    entries: dict[str, Entry]
    size: int = 0  # characters of its routes annotation: what splits a shard of big routes
    spec: str = ""  # the hash of its spec as stored (objects.stored_spec_hash)


@dataclass
class RootState:
    name: str
    host_key: str
    delegates: tuple[str, ...]
    spec: str = ""  # the hash of its spec as stored (objects.stored_spec_hash)
    delegate_set: frozenset[str] = frozenset()  # the same, for the membership tests of writes

    def __post_init__(self) -> None:
        self.delegate_set = frozenset(self.delegates)


class ShardIndex:
    def __init__(self, instance: str, entries: RouteEntries) -> None:
        self.instance = instance
        self.entries = entries  # path -> (shard name, entry): the route-entry index it keeps
        self.shards: dict[str, ShardState] = {}
        # Each shard's state as its writer sees it (its entries, or SPLIT): the writer reads
        # it as data (federation.mirror.View.held).
        self.states: dict[str, Shard] = {}
        self.roots: dict[str, RootState] = {}
        self.holders: dict[str, dict[str, Entry]] = {}  # path -> shard name -> entry
        # Kept as shards and roots come and go, so that a write never scans them all.
        self.shard_hosts: Counter[str] = Counter()  # host keys of shards that hold routes
        self.root_hosts: set[str] = set()  # host keys of host roots
        self.plain_tops: set[str] = set()  # plain depth-0 shards: "/" serves every host
        # Shards and roots read from the cluster (not our own writes, which are rendered from
        # the current configuration) since the backend's last re-render pass looked.
        self.changed: set[str] = set()

    # -- what the mirror's cache asks (federation.mirror.RouteIndex) -------------------------

    def put(self, plural: str, name: str, obj: dict[str, Any],
            decoded: dict[str, Entry] | None) -> bool:
        meta = obj.get("metadata") or {}
        if role_of(obj) == "root":
            host = (meta.get("annotations") or {}).get(ANN_HOST, "")
            self.roots[name] = RootState(name, host, tuple(root_delegates(obj)),
                                         stored_spec_hash(obj))
            self._note_unhashed(name, meta)
            if host:
                self.root_hosts.add(host)
            return True
        key = shard_key_of(obj)
        if key is None:
            return False  # neither a shard nor a root: any other VirtualService of ours
        split = is_split_marker(obj)
        held = self.shards.get(name)
        entries = {} if split else (decoded if decoded is not None else decode_entries(
            obj, held.entries if held is not None else None))
        size = len((meta.get("annotations") or {}).get(ANN_ROUTES) or "")
        spec = "" if split else stored_spec_hash(obj)
        self._put_shard(ShardState(name, key, split, entries, size, spec))
        self._note_unhashed(name, meta)
        return True

    def _note_unhashed(self, name: str, meta: dict[str, Any]) -> None:
        """An object written without a spec hash (a release before it) is compared with the
        configuration at the next pass. One with a hash was rendered by a replica from its own
        configuration: rewriting it from ours would make two replicas whose configurations
        differ for a moment (a reload reaches pods seconds apart) rewrite each other's objects
        every pass; each replica's full pass after its own start or reload settles them."""
        if ANN_SPEC not in (meta.get("annotations") or {}):
            self.changed.add(name)

    def put_written(self, name: str, key: ShardKey, entries: dict[str, Entry],
                    size: int, spec: str) -> None:
        """Our own write of a shard, known by its resourceVersion alone (the cache admitted it):
        the same as applying the stored object."""
        self._put_shard(ShardState(name, key, False, entries, size, spec))

    def drop(self, plural: str, name: str) -> None:
        self.changed.discard(name)
        root = self.roots.pop(name, None)
        if root is not None:
            self.root_hosts.discard(root.host_key)
        elif name in self.shards:
            self._drop_shard(name)

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
        self.states[new.name] = SPLIT if new.split else new.entries
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

    def _drop_shard(self, name: str) -> None:
        old = self.shards.pop(name)
        del self.states[name]
        self._count(old, -1)
        for path in old.entries:
            self._unhold(path, name)
            self._refresh(path)
        for path in self._child_paths(old.key):
            self._refresh(path)

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
        self.entries.set(path, newest_copy(
            (shard, entry, not state.key.legacy)
            for shard, entry in (self.holders.get(path) or {}).items()
            for state in [self.shards.get(shard)] if state is not None and self.live(state)))

    # -- queries ----------------------------------------------------------------------------

    def is_split(self, key: ShardKey) -> bool:
        held = self.shards.get(key.name(self.instance))
        return held is not None and held.split

    def copies(self, path: str) -> dict[str, Entry]:
        """Every shard holding an entry for ``path`` (live or not), by shard name."""
        return dict(self.holders.get(path) or {})

    def live_copies(self, path: str) -> list[ShardKey]:
        out = []
        for name in self.copies(path):
            state = self.shards.get(name)
            if state is not None and self.live(state):
                out.append(state.key)
        return out
