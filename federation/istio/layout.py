"""Where a route's entry is stored in one cluster: the shard layout (pure, no I/O).

Routes with the same host key and path depth share a *tree* of shards. The tree starts as one
shard (level 0). A shard that outgrows its capacity *splits*: its two children at level ``L+1``
take the routes whose path hash has ``bucket`` (resp. ``bucket + 2**L``) in its low ``L+1``
bits, and the parent is rewritten as an empty *split marker*. Markers stay, so any replica can
find a route's shard from the objects alone: start at level 0 and go down while the shard there
is a marker. No shard count to size in advance; every shard holds at most ``capacity`` routes
(about half of that after a split), whatever the table size.

The layout of the first release (a fixed number of buckets per depth, names ending
``-r<depth>-<bucket>``) is read as *legacy* shards: their routes stay served where they are and
move into the tree on their next write or in housekeeping.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from ..model import short_hash
from ..routespec import RouteKey

# Deep enough for 65,536 shards per depth (millions of routes); keeps names within 63 chars.
MAX_LEVEL = 16
# The bound of every descent of a tree (navigation, not a retry): a route's shard is found
# after at most one step per level, each following a split marker one level down.
LEVELS = MAX_LEVEL + 1
DEFAULT_CAPACITY = 48

_NEW_TAIL = re.compile(r"-(?:h([0-9a-f]{8})-)?d(\d+)s(\d+)-([0-9a-f]+)$")
_LEGACY_TAIL = re.compile(r"-(?:h([0-9a-f]{8})-)?r(\d+)-(\d{3})$")

V = TypeVar("V")


def path_hash(path: str) -> int:
    """32 bits of the route key's hash; the legacy layout used the same value modulo its count."""
    return int(short_hash(path, 8), 16)


@dataclass(frozen=True, order=True)
class ShardKey:
    host: str  # "" for routes without a host segment
    depth: int
    level: int
    bucket: int
    legacy: bool = False

    def name(self, instance: str) -> str:
        host = f"h{short_hash(self.host)}-" if self.host else ""
        if self.legacy:
            return f"{instance}-{host}r{self.depth}-{self.bucket:03d}"
        return f"{instance}-{host}d{self.depth}s{self.level}-{self.bucket:x}"

    @property
    def label(self) -> str:
        """The ``federation.jupyter.org/shard`` annotation: depth/level/bucket."""
        return f"{self.depth}/{self.level}/{self.bucket}"

    def parent(self) -> ShardKey | None:
        if self.legacy or self.level == 0:
            return None
        level = self.level - 1
        return ShardKey(self.host, self.depth, level, self.bucket & ((1 << level) - 1))

    def children(self) -> tuple[ShardKey, ShardKey]:
        level = self.level + 1
        return (
            ShardKey(self.host, self.depth, level, self.bucket),
            ShardKey(self.host, self.depth, level, self.bucket | (1 << self.level)),
        )

    def holds(self, path: str) -> bool:
        """Whether a path of this host and depth hashes into this shard."""
        if self.legacy:
            return True
        return path_hash(path) & ((1 << self.level) - 1) == self.bucket

    def sort_key(self) -> tuple[int, int, int, int, int]:
        """Root order: deepest first; then host before plain; then a parent before its children
        (a parent still holding routes during a split is the authoritative copy); legacy last."""
        return (-self.depth, 0 if self.host else 1, 1 if self.legacy else 0, self.level, self.bucket)


def root_order(name: str) -> tuple[tuple[int, int, int, int, int], str]:
    """Sort key of a shard by its name alone (roots list names; any replica sorts the same)."""
    m = _NEW_TAIL.search(name)
    if m:
        key = ShardKey(m.group(1) or "", int(m.group(2)), int(m.group(3)), int(m.group(4), 16))
        return (key.sort_key(), name)
    m = _LEGACY_TAIL.search(name)
    if m:
        key = ShardKey(m.group(1) or "", int(m.group(2)), 0, int(m.group(3)), legacy=True)
        return (key.sort_key(), name)
    return ((0, 1, 1, 0, 0), name)


def depth_of_name(name: str) -> int | None:
    m = _NEW_TAIL.search(name) or _LEGACY_TAIL.search(name)
    return int(m.group(2)) if m else None


def parse_key(name: str, host: str, label: str | None) -> ShardKey | None:
    """A shard's key from its name and annotations (None when it is not one of ours)."""
    if label:
        try:
            depth, level, bucket = (int(p) for p in label.split("/"))
        except ValueError:
            return None
        return ShardKey(host, depth, level, bucket)
    m = _LEGACY_TAIL.search(name)
    if not m:
        return None
    return ShardKey(host, int(m.group(2)), 0, int(m.group(3)), legacy=True)


def top(key: RouteKey) -> ShardKey:
    return ShardKey(key.host or "", key.depth, 0, 0)


def locate(key: RouteKey, is_split: Callable[[ShardKey], bool]) -> ShardKey:
    """The shard a route belongs in: from level 0 down through split markers."""
    shard = top(key)
    h = path_hash(key.path)
    while shard.level < MAX_LEVEL and is_split(shard):
        level = shard.level + 1
        shard = ShardKey(shard.host, shard.depth, level, h & ((1 << level) - 1))
    return shard


def partition(key: ShardKey, entries: Mapping[str, V]) -> dict[ShardKey, dict[str, V]]:
    """A splitting shard's entries, by child."""
    low, high = key.children()
    out: dict[ShardKey, dict[str, V]] = {low: {}, high: {}}
    for path, value in entries.items():
        out[high if path_hash(path) & (1 << key.level) else low][path] = value
    return out


def grow(
    entries: Iterable[tuple[RouteKey, V]], capacity: int
) -> tuple[dict[ShardKey, dict[str, V]], list[ShardKey]]:
    """The layout a table would reach by splitting: leaves with their entries, and markers.

    For rendering a whole table at once (docs, tests, preloading); the service reaches the same
    layout one split at a time.
    """
    pending: dict[ShardKey, dict[str, V]] = {}
    for key, value in entries:
        pending.setdefault(top(key), {})[key.path] = value
    leaves: dict[ShardKey, dict[str, V]] = {}
    markers: list[ShardKey] = []
    while pending:
        shard, held = pending.popitem()
        if len(held) <= capacity or shard.level >= MAX_LEVEL:
            leaves[shard] = held
            continue
        markers.append(shard)
        for child, part in partition(shard, held).items():
            if part:
                pending[child] = part
    return leaves, sorted(markers)
